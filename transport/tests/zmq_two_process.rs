//! Real ZeroMQ between two processes: this test process is the host side, `cosim-zmq-peer` (a
//! child process) is the device side. Every test runs over ipc and over tcp, with timeouts.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cosim_protocol::*;
use cosim_transport::{Endpoint, Side, Transport, TransportError, ZmqOptions, ZmqTransport};

const STEP: Duration = Duration::from_secs(10);

struct Peer {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Peer {
    fn spawn(endpoint: &str) -> Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cosim-zmq-peer"))
            .args(["--endpoint", endpoint, "--max-seconds", "60"])
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning cosim-zmq-peer")?;
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[peer] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let peer = Self { child, stderr: rx };
        peer.expect_line("ready endpoint=")?;
        Ok(peer)
    }

    fn expect_line(&self, needle: &str) -> Result<String> {
        let deadline = Instant::now() + STEP;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return Ok(l),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        bail!("peer did not print {needle:?} within {STEP:?}")
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait_exit(mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("peer did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The host side of a session, driving the protocol by hand.
struct Host {
    t: ZmqTransport,
    tag: u32,
}

impl Host {
    fn open(endpoint: &str) -> Result<Self> {
        let ep = Endpoint::parse(endpoint)?;
        Ok(Self { t: ZmqTransport::open(&ep, Side::Host, &ZmqOptions::default())?, tag: 0 })
    }

    /// Waits for a message matching `f`, skipping heartbeats and anything else.
    fn wait_for<T>(&mut self, what: &str, mut f: impl FnMut(&Message) -> Option<T>) -> Result<T> {
        let deadline = Instant::now() + STEP;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Some(m) = self.t.recv(left)? {
                if let Some(v) = f(&m) {
                    return Ok(v);
                }
            }
        }
        bail!("timed out after {STEP:?} waiting for {what}")
    }

    fn handshake(&mut self) -> Result<DeviceConfig> {
        let session = liveness::random_id();
        self.t.send(&Message::Init(Init { major: VERSION_MAJOR, minor: VERSION_MINOR, caps: Caps::all(), session }))?;
        let cfg = self.wait_for("CONFIG", |m| match m {
            Message::Config(c) if c.session == session => Some(c.device.clone()),
            _ => None,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn write(&mut self, offset: u64, data: u64) -> Result<()> {
        let bar = BarIndex::new(0).unwrap();
        Ok(self.t.send(&Message::MmioWrite(MmioWrite { bar, size: AccessSize::B8, offset, data }))?)
    }

    fn read(&mut self, bar: u8, offset: u64) -> Result<u64> {
        self.tag = self.tag.wrapping_add(1);
        let tag = self.tag;
        let bar = BarIndex::new(bar).unwrap();
        self.t.send(&Message::MmioRead(MmioRead { tag, bar, size: AccessSize::B8, offset }))?;
        self.wait_for("MMIO read completion", |m| match m {
            Message::MmioReadResp(r) if r.tag == tag => Some(r.data),
            _ => None,
        })
    }

    /// Sends `n` writes and checks, by the peer's count and order-sensitive hash, that all
    /// arrived in order.
    fn writes_arrive_in_order(&mut self, n: u64, salt: u64) -> Result<()> {
        let mut hash = 0u64;
        for i in 0..n {
            let (offset, data) = (i * 8 % 0x1000, i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt);
            self.write(offset, data)?;
            hash = hash.wrapping_mul(0x100_0000_01b3).wrapping_add(data ^ offset);
        }
        assert_eq!(self.read(0, 0x0)?, n, "writes counted by the peer");
        assert_eq!(self.read(0, 0x8)?, hash, "order-sensitive hash of the writes");
        Ok(())
    }
}

fn endpoints(name: &str) -> Vec<(String, tempdir::TempDir)> {
    let dir = tempdir::TempDir::new(name);
    let ipc = format!("ipc://{}/dev", dir.path().display());
    let port = free_port_pair();
    vec![(ipc, dir), (format!("tcp://127.0.0.1:{port}"), tempdir::TempDir::new(name))]
}

/// A base port whose neighbour is free too.
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free pair of TCP ports on 127.0.0.1");
}

mod tempdir {
    pub struct TempDir(std::path::PathBuf);
    impl TempDir {
        pub fn new(name: &str) -> Self {
            let p = std::env::temp_dir().join(format!("cosim-{name}-{}-{:x}", std::process::id(), cosim_protocol::liveness::random_id()));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn device_first_then_host() -> Result<()> {
    for (ep, _dir) in endpoints("devfirst") {
        let _peer = Peer::spawn(&ep)?;
        let mut host = Host::open(&ep)?;
        let cfg = host.handshake().with_context(|| format!("handshake over {ep}"))?;
        assert_eq!(cfg.vendor_id, 0x1ded);
        host.writes_arrive_in_order(1000, 1)?;
        host.t.send(&Message::Goodbye(GoodbyeReason::Shutdown))?;
    }
    Ok(())
}

#[test]
fn host_first_then_device() -> Result<()> {
    for (ep, _dir) in endpoints("hostfirst") {
        let mut host = Host::open(&ep)?;
        let session = 42;
        // INIT is sent before the device exists; ZeroMQ queues it until the device binds.
        host.t.send(&Message::Init(Init { major: VERSION_MAJOR, minor: VERSION_MINOR, caps: Caps::all(), session }))?;
        std::thread::sleep(Duration::from_millis(300));
        let _peer = Peer::spawn(&ep)?;
        host.wait_for("CONFIG", |m| matches!(m, Message::Config(c) if c.session == session).then_some(()))
            .with_context(|| format!("over {ep}"))?;
        host.writes_arrive_in_order(500, 2)?;
    }
    Ok(())
}

#[test]
fn device_restarts_mid_stream() -> Result<()> {
    for (ep, _dir) in endpoints("devrestart") {
        let peer = Peer::spawn(&ep)?;
        let mut host = Host::open(&ep)?;
        host.handshake()?;
        let first = host.wait_for("heartbeat", |m| match m {
            Message::Heartbeat(h) => Some(h.instance),
            _ => None,
        })?;
        host.writes_arrive_in_order(300, 3)?;
        // Writes sent to a dying device are not promised; kill it mid-stream.
        for i in 0..100 {
            host.write(i * 8, i)?;
        }
        peer.kill();
        for i in 0..50 {
            host.write(i * 8, i)?; // queued for whoever binds next; the new device discards them
        }
        let peer2 = Peer::spawn(&ep)?;
        // The restart is visible as a heartbeat with a new instance number.
        let second = host.wait_for("heartbeat of the new device", |m| match m {
            Message::Heartbeat(h) if h.instance != first => Some(h.instance),
            _ => None,
        })?;
        assert_ne!(first, second);
        host.handshake().with_context(|| format!("re-handshake over {ep}"))?;
        // Everything sent in the new session arrives, in order; the exact count (1000, not 1150)
        // shows that writes queued before the new INIT were discarded, not applied.
        host.writes_arrive_in_order(1000, 4)?;
        host.t.send(&Message::Goodbye(GoodbyeReason::Shutdown))?;
        assert!(peer2.wait_exit(STEP)?.success());
    }
    Ok(())
}

#[test]
fn host_restarts_mid_stream() -> Result<()> {
    for (ep, _dir) in endpoints("hostrestart") {
        let peer = Peer::spawn(&ep)?;
        let mut host = Host::open(&ep)?;
        host.handshake()?;
        host.writes_arrive_in_order(200, 5)?;
        for i in 0..100 {
            host.write(i, i)?;
        }
        drop(host); // the host goes away without GOODBYE (as if QEMU were killed)
        let mut host = Host::open(&ep)?;
        host.handshake().with_context(|| format!("handshake of the restarted host over {ep}"))?;
        host.writes_arrive_in_order(1000, 6)?;
        host.t.send(&Message::Goodbye(GoodbyeReason::Shutdown))?;
        assert!(peer.wait_exit(STEP)?.success());
    }
    Ok(())
}

#[test]
fn malformed_frames_are_reported_and_the_peer_keeps_running() -> Result<()> {
    for (ep, _dir) in endpoints("malformed") {
        let peer = Peer::spawn(&ep)?;
        let mut host = Host::open(&ep)?;
        host.handshake()?;
        host.t.send_frame(b"garbage")?;
        host.t.send_frame(&[b'C', b'S', 1, 0x7f, 0, 0, 0, 0])?;
        let mut wrong_version = Message::Reset.encode_to_vec();
        wrong_version[2] = 9;
        host.t.send_frame(&wrong_version)?;
        assert_eq!(host.read(0, 0x10)?, 3, "malformed frames counted by the peer");
        peer.expect_line("unknown opcode 0x7f")?;
        host.writes_arrive_in_order(10, 7)?;
    }
    Ok(())
}

#[test]
fn init_with_another_major_is_refused_by_name() -> Result<()> {
    for (ep, _dir) in endpoints("version") {
        let peer = Peer::spawn(&ep)?;
        let mut host = Host::open(&ep)?;
        host.t.send(&Message::Init(Init { major: VERSION_MAJOR + 1, minor: 3, caps: Caps::empty(), session: 1 }))?;
        host.wait_for("GOODBYE(Refused)", |m| matches!(m, Message::Goodbye(GoodbyeReason::Refused)).then_some(()))?;
        let line = peer.expect_line("refusing")?;
        assert!(line.contains(&format!("{}.3", VERSION_MAJOR + 1)) && line.contains(&format!("{VERSION_MAJOR}.{VERSION_MINOR}")), "{line}");
        // A frame from a peer of another major version is rejected by the decoder, naming both.
        let mut f = Message::Reset.encode_to_vec();
        f[2] = VERSION_MAJOR + 1;
        host.t.send_frame(&f)?;
        peer.expect_line(&format!("we speak {VERSION_MAJOR}.x, the peer sent {}.x", VERSION_MAJOR + 1))?;
    }
    Ok(())
}

#[test]
fn dma_writes_are_never_overtaken_by_the_interrupt() -> Result<()> {
    for (ep, _dir) in endpoints("ordering") {
        let _peer = Peer::spawn(&ep)?;
        let mut host = Host::open(&ep)?;
        host.handshake()?;
        let (len, count) = (4096u64, 200u64);
        host.t.send(&Message::MmioWrite(MmioWrite {
            bar: BarIndex::new(2).unwrap(),
            size: AccessSize::B8,
            offset: len,
            data: count,
        }))?;
        let mut seen = 0u64;
        host.wait_for("MSI-X after the DMA writes", |m| match m {
            Message::DmaWrite(w) => {
                assert_eq!(w.addr.0, seen * len, "DMA writes arrive in order");
                assert_eq!(w.data[1], (seen + 1) as u8);
                seen += 1;
                None
            }
            Message::Msix(_) => Some(()),
            _ => None,
        })?;
        assert_eq!(seen, count, "every DMA write arrived before the MSI-X");
    }
    Ok(())
}

#[test]
fn nic_frames_and_serial_bytes_both_ways() -> Result<()> {
    for (ep, _dir) in endpoints("nic") {
        let _peer = Peer::spawn(&ep)?;
        let mut host = Host::open(&ep)?;
        host.handshake()?;
        let jumbo: Vec<u8> = (0..MAX_FRAME_LEN).map(|i| (i * 7) as u8).collect();
        host.t.send(&Message::NicFrame(jumbo.clone()))?;
        let back = host.wait_for("echoed frame", |m| match m {
            Message::NicFrame(f) => Some(f.clone()),
            _ => None,
        })?;
        assert_eq!(back, jumbo);
        host.t.send(&Message::Serial(b"hello\r\n".to_vec()))?;
        let s = host.wait_for("echoed serial", |m| match m {
            Message::Serial(b) => Some(b.clone()),
            _ => None,
        })?;
        assert_eq!(s, b"hello\r\n");
    }
    Ok(())
}

#[test]
fn send_to_an_absent_peer_times_out_instead_of_blocking() -> Result<()> {
    let dir = tempdir::TempDir::new("absent");
    let ep = Endpoint::parse(&format!("ipc://{}/nobody", dir.path().display()))?;
    let opts = ZmqOptions { send_timeout: Duration::from_millis(200), hwm: 4, ..ZmqOptions::default() };
    let mut t = ZmqTransport::open(&ep, Side::Host, &opts)?;
    let start = Instant::now();
    let mut err = None;
    for _ in 0..10_000 {
        if let Err(e) = t.send(&Message::Reset) {
            err = Some(e);
            break;
        }
    }
    assert!(matches!(err, Some(TransportError::SendTimeout(_))), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(t.recv(Duration::from_millis(50))?, None);
    Ok(())
}

#[test]
fn bad_endpoints_give_clear_errors() {
    let e = ZmqTransport::open(&Endpoint::parse("ipc:///nonexistent-dir/x").unwrap(), Side::Device, &ZmqOptions::default())
        .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
}
