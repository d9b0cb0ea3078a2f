//! Real ZeroMQ between two processes: this test process is the host side (the protocol's
//! `HostSession` through `HostLoop`, or raw frames where a test plays a hostile or foreign host),
//! `cosim-zmq-peer` (a child process) is the device side. Every test runs over ipc and over tcp,
//! with timeouts.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use cosim_protocol::session::{DownReason, HostEvent, HostState};
use cosim_protocol::*;
use cosim_transport::{Endpoint, HostLoop, Side, Transport, TransportError, ZmqOptions, ZmqTransport};

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

/// The host side: the protocol's `HostSession` over ZeroMQ (`HostLoop`), as QEMU runs it.
struct Host {
    link: HostLoop<ZmqTransport>,
}

impl Host {
    fn open(endpoint: &str) -> Result<Self> {
        Ok(Self::over(ZmqTransport::open(&Endpoint::parse(endpoint)?, Side::Host, &ZmqOptions::default())?))
    }

    /// A host session on an open transport; its first INIT goes out at the first poll.
    fn over(t: ZmqTransport) -> Self {
        Self { link: HostLoop::host(t, "test host", Caps::all(), STEP) }
    }

    /// Waits for an event matching `f`, skipping the others; a failed first handshake fails.
    fn wait_for<T>(&mut self, what: &str, mut f: impl FnMut(&HostEvent) -> Option<T>) -> Result<T> {
        let deadline = Instant::now() + STEP;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Some(ev) = self.link.poll(left)? {
                if let Some(v) = f(&ev) {
                    return Ok(v);
                }
                if let HostEvent::Failed(e) = ev {
                    bail!("the first handshake failed while waiting for {what}: {e}");
                }
            }
        }
        bail!("timed out after {STEP:?} waiting for {what}")
    }

    /// Waits until the session is up; returns the device's CONFIG.
    fn wait_up(&mut self) -> Result<Config> {
        self.wait_for("the session to come up (CONFIG)", |e| match e {
            HostEvent::Up(c) => Some(c.clone()),
            _ => None,
        })
    }

    fn write(&mut self, offset: u64, data: u64) -> Result<()> {
        let bar = BarIndex::new(0).unwrap();
        let sent = self.link.send(Message::MmioWrite(MmioWrite { bar, size: AccessSize::B8, offset, data }))?;
        ensure!(sent, "MMIO write refused by the host session: no session ({:?})", self.link.engine().state());
        Ok(())
    }

    fn read(&mut self, bar: u8, offset: u64) -> Result<u64> {
        let bar = BarIndex::new(bar).unwrap();
        let Some(tag) = self.link.act(|s| s.mmio_read(bar, offset, AccessSize::B8))? else {
            bail!("MMIO read without a session ({:?})", self.link.engine().state());
        };
        self.wait_for("MMIO read completion", |e| match e {
            HostEvent::ReadDone(r) if r.tag == tag => Some(Ok(r.data)),
            HostEvent::ReadAborted { tag: t } if *t == tag => Some(Err(anyhow!("read {tag} aborted: the session ended"))),
            _ => None,
        })?
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

/// Waits on a raw transport (no session engine) for a message matching `f`.
fn raw_wait_for<T>(t: &mut ZmqTransport, what: &str, mut f: impl FnMut(&Message) -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + STEP;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if let Some(m) = t.recv(left)? {
            if let Some(v) = f(&m) {
                return Ok(v);
            }
        }
    }
    bail!("timed out after {STEP:?} waiting for {what}")
}

fn endpoints(name: &str) -> Vec<(String, tempdir::TempDir)> {
    let dir = tempdir::TempDir::new(name);
    let ipc = format!("ipc://{}/dev", dir.path().display());
    let port = cosim_transport::free_port_pair("127.0.0.1").unwrap();
    vec![(ipc, dir), (format!("tcp://127.0.0.1:{port}"), tempdir::TempDir::new(name))]
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
        let peer = Peer::spawn(&ep)?;
        let mut host = Host::open(&ep)?;
        let cfg = host.wait_up().with_context(|| format!("handshake over {ep}"))?;
        assert_eq!(cfg.device.vendor_id, 0x1ded);
        host.writes_arrive_in_order(1000, 1)?;
        // GOODBYE carrying our session ends the peer's session, and so the peer.
        host.link.close()?;
        assert!(peer.wait_exit(STEP)?.success());
    }
    Ok(())
}

