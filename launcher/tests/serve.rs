//! Serve mode end to end: `cosim-launch --serve` boots the guest with `accel-tool serve` against
//! two GEMM simulations; this test is a client on the host (the codec of accel-tool,
//! docs/serve-protocol.md), over the default channel (TCP through QEMU's forward): INFO, a GEMM
//! 4x8 by 8x16 and a LINEAR with bias checked exactly against the CPU reference, bad requests
//! answered with ERROR while the next request still works, pipelined requests answered once each
//! and spread over both devices, a BATCH with a bad entry, a client that disconnects mid-job, then
//! SIGTERM: the launcher stops everything and exits 0. A shorter run checks the virtio-serial
//! channel on a Unix socket.
//!
//! Needs `make qemu sim-gemm guest launcher`; run by `make test-serve` (`--include-ignored`).

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use accel_tool::gemm::Rng;
use accel_tool::serve_codec::{self as codec, ErrorCode, Header, Job, JobResult, Reply, WireError};
use common::{fresh_dir, LAUNCH};
use serde_json::Value;

/// From starting the launcher to its COSIM-SERVE line (sim start, QEMU start, boot, serve start).
const START_LIMIT: Duration = Duration::from_secs(300);
/// One reply (the biggest job here is 64x64x64 on the simulated RTL).
const REPLY_LIMIT: Duration = Duration::from_secs(120);
/// From SIGTERM to the launcher's exit (QEMU 5 s, simulations 10 s each).
const STOP_LIMIT: Duration = Duration::from_secs(60);

/// The launcher in serve mode; SIGTERM, then SIGKILL, if the test ends without stopping it.
struct Launcher {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr_path: std::path::PathBuf,
}

impl Launcher {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGTERM, and the launcher exits 0 (a clean stop of a serve run).
    fn stop_cleanly(&mut self) {
        let st = self.terminate();
        assert_eq!(
            st.code(),
            Some(0),
            "exit status after SIGTERM; stderr:\n{}",
            self.stderr()
        );
    }

