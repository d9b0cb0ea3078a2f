//! Test harness: QEMU under `-accel qtest` driven through the qtest text protocol, and a
//! scripted fake HDL peer: the protocol's `DeviceSession` over ZeroMQ (`DeviceLoop`, Device
//! side) plus a scripted responder.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use cosim_protocol::session::DeviceEvent;
use cosim_protocol::{
    BarDesc, BarFlags, Caps, DeviceConfig, DmaRead, GoodbyeReason, GuestAddr, Message, MmioRead, MmioReadResp,
    MsixConfig, Status,
};
use cosim_transport::{DeviceLoop, Endpoint, Side, Transport, ZmqOptions, ZmqTransport};
use crossbeam_channel::{Receiver, Sender};

/// Per-command timeout of the qtest protocol.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(15);

// ------------------------------------------------------------------------------------------
// Paths

pub fn qemu_bin() -> PathBuf {
    let p = std::env::var_os("COSIM_QEMU").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/qemu/qemu-system-x86_64")
    });
    assert!(
        p.exists(),
        "{} does not exist: build QEMU with the accelerator-pcie device first (`make qemu`)",
        p.display()
    );
    p
}

pub fn firmware_args() -> Vec<String> {
    let dirs = ["/usr/share/seabios", "/usr/share/qemu", "/usr/lib/ipxe/qemu"];
    assert!(
        dirs.iter().any(|d| Path::new(d).join("bios-256k.bin").exists()),
        "bios-256k.bin not found in {dirs:?}: install the firmware packages (`make deps`)"
    );
    dirs.iter().filter(|d| Path::new(d).is_dir()).flat_map(|d| ["-L".to_string(), d.to_string()]).collect()
}

/// A fresh temporary directory (removed on drop) for ipc sockets.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("cosim-qt-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }
    pub fn endpoint(&self, name: &str) -> String {
        format!("ipc://{}/{name}", self.0.display())
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ------------------------------------------------------------------------------------------
// The HDL's configuration used by the tests (docs/register-map.md) plus an I/O BAR.

pub const TEST_VENDOR: u16 = 0x1ded;
pub const TEST_DEVICE: u16 = 0xacc1;

pub fn test_config(device_id: u16) -> DeviceConfig {
    let mut bars = [BarDesc::ABSENT; 6];
    bars[0] = BarDesc::mem32(4096);
    bars[2] = BarDesc::mem64(16 * 1024, false);
    bars[4] = BarDesc { size: 32, flags: BarFlags::IO };
    DeviceConfig {
        vendor_id: TEST_VENDOR,
        device_id,
        subsystem_vendor_id: 0x1ded,
        subsystem_id: 0x0042,
        class_code: 0x12_00_00,
        revision: 1,
        bars,
        msix: MsixConfig { vectors: 4, table_bar: 2, table_offset: 0, pba_bar: 2, pba_offset: 0x2000 },
        clock_hz: TEST_CLOCK_HZ,
    }
}

/// The design clock the test peers report in CONFIG (not the 100 MHz default, so a test can tell).
pub const TEST_CLOCK_HZ: u64 = 125_000_000;

/// The value the default responder returns for a read (before masking to the access size).
pub fn default_read_value(bar: u8, offset: u64) -> u64 {
    0x8877_6655_4433_2211u64 ^ (u64::from(bar) << 60) ^ offset
}

// ------------------------------------------------------------------------------------------
// Fake HDL peer

/// What the fake peer saw, in order: the session events of its `DeviceSession` and the messages
/// the session delivered (MMIO reads and writes, DMA read completions, NIC frames, serial bytes,
/// RESET). INIT, CONFIG, HEARTBEAT and GOODBYE are the engine's and show only as session events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// A host's INIT started a session.
    SessionStarted { session: u64 },
    /// A message of the session for the device logic.
    Received(Message),
    /// The host ended the session with a GOODBYE that carried its number.
    SessionEnded { session: u64, reason: GoodbyeReason },
    /// The host was silent for the liveness timeout (the session is kept).
    HostLost,
    /// The host of the session is heard again.
    HostBack,
}