#[test]
fn host_first_then_device() -> Result<()> {
    for (ep, _dir) in endpoints("hostfirst") {
        let mut host = Host::open(&ep)?;
        // The first INIT goes out before the device exists; ZeroMQ queues it until the device
        // binds. No poll until the device answered, so the engine sends no repeat meanwhile.
        assert_eq!(host.link.poll(Duration::ZERO)?, None);
        let HostState::Handshake { session, .. } = *host.link.engine().state() else {
            bail!("host not in a handshake: {:?}", host.link.engine().state());
        };
        std::thread::sleep(Duration::from_millis(300));
        let _peer = Peer::spawn(&ep)?;
        raw_wait_for(host.link.transport(), "CONFIG for the INIT queued before the device existed", |m| {
            matches!(m, Message::Config(c) if c.session == session).then_some(())
        })
        .with_context(|| format!("over {ep}"))?;
        // That CONFIG went past the engine: its repeated INIT (same session) is answered again.
        let cfg = host.wait_up()?;
        assert_eq!(cfg.session, session);
        host.writes_arrive_in_order(500, 2)?;
    }
    Ok(())
}

#[test]
fn device_restarts_mid_stream() -> Result<()> {
    for (ep, _dir) in endpoints("devrestart") {
        let peer = Peer::spawn(&ep)?;
        let mut host = Host::open(&ep)?;
        let first = host.wait_up()?.session;
        host.writes_arrive_in_order(300, 3)?;
        // Writes sent to a dying device are not promised; kill it mid-stream.
        for i in 0..100 {
            host.write(i * 8, i)?;
        }
        peer.kill();
        let killed = Instant::now();
        for i in 0..50 {
            host.write(i * 8, i)?; // still in the session: queued for whoever binds next
        }
        let peer2 = Peer::spawn(&ep)?;
        // Protocol 2 notices a restart by the liveness timeout: the new device's heartbeats carry
        // no session of ours and do not keep the old session alive.
        let why = host.wait_for("the session to go down", |e| match e {
            HostEvent::Down(r) => Some(r.clone()),
            _ => None,
        })?;
        let noticed = killed.elapsed();
        assert_eq!(why, DownReason::Lost, "over {ep}");
        assert!(noticed >= Duration::from_millis(900), "device loss noticed {noticed:?} after the kill, before the 1 s liveness timeout");
        let second = host.wait_up().with_context(|| format!("re-handshake over {ep}"))?.session;
        assert_ne!(first, second, "a new session after the restart");
        // Everything sent in the new session arrives, in order; the exact count (1000, not up to
        // 1150) shows that writes queued before the new INIT were discarded, not applied.
        host.writes_arrive_in_order(1000, 4)?;
        host.link.close()?;
        assert!(peer2.wait_exit(STEP)?.success());
    }
    Ok(())
}

#[test]
fn host_restarts_mid_stream() -> Result<()> {
    for (ep, _dir) in endpoints("hostrestart") {
        let peer = Peer::spawn(&ep)?;
        let mut host = Host::open(&ep)?;
        host.wait_up()?;
        host.writes_arrive_in_order(200, 5)?;
        for i in 0..100 {
            host.write(i, i)?;
        }
        drop(host); // the host goes away without GOODBYE (as if QEMU were killed)
        let gone = Instant::now();
        let mut host = Host::open(&ep)?;
        host.wait_up().with_context(|| format!("handshake of the restarted host over {ep}"))?;
        // The device keeps a live session against other hosts' INITs (prev_session 0) until
        // its host is silent for the liveness timeout; the new host repeats INIT meanwhile.
        let took = gone.elapsed();
        assert!(took >= Duration::from_millis(800), "the device took another host's INIT {took:?} after its host went silent");
        host.writes_arrive_in_order(1000, 6)?;
        host.link.close()?;
        assert!(peer.wait_exit(STEP)?.success());
    }
    Ok(())
}

#[test]
fn malformed_frames_are_reported_and_the_peer_keeps_running() -> Result<()> {
    for (ep, _dir) in endpoints("malformed") {
        let peer = Peer::spawn(&ep)?;
        let mut host = Host::open(&ep)?;
        host.wait_up()?;
        // Raw frames, past the host's engine.
        let t = host.link.transport();
        t.send_frame(b"garbage")?;
        t.send_frame(&[b'C', b'S', VERSION_MAJOR, 0x7f, 0, 0, 0, 0])?;
        let mut wrong_version = Message::Reset.encode_to_vec();
        wrong_version[2] = 9;
        t.send_frame(&wrong_version)?;
        assert_eq!(host.read(0, 0x10)?, 3, "malformed frames counted by the peer");
        peer.expect_line("unknown opcode 0x7f")?;
        host.writes_arrive_in_order(10, 7)?;
    }
    Ok(())
}

