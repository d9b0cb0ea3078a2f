//! `accel-tool serve`: executes GEMM and LINEAR jobs for a client on the host, over the protocol
//! of docs/serve-protocol.md (bytes: [`accel_tool::serve_codec`]).
//!
//! Who owns what: the main thread owns the listening socket and reads one connection at a time
//! (frames in order; INFO and errors answered at once, jobs queued); one worker thread per
//! `/dev/accelN` owns that device and takes jobs from the one shared queue, so jobs spread over
//! all devices and replies come back in the order jobs finish; one writer thread per connection
//! owns the socket's sending half and writes the replies the others hand it. LINEAR's bias is
//! added here, after the RTL's GEMM. A connection whose client is gone (a write fails) is marked
//! closed: its queued jobs are dropped, running ones complete and their replies are discarded;
//! the server then serves the next connection.

use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use accel_tool::serve_codec::{
    self as codec, DeviceInfo, ErrorCode, Header, Job, JobResult, Request, WireError,
};
use cosim_perf_model::{predict, Engine, Gemm};
use crossbeam_channel::{unbounded, Receiver, Sender};

use crate::ioctl::{device_error_name, Device, GemmError, GemmOutcome};

#[allow(unsafe_code)]
mod port;

/// Options of `accel-tool serve`.
pub struct ServeOptions {
    /// Where to listen.
    pub listen: Listen,
    /// The simulation's modelled DMA read latency in cycles, for the models (0: free-running).
    pub read_latency: u32,
    /// Per-job timeout in ms (0: the driver's default).
    pub timeout_ms: u32,
}

/// Where the server listens.
pub enum Listen {
    /// TCP on every guest address (the host reaches it through QEMU user networking).
    Tcp(u16),
    /// A virtio-serial port (`/dev/vportNpM`; the host side is QEMU's chardev on a Unix socket).
    Serial(PathBuf),
}

/// The kind of session, for what its end means.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Channel {
    Tcp,
    Serial,
}

/// One device as the workers and INFO see it.
struct DeviceSlot {
    path: PathBuf,
    index: u32,
    engine: Engine,
}

/// A connection's reply path.
struct Conn {
    replies: Sender<Vec<u8>>,
    /// Set when a write to the client failed: its jobs are dropped, its replies discarded.
    closed: Arc<AtomicBool>,
}

/// A BATCH being run: entries in order, filled as jobs finish; the last one sends the reply.
struct Batch {
    id: u32,
    entries: Mutex<Vec<Option<Result<JobResult, WireError>>>>,
    remaining: AtomicUsize,
}

/// One queued job.
struct Task {
    conn: Arc<Conn>,
    id: u32,
    job: Job,
    /// In a BATCH: the batch and the entry's index.
    batch: Option<(Arc<Batch>, usize)>,
}

impl Conn {
    fn send(&self, frame: Vec<u8>) {
        // The writer is gone only after the connection closed: nothing to do.
        let _ = self.replies.send(frame);
    }
}

impl Batch {
    /// Stores entry `i`; the entry that completes the batch returns the reply frame.
    fn complete(&self, i: usize, r: Result<JobResult, WireError>) -> Option<Vec<u8>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries[i] = Some(r);
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let done: Vec<Result<JobResult, WireError>> = entries
                .iter_mut()
                .map(|e| {
                    e.take()
                        .unwrap_or_else(|| Err(WireError::new(ErrorCode::Internal, "entry lost")))
                })
                .collect();
            Some(codec::encode_batch_reply(self.id, &done))
        } else {
            None
        }
    }
}

fn deliver(task: &Task, r: Result<JobResult, WireError>) {
    let frame = match &task.batch {
        Some((batch, i)) => match batch.complete(*i, r) {
            Some(f) => f,
            None => return,
        },
        None => match r {
            Ok(res) => codec::encode_result(task.id, &res),
            Err(e) => codec::encode_error(task.id, &e),
        },
    };
    task.conn.send(frame);
}

/// What a worker needs of a device: its GEMM ioctl ([`Device`]; tests use a fake).
pub trait Accel: Send + 'static {
    fn gemm(
        &self,
        dims: (u32, u32, u32),
        a: &[i8],
        b: &[i8],
        c: &mut [i32],
        timeout_ms: u32,
    ) -> Result<GemmOutcome, GemmError>;
}