/// What the responder may do while answering an MMIO read (send DMA, wait for completions).
pub struct PeerCtx<'a> {
    link: &'a mut DeviceLoop<ZmqTransport>,
    events: &'a Sender<PeerEvent>,
    session: &'a mut u64,
}

impl PeerCtx<'_> {
    /// Sends a device-started message of the session (panics if the session refuses it).
    pub fn send(&mut self, m: &Message) {
        let sent = self.link.send(m.clone()).expect("peer send");
        assert!(sent, "fake peer: the session refused to send {:?} ({:?})", m.opcode(), self.link.engine().state());
    }
    /// Issues a DMA read and waits (5 s) for its completion; other events go to the event list.
    pub fn dma_read(&mut self, tag: u32, addr: u64, len: u32) -> Vec<u8> {
        self.send(&Message::DmaRead(DmaRead { tag, addr: GuestAddr(addr), len }));
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.link.poll(left) {
                Ok(Some(DeviceEvent::Deliver(Message::DmaReadResp(r)))) if r.tag == tag => {
                    assert_eq!(r.status, Status::Ok, "DMA read failed");
                    return r.data;
                }
                Ok(Some(ev)) => report(ev, self.session, self.events),
                Ok(None) | Err(_) => {}
            }
        }
        panic!("fake peer: no DMA read completion for tag {tag} within 5 s");
    }
}

/// Passes a session event to the test (`session`: the peer's current session number).
fn report(ev: DeviceEvent, session: &mut u64, events: &Sender<PeerEvent>) {
    let e = match ev {
        DeviceEvent::SessionStarted { session: s, .. } => {
            *session = s;
            PeerEvent::SessionStarted { session: s }
        }
        DeviceEvent::Deliver(m) => PeerEvent::Received(m),
        DeviceEvent::SessionEnded(reason) => PeerEvent::SessionEnded { session: std::mem::take(session), reason },
        DeviceEvent::HostLost => PeerEvent::HostLost,
        DeviceEvent::HostBack => PeerEvent::HostBack,
        DeviceEvent::Send(_) => unreachable!("DeviceLoop carries out sends itself"),
    };
    let _ = events.send(e);
}

pub type Responder = Box<dyn FnMut(&MmioRead, &mut PeerCtx<'_>) -> u64 + Send>;

enum PeerCmd {
    Send(Message),
    Raw(Vec<u8>),
}

/// A scripted HDL: the device side of the protocol is `DeviceSession` (through `DeviceLoop`:
/// CONFIG for INIT, versions, heartbeats, liveness, GOODBYE); the peer answers MMIO reads
/// through a responder and reports everything else as [`PeerEvent`]s.
pub struct FakePeer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    cmds: Sender<PeerCmd>,
    pub events: Receiver<PeerEvent>,
}

impl FakePeer {
    pub fn start(endpoint: &str, config: DeviceConfig) -> Self {
        Self::start_with(endpoint, config, Box::new(|r, _| default_read_value(r.bar.get(), r.offset)))
    }

    pub fn start_with(endpoint: &str, config: DeviceConfig, responder: Responder) -> Self {
        Self::start_opts(endpoint, config, responder, &ZmqOptions::default())
    }