    /// Waits for SIGTERM's effect: the exit status, within [`STOP_LIMIT`].
    fn terminate(&mut self) -> std::process::ExitStatus {
        assert!(
            cosim_launch::procs::signal_pid(self.child.id(), libc::SIGTERM),
            "SIGTERM to the launcher"
        );
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("wait for the launcher") {
                return st;
            }
            assert!(
                t0.elapsed() < STOP_LIMIT,
                "the launcher did not exit within {STOP_LIMIT:?} of SIGTERM:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            cosim_launch::procs::signal_pid(self.child.id(), libc::SIGTERM);
            let t0 = Instant::now();
            while t0.elapsed() < STOP_LIMIT && self.child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn start(dir: &std::path::Path, args: &[&str]) -> Launcher {
    let stderr_path = dir.join("launcher.stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut child = Command::new(LAUNCH)
        .args(args)
        .arg("--log-dir")
        .arg(dir.join("logs"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start cosim-launch");
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Launcher {
        child,
        stdout: rx,
        stderr_path,
    }
}

/// The COSIM-SERVE line's JSON (and that it is the only stdout line so far).
fn serve_line(l: &mut Launcher) -> Value {
    let t0 = Instant::now();
    loop {
        match l.stdout.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let json = line
                    .strip_prefix("COSIM-SERVE ")
                    .unwrap_or_else(|| panic!("stdout line before COSIM-SERVE: {line:?}"));
                return serde_json::from_str(json)
                    .unwrap_or_else(|e| panic!("COSIM-SERVE line {line:?}: {e}"));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the launcher ended before COSIM-SERVE:\n{}", l.stderr())
            }
        }
        if let Some(st) = l.child.try_wait().expect("wait") {
            panic!(
                "the launcher exited ({st}) before COSIM-SERVE:\n{}",
                l.stderr()
            );
        }
        assert!(
            t0.elapsed() < START_LIMIT,
            "no COSIM-SERVE line within {START_LIMIT:?}:\n{}",
            l.stderr()
        );
    }
}

/// A stream to the server: a Unix socket (virtio-serial) or TCP.
trait Stream: Read + Write {}
impl Stream for UnixStream {}
impl Stream for TcpStream {}

/// Where the COSIM-SERVE line says the server is.
#[derive(Clone)]
enum Where {
    Unix(std::path::PathBuf),
    Tcp(u16),
}

impl Where {
    fn of(line: &Value) -> Where {
        match (line["path"].as_str(), line["port"].as_u64()) {
            (Some(p), None) => Where::Unix(p.into()),
            (None, Some(port)) => {
                assert_eq!(line["host"], "127.0.0.1", "{line}");
                Where::Tcp(u16::try_from(port).expect("a port"))
            }
            _ => panic!("COSIM-SERVE line with neither a path nor a port: {line}"),
        }
    }
}

/// A client connection.
struct Client {
    s: Box<dyn Stream>,
}

impl Client {
    fn connect(to: &Where) -> Client {
        let s: Box<dyn Stream> = match to {
            Where::Unix(p) => {
                let s = UnixStream::connect(p).expect("connect to the server's socket");
                s.set_read_timeout(Some(REPLY_LIMIT)).expect("read timeout");
                Box::new(s)
            }
            Where::Tcp(port) => {
                let s = TcpStream::connect(("127.0.0.1", *port)).expect("connect to the server");
                s.set_read_timeout(Some(REPLY_LIMIT)).expect("read timeout");
                s.set_nodelay(true).expect("nodelay");
                Box::new(s)
            }
        };
        Client { s }
    }

    fn send(&mut self, frame: &[u8]) {
        self.s.write_all(frame).expect("send a request");
    }

    /// The next reply: its id and what it says.
    fn recv(&mut self) -> (u32, Reply) {
        let mut h = [0u8; codec::HEADER_LEN];
        self.s
            .read_exact(&mut h)
            .unwrap_or_else(|e| panic!("reply header within {REPLY_LIMIT:?}: {e}"));
        let h: Header = codec::decode_header(&h).expect("a valid reply header");
        assert_eq!(h.version, codec::VERSION);
        let mut p = vec![0u8; h.length as usize];
        self.s.read_exact(&mut p).expect("reply payload");
        (
            h.id,
            codec::decode_reply(&h, &p)
                .unwrap_or_else(|| panic!("reply kind {:#x} does not decode", h.kind)),
        )
    }

    fn call(&mut self, frame: &[u8], id: u32) -> Reply {
        self.send(frame);
        let (got, r) = self.recv();
        assert_eq!(got, id, "reply id");
        r
    }
}

fn job(m: u32, n: u32, k: u32, bias: bool, seed: u64) -> Job {
    let mut rng = Rng::new(seed);
    let mut a = vec![0i8; (m * k) as usize];
    let mut b = vec![0i8; (k * n) as usize];
    rng.fill_i8(&mut a);
    rng.fill_i8(&mut b);
    let bias = bias.then(|| (0..n).map(|_| rng.next_u64() as i32).collect());
    Job {
        m,
        n,
        k,
        a,
        b,
        bias,
    }
}

/// A result for `j`: C exact, the RTL's counters and the three predictions present.
fn check_result(j: &Job, r: &JobResult) {
    assert_eq!((r.m, r.n), (j.m, j.n));
    assert!(
        r.c == codec::reference(j),
        "C of {}x{}x{} (bias: {}) differs from the CPU reference",
        j.m,
        j.n,
        j.k,
        j.bias.is_some()
    );
    assert!(
        r.cycles >= (u64::from(j.m) * u64::from(j.n) * u64::from(j.k)).div_ceil(16),
        "cycles {}",
        r.cycles
    );
    assert!(r.dma_wait < r.cycles && r.device_ns > 0, "{r:?}");
    assert!(r.roofline > 0 && r.tiled > 0 && r.systolic > 0, "{r:?}");
}

fn expect_result(r: Reply) -> JobResult {
    match r {
        Reply::Result(r) => r,
        other => panic!("want a result, got {other:?}"),
    }
}

fn expect_error(r: Reply, code: ErrorCode) -> WireError {
    match r {
        Reply::Error(e) if e.code == code => e,
        other => panic!("want an ERROR {}, got {other:?}", code.name()),
    }
}

#[test]
#[ignore = "needs make qemu sim-gemm guest launcher: run by make test-serve"]
fn serve_mode_exact_results_errors_pipelining_and_a_clean_stop() {
    let dir = fresh_dir("serve");
    let mut l = start(&dir, &["--serve", "--devices", "2"]);
    let line = serve_line(&mut l);
    assert_eq!(line["devices"], 2, "{line}");
    let to = Where::of(&line);
    assert!(
        matches!(to, Where::Tcp(_)),
        "TCP is the default channel: {line}"
    );
    let mut c = Client::connect(&to);

    // INFO: two devices, the RTL's configuration and the simulations' read latency (the shell's
    // default: the launcher no longer passes one).
    match c.call(&codec::encode_info(1), 1) {
        Reply::Info(devs) => {
            assert_eq!(devs.len(), 2);
            for d in devs {
                assert_eq!(
                    (d.rows, d.cols, d.max_dim, d.nb, d.am),
                    (4, 4, 1024, 64, 32),
                    "{d:?}"
                );
                assert_eq!(
                    (d.read_latency_cycles, d.clock_hz, d.dma_bytes_per_cycle),
                    (cosim_dpi_bridge::DEFAULT_DMA_LATENCY as u32, 100_000_000, 8),
                    "{d:?}"
                );
            }
        }
        other => panic!("INFO: {other:?}"),
    }

    // GEMM 4x8 by 8x16 and a LINEAR 32x128 by 128x256 with bias, exact.
    let g = job(4, 16, 8, false, 1);
    check_result(&g, &expect_result(c.call(&codec::encode_job(2, &g), 2)));
    let lin = job(32, 256, 128, true, 2);
    let r = expect_result(c.call(&codec::encode_job(3, &lin), 3));
    check_result(&lin, &r);
    let err = (r.tiled as f64 - r.cycles as f64).abs() * 100.0 / r.cycles as f64;
    assert!(
        err < 10.0,
        "tiled model {} against {} RTL cycles",
        r.tiled,
        r.cycles
    );

    // Bad requests: an ERROR each, with the request's id; the connection stays usable.
    let big = Job {
        m: 2000,
        a: vec![0; 2000 * 8],
        ..g.clone()
    };
    let e = expect_error(c.call(&codec::encode_job(4, &big), 4), ErrorCode::BadSize);
    assert!(e.message.contains("2000"), "{e}");
    let mut v2 = codec::encode_info(5);
    v2[4] = 2;
    expect_error(c.call(&v2, 5), ErrorCode::Version);
    let mut unknown = codec::encode_info(6);
    unknown[6] = 0x42;
    expect_error(c.call(&unknown, 6), ErrorCode::BadFrame);
    let mut short = codec::encode_job(7, &g);
    short[12] -= 1; // the header says one byte less than the operands need
    short.pop();
    expect_error(c.call(&short, 7), ErrorCode::BadFrame);
    check_result(&g, &expect_result(c.call(&codec::encode_job(8, &g), 8)));

    // Pipelining: 12 requests before the first reply; each answered once, exact, on both devices.
    let jobs: Vec<(u32, Job)> = (0..12u32)
        .map(|i| {
            (
                100 + i,
                job(8 + 4 * i, 24, 16 + i, i % 2 == 1, 10 + u64::from(i)),
            )
        })
        .collect();
    let mut frames = Vec::new();
    for (id, j) in &jobs {
        frames.extend(codec::encode_job(*id, j));
    }
    c.send(&frames);
    let mut seen = BTreeSet::new();
    let mut devices = BTreeSet::new();
    for _ in 0..jobs.len() {
        let (id, reply) = c.recv();
        let (_, j) = jobs
            .iter()
            .find(|(i, _)| *i == id)
            .unwrap_or_else(|| panic!("reply with unknown id {id}"));
        assert!(seen.insert(id), "second reply for id {id}");
        let r = expect_result(reply);
        check_result(j, &r);
        devices.insert(r.device);
    }
    assert_eq!(
        devices,
        BTreeSet::from([0, 1]),
        "pipelined jobs ran on both devices"
    );

    // BATCH: two jobs and an entry of a bad size, answered in order in one reply.
    let b1 = job(16, 16, 16, false, 30);
    let b2 = job(20, 12, 9, true, 31);
    let bad = Job {
        k: 1025,
        a: vec![0; 1025],
        b: vec![0; 1025],
        ..job(1, 1, 1, false, 32)
    };
    match c.call(&codec::encode_batch(9, &[b1.clone(), bad, b2.clone()]), 9) {
        Reply::Batch(entries) => {
            assert_eq!(entries.len(), 3);
            check_result(&b1, entries[0].as_ref().expect("entry 0"));
            assert_eq!(
                entries[1].as_ref().expect_err("entry 1").code,
                ErrorCode::BadSize
            );
            check_result(&b2, entries[2].as_ref().expect("entry 2"));
        }
        other => panic!("BATCH: {other:?}"),
    }

    // A client that leaves mid-job: the server serves the next connection.
    drop(c);
    let mut gone = Client::connect(&to);
    gone.send(&codec::encode_job(1, &job(64, 64, 64, false, 40)));
    gone.send(&codec::encode_job(2, &job(64, 64, 64, false, 41)));
    drop(gone);
    let mut c = Client::connect(&to);
    let g2 = job(64, 64, 64, true, 42);
    check_result(&g2, &expect_result(c.call(&codec::encode_job(10, &g2), 10)));

    // A wrong magic: the ERROR, then the server closes this connection (and serves the next).
    c.send(b"XXXXXXXXXXXXXXXX");
    let (id, r) = c.recv();
    assert_eq!(id, 0);
    expect_error(r, ErrorCode::BadFrame);
    let mut rest = Vec::new();
    assert_eq!(
        c.s.read_to_end(&mut rest).expect("read to the end"),
        0,
        "the server closed the connection"
    );
    let mut c = Client::connect(&to);
    assert!(matches!(c.call(&codec::encode_info(11), 11), Reply::Info(d) if d.len() == 2));
    drop(c);

    // SIGTERM: a clean stop, nothing else on stdout.
    l.stop_cleanly();
    let extra: Vec<String> = l.stdout.try_iter().collect();
    assert!(extra.is_empty(), "stdout after COSIM-SERVE: {extra:?}");
    let results: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("logs/results.json")).expect("results.json"),
    )
    .expect("json");
    assert_eq!(results["ok"], true, "{results}");
}

#[test]
#[ignore = "needs make qemu sim-gemm guest launcher: run by make test-serve"]
fn serve_mode_over_virtio_serial_on_a_unix_socket() {
    let dir = fresh_dir("serve-serial");
    let mut l = start(
        &dir,
        &["--serve", "--serve-channel", "serial", "--devices", "1"],
    );
    let line = serve_line(&mut l);
    assert_eq!(line["devices"], 1, "{line}");
    let to = Where::of(&line);
    assert!(matches!(to, Where::Unix(_)), "{line}");
    let mut c = Client::connect(&to);
    assert!(matches!(c.call(&codec::encode_info(1), 1), Reply::Info(d) if d.len() == 1));
    let g = job(4, 16, 8, false, 1);
    check_result(&g, &expect_result(c.call(&codec::encode_job(2, &g), 2)));
    let lin = job(17, 33, 9, true, 2);
    check_result(&lin, &expect_result(c.call(&codec::encode_job(3, &lin), 3)));
    let mut v2 = codec::encode_info(4);
    v2[4] = 9;
    expect_error(c.call(&v2, 4), ErrorCode::Version);
    // Pipelined, on one device: each answered once.
    let jobs: Vec<Job> = (0..4u64)
        .map(|i| job(8, 8, 8, i % 2 == 0, 20 + i))
        .collect();
    for (i, j) in jobs.iter().enumerate() {
        c.send(&codec::encode_job(10 + i as u32, j));
    }
    let mut seen = BTreeSet::new();
    for _ in 0..jobs.len() {
        let (id, r) = c.recv();
        check_result(&jobs[(id - 10) as usize], &expect_result(r));
        assert!(seen.insert(id), "second reply for {id}");
    }
    // The next client, after this one left with nothing outstanding.
    drop(c);
    let mut c = Client::connect(&to);
    check_result(&g, &expect_result(c.call(&codec::encode_job(5, &g), 5)));
    drop(c);
    l.stop_cleanly();
}

/// The same server through an unpatched QEMU (`--mode vfio-user`, the stock QEMU of `make
/// qemu-stock`): the guest's server is reached through QEMU's own virtio-serial, the jobs run on
/// the RTL through vfio-user-pci, exact against the CPU reference.
#[test]
#[ignore = "needs make qemu-stock sim-gemm guest launcher: run by make test-serve"]
fn serve_mode_through_an_unpatched_qemu() {
    let dir = fresh_dir("serve-vfio-user");
    let mut l = start(&dir, &["--mode", "vfio-user", "--serve", "--serve-channel", "serial", "--devices", "1"]);
    let line = serve_line(&mut l);
    assert_eq!(line["devices"], 1, "{line}");
    let mut c = Client::connect(&Where::of(&line));
    assert!(matches!(c.call(&codec::encode_info(1), 1), Reply::Info(d) if d.len() == 1));
    let g = job(16, 24, 40, false, 7);
    check_result(&g, &expect_result(c.call(&codec::encode_job(2, &g), 2)));
    let lin = job(9, 33, 17, true, 8);
    check_result(&lin, &expect_result(c.call(&codec::encode_job(3, &lin), 3)));
    drop(c);
    l.stop_cleanly();
}