impl Accel for Device {
    fn gemm(
        &self,
        dims: (u32, u32, u32),
        a: &[i8],
        b: &[i8],
        c: &mut [i32],
        timeout_ms: u32,
    ) -> Result<GemmOutcome, GemmError> {
        Device::gemm(self, dims, a, b, c, timeout_ms)
    }
}

/// Runs one job on `dev`: the RTL's GEMM, the bias, the models' predictions.
fn run_job(
    dev: &impl Accel,
    slot: &DeviceSlot,
    job: &Job,
    timeout_ms: u32,
) -> Result<JobResult, WireError> {
    let mut c = vec![0i32; job.m as usize * job.n as usize];
    match dev.gemm((job.m, job.n, job.k), &job.a, &job.b, &mut c, timeout_ms) {
        Ok(o) => {
            if let Some(bias) = &job.bias {
                codec::add_bias(&mut c, bias);
            }
            let p = predict(&slot.engine, Gemm::new(job.m, job.n, job.k));
            Ok(JobResult {
                m: job.m,
                n: job.n,
                device: slot.index,
                cycles: o.cycles,
                dma_wait: o.dma_wait_cycles,
                device_ns: o.device_ns,
                roofline: p.roofline,
                tiled: p.tiled,
                systolic: p.systolic,
                c,
            })
        }
        Err(e) => {
            let mut message = format!(
                "{}: gemm {}x{}x{}: {}",
                slot.path.display(),
                job.m,
                job.n,
                job.k,
                e.err
            );
            if e.outcome.dev_error != 0 {
                message.push_str(&format!(
                    " (device error {} {})",
                    e.outcome.dev_error,
                    device_error_name(e.outcome.dev_error)
                ));
            }
            Err(WireError {
                code: ErrorCode::Device,
                device_error: e.outcome.dev_error,
                message,
            })
        }
    }
}

fn worker(dev: impl Accel, slot: DeviceSlot, tasks: Receiver<Task>, timeout_ms: u32) {
    for task in tasks {
        if task.conn.closed.load(Ordering::Acquire) {
            continue;
        }
        let r = run_job(&dev, &slot, &task.job, timeout_ms);
        deliver(&task, r);
    }
}

/// Writes the replies of one connection until every sender is gone, flushing whenever no
/// other reply waits. After a failed write it marks the connection closed and discards the rest.
fn writer<W: Write>(stream: W, replies: Receiver<Vec<u8>>, closed: Arc<AtomicBool>) {
    let mut w = BufWriter::with_capacity(1 << 16, stream);
    while let Ok(frame) = replies.recv() {
        if closed.load(Ordering::Acquire) {
            continue;
        }
        let r = w.write_all(&frame).and_then(|()| {
            if replies.is_empty() {
                w.flush()
            } else {
                Ok(())
            }
        });
        if r.is_err() {
            closed.store(true, Ordering::Release);
        }
    }
    let _ = w.flush();
}

/// Reads `buf.len()` bytes; `Ok(false)` on a clean end of stream before the first byte.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The server's state shared by every connection.
struct Server {
    devices: Vec<DeviceInfo>,
    max_dim: u32,
    tasks: Option<Sender<Task>>,
}

impl Server {
    /// One worker thread per device, all taking jobs from one queue.
    fn start(devices: Vec<(impl Accel, DeviceSlot)>, timeout_ms: u32) -> Result<Server, String> {
        let (task_tx, task_rx) = unbounded::<Task>();
        let mut infos = Vec::new();
        let mut max_dim = cosim_gemm_abi::defaults::MAX_DIM;
        for (i, (dev, slot)) in devices.into_iter().enumerate() {
            max_dim = if i == 0 {
                slot.engine.max_dim
            } else {
                max_dim.min(slot.engine.max_dim)
            };
            infos.push(slot.engine);
            let rx = task_rx.clone();
            std::thread::Builder::new()
                .name(format!("accel{}", slot.index))
                .spawn(move || worker(dev, slot, rx, timeout_ms))
                .map_err(|e| format!("cannot start a worker thread: {e}"))?;
        }
        let tasks = (!infos.is_empty()).then_some(task_tx);
        Ok(Server {
            devices: infos,
            max_dim,
            tasks,
        })
    }