    /// [`FakePeer::start_with`] with the peer's own transport options (its shared-memory spin).
    pub fn start_opts(endpoint: &str, config: DeviceConfig, mut responder: Responder, opts: &ZmqOptions) -> Self {
        let ep = Endpoint::parse(endpoint).expect("endpoint");
        let t = ZmqTransport::open(&ep, Side::Device, opts).expect("peer open");
        let mut link = DeviceLoop::device(t, format!("fake HDL {endpoint}"), Caps::NIC | Caps::SERIAL | Caps::MSIX, config);
        let stop = Arc::new(AtomicBool::new(false));
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded::<PeerCmd>();
        let (ev_tx, ev_rx) = crossbeam_channel::unbounded::<PeerEvent>();
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut session = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                while let Ok(c) = cmd_rx.try_recv() {
                    match c {
                        PeerCmd::Send(m) => {
                            if !matches!(link.send(m.clone()), Ok(true)) {
                                eprintln!("fake peer: {:?} not sent ({:?})", m.opcode(), link.engine().state());
                            }
                        }
                        PeerCmd::Raw(b) => {
                            let _ = link.transport().send_frame(&b);
                        }
                    }
                }
                match link.poll(Duration::from_millis(5)) {
                    Ok(Some(DeviceEvent::Deliver(Message::MmioRead(r)))) => {
                        let _ = ev_tx.send(PeerEvent::Received(Message::MmioRead(r)));
                        let data = responder(&r, &mut PeerCtx { link: &mut link, events: &ev_tx, session: &mut session });
                        // A read of a session that ended meanwhile is not answered (the engine refuses).
                        let _ = link.send(Message::MmioReadResp(MmioReadResp { tag: r.tag, status: Status::Ok, data }));
                    }
                    Ok(Some(ev)) => report(ev, &mut session, &ev_tx),
                    Ok(None) | Err(_) => {}
                }
            }
            // Dropped without GOODBYE: like a killed simulation.
        });
        Self { stop, thread: Some(thread), cmds: cmd_tx, events: ev_rx }
    }

    /// Sends a device-started message through the peer's session (logged if it refuses).
    pub fn send(&self, m: Message) {
        self.cmds.send(PeerCmd::Send(m)).expect("peer thread alive");
    }

    /// Sends raw bytes past the session (malformed or hostile frames).
    pub fn send_raw(&self, b: Vec<u8>) {
        self.cmds.send(PeerCmd::Raw(b)).expect("peer thread alive");
    }

    /// Waits for an event matching `pred` (others are discarded).
    pub fn expect<T>(&self, what: &str, timeout: Duration, mut pred: impl FnMut(&PeerEvent) -> Option<T>) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) => {
                    if let Some(v) = pred(&e) {
                        return Ok(v);
                    }
                }
                Err(_) => bail!("fake peer: no {what} within {timeout:?}"),
            }
        }
    }

    /// Waits for a delivered message matching `pred` (other events are discarded).
    pub fn expect_msg<T>(&self, what: &str, timeout: Duration, mut pred: impl FnMut(&Message) -> Option<T>) -> Result<T> {
        self.expect(what, timeout, |e| match e {
            PeerEvent::Received(m) => pred(m),
            _ => None,
        })
    }

    /// Waits for a session to start (a host's INIT); returns its number.
    pub fn expect_session(&self, what: &str, timeout: Duration) -> Result<u64> {
        self.expect(what, timeout, |e| match e {
            PeerEvent::SessionStarted { session } => Some(*session),
            _ => None,
        })
    }

    /// Discards everything received so far.
    pub fn clear(&self) {
        while self.events.try_recv().is_ok() {}
    }

    /// Stops the peer abruptly (no GOODBYE), as if the simulation were killed.
    pub fn kill(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ------------------------------------------------------------------------------------------
// QEMU under qtest

pub struct Qemu {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Qemu {
    /// Starts `qemu-system-x86_64 -M q35 -accel qtest -qtest stdio` with `args` (the devices).
    pub fn spawn(args: &[String]) -> Result<Self> {
        Self::spawn_env(args, &[])
    }

    /// [`Qemu::spawn`] with extra environment variables.
    pub fn spawn_env(args: &[String], env: &[(&str, String)]) -> Result<Self> {
        Self::spawn_bin(&qemu_bin(), args, env)
    }

    /// [`Qemu::spawn_env`] with another QEMU binary (the stock one of the vfio-user mode).
    pub fn spawn_bin(bin: &Path, args: &[String], env: &[(&str, String)]) -> Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.envs(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
        cmd.args(["-M", "q35", "-accel", "qtest", "-qtest", "stdio", "-display", "none", "-nodefaults", "-m", "128M"])
            .args(firmware_args())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("spawn qemu")?;
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("IRQ") {
                    continue;
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let s2 = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match stderr_pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        // qtest echoes every command on stderr ("[R +0.1] ..."); keep only the rest.
                        let text = String::from_utf8_lossy(&buf[..n]).to_string();
                        s2.lock().unwrap().push_str(&text);
                    }
                }
            }
        });
        Ok(Self { child, stdin, lines: rx, stderr })
    }

    /// Sends one qtest command and returns its reply line (after "OK").
    pub fn cmd(&mut self, c: &str) -> Result<String> {
        writeln!(self.stdin, "{c}").with_context(|| format!("qtest write {c:?} (QEMU gone?) stderr:\n{}", self.stderr_text()))?;
        self.stdin.flush()?;
        let line = self.lines.recv_timeout(CMD_TIMEOUT).map_err(|_| {
            anyhow!("qtest: no reply to {c:?} within {CMD_TIMEOUT:?}; stderr:\n{}", self.stderr_text())
        })?;
        match line.strip_prefix("OK") {
            Some(rest) => Ok(rest.trim().to_string()),
            None => bail!("qtest: {c:?} -> {line:?}"),
        }
    }

    fn cmd_u64(&mut self, c: &str) -> Result<u64> {
        let r = self.cmd(c)?;
        u64::from_str_radix(r.trim_start_matches("0x"), 16).with_context(|| format!("parse {r:?}"))
    }

    pub fn readb(&mut self, a: u64) -> Result<u8> {
        Ok(self.cmd_u64(&format!("readb {a:#x}"))? as u8)
    }
    pub fn readw(&mut self, a: u64) -> Result<u16> {
        Ok(self.cmd_u64(&format!("readw {a:#x}"))? as u16)
    }
    pub fn readl(&mut self, a: u64) -> Result<u32> {
        Ok(self.cmd_u64(&format!("readl {a:#x}"))? as u32)
    }
    pub fn readq(&mut self, a: u64) -> Result<u64> {
        self.cmd_u64(&format!("readq {a:#x}"))
    }
    pub fn write(&mut self, size: usize, a: u64, v: u64) -> Result<()> {
        let op = match size {
            1 => "writeb",
            2 => "writew",
            4 => "writel",
            8 => "writeq",
            _ => bail!("size {size}"),
        };
        self.cmd(&format!("{op} {a:#x} {v:#x}")).map(|_| ())
    }
    pub fn read_n(&mut self, size: usize, a: u64) -> Result<u64> {
        let op = match size {
            1 => "readb",
            2 => "readw",
            4 => "readl",
            8 => "readq",
            _ => bail!("size {size}"),
        };
        self.cmd_u64(&format!("{op} {a:#x}"))
    }
    pub fn inp(&mut self, size: usize, port: u16) -> Result<u32> {
        let op = match size {
            1 => "inb",
            2 => "inw",
            4 => "inl",
            _ => bail!("size {size}"),
        };
        Ok(self.cmd_u64(&format!("{op} {port:#x}"))? as u32)
    }
    pub fn outp(&mut self, size: usize, port: u16, v: u32) -> Result<()> {
        let op = match size {
            1 => "outb",
            2 => "outw",
            4 => "outl",
            _ => bail!("size {size}"),
        };
        self.cmd(&format!("{op} {port:#x} {v:#x}")).map(|_| ())
    }

    /// Reads guest memory.
    pub fn mem_read(&mut self, a: u64, len: usize) -> Result<Vec<u8>> {
        let r = self.cmd(&format!("read {a:#x} {len:#x}"))?;
        let hex = r.trim_start_matches("0x");
        (0..len).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(Into::into)).collect()
    }

    /// Writes guest memory.
    pub fn mem_write(&mut self, a: u64, data: &[u8]) -> Result<()> {
        let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
        self.cmd(&format!("write {a:#x} {:#x} 0x{hex}", data.len())).map(|_| ())
    }

    // PCI configuration space through 0xcf8/0xcfc (bus 0).
    fn cfg_addr(slot: u8, off: u8) -> u32 {
        0x8000_0000 | (u32::from(slot) << 11) | u32::from(off & 0xfc)
    }
    pub fn cfg_read(&mut self, slot: u8, off: u8, size: usize) -> Result<u32> {
        self.outp(4, 0xcf8, Self::cfg_addr(slot, off))?;
        self.inp(size, 0xcfc + u16::from(off & 3))
    }
    pub fn cfg_write(&mut self, slot: u8, off: u8, size: usize, v: u32) -> Result<()> {
        self.outp(4, 0xcf8, Self::cfg_addr(slot, off))?;
        self.outp(size, 0xcfc + u16::from(off & 3), v)
    }

    /// Finds a capability in the device's list.
    pub fn find_cap(&mut self, slot: u8, id: u8) -> Result<Option<u8>> {
        let mut ptr = self.cfg_read(slot, 0x34, 1)? as u8;
        for _ in 0..48 {
            if ptr == 0 {
                return Ok(None);
            }
            if self.cfg_read(slot, ptr, 1)? as u8 == id {
                return Ok(Some(ptr));
            }
            ptr = self.cfg_read(slot, ptr + 1, 1)? as u8;
        }
        Ok(None)
    }

    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('['))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until stderr contains `needle`.
    pub fn wait_stderr(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stderr_text().contains(needle) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("QEMU's stderr did not show {needle:?} within {timeout:?}; stderr:\n{}", self.stderr_text())
    }

    /// Waits for QEMU to exit (for realize failures); returns (success, stderr).
    pub fn wait_exit(mut self, timeout: Duration) -> Result<(bool, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                std::thread::sleep(Duration::from_millis(50)); // let the stderr reader finish
                return Ok((st.success(), self.stderr_text()));
            }
            if Instant::now() > deadline {
                bail!("QEMU still running after {timeout:?}; stderr:\n{}", self.stderr_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM (QEMU's clean shutdown).
    #[allow(unsafe_code)]
    pub fn terminate(&mut self) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `-device accelerator-pcie,...` arguments.
pub fn device_args(endpoint: &str, addr: &str, extra: &str) -> Vec<String> {
    vec!["-device".into(), format!("accelerator-pcie,id=acc{},endpoint={endpoint},addr={addr}{extra}", addr.replace('.', "_"))]
}

/// Guest addresses the tests assign to the BARs.
pub const BAR0_ADDR: u64 = 0xc000_0000;
pub const BAR2_ADDR: u64 = 0xc010_0000;
pub const BAR4_PORT: u16 = 0xc000;

/// Programs BAR0, BAR2 (64-bit) and BAR4 (I/O) of the device in `slot` and enables memory,
/// I/O and bus mastering. `base_shift` separates the BARs of a second device.
pub fn map_bars(q: &mut Qemu, slot: u8, base_shift: u64) -> Result<()> {
    q.cfg_write(slot, 0x10, 4, (BAR0_ADDR + base_shift) as u32)?;
    q.cfg_write(slot, 0x18, 4, (BAR2_ADDR + base_shift) as u32)?;
    q.cfg_write(slot, 0x1c, 4, 0)?;
    q.cfg_write(slot, 0x20, 4, u32::from(BAR4_PORT) + (base_shift >> 16) as u32)?;
    q.cfg_write(slot, 0x04, 2, 0x0007)?;
    Ok(())
}


/// Polls `f` every 10 ms until it returns `Some`, or fails after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
