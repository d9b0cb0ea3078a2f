//! The bytes of the `accel-tool serve` protocol, version 1 (docs/serve-protocol.md, the one
//! definition): frame headers, requests and replies, encoded and decoded without I/O. Decoding
//! any byte string returns a value or a [`WireError`] with the protocol's error code; it never
//! panics. The server (`serve` in accel-tool) and Rust clients (the launcher's INFO probe and its
//! tests) use it; the Python client has its own copy, pinned by the same golden bytes.

use std::fmt;

/// `C S R V` read as a little-endian u32.
pub const MAGIC: u32 = 0x5652_5343;
/// The protocol version this code speaks.
pub const VERSION: u16 = 1;
/// Bytes of a frame header.
pub const HEADER_LEN: usize = 16;
/// Largest payload of a frame (64 MiB).
pub const MAX_PAYLOAD: u32 = 64 << 20;

/// Frame kinds (docs/serve-protocol.md, "Requests" and "Replies").
pub mod kind {
    pub const INFO: u16 = 1;
    pub const GEMM: u16 = 2;
    pub const LINEAR: u16 = 3;
    pub const BATCH: u16 = 4;
    pub const INFO_REPLY: u16 = 0x81;
    pub const GEMM_REPLY: u16 = 0x82;
    pub const BATCH_REPLY: u16 = 0x84;
    pub const ERROR: u16 = 0xff;
}

/// Error codes of an error body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadFrame = 1,
    Version = 2,
    BadSize = 3,
    Device = 4,
    NoDevice = 5,
    Internal = 6,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 6] = [
        ErrorCode::BadFrame,
        ErrorCode::Version,
        ErrorCode::BadSize,
        ErrorCode::Device,
        ErrorCode::NoDevice,
        ErrorCode::Internal,
    ];

    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "BAD_FRAME",
            ErrorCode::Version => "VERSION",
            ErrorCode::BadSize => "BAD_SIZE",
            ErrorCode::Device => "DEVICE",
            ErrorCode::NoDevice => "NO_DEVICE",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

impl TryFrom<u32> for ErrorCode {
    type Error = u32;

    fn try_from(v: u32) -> Result<Self, u32> {
        ErrorCode::ALL.into_iter().find(|c| c.code() == v).ok_or(v)
    }
}

/// An error body: what was wrong, the device's ERROR code (0 if none) and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError {
    pub code: ErrorCode,
    pub device_error: u32,
    pub message: String,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> WireError {
        WireError {
            code,
            device_error: 0,
            message: message.into(),
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)?;
        if self.device_error != 0 {
            write!(f, " (device error {})", self.device_error)?;
        }
        Ok(())
    }
}

/// A frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    pub kind: u16,
    pub id: u32,
    pub length: u32,
}

impl Header {
    pub fn new(kind: u16, id: u32, length: u32) -> Header {
        Header {
            version: VERSION,
            kind,
            id,
            length,
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        h[4..6].copy_from_slice(&self.version.to_le_bytes());
        h[6..8].copy_from_slice(&self.kind.to_le_bytes());
        h[8..12].copy_from_slice(&self.id.to_le_bytes());
        h[12..16].copy_from_slice(&self.length.to_le_bytes());
        h
    }
}

/// A header after which the stream cannot be followed: the server replies with this error (id
/// of the frame, 0 if unreadable) and closes the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FatalHeader {
    pub id: u32,
    pub error: WireError,
}

/// Reads a header. A wrong magic or a length above [`MAX_PAYLOAD`] is fatal; version and kind
/// are checked later ([`decode_request`]), once the payload has been read past.
pub fn decode_header(b: &[u8; HEADER_LEN]) -> Result<Header, FatalHeader> {
    let magic = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let h = Header {
        version: u16::from_le_bytes([b[4], b[5]]),
        kind: u16::from_le_bytes([b[6], b[7]]),
        id: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        length: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
    };
    if magic != MAGIC {
        let error = WireError::new(
            ErrorCode::BadFrame,
            format!("bad magic {magic:#010x} (want {MAGIC:#010x}, the bytes \"CSRV\"); closing the connection"),
        );
        return Err(FatalHeader { id: 0, error });
    }
    if h.length > MAX_PAYLOAD {
        let error = WireError::new(
            ErrorCode::BadSize,
            format!(
                "payload of {} bytes is above the limit of {MAX_PAYLOAD}; closing the connection",
                h.length
            ),
        );
        return Err(FatalHeader { id: h.id, error });
    }
    Ok(h)
}