    /// Serves one TCP connection until the client closes it (or breaks the framing).
    fn tcp_connection(&self, stream: TcpStream) {
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let _ = stream.set_nodelay(true);
        let Ok(wstream) = stream.try_clone() else {
            eprintln!("accel-tool serve: {peer}: cannot clone the socket; closing");
            return;
        };
        // A client may half-close (shutdown its sending side) and still read its replies.
        self.connection(stream, wstream, &format!("client {peer}"), Channel::Tcp);
    }

    /// Serves one session: reads frames in order, queues jobs, hands replies to a writer thread;
    /// returns once the session's last reply was written or discarded.
    fn connection<R: Read, W: Write + Send + 'static>(
        &self,
        reader: R,
        wr: W,
        peer: &str,
        channel: Channel,
    ) {
        let (tx, rx) = unbounded();
        let closed = Arc::new(AtomicBool::new(false));
        let conn = Arc::new(Conn {
            replies: tx,
            closed: closed.clone(),
        });
        let w = std::thread::spawn(move || writer(wr, rx, closed));
        eprintln!("accel-tool serve: {peer} connected");
        let t0 = Instant::now();
        let mut frames = 0u64;
        let mut r = BufReader::with_capacity(1 << 16, reader);
        let mut header = [0u8; codec::HEADER_LEN];
        let mut payload = Vec::new();
        let end = loop {
            match read_full(&mut r, &mut header) {
                Ok(true) => {}
                Ok(false) => break "closed by the client".to_string(),
                Err(e) => break format!("read: {e}"),
            }
            let h = match codec::decode_header(&header) {
                Ok(h) => h,
                Err(fatal) => {
                    conn.send(codec::encode_error(fatal.id, &fatal.error));
                    if channel == Channel::Serial {
                        // The server cannot hang up a virtio-serial port: it discards what
                        // the client sends until the client disconnects.
                        let _ = std::io::copy(&mut r, &mut std::io::sink());
                    }
                    break format!("{}", fatal.error);
                }
            };
            payload.resize(h.length as usize, 0);
            let full = read_full(&mut r, &mut payload).and_then(|full| {
                if full || payload.is_empty() {
                    Ok(())
                } else {
                    Err(ErrorKind::UnexpectedEof.into())
                }
            });
            if let Err(e) = full {
                break format!("read of a {}-byte payload: {e}", h.length);
            }
            frames += 1;
            self.request(&conn, &h, &payload);
            if conn.closed.load(Ordering::Acquire) {
                break "a reply could not be written".to_string();
            }
        };
        if channel == Channel::Serial {
            // The end of a virtio-serial session is the client's disconnection: nobody reads
            // what is still to come, and a write would wait for the next client.
            conn.closed.store(true, Ordering::Release);
        }
        // Ends the writer once the jobs still queued or running have handed in their replies.
        drop(conn);
        eprintln!(
            "accel-tool serve: {peer}: {end} after {frames} frame(s) in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        // Wait for the writer (it ends when the last job of this session is done), so replies of
        // one session never reach the next one.
        let _ = w.join();
    }

    fn request(&self, conn: &Arc<Conn>, h: &Header, payload: &[u8]) {
        let req = match codec::decode_request(h, payload, self.max_dim) {
            Ok(r) => r,
            Err(e) => return conn.send(codec::encode_error(h.id, &e)),
        };
        match req {
            Request::Info => conn.send(codec::encode_info_reply(h.id, &self.devices)),
            Request::Job(job) => match &self.tasks {
                Some(tasks) => {
                    let task = Task {
                        conn: conn.clone(),
                        id: h.id,
                        job,
                        batch: None,
                    };
                    if tasks.send(task).is_err() {
                        conn.send(codec::encode_error(
                            h.id,
                            &WireError::new(ErrorCode::Internal, "workers gone"),
                        ));
                    }
                }
                None => conn.send(codec::encode_error(h.id, &no_device())),
            },
            Request::Batch(entries) => {
                let jobs = entries.iter().filter(|e| e.is_ok()).count();
                let batch = Arc::new(Batch {
                    id: h.id,
                    entries: Mutex::new(vec![None; entries.len()]),
                    remaining: AtomicUsize::new(entries.len()),
                });
                if entries.is_empty() || jobs == 0 || self.tasks.is_none() {
                    let done: Vec<_> = entries
                        .into_iter()
                        .map(|e| e.and_then(|_| Err(no_device())))
                        .collect();
                    return conn.send(codec::encode_batch_reply(h.id, &done));
                }
                let tasks = self.tasks.as_ref().expect("checked");
                for (i, e) in entries.into_iter().enumerate() {
                    let task = match e {
                        Ok(job) => Task {
                            conn: conn.clone(),
                            id: h.id,
                            job,
                            batch: Some((batch.clone(), i)),
                        },
                        Err(err) => {
                            if let Some(f) = batch.complete(i, Err(err)) {
                                conn.send(f);
                            }
                            continue;
                        }
                    };
                    if let Err(back) = tasks.send(task) {
                        deliver(
                            &back.0,
                            Err(WireError::new(ErrorCode::Internal, "workers gone")),
                        );
                    }
                }
            }
        }
    }
}