#[test]
fn another_major_is_refused_by_name_before_a_session_and_dropped_in_one() -> Result<()> {
    let other = VERSION_MAJOR + 1;
    for (ep, _dir) in endpoints("version") {
        let peer = Peer::spawn(&ep)?;
        // A host of another major, by hand: its INIT is refused for its session, naming both.
        let mut t = ZmqTransport::open(&Endpoint::parse(&ep)?, Side::Host, &ZmqOptions::default())?;
        t.send(&Message::Init(Init { major: other, minor: 3, caps: Caps::empty(), session: 1, prev_session: 0 }))?;
        raw_wait_for(&mut t, "GOODBYE(Refused) for session 1", |m| {
            matches!(m, Message::Goodbye(Goodbye { reason: GoodbyeReason::Refused, session: 1 })).then_some(())
        })?;
        let line = peer.expect_line("refusing")?;
        assert!(line.contains(&format!("{other}.3")) && line.contains(&format!("{VERSION_MAJOR}.{VERSION_MINOR}")), "{line}");
        // A frame whose header has another major fails to decode; with no session the device
        // refuses it (GOODBYE with session 0), naming both versions.
        let mut f = Message::Reset.encode_to_vec();
        f[2] = other;
        t.send_frame(&f)?;
        raw_wait_for(&mut t, "GOODBYE(Refused) for no session", |m| {
            matches!(m, Message::Goodbye(Goodbye { reason: GoodbyeReason::Refused, session: 0 })).then_some(())
        })?;
        let line = peer.expect_line("refusing")?;
        assert!(line.contains(&format!("{other}.x")) && line.contains(&format!("{VERSION_MAJOR}.x")), "{line}");
        // In a live session the same frame is only dropped (a stray frame must not refuse a host
        // that is being served): no GOODBYE, the session stays up.
        let mut host = Host::over(t);
        host.wait_up()?;
        host.read(0, 0x0)?;
        let foreign = host.link.engine().stats().drops.foreign;
        host.link.transport().send_frame(&f)?;
        assert_eq!(host.read(0, 0x10)?, 2, "both frames of another version counted by the peer");
        peer.expect_line(&format!("we speak {VERSION_MAJOR}.x, the peer sent {other}.x"))?;
        assert_eq!(host.link.engine().stats().drops.foreign, foreign, "the device sent a GOODBYE (or another foreign frame)");
        assert!(host.link.engine().is_up());
    }
    Ok(())
}

#[test]
fn dma_writes_are_never_overtaken_by_the_interrupt() -> Result<()> {
    for (ep, _dir) in endpoints("ordering") {
        let _peer = Peer::spawn(&ep)?;
        let mut host = Host::open(&ep)?;
        host.wait_up()?;
        let (len, count) = (4096u64, 200u64);
        let bar = BarIndex::new(2).unwrap();
        ensure!(host.link.send(Message::MmioWrite(MmioWrite { bar, size: AccessSize::B8, offset: len, data: count }))?);
        let mut seen = 0u64;
        host.wait_for("MSI-X after the DMA writes", |e| match e {
            HostEvent::Deliver(Message::DmaWrite(w)) => {
                assert_eq!(w.addr.0, seen * len, "DMA writes arrive in order");
                assert_eq!(w.data[1], (seen + 1) as u8);
                seen += 1;
                None
            }
            HostEvent::Deliver(Message::Msix(_)) => Some(()),
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
        host.wait_up()?;
        let jumbo: Vec<u8> = (0..MAX_FRAME_LEN).map(|i| (i * 7) as u8).collect();
        ensure!(host.link.send(Message::NicFrame(jumbo.clone()))?);
        let back = host.wait_for("echoed frame", |e| match e {
            HostEvent::Deliver(Message::NicFrame(f)) => Some(f.clone()),
            _ => None,
        })?;
        assert_eq!(back, jumbo);
        ensure!(host.link.send(Message::Serial(b"hello\r\n".to_vec()))?);
        let s = host.wait_for("echoed serial", |e| match e {
            HostEvent::Deliver(Message::Serial(b)) => Some(b.clone()),
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