/// One GEMM or LINEAR job: C (m x n) = A (m x k) x B (k x n) [+ bias (n), wrapping].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub a: Vec<i8>,
    pub b: Vec<i8>,
    pub bias: Option<Vec<i32>>,
}

/// A decoded request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Info,
    Job(Job),
    /// Entries in order; an entry that does not decode is answered with its error in the reply.
    Batch(Vec<Result<Job, WireError>>),
}

/// Little-endian reader over a payload; every read is bounds-checked.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader { b, pos: 0 }
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn u16(&mut self) -> Option<u16> {
        self.bytes(2).map(|s| u16::from_le_bytes([s[0], s[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.bytes(4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn u64(&mut self) -> Option<u64> {
        self.bytes(8)
            .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
    }

    fn rest(&self) -> usize {
        self.b.len() - self.pos
    }
}

fn bad_frame(msg: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::BadFrame, msg)
}

/// A GEMM (`linear` false) or LINEAR payload; dimensions 1 to `max_dim`.
pub fn decode_job(payload: &[u8], linear: bool, max_dim: u32) -> Result<Job, WireError> {
    let what = if linear { "LINEAR" } else { "GEMM" };
    let mut r = Reader::new(payload);
    let (Some(m), Some(n), Some(k), Some(flags)) = (r.u32(), r.u32(), r.u32(), r.u32()) else {
        return Err(bad_frame(format!(
            "{what} payload of {} bytes is shorter than its 16-byte header",
            payload.len()
        )));
    };
    if flags != 0 {
        return Err(bad_frame(format!("{what} flags {flags:#x}: must be 0")));
    }
    for (name, v) in [("m", m), ("n", n), ("k", k)] {
        if v == 0 || v > max_dim {
            return Err(WireError::new(
                ErrorCode::BadSize,
                format!("{what} {m}x{n}x{k}: {name} = {v} is outside 1..={max_dim} (the device's MAX_DIM)"),
            ));
        }
    }
    let (mu, nu, ku) = (m as usize, n as usize, k as usize);
    let want = mu * ku + ku * nu + if linear { 4 * nu } else { 0 };
    if r.rest() != want {
        return Err(bad_frame(format!(
            "{what} {m}x{n}x{k}: {} bytes of operands, want {want} (A {} + B {}{})",
            r.rest(),
            mu * ku,
            ku * nu,
            if linear {
                format!(" + bias {}", 4 * nu)
            } else {
                String::new()
            }
        )));
    }
    let to_i8 = |s: &[u8]| s.iter().map(|&v| v as i8).collect::<Vec<i8>>();
    let a = to_i8(r.bytes(mu * ku).expect("length checked"));
    let b = to_i8(r.bytes(ku * nu).expect("length checked"));
    let bias = linear.then(|| {
        r.bytes(4 * nu)
            .expect("length checked")
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    });
    Ok(Job {
        m,
        n,
        k,
        a,
        b,
        bias,
    })
}

/// The request in a frame whose header passed [`decode_header`]. Jobs are checked against
/// `max_dim`.
pub fn decode_request(h: &Header, payload: &[u8], max_dim: u32) -> Result<Request, WireError> {
    if h.version != VERSION {
        return Err(WireError::new(
            ErrorCode::Version,
            format!(
                "protocol version {} is not supported; this server speaks version {VERSION}",
                h.version
            ),
        ));
    }
    if payload.len() != h.length as usize {
        return Err(bad_frame(format!(
            "payload of {} bytes, the header says {}",
            payload.len(),
            h.length
        )));
    }
    match h.kind {
        kind::INFO if payload.is_empty() => Ok(Request::Info),
        kind::INFO => Err(bad_frame(format!(
            "INFO has no payload, got {} bytes",
            payload.len()
        ))),
        kind::GEMM => decode_job(payload, false, max_dim).map(Request::Job),
        kind::LINEAR => decode_job(payload, true, max_dim).map(Request::Job),
        kind::BATCH => {
            let mut r = Reader::new(payload);
            let count = r
                .u32()
                .ok_or_else(|| bad_frame("BATCH payload shorter than its count"))?;
            let mut entries = Vec::new();
            for i in 0..count {
                let (Some(k), Some(_reserved), Some(len)) = (r.u16(), r.u16(), r.u32()) else {
                    return Err(bad_frame(format!(
                        "BATCH entry {i} of {count}: header cut short"
                    )));
                };
                let body = r.bytes(len as usize).ok_or_else(|| {
                    bad_frame(format!(
                        "BATCH entry {i} of {count}: {len} bytes, payload cut short"
                    ))
                })?;
                entries.push(match k {
                    kind::GEMM => decode_job(body, false, max_dim),
                    kind::LINEAR => decode_job(body, true, max_dim),
                    other => Err(bad_frame(format!(
                        "BATCH entry {i}: kind {other} is not GEMM (2) or LINEAR (3)"
                    ))),
                });
            }
            if r.rest() != 0 {
                return Err(bad_frame(format!(
                    "BATCH of {count} entries: {} bytes after the last entry",
                    r.rest()
                )));
            }
            Ok(Request::Batch(entries))
        }
        other => Err(bad_frame(format!("unknown request kind {other:#x}"))),
    }
}

/// One device's configuration in an INFO reply: the performance models' parameters, in the
/// order of docs/serve-protocol.md (rows, cols, max_dim, nb, am, rd_out, clock_hz,
/// dma_bytes_per_cycle, read_latency_cycles).
pub use cosim_perf_model::Engine as DeviceInfo;

/// The result of one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobResult {
    pub m: u32,
    pub n: u32,
    /// N of `/dev/accelN`.
    pub device: u32,
    pub cycles: u64,
    pub dma_wait: u64,
    pub device_ns: u64,
    pub roofline: u64,
    pub tiled: u64,
    pub systolic: u64,
    pub c: Vec<i32>,
}

/// A decoded reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Info(Vec<DeviceInfo>),
    Result(JobResult),
    Batch(Vec<Result<JobResult, WireError>>),
    Error(WireError),
}

fn frame(kind: u16, id: u32, payload: Vec<u8>) -> Vec<u8> {
    let mut f = Header::new(kind, id, payload.len() as u32)
        .encode()
        .to_vec();
    f.extend_from_slice(&payload);
    f
}

fn put_u32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn put_u64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn error_body(e: &WireError, v: &mut Vec<u8>) {
    put_u32(v, e.code.code());
    put_u32(v, e.device_error);
    put_u32(v, e.message.len() as u32);
    v.extend_from_slice(e.message.as_bytes());
}

fn result_body(r: &JobResult, v: &mut Vec<u8>) {
    v.reserve(72 + 4 * r.c.len());
    for x in [r.m, r.n, r.device, 0] {
        put_u32(v, x);
    }
    for x in [
        r.cycles,
        r.dma_wait,
        r.device_ns,
        r.roofline,
        r.tiled,
        r.systolic,
    ] {
        put_u64(v, x);
    }
    for x in &r.c {
        v.extend_from_slice(&x.to_le_bytes());
    }
}

/// An ERROR frame.
pub fn encode_error(id: u32, e: &WireError) -> Vec<u8> {
    let mut p = Vec::new();
    error_body(e, &mut p);
    frame(kind::ERROR, id, p)
}

/// An INFO_REPLY frame.
pub fn encode_info_reply(id: u32, devices: &[DeviceInfo]) -> Vec<u8> {
    let mut p = Vec::new();
    put_u32(&mut p, devices.len() as u32);
    for d in devices {
        for x in [d.rows, d.cols, d.max_dim, d.nb, d.am, d.rd_out] {
            put_u32(&mut p, x);
        }
        put_u64(&mut p, d.clock_hz);
        put_u32(&mut p, d.dma_bytes_per_cycle);
        put_u32(&mut p, d.read_latency_cycles);
    }
    frame(kind::INFO_REPLY, id, p)
}

/// A GEMM_REPLY frame (the reply to GEMM and LINEAR).
pub fn encode_result(id: u32, r: &JobResult) -> Vec<u8> {
    let mut p = Vec::new();
    result_body(r, &mut p);
    frame(kind::GEMM_REPLY, id, p)
}

/// A BATCH_REPLY frame.
pub fn encode_batch_reply(id: u32, entries: &[Result<JobResult, WireError>]) -> Vec<u8> {
    let mut p = Vec::new();
    put_u32(&mut p, entries.len() as u32);
    let mut body = Vec::new();
    for e in entries {
        body.clear();
        let status = match e {
            Ok(r) => {
                result_body(r, &mut body);
                0
            }
            Err(w) => {
                error_body(w, &mut body);
                w.code.code()
            }
        };
        put_u32(&mut p, status);
        put_u32(&mut p, body.len() as u32);
        p.extend_from_slice(&body);
    }
    frame(kind::BATCH_REPLY, id, p)
}

/// A GEMM (`bias` None) or LINEAR request frame.
pub fn encode_job(id: u32, job: &Job) -> Vec<u8> {
    let kind = if job.bias.is_some() {
        kind::LINEAR
    } else {
        kind::GEMM
    };
    frame(kind, id, job_payload(job))
}

fn job_payload(job: &Job) -> Vec<u8> {
    let mut p = Vec::with_capacity(16 + job.a.len() + job.b.len() + 4 * job.n as usize);
    for x in [job.m, job.n, job.k, 0] {
        put_u32(&mut p, x);
    }
    p.extend(job.a.iter().map(|&v| v as u8));
    p.extend(job.b.iter().map(|&v| v as u8));
    for x in job.bias.iter().flatten() {
        p.extend_from_slice(&x.to_le_bytes());
    }
    p
}

/// A BATCH request frame.
pub fn encode_batch(id: u32, jobs: &[Job]) -> Vec<u8> {
    let mut p = Vec::new();
    put_u32(&mut p, jobs.len() as u32);
    for j in jobs {
        let body = job_payload(j);
        p.extend_from_slice(
            &(if j.bias.is_some() {
                kind::LINEAR
            } else {
                kind::GEMM
            })
            .to_le_bytes(),
        );
        p.extend_from_slice(&0u16.to_le_bytes());
        put_u32(&mut p, body.len() as u32);
        p.extend_from_slice(&body);
    }
    frame(kind::BATCH, id, p)
}

/// An INFO request frame.
pub fn encode_info(id: u32) -> Vec<u8> {
    frame(kind::INFO, id, Vec::new())
}

fn decode_error_body(r: &mut Reader) -> Option<WireError> {
    let code = ErrorCode::try_from(r.u32()?).unwrap_or(ErrorCode::Internal);
    let device_error = r.u32()?;
    let len = r.u32()? as usize;
    let message = String::from_utf8_lossy(r.bytes(len)?).into_owned();
    Some(WireError {
        code,
        device_error,
        message,
    })
}

fn decode_result_body(r: &mut Reader) -> Option<JobResult> {
    let (m, n, device, _reserved) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
    let (cycles, dma_wait, device_ns) = (r.u64()?, r.u64()?, r.u64()?);
    let (roofline, tiled, systolic) = (r.u64()?, r.u64()?, r.u64()?);
    let count = (m as usize).checked_mul(n as usize)?;
    let c = r
        .bytes(count.checked_mul(4)?)?
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some(JobResult {
        m,
        n,
        device,
        cycles,
        dma_wait,
        device_ns,
        roofline,
        tiled,
        systolic,
        c,
    })
}

/// A reply frame's payload (for clients). `None`: it does not decode as that kind.
pub fn decode_reply(h: &Header, payload: &[u8]) -> Option<Reply> {
    let mut r = Reader::new(payload);
    let reply = match h.kind {
        kind::INFO_REPLY => {
            let count = r.u32()?;
            let mut devs = Vec::new();
            for _ in 0..count {
                let (rows, cols, max_dim, nb, am, rd_out) =
                    (r.u32()?, r.u32()?, r.u32()?, r.u32()?, r.u32()?, r.u32()?);
                let clock_hz = r.u64()?;
                let (dma_bytes_per_cycle, read_latency_cycles) = (r.u32()?, r.u32()?);
                devs.push(DeviceInfo {
                    rows,
                    cols,
                    max_dim,
                    nb,
                    am,
                    rd_out,
                    clock_hz,
                    dma_bytes_per_cycle,
                    read_latency_cycles,
                });
            }
            Reply::Info(devs)
        }
        kind::GEMM_REPLY => Reply::Result(decode_result_body(&mut r)?),
        kind::BATCH_REPLY => {
            let count = r.u32()?;
            let mut entries = Vec::new();
            for _ in 0..count {
                let (status, len) = (r.u32()?, r.u32()?);
                let mut er = Reader::new(r.bytes(len as usize)?);
                entries.push(if status == 0 {
                    Ok(decode_result_body(&mut er)?)
                } else {
                    Err(decode_error_body(&mut er)?)
                });
            }
            Reply::Batch(entries)
        }
        kind::ERROR => Reply::Error(decode_error_body(&mut r)?),
        _ => return None,
    };
    (r.rest() == 0).then_some(reply)
}

/// C = A x B (+ bias), wrapping int32, as the RTL and the server compute it: the CPU reference.
pub fn reference(job: &Job) -> Vec<i32> {
    let (m, n, k) = (job.m as usize, job.n as usize, job.k as usize);
    let mut c = crate::gemm::reference(m, n, k, &job.a, &job.b);
    if let Some(bias) = &job.bias {
        add_bias(&mut c, bias);
    }
    c
}

/// C[i][j] += bias[j], wrapping (LINEAR, after the RTL's GEMM).
pub fn add_bias(c: &mut [i32], bias: &[i32]) {
    if bias.is_empty() {
        return;
    }
    for row in c.chunks_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v = v.wrapping_add(*b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
            .collect()
    }

    fn header_of(f: &[u8]) -> Header {
        decode_header(f[..HEADER_LEN].try_into().unwrap()).expect("header")
    }

    fn request(f: &[u8]) -> Result<Request, WireError> {
        decode_request(&header_of(f), &f[HEADER_LEN..], 1024)
    }

    fn gemm_1x1x2() -> Job {
        Job {
            m: 1,
            n: 1,
            k: 2,
            a: vec![1, -1],
            b: vec![3, 4],
            bias: None,
        }
    }

    // docs/serve-protocol.md, "Examples (golden bytes)".
    #[test]
    fn golden_info_request() {
        let f = encode_info(7);
        assert_eq!(f, hex("43 53 52 56 01 00 01 00 07 00 00 00 00 00 00 00"));
        assert_eq!(
            header_of(&f),
            Header {
                version: 1,
                kind: kind::INFO,
                id: 7,
                length: 0
            }
        );
        assert_eq!(request(&f), Ok(Request::Info));
    }

    #[test]
    fn golden_gemm_request() {
        let want = hex("43 53 52 56 01 00 02 00 01 00 00 00 14 00 00 00 \
             01 00 00 00 01 00 00 00 02 00 00 00 00 00 00 00 01 ff 03 04");
        assert_eq!(encode_job(1, &gemm_1x1x2()), want);
        assert_eq!(request(&want), Ok(Request::Job(gemm_1x1x2())));
        assert_eq!(reference(&gemm_1x1x2()), vec![-1]);
    }

    #[test]
    fn golden_error_reply() {
        let e = WireError::new(ErrorCode::Version, "v1");
        let want = hex("43 53 52 56 01 00 ff 00 09 00 00 00 0e 00 00 00 02 00 00 00 00 00 00 00 02 00 00 00 76 31");
        assert_eq!(encode_error(9, &e), want);
        assert_eq!(
            decode_reply(&header_of(&want), &want[HEADER_LEN..]),
            Some(Reply::Error(e))
        );
    }

    #[test]
    fn linear_round_trip_and_bias_wraps() {
        let job = Job {
            m: 2,
            n: 2,
            k: 1,
            a: vec![1, 2],
            b: vec![3, -4],
            bias: Some(vec![i32::MAX, -1]),
        };
        let f = encode_job(3, &job);
        assert_eq!(header_of(&f).kind, kind::LINEAR);
        assert_eq!(header_of(&f).length, 16 + 2 + 2 + 8);
        assert_eq!(request(&f), Ok(Request::Job(job.clone())));
        // [3 -4; 6 -8] + [MAX, -1], wrapping.
        assert_eq!(
            reference(&job),
            vec![i32::MAX.wrapping_add(3), -5, i32::MAX.wrapping_add(6), -9]
        );
    }

    #[test]
    fn replies_round_trip() {
        let r = JobResult {
            m: 1,
            n: 2,
            device: 3,
            cycles: 136,
            dma_wait: 125,
            device_ns: 99_000,
            roofline: 12,
            tiled: 136,
            systolic: 123,
            c: vec![-1, i32::MIN],
        };
        let f = encode_result(5, &r);
        assert_eq!(f.len(), HEADER_LEN + 64 + 8);
        assert_eq!(
            decode_reply(&header_of(&f), &f[HEADER_LEN..]),
            Some(Reply::Result(r.clone()))
        );
        let entries = vec![
            Ok(r),
            Err(WireError {
                code: ErrorCode::Device,
                device_error: 6,
                message: "DMA".into(),
            }),
        ];
        let f = encode_batch_reply(6, &entries);
        assert_eq!(
            decode_reply(&header_of(&f), &f[HEADER_LEN..]),
            Some(Reply::Batch(entries))
        );
        let d = DeviceInfo::reported(4, 4, 1024, 100);
        let f = encode_info_reply(8, &[d, d]);
        assert_eq!(header_of(&f).length, 4 + 2 * 40);
        assert_eq!(
            decode_reply(&header_of(&f), &f[HEADER_LEN..]),
            Some(Reply::Info(vec![d, d]))
        );
        // A reply with trailing bytes does not decode.
        let mut long = f[HEADER_LEN..].to_vec();
        long.push(0);
        assert_eq!(decode_reply(&header_of(&f), &long), None);
    }

    #[test]
    fn batch_round_trip_with_a_bad_entry_answered_in_band() {
        let lin = Job {
            bias: Some(vec![7]),
            ..gemm_1x1x2()
        };
        let f = encode_batch(2, &[gemm_1x1x2(), lin.clone()]);
        assert_eq!(
            request(&f),
            Ok(Request::Batch(vec![Ok(gemm_1x1x2()), Ok(lin)]))
        );
        // Entry 1 with kind 1 (INFO): that entry is an error, the other still runs.
        let mut g = f.clone();
        let entry1 = HEADER_LEN + 4 + 8 + 20;
        g[entry1] = 1;
        match request(&g) {
            Ok(Request::Batch(e)) => {
                assert_eq!(e[0], Ok(gemm_1x1x2()));
                assert_eq!(e[1].as_ref().unwrap_err().code, ErrorCode::BadFrame);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fatal_headers() {
        let mut f = encode_info(4);
        f[0] = b'X';
        let e = decode_header(f[..16].try_into().unwrap()).unwrap_err();
        assert_eq!((e.id, e.error.code), (0, ErrorCode::BadFrame));
        assert!(e.error.message.contains("magic"), "{}", e.error.message);
        let f = Header::new(kind::GEMM, 11, MAX_PAYLOAD + 1).encode();
        let e = decode_header(&f).unwrap_err();
        assert_eq!((e.id, e.error.code), (11, ErrorCode::BadSize));
        assert!(decode_header(&Header::new(kind::GEMM, 11, MAX_PAYLOAD).encode()).is_ok());
    }

    #[test]
    fn every_request_error() {
        let base = encode_job(1, &gemm_1x1x2());
        let code = |f: &[u8]| request(f).unwrap_err().code;
        // Another version.
        let mut f = base.clone();
        f[4] = 2;
        assert_eq!(code(&f), ErrorCode::Version);
        assert!(request(&f).unwrap_err().message.contains("version 1"));
        // Unknown kind.
        let mut f = base.clone();
        f[6] = 9;
        assert_eq!(code(&f), ErrorCode::BadFrame);
        // INFO with a payload.
        let mut f = base.clone();
        f[6] = kind::INFO as u8;
        assert_eq!(code(&f), ErrorCode::BadFrame);
        // Payload shorter than the header says.
        let h = header_of(&base);
        assert_eq!(
            decode_request(&h, &base[HEADER_LEN..base.len() - 1], 1024)
                .unwrap_err()
                .code,
            ErrorCode::BadFrame
        );
        // Operands of the wrong length for m, n, k (the header agrees with the payload).
        let mut p = base[HEADER_LEN..].to_vec();
        p.push(0);
        let h2 = Header::new(kind::GEMM, 1, p.len() as u32);
        assert_eq!(
            decode_request(&h2, &p, 1024).unwrap_err().code,
            ErrorCode::BadFrame
        );
        // LINEAR without its bias.
        let h3 = Header::new(kind::LINEAR, 1, (base.len() - HEADER_LEN) as u32);
        assert_eq!(
            decode_request(&h3, &base[HEADER_LEN..], 1024)
                .unwrap_err()
                .code,
            ErrorCode::BadFrame
        );
        // Payload shorter than the job header.
        let h4 = Header::new(kind::GEMM, 1, 8);
        assert_eq!(
            decode_request(&h4, &[0; 8], 1024).unwrap_err().code,
            ErrorCode::BadFrame
        );
        // Flags not 0.
        let mut f = base.clone();
        f[HEADER_LEN + 12] = 1;
        assert_eq!(code(&f), ErrorCode::BadFrame);
        // A zero dimension and one above MAX_DIM.
        let zero = Job {
            m: 0,
            a: vec![],
            ..gemm_1x1x2()
        };
        assert_eq!(code(&encode_job(1, &zero)), ErrorCode::BadSize);
        let big = Job {
            k: 3,
            a: vec![0; 3],
            b: vec![0; 3],
            ..gemm_1x1x2()
        };
        let f = encode_job(1, &big);
        assert_eq!(
            decode_request(&header_of(&f), &f[HEADER_LEN..], 2)
                .unwrap_err()
                .code,
            ErrorCode::BadSize
        );
        // BATCH: count cut short, entry header cut short, entry body cut short, trailing bytes.
        let b = encode_batch(1, &[gemm_1x1x2()]);
        for cut in [HEADER_LEN + 2, HEADER_LEN + 6, b.len() - 1] {
            let h = Header::new(kind::BATCH, 1, (cut - HEADER_LEN) as u32);
            assert_eq!(
                decode_request(&h, &b[HEADER_LEN..cut], 1024)
                    .unwrap_err()
                    .code,
                ErrorCode::BadFrame,
                "cut {cut}"
            );
        }
        let mut p = b[HEADER_LEN..].to_vec();
        p.push(0);
        let h = Header::new(kind::BATCH, 1, p.len() as u32);
        assert_eq!(
            decode_request(&h, &p, 1024).unwrap_err().code,
            ErrorCode::BadFrame
        );
    }

    #[test]
    fn decoding_garbage_never_panics() {
        let mut rng = crate::gemm::Rng::new(1);
        let mut decoded = 0;
        for len in 0..300usize {
            let mut buf = vec![0i8; len];
            rng.fill_i8(&mut buf);
            let mut bytes: Vec<u8> = buf.iter().map(|&v| v as u8).collect();
            // Small dimensions and counts now and then, so some payloads get past the first checks.
            if len >= 16 && (len % 3 == 0 || len == 25) {
                bytes[..16].copy_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]);
            }
            for k in [kind::INFO, kind::GEMM, kind::LINEAR, kind::BATCH, 77] {
                decoded += usize::from(
                    decode_request(&Header::new(k, 1, len as u32), &bytes, 1024).is_ok(),
                );
            }
            for k in [
                kind::INFO_REPLY,
                kind::GEMM_REPLY,
                kind::BATCH_REPLY,
                kind::ERROR,
            ] {
                let _ = decode_reply(&Header::new(k, 1, len as u32), &bytes);
            }
        }
        // INFO with no payload, and GEMM 1x2x3 with 16 + 3 + 6 bytes.
        assert!(decoded >= 2, "{decoded}");
    }

    #[test]
    fn error_codes_decode() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::try_from(c.code()), Ok(c));
        }
        assert_eq!(ErrorCode::try_from(7), Err(7));
    }
}