fn no_device() -> WireError {
    WireError::new(ErrorCode::NoDevice, crate::NO_DEVICE)
}

/// Opens every `/dev/accelN` and starts its worker; listens and serves connections forever.
pub fn serve(opts: &ServeOptions, devices: &[PathBuf]) -> Result<(), String> {
    let mut opened = Vec::new();
    for path in devices {
        opened.push(open_device(path, opts.read_latency)?);
    }
    let started = opened.len();
    let server = Server::start(opened, opts.timeout_ms)?;
    let what = match &opts.listen {
        Listen::Tcp(port) => format!("TCP port {port}"),
        Listen::Serial(p) => format!("virtio-serial port {}", p.display()),
    };
    eprintln!(
        "accel-tool serve: {what} with {started} device(s), protocol version {}, read latency {} cycles",
        codec::VERSION,
        opts.read_latency
    );
    match &opts.listen {
        Listen::Tcp(port) => {
            let listener = TcpListener::bind(("0.0.0.0", *port))
                .map_err(|e| format!("cannot listen on port {port}: {e}"))?;
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => server.tcp_connection(s),
                    Err(e) => eprintln!("accel-tool serve: accept: {e}"),
                }
            }
        }
        Listen::Serial(path) => {
            let port = port::Port::open(path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            let mut sessions = 0u64;
            loop {
                port.wait_for_host()
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                sessions += 1;
                let (r, w) = port.halves();
                server.connection(
                    r,
                    w,
                    &format!("session {sessions} on {}", path.display()),
                    Channel::Serial,
                );
            }
        }
    }
    Ok(())
}

