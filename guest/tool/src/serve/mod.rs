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

use crate::ioctl::{device_error_name, Device};

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

/// Runs one job on `dev`: the RTL's GEMM, the bias, the models' predictions.
fn run_job(
    dev: &Device,
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

fn worker(dev: Device, slot: DeviceSlot, tasks: Receiver<Task>, timeout_ms: u32) {
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
    let (task_tx, task_rx) = unbounded::<Task>();
    let mut infos = Vec::new();
    let mut max_dim = cosim_gemm_abi::defaults::MAX_DIM;
    let mut started = 0;
    for path in devices {
        let (dev, slot) = open_device(path, opts.read_latency)?;
        max_dim = if started == 0 {
            slot.engine.max_dim
        } else {
            max_dim.min(slot.engine.max_dim)
        };
        infos.push(slot.engine);
        let rx = task_rx.clone();
        let timeout = opts.timeout_ms;
        std::thread::Builder::new()
            .name(format!("accel{}", slot.index))
            .spawn(move || worker(dev, slot, rx, timeout))
            .map_err(|e| format!("cannot start a worker thread: {e}"))?;
        started += 1;
    }
    drop(task_rx);
    let server = Server {
        devices: infos,
        max_dim,
        tasks: (started > 0).then_some(task_tx),
    };
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