/// The virtio-serial port `name_or_path`: a path as is, else the `/dev/<vportNpM>` whose
/// `/sys/class/virtio-ports/<vportNpM>/name` is it (waiting up to 5 s for the driver to create it).
pub fn serial_port(name_or_path: &str) -> Result<PathBuf, String> {
    if name_or_path.starts_with('/') {
        return Ok(PathBuf::from(name_or_path));
    }
    let t0 = Instant::now();
    loop {
        let found = std::fs::read_dir("/sys/class/virtio-ports")
            .ok()
            .and_then(|rd| {
                rd.filter_map(|e| e.ok()).find_map(|e| {
                    let name = std::fs::read_to_string(e.path().join("name")).ok()?;
                    (name.trim() == name_or_path).then(|| Path::new("/dev").join(e.file_name()))
                })
            });
        match found {
            Some(p) if p.exists() => return Ok(p),
            _ if t0.elapsed().as_secs() >= 5 => {
                return Err(format!(
                    "no virtio-serial port named {name_or_path:?} in /sys/class/virtio-ports (is virtio_console loaded, \
                     and does QEMU have -device virtserialport,name={name_or_path}?)"
                ))
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}

fn open_device(path: &Path, read_latency: u32) -> Result<(Device, DeviceSlot), String> {
    let dev = Device::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let i = dev
        .info()
        .map_err(|e| format!("{}: info: {e}", path.display()))?;
    let engine = Engine::reported(i.array_rows, i.array_cols, i.max_dim, read_latency);
    Ok((
        dev,
        DeviceSlot {
            path: path.to_path_buf(),
            index: i.index,
            engine,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use accel_tool::serve_codec::Reply;
    use std::io::Cursor;

    /// A device that computes the reference, and fails a job with M = 3 as the RTL fails one
    /// (EIO, ERROR 6 DMA_ERROR).
    struct Fake;

    impl Accel for Fake {
        fn gemm(
            &self,
            (m, n, k): (u32, u32, u32),
            a: &[i8],
            b: &[i8],
            c: &mut [i32],
            _timeout_ms: u32,
        ) -> Result<GemmOutcome, GemmError> {
            let o = GemmOutcome {
                cycles: 100 + u64::from(m),
                dma_wait_cycles: 10,
                device_ns: 1000,
                dev_error: 0,
            };
            if m == 3 {
                let outcome = GemmOutcome { dev_error: 6, ..o };
                return Err(GemmError {
                    err: std::io::Error::from_raw_os_error(libc::EIO),
                    outcome,
                });
            }
            c.copy_from_slice(&accel_tool::gemm::reference(
                m as usize, n as usize, k as usize, a, b,
            ));
            Ok(o)
        }
    }

    fn fakes(n: u32) -> Vec<(Fake, DeviceSlot)> {
        (0..n)
            .map(|i| {
                let slot = DeviceSlot {
                    path: format!("/dev/accel{i}").into(),
                    index: i,
                    engine: Engine::reported(4, 4, 64, 100),
                };
                (Fake, slot)
            })
            .collect()
    }

    /// Collects what the server writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A client that is gone: every write fails.
    struct Gone;

    impl Write for Gone {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Err(ErrorKind::BrokenPipe.into())
        }
    }

    /// Serves `input` as one session that the client half-closes after sending; the replies.
    fn session(server: &Server, input: Vec<u8>) -> Vec<(u32, Reply)> {
        let sink = Sink::default();
        server.connection(Cursor::new(input), sink.clone(), "test", Channel::Tcp);
        let out = sink.0.lock().unwrap().clone();
        let mut replies = Vec::new();
        let mut rest = &out[..];
        while !rest.is_empty() {
            let h = codec::decode_header(rest[..codec::HEADER_LEN].try_into().unwrap())
                .expect("reply header");
            let end = codec::HEADER_LEN + h.length as usize;
            let r = codec::decode_reply(&h, &rest[codec::HEADER_LEN..end]).expect("reply decodes");
            replies.push((h.id, r));
            rest = &rest[end..];
        }
        replies.sort_by_key(|(id, _)| *id);
        replies
    }

    fn job(m: u32, n: u32, k: u32, bias: bool) -> Job {
        let a = (0..m * k).map(|i| (i % 7) as i8 - 3).collect();
        let b = (0..k * n).map(|i| (i % 5) as i8 - 2).collect();
        Job {
            m,
            n,
            k,
            a,
            b,
            bias: bias.then(|| (0..n as i32).map(|j| j * 1000 - 7).collect()),
        }
    }

    fn error(r: &Reply) -> &WireError {
        match r {
            Reply::Error(e) => e,
            other => panic!("want an ERROR, got {other:?}"),
        }
    }

    #[test]
    fn jobs_errors_and_batches_on_two_devices() {
        let server = Server::start(fakes(2), 0).unwrap();
        let (g, lin, refused, big) = (
            job(4, 16, 8, false),
            job(5, 7, 3, true),
            job(3, 4, 4, false),
            job(1, 1, 65, false),
        );
        let mut input = codec::encode_info(1);
        input.extend(codec::encode_job(2, &g));
        input.extend(codec::encode_job(3, &lin));
        input.extend(codec::encode_job(4, &refused));
        input.extend(codec::encode_job(5, &big));
        let mut v9 = codec::encode_info(6);
        v9[4] = 9;
        input.extend(v9);
        input.extend(codec::encode_batch(
            7,
            &[g.clone(), refused.clone(), big.clone(), lin.clone()],
        ));
        input.extend(codec::encode_batch(8, &[]));
        let r = session(&server, input);
        let ids: Vec<u32> = r.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, (1..=8).collect::<Vec<u32>>(), "one reply per request");
        assert!(matches!(&r[0].1, Reply::Info(d) if d.len() == 2 && d[0].max_dim == 64));
        for (i, j) in [(1, &g), (2, &lin)] {
            match &r[i].1 {
                Reply::Result(res) => {
                    assert_eq!(res.c, codec::reference(j), "C of request {}", i + 1);
                    assert_eq!(
                        (res.cycles, res.dma_wait, res.device_ns),
                        (100 + u64::from(j.m), 10, 1000)
                    );
                    let p = predict(&Engine::reported(4, 4, 64, 100), Gemm::new(j.m, j.n, j.k));
                    assert_eq!(
                        (res.roofline, res.tiled, res.systolic),
                        (p.roofline, p.tiled, p.systolic)
                    );
                    assert!(res.device < 2);
                }
                other => panic!("{other:?}"),
            }
        }
        let e = error(&r[3].1);
        assert_eq!((e.code, e.device_error), (ErrorCode::Device, 6), "{e}");
        assert!(e.message.contains("DMA_ERROR"), "{e}");
        assert_eq!(
            error(&r[4].1).code,
            ErrorCode::BadSize,
            "k above the devices' MAX_DIM"
        );
        assert_eq!(error(&r[5].1).code, ErrorCode::Version);
        match &r[6].1 {
            Reply::Batch(e) => {
                assert_eq!(e.len(), 4);
                assert_eq!(e[0].as_ref().unwrap().c, codec::reference(&g));
                assert_eq!(e[1].as_ref().unwrap_err().code, ErrorCode::Device);
                assert_eq!(e[2].as_ref().unwrap_err().code, ErrorCode::BadSize);
                assert_eq!(e[3].as_ref().unwrap().c, codec::reference(&lin));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&r[7].1, Reply::Batch(e) if e.is_empty()));
    }

    #[test]
    fn a_bad_magic_ends_the_session_after_its_error() {
        let server = Server::start(fakes(1), 0).unwrap();
        let mut input = codec::encode_info(1);
        input.extend(b"XXXXXXXXXXXXXXXX");
        input.extend(codec::encode_info(3));
        let r = session(&server, input);
        assert_eq!(r.len(), 2, "nothing after the bad frame is read");
        assert_eq!((r[0].0, error(&r[0].1).code), (0, ErrorCode::BadFrame));
        assert!(matches!(&r[1].1, Reply::Info(_)));
        // A length above the limit: the ERROR has the frame's id.
        let r = session(
            &server,
            codec::Header::new(codec::kind::GEMM, 5, codec::MAX_PAYLOAD + 1)
                .encode()
                .to_vec(),
        );
        assert_eq!((r[0].0, error(&r[0].1).code), (5, ErrorCode::BadSize));
    }

    #[test]
    fn without_devices_every_job_is_no_device() {
        let server = Server::start(Vec::<(Fake, DeviceSlot)>::new(), 0).unwrap();
        let mut input = codec::encode_info(1);
        input.extend(codec::encode_job(2, &job(2, 2, 2, false)));
        input.extend(codec::encode_batch(
            3,
            &[job(2, 2, 2, true), job(1, 1, 2000, false)],
        ));
        let r = session(&server, input);
        assert!(matches!(&r[0].1, Reply::Info(d) if d.is_empty()));
        assert_eq!(error(&r[1].1).code, ErrorCode::NoDevice);
        match &r[2].1 {
            Reply::Batch(e) => {
                assert_eq!(e[0].as_ref().unwrap_err().code, ErrorCode::NoDevice);
                assert_eq!(
                    e[1].as_ref().unwrap_err().code,
                    ErrorCode::BadSize,
                    "size errors come first"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_client_gone_mid_job_ends_its_session_and_the_server_serves_the_next() {
        let server = Server::start(fakes(1), 0).unwrap();
        let mut input = Vec::new();
        for id in 0..50 {
            input.extend(codec::encode_job(id, &job(8, 8, 8, false)));
        }
        // Returns (it does not hang on the replies nobody reads).
        server.connection(Cursor::new(input), Gone, "gone", Channel::Tcp);
        let r = session(&server, codec::encode_job(9, &job(2, 3, 4, true)));
        assert_eq!(r.len(), 1);
        assert!(
            matches!(&r[0].1, Reply::Result(res) if res.c == codec::reference(&job(2, 3, 4, true)))
        );
    }
}
