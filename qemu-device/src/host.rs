//! The device logic: session with the HDL, MMIO requests, and serving what the HDL starts.
//!
//! Session rules (docs/protocol.md, "Session"): INIT -> CONFIG at realize; heartbeats every
//! 100 ms while a session is up; peer lost after 1000 ms of silence -> reads return all ones;
//! a returning or restarted peer gets a new INIT and must announce the configuration the PCI
//! function was realized with.

use std::time::{Duration, Instant};

use cosim_protocol::liveness::random_id;
use cosim_protocol::session::{
    describe_down, DownReason, HandshakeError, HostEvent, HostSession, HostSessionConfig, HostSessionStats, HostState, Timing,
};
use cosim_protocol::{
    AccessSize, BarIndex, Caps, ConfigError, DeviceConfig, DmaRead, DmaReadResp, Message, MmioWrite, Status, MAX_DMA_LEN,
    MAX_FRAME_LEN, MAX_SERIAL_LEN,
};
use cosim_transport::{MemTransport, Transport, TransportError, ZmqTransport};

use crate::ops::QemuOps;
use crate::stats::LatencyHistogram;

/// Log target for problems caused by the HDL peer.
const PEER: &str = "cosim::peer";
/// Log target for problems caused by the guest.
const GUEST: &str = "cosim::guest";
/// Messages handled per [`HostDevice::poll`] before yielding back to QEMU's main loop.
const POLL_BUDGET: usize = 4096;
/// Longest single wait inside an MMIO read, so heartbeats and liveness keep running.
const READ_SLICE: Duration = Duration::from_millis(20);

/// A transport as the host side uses it.
pub trait HostLink: Transport {
    /// True if a frame may be waiting (ZeroMQ: `ZMQ_EVENTS`, which also re-arms `ZMQ_FD`).
    fn has_pending(&self) -> bool {
        false
    }
}

impl HostLink for ZmqTransport {
    fn has_pending(&self) -> bool {
        self.readable().unwrap_or(false)
    }
}

impl HostLink for MemTransport {}

impl<T: HostLink + ?Sized> HostLink for Box<T> {
    fn has_pending(&self) -> bool {
        (**self).has_pending()
    }
}

/// Per-device settings (from QEMU's properties).
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    /// Name used in messages (the device id or "accelerator-pcie").
    pub name: String,
    /// The endpoint, as shown in messages.
    pub endpoint: String,
    /// INIT and MMIO read timeout.
    pub timeout: Duration,
    /// Capabilities we announce (NIC if a netdev is attached, SERIAL if a chardev is).
    pub caps: Caps,
}

/// Why the device could not be realized. Each message says what to start or fix.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// No CONFIG arrived in time.
    #[error(
        "no answer from the HDL simulation at {endpoint} within {timeout_ms} ms: start the simulation \
         with this endpoint before QEMU (or while QEMU waits), or raise timeout-ms="
    )]
    InitTimeout {
        /// Endpoint.
        endpoint: String,
        /// Timeout.
        timeout_ms: u128,
    },
    /// The configuration cannot be presented on PCI.
    #[error("the HDL simulation at {endpoint} announced an impossible PCI configuration: {source}; fix the configuration in the HDL")]
    Config {
        /// Endpoint.
        endpoint: String,
        /// What is wrong.
        source: ConfigError,
    },
    /// Protocol major versions differ.
    #[error(
        "the HDL simulation at {endpoint} speaks protocol {theirs}.x but this QEMU speaks {ours}.x: \
         rebuild QEMU (make qemu) and the simulation from the same cosim tree"
    )]
    Version {
        /// Endpoint.
        endpoint: String,
        /// Their major.
        theirs: u8,
        /// Our major.
        ours: u8,
    },
    /// The peer sent GOODBYE(Refused).
    #[error("the HDL simulation at {endpoint} refused the session (protocol version?); see its log")]
    Refused {
        /// Endpoint.
        endpoint: String,
    },
    /// The transport failed.
    #[error("link to the HDL simulation at {endpoint}: {source}")]
    Transport {
        /// Endpoint.
        endpoint: String,
        /// Cause.
        source: TransportError,
    },
}

/// Why an MMIO read returned no data ([`HostDevice::mmio_read_checked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No session with the HDL (lost, said goodbye, or reconnecting).
    #[error("no session with the HDL simulation")]
    NoSession,
    /// The HDL completed the read with an error status.
    #[error("completed with status {0:?}")]
    Status(Status),
    /// No completion within the timeout.
    #[error("no completion within the timeout")]
    Timeout,
}

/// State of the session with the HDL, as the device presents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Session up: requests are forwarded.
    Connected,
    /// INIT sent to a returning peer; waiting for its CONFIG.
    AwaitingConfig {
        /// The session number of that INIT.
        session: u64,
    },
    /// No peer: reads return all ones.
    Disconnected,
    /// The peer came back with a configuration other than the realized one (or refused us);
    /// stays disconnected until it restarts.
    Mismatch,
}

/// Counters of one device (read while running with [`HostDevice::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// MMIO reads completed by the HDL (any status).
    pub mmio_reads: u64,
    /// MMIO reads answered with all ones without a completion (no session, timeout).
    pub mmio_reads_failed: u64,
    /// MMIO writes sent.
    pub mmio_writes: u64,
    /// DMA reads served.
    pub dma_reads: u64,
    /// Bytes returned to DMA reads.
    pub dma_read_bytes: u64,
    /// DMA writes applied (or refused by QEMU).
    pub dma_writes: u64,
    /// Bytes of DMA writes.
    pub dma_write_bytes: u64,
    /// MSI-X interrupts signalled.
    pub irqs: u64,
    /// NIC frames from the HDL.
    pub frames_rx: u64,
    /// NIC frames to the HDL.
    pub frames_tx: u64,
    /// Serial bytes from the HDL.
    pub serial_rx: u64,
    /// Serial bytes to the HDL.
    pub serial_tx: u64,
    /// Messages that could not be sent (transport error: the peer is not receiving).
    pub send_failures: u64,
    /// MMIO accesses refused because another thread held the device for longer than the
    /// timeout (QEMU's device layer counts them, see [`HostDevice::count_refused`]).
    pub accesses_refused: u64,
    /// Latency of the MMIO reads counted in `mmio_reads`, request to completion.
    pub read_latency: LatencyHistogram,
}

/// The device: one session with one HDL simulation, driven by the shared
/// [`HostSession`] engine (docs/protocol.md, "Session rules").
pub struct HostDevice<L: HostLink, Q: QemuOps> {
    link: L,
    ops: Q,
    opts: DeviceOptions,
    session: HostSession,
    /// The MMIO read this device waits for, and its outcome once known.
    waiting: Option<u32>,
    outcome: Option<Result<u64, ReadError>>,
    failed: Option<HandshakeError>,
    stats: DeviceStats,
}

impl<L: HostLink, Q: QemuOps> HostDevice<L, Q> {
    /// Runs the INIT exchange on `link` (INIT repeated every 200 ms) and returns the device with
    /// the HDL's configuration. Waits at most `opts.timeout`.
    pub fn connect(link: L, ops: Q, opts: DeviceOptions) -> Result<Self, DeviceError> {
        let now = Instant::now();
        let session = HostSession::new(
            HostSessionConfig {
                name: format!("{} (HDL at {})", opts.name, opts.endpoint),
                caps: opts.caps,
                instance: random_id(),
                seed: random_id() ^ u64::from(std::process::id()),
                handshake_timeout: opts.timeout,
                timing: Timing::default(),
            },
            now,
        );
        let mut dev = Self {
            link,
            ops,
            opts,
            session,
            waiting: None,
            outcome: None,
            failed: None,
            stats: DeviceStats::default(),
        };
        loop {
            dev.run_events();
            if dev.session.is_up() {
                tracing::info!(target: PEER, endpoint = %dev.opts.endpoint, config = ?dev.config(), "HDL configuration received");
                return Ok(dev);
            }
            if let Some(e) = dev.failed.take() {
                let endpoint = dev.opts.endpoint.clone();
                return Err(match e {
                    HandshakeError::Timeout(t) => DeviceError::InitTimeout { endpoint, timeout_ms: t.as_millis() },
                    HandshakeError::Version { ours, theirs } => DeviceError::Version { endpoint, theirs, ours },
                    HandshakeError::Refused => DeviceError::Refused { endpoint },
                    HandshakeError::Config(source) => DeviceError::Config { endpoint, source },
                });
            }
            let now = Instant::now();
            let wait = dev.session.next_timeout(now).saturating_duration_since(now).min(Duration::from_millis(100));
            match dev.link.recv(wait) {
                Ok(m) => dev.feed(Ok(m)),
                Err(e @ TransportError::Decode(_)) => dev.feed(Err(e)),
                Err(source) => return Err(DeviceError::Transport { endpoint: dev.opts.endpoint.clone(), source }),
            }
            dev.session.handle_timeout(Instant::now());
        }
    }

    /// The configuration the device was realized with.
    pub fn config(&self) -> &DeviceConfig {
        // The session engine pins the first CONFIG; `connect` returns only after it.
        self.session.config().expect("a HostDevice exists only after its first CONFIG")
    }

    /// The peer's capabilities.
    pub fn peer_caps(&self) -> Caps {
        self.session.peer_caps()
    }

    /// Current session state.
    pub fn state(&self) -> LinkState {
        match self.session.state() {
            HostState::Up { .. } => LinkState::Connected,
            HostState::Handshake { session, .. } => LinkState::AwaitingConfig { session: *session },
            HostState::Down(DownReason::ConfigChanged { .. } | DownReason::Refused(_)) | HostState::Failed(_) => {
                LinkState::Mismatch
            }
            HostState::Down(_) => LinkState::Disconnected,
        }
    }

    /// The session engine's state (why it is down, for example).
    pub fn session_state(&self) -> &HostState {
        self.session.state()
    }

    /// The options the device was created with (name, endpoint, timeout).
    pub fn options(&self) -> &DeviceOptions {
        &self.opts
    }

    /// Counters of the device.
    pub fn stats(&self) -> DeviceStats {
        self.stats
    }

    /// Adds `n` MMIO accesses the layer above refused without reaching the device (it stayed
    /// busy with another thread's access).
    pub fn count_refused(&mut self, n: u64) {
        self.stats.accesses_refused += n;
    }

    /// Counters of the session: sessions, losses, dropped frames by reason.
    pub fn session_stats(&self) -> HostSessionStats {
        self.session.stats()
    }

    /// The transport (tests use it to check for pending frames).
    pub fn link(&self) -> &L {
        &self.link
    }

    /// Mutable access to the transport (test doubles send raw frames with it).
    pub fn link_mut(&mut self) -> &mut L {
        &mut self.link
    }

    /// The QEMU services (tests inspect the fake).
    pub fn ops(&self) -> &Q {
        &self.ops
    }

    /// Mutable access to the QEMU services.
    pub fn ops_mut(&mut self) -> &mut Q {
        &mut self.ops
    }

    /// An MMIO read of `size` bytes at `offset` of `bar`. Blocks until the completion arrives
    /// (serving DMA, MSI-X and everything else the HDL sends meanwhile) or the timeout passes.
    /// Returns all ones when the HDL is absent, answers with an error status, or times out.
    pub fn mmio_read(&mut self, bar: BarIndex, offset: u64, size: AccessSize) -> u64 {
        match self.mmio_read_checked(bar, offset, size, self.opts.timeout) {
            Ok(v) => v,
            Err(_) => size.mask(),
        }
    }

    /// [`HostDevice::mmio_read`] that says why it returned no data, with its own timeout.
    pub fn mmio_read_checked(&mut self, bar: BarIndex, offset: u64, size: AccessSize, timeout: Duration) -> Result<u64, ReadError> {
        self.run_events();
        let started = Instant::now();
        let Some(tag) = self.session.mmio_read(bar, offset, size) else {
            self.stats.mmio_reads_failed += 1;
            tracing::debug!(target: PEER, bar = bar.get(), offset = format_args!("{offset:#x}"), "read without a session: all ones");
            return Err(ReadError::NoSession);
        };
        let span = tracing::debug_span!("mmio_read", tag, bar = bar.get(), offset = format_args!("{offset:#x}"), len = size.bytes());
        let _g = span.enter();
        self.waiting = Some(tag);
        self.outcome = None;
        let _in_flight = crate::stats::READS_IN_FLIGHT.enter();
        self.run_events();
        let deadline = Instant::now() + timeout;
        let result = loop {
            if let Some(r) = self.outcome.take() {
                break r.map(|v| v & size.mask());
            }
            let now = Instant::now();
            if now >= deadline {
                self.session.abandon_read(tag);
                tracing::error!(
                    target: PEER,
                    "{}: MMIO read of BAR{} offset {offset:#x} ({} bytes, tag {tag}) got no completion from the HDL at {} within {} ms; returning all ones",
                    self.opts.name, bar.get(), size.bytes(), self.opts.endpoint, timeout.as_millis()
                );
                break Err(ReadError::Timeout);
            }
            let wait = deadline.min(self.session.next_timeout(now)).saturating_duration_since(now).min(READ_SLICE);
            // The wait touches only the link: QEMU's lock is free meanwhile (what arrives is
            // handled below, with the lock held again).
            let link = &mut self.link;
            let r = self.ops.unlocked(|| link.recv(wait));
            self.feed(r);
            self.session.handle_timeout(Instant::now());
            self.run_events();
        };
        self.waiting = None;
        match result {
            Ok(_) | Err(ReadError::Status(_)) => {
                self.stats.mmio_reads += 1;
                self.stats.read_latency.record(started.elapsed());
            }
            Err(_) => self.stats.mmio_reads_failed += 1,
        }
        if self.link.has_pending() {
            self.ops.schedule_poll();
        }
        result
    }

    /// A posted MMIO write (dropped while disconnected).
    pub fn mmio_write(&mut self, bar: BarIndex, offset: u64, size: AccessSize, data: u64) {
        let data = data & size.mask();
        tracing::trace!(bar = bar.get(), offset = format_args!("{offset:#x}"), len = size.bytes(), data = format_args!("{data:#x}"), "mmio_write");
        if self.session.send(Message::MmioWrite(MmioWrite { bar, size, offset, data })) {
            self.stats.mmio_writes += 1;
            self.run_events();
        } else {
            tracing::debug!(target: PEER, bar = bar.get(), offset = format_args!("{offset:#x}"), "write without a session: dropped");
        }
    }

    /// Device reset (PCI or system reset): forwarded to the HDL.
    pub fn reset(&mut self) {
        if self.session.send(Message::Reset) {
            tracing::debug!(target: PEER, "reset forwarded");
            self.run_events();
        }
    }

    /// A frame from the netdev to the HDL's NIC.
    pub fn nic_receive(&mut self, frame: &[u8]) {
        if frame.is_empty() || frame.len() > MAX_FRAME_LEN {
            tracing::warn!(target: GUEST, len = frame.len(), "NIC frame of impossible length dropped");
            return;
        }
        if self.session.send(Message::NicFrame(frame.to_vec())) {
            self.stats.frames_tx += 1;
            self.run_events();
        }
    }

    /// Bytes from the chardev to the HDL's UART.
    pub fn serial_receive(&mut self, data: &[u8]) {
        for chunk in data.chunks(MAX_SERIAL_LEN) {
            if !self.session.send(Message::Serial(chunk.to_vec())) {
                return;
            }
            self.stats.serial_tx += chunk.len() as u64;
        }
        self.run_events();
    }

    /// Drains everything the HDL sent (QEMU's main loop calls this when the notification fd is
    /// readable, and from a bottom half after [`QemuOps::schedule_poll`]).
    pub fn poll(&mut self) {
        let mut handled = 0;
        loop {
            if handled >= POLL_BUDGET {
                self.ops.schedule_poll();
                return;
            }
            match self.link.recv(Duration::ZERO) {
                Ok(None) => {
                    if !self.link.has_pending() {
                        return;
                    }
                }
                r => {
                    handled += 1;
                    let fatal = matches!(r, Err(ref e) if !matches!(e, TransportError::Decode(_)));
                    self.feed(r);
                    self.run_events();
                    if fatal {
                        return;
                    }
                }
            }
        }
    }

    /// Serves the HDL for up to `wait`: returns as soon as something was handled (or at once
    /// when `wait` is zero). Used by test harnesses that wait for an interrupt or a frame.
    pub fn service(&mut self, wait: Duration) {
        let now = Instant::now();
        let wait = wait.min(self.session.next_timeout(now).saturating_duration_since(now));
        let r = self.link.recv(wait);
        let got = !matches!(r, Ok(None));
        self.feed(r);
        self.run_events();
        if got {
            self.poll();
        }
        self.tick(Instant::now());
    }

    /// Periodic work (every 50 ms or sooner): heartbeats, liveness, INIT repeats.
    pub fn tick(&mut self, now: Instant) {
        self.session.handle_timeout(now);
        self.run_events();
    }

    /// Says goodbye to the HDL (QEMU is removing the device or quitting). Returns a one-line
    /// report of the frames dropped on the link when there were any; the caller prints it
    /// (at QEMU's exit the logging machinery may already be torn down, so no logging here).
    pub fn shutdown(&mut self) -> Option<String> {
        self.session.close();
        self.run_events();
        let s = self.session.stats();
        (s.drops.total() > 0).then(|| {
            format!(
                "{}: frames dropped on the link to {}: {} (sessions {}, losses {}); device: {:?}",
                self.opts.name, self.opts.endpoint, s.drops, s.sessions, s.losses, self.stats
            )
        })
    }

    /// Answers a DMA read that [`QemuOps::defer_dma_read`] held back.
    pub fn complete_dma_read(&mut self, r: DmaRead) {
        let resp = self.serve_dma_read(&r);
        if self.session.send(Message::DmaReadResp(resp)) {
            self.run_events();
        }
    }

    fn feed(&mut self, r: Result<Option<Message>, TransportError>) {
        let now = Instant::now();
        match r {
            Ok(Some(m)) => self.session.handle_message(now, m),
            Ok(None) => {}
            Err(TransportError::Decode(e)) => self.session.handle_decode_error(now, e),
            Err(e) => tracing::error!(target: PEER, "{}: receive from the HDL at {} failed: {e}", self.opts.name, self.opts.endpoint),
        }
    }

    /// Carries out what the session engine asked for, in order.
    fn run_events(&mut self) {
        while let Some(ev) = self.session.poll_event() {
            match ev {
                HostEvent::Send(m) => {
                    if let Err(e) = self.link.send(&m) {
                        self.stats.send_failures += 1;
                        if self.stats.send_failures.is_power_of_two() {
                            tracing::warn!(target: PEER, "{}: sending {:?} to the HDL at {} failed ({} so far): {e}",
                                self.opts.name, m.opcode(), self.opts.endpoint, self.stats.send_failures);
                        }
                    }
                }
                // The configuration is pinned by the engine; a session after the first is a reconnect.
                HostEvent::Up(_) => {
                    if self.session.stats().sessions > 1 {
                        tracing::warn!(target: PEER, "{}: reconnected to the HDL simulation at {}", self.opts.name, self.opts.endpoint);
                    }
                }
                HostEvent::ReadDone(r) => {
                    if self.waiting == Some(r.tag) {
                        self.outcome = Some(match r.status {
                            Status::Ok => Ok(r.data),
                            s => {
                                tracing::warn!(target: PEER, status = ?s, "MMIO read completed with an error status; all ones");
                                Err(ReadError::Status(s))
                            }
                        });
                    }
                }
                HostEvent::ReadAborted { tag } => {
                    if self.waiting == Some(tag) {
                        self.outcome = Some(Err(ReadError::NoSession));
                    }
                }
                HostEvent::Deliver(m) => self.on_device_message(m),
                HostEvent::Down(why) => {
                    tracing::debug!(target: PEER, "{}: session down: {}", self.opts.name, describe_down(&why));
                }
                HostEvent::Failed(e) => self.failed = Some(e),
            }
        }
    }

    fn serve_dma_read(&mut self, r: &DmaRead) -> DmaReadResp {
        let len = r.len as usize;
        if len == 0 || len > MAX_DMA_LEN {
            tracing::warn!(target: PEER, tag = r.tag, len, "DMA read of impossible length");
            return DmaReadResp { tag: r.tag, status: Status::CompleterAbort, data: Vec::new() };
        }
        let mut buf = vec![0u8; len];
        match self.ops.dma_read(r.addr, &mut buf) {
            Ok(()) => {
                self.stats.dma_reads += 1;
                self.stats.dma_read_bytes += len as u64;
                DmaReadResp { tag: r.tag, status: Status::Ok, data: buf }
            }
            Err(e) => {
                tracing::warn!(target: GUEST, tag = r.tag, "{e} (bus mastering off or no memory there)");
                DmaReadResp { tag: r.tag, status: Status::UnsupportedRequest, data: Vec::new() }
            }
        }
    }

    /// Device-started traffic of the session.
    fn on_device_message(&mut self, msg: Message) {
        match msg {
            Message::DmaRead(r) => {
                if self.ops.defer_dma_read(&r) {
                    return;
                }
                let resp = self.serve_dma_read(&r);
                self.session.send(Message::DmaReadResp(resp));
            }
            Message::DmaWrite(w) => {
                self.stats.dma_writes += 1;
                self.stats.dma_write_bytes += w.data.len() as u64;
                if let Err(e) = self.ops.dma_write(w.addr, &w.data) {
                    tracing::warn!(target: GUEST, "{e} (bus mastering off or no memory there)");
                }
            }
            Message::Msix(m) => {
                let vectors = self.config().msix.vectors;
                if m.vector >= vectors {
                    tracing::warn!(target: PEER, vector = m.vector, vectors, "MSI-X vector out of range dropped");
                    return;
                }
                self.stats.irqs += 1;
                self.ops.msix_notify(m.vector);
            }
            Message::NicFrame(f) => {
                self.stats.frames_rx += 1;
                self.ops.nic_send(&f);
            }
            Message::Serial(b) => {
                self.stats.serial_rx += b.len() as u64;
                self.ops.serial_write(&b);
            }
            other => tracing::warn!(target: PEER, op = ?other.opcode(), "unexpected message from the session engine"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use cosim_protocol::{
        BarDesc, Config, DmaRead, DmaWrite, Goodbye, GoodbyeReason, GuestAddr, Heartbeat, Init, MmioRead, MmioReadResp, Msix,
        MsixConfig, VERSION_MAJOR,
    };

    use super::*;
    use crate::ops::DmaError;

    type Answer = Box<dyn FnMut(&Message) -> Vec<Message> + Send>;

    /// A scripted peer inside the transport: `answer` turns each message we send into replies.
    struct ScriptLink {
        sent: Vec<Message>,
        inbox: VecDeque<Vec<u8>>,
        answer: Answer,
    }

    impl Transport for ScriptLink {
        fn send_frame(&mut self, frame: &[u8]) -> Result<(), TransportError> {
            let m = Message::decode(frame).expect("we send valid frames");
            for r in (self.answer)(&m) {
                self.inbox.push_back(r.encode_to_vec());
            }
            self.sent.push(m);
            Ok(())
        }
        fn recv_frame(&mut self, _timeout: Duration) -> Result<Option<Vec<u8>>, TransportError> {
            Ok(self.inbox.pop_front())
        }
    }
    impl HostLink for ScriptLink {}

    #[derive(Default)]
    struct FakeQemu {
        mem: Vec<u8>,
        msix: Vec<u16>,
        frames: Vec<Vec<u8>>,
        serial: Vec<u8>,
    }

    impl QemuOps for FakeQemu {
        fn dma_read(&mut self, addr: GuestAddr, buf: &mut [u8]) -> Result<(), DmaError> {
            let a = addr.0 as usize;
            let src = self.mem.get(a..a + buf.len()).ok_or(DmaError { addr, len: buf.len() })?;
            buf.copy_from_slice(src);
            Ok(())
        }
        fn dma_write(&mut self, addr: GuestAddr, data: &[u8]) -> Result<(), DmaError> {
            let a = addr.0 as usize;
            let dst = self.mem.get_mut(a..a + data.len()).ok_or(DmaError { addr, len: data.len() })?;
            dst.copy_from_slice(data);
            Ok(())
        }
        fn msix_notify(&mut self, vector: u16) {
            self.msix.push(vector);
        }
        fn nic_send(&mut self, frame: &[u8]) {
            self.frames.push(frame.to_vec());
        }
        fn serial_write(&mut self, data: &[u8]) {
            self.serial.extend_from_slice(data);
        }
        fn schedule_poll(&mut self) {}
    }

    fn cfg() -> DeviceConfig {
        let mut bars = [BarDesc::ABSENT; 6];
        bars[0] = BarDesc::mem32(4096);
        bars[2] = BarDesc::mem64(16384, false);
        DeviceConfig {
            vendor_id: 0x1ded,
            device_id: 0xacc1,
            class_code: 0x120000,
            revision: 1,
            bars,
            msix: MsixConfig { vectors: 4, table_bar: 2, table_offset: 0, pba_bar: 2, pba_offset: 0x2000 },
            ..DeviceConfig::default()
        }
    }

    fn config_for(init: &Init, device: DeviceConfig) -> Message {
        Message::Config(Config { major: VERSION_MAJOR, minor: 0, caps: Caps::all(), session: init.session, device })
    }

    fn opts(ms: u64) -> DeviceOptions {
        DeviceOptions { name: "t".into(), endpoint: "mem".into(), timeout: Duration::from_millis(ms), caps: Caps::MSIX }
    }

    fn link(answer: impl FnMut(&Message) -> Vec<Message> + Send + 'static) -> ScriptLink {
        ScriptLink { sent: Vec::new(), inbox: VecDeque::new(), answer: Box::new(answer) }
    }

    /// A device whose peer answers INIT with `cfg()` and reads with `read(tag, offset)`.
    fn device(mut read: impl FnMut(&MmioRead) -> Vec<Message> + Send + 'static) -> HostDevice<ScriptLink, FakeQemu> {
        let l = link(move |m| match m {
            Message::Init(i) => vec![config_for(i, cfg())],
            Message::MmioRead(r) => read(r),
            _ => vec![],
        });
        let q = FakeQemu { mem: vec![0; 0x10000], ..FakeQemu::default() };
        HostDevice::connect(l, q, opts(200)).expect("connect")
    }

    fn resp(tag: u32, data: u64) -> Message {
        Message::MmioReadResp(MmioReadResp { tag, status: Status::Ok, data })
    }

    #[test]
    fn connect_takes_the_config_and_rejects_bad_ones() {
        let d = device(|_| vec![]);
        assert_eq!(d.config(), &cfg());
        assert_eq!(d.state(), LinkState::Connected);

        let mut bad = cfg();
        bad.bars[0] = BarDesc::mem32(100);
        let l = link(move |m| match m {
            Message::Init(i) => vec![config_for(i, bad.clone())],
            _ => vec![],
        });
        let e = HostDevice::connect(l, FakeQemu::default(), opts(100)).err().expect("must fail");
        assert!(matches!(e, DeviceError::Config { .. }), "{e}");

        let silent = link(|_| vec![]);
        let e = HostDevice::connect(silent, FakeQemu::default(), opts(30)).err().expect("must fail");
        assert!(e.to_string().contains("start the simulation"), "{e}");
    }

    #[test]
    fn read_returns_the_completion_masked_to_its_size() {
        let mut d = device(|r| vec![resp(r.tag, 0x1122_3344_5566_7788)]);
        let bar = BarIndex::new(0).unwrap();
        assert_eq!(d.mmio_read(bar, 8, AccessSize::B2), 0x7788);
        assert_eq!(d.mmio_read(bar, 8, AccessSize::B8), 0x1122_3344_5566_7788);
        let reads: Vec<_> = d.link().sent.iter().filter(|m| matches!(m, Message::MmioRead(_))).collect();
        assert_eq!(reads.len(), 2);
    }

    #[test]
    fn dma_and_msix_are_served_while_a_read_waits() {
        let mut d = device(|r| {
            vec![
                Message::DmaWrite(DmaWrite { addr: GuestAddr(0x100), data: vec![1, 2, 3, 4] }),
                Message::DmaRead(DmaRead { tag: 9, addr: GuestAddr(0x100), len: 4 }),
                Message::Msix(Msix { vector: 2 }),
                Message::Msix(Msix { vector: 99 }), // out of range: dropped
                resp(r.tag + 1000, 1),              // stale tag: dropped
                resp(r.tag, 0xab),
            ]
        });
        assert_eq!(d.mmio_read(BarIndex::new(0).unwrap(), 0, AccessSize::B4), 0xab);
        assert_eq!(&d.ops().mem[0x100..0x104], &[1, 2, 3, 4]);
        assert_eq!(d.ops().msix, vec![2]);
        let resp = d.link().sent.iter().find_map(|m| match m {
            Message::DmaReadResp(r) => Some(r.clone()),
            _ => None,
        });
        assert_eq!(resp, Some(DmaReadResp { tag: 9, status: Status::Ok, data: vec![1, 2, 3, 4] }));
    }

    #[test]
    fn read_timeout_gives_all_ones() {
        let mut d = device(|_| vec![]);
        assert_eq!(d.mmio_read(BarIndex::new(0).unwrap(), 0, AccessSize::B4), 0xffff_ffff);
    }

    #[test]
    fn lost_peer_gives_all_ones_and_a_returning_peer_gets_init() {
        let mut d = device(|r| vec![resp(r.tag, 5)]);
        let bar = BarIndex::new(0).unwrap();
        d.tick(Instant::now() + Duration::from_secs(2));
        assert_eq!(d.state(), LinkState::Disconnected);
        assert!(d.link().sent.iter().any(|m| matches!(m, Message::Heartbeat(_))), "heartbeats are sent");
        assert_eq!(d.mmio_read(bar, 0, AccessSize::B1), 0xff);
        d.mmio_write(bar, 0, AccessSize::B4, 1);
        assert!(!d.link().sent.iter().any(|m| matches!(m, Message::MmioWrite(_))), "writes dropped while lost");
        // The peer comes back: heartbeat -> INIT -> CONFIG (same layout) -> connected.
        d.link.inbox.push_back(Message::Heartbeat(Heartbeat { instance: 77, session: 0 }).encode_to_vec());
        d.poll();
        assert_eq!(d.state(), LinkState::Connected);
        assert_eq!(d.link().sent.iter().filter(|m| matches!(m, Message::Init(_))).count(), 2);
        assert_eq!(d.mmio_read(bar, 0, AccessSize::B1), 5);
    }

    #[test]
    fn a_peer_back_with_another_layout_stays_disconnected() {
        let mut first = true;
        let l = link(move |m| match m {
            Message::Init(i) => {
                let mut c = cfg();
                if !std::mem::take(&mut first) {
                    c.bars[0] = BarDesc::mem32(8192);
                }
                vec![config_for(i, c)]
            }
            _ => vec![],
        });
        let mut d = HostDevice::connect(l, FakeQemu::default(), opts(100)).unwrap();
        // A heartbeat of another session (a restarted device, or a stray frame) changes nothing.
        d.link.inbox.push_back(Message::Heartbeat(Heartbeat { instance: 2, session: 0 }).encode_to_vec());
        d.poll();
        assert_eq!(d.state(), LinkState::Connected);
        // The session's heartbeats stop: lost; the device is heard again: INIT, other layout.
        d.tick(Instant::now() + Duration::from_secs(2));
        d.link.inbox.push_back(Message::Heartbeat(Heartbeat { instance: 2, session: 0 }).encode_to_vec());
        d.poll();
        assert_eq!(d.state(), LinkState::Mismatch);
        assert_eq!(d.mmio_read(BarIndex::new(0).unwrap(), 0, AccessSize::B4), 0xffff_ffff);
    }

    #[test]
    fn malformed_frames_nic_serial_reset_and_goodbye() {
        let mut d = device(|_| vec![]);
        d.link.inbox.push_back(b"junk".to_vec());
        d.link.inbox.push_back(Message::NicFrame(vec![7; 60]).encode_to_vec());
        d.link.inbox.push_back(Message::Serial(b"hi".to_vec()).encode_to_vec());
        d.poll();
        assert_eq!(d.ops().frames, vec![vec![7; 60]]);
        assert_eq!(d.ops().serial, b"hi");
        d.nic_receive(&[1; 64]);
        d.serial_receive(b"x");
        d.reset();
        let sent = &d.link().sent;
        assert!(sent.contains(&Message::NicFrame(vec![1; 64])));
        assert!(sent.contains(&Message::Serial(b"x".to_vec())));
        assert!(sent.contains(&Message::Reset));
        // A GOODBYE of another session is dropped; the session's own ends it.
        d.link.inbox.push_back(Message::Goodbye(Goodbye { reason: GoodbyeReason::Shutdown, session: 1 }).encode_to_vec());
        d.poll();
        assert_eq!(d.state(), LinkState::Connected);
        assert_eq!(d.session_stats().drops.foreign, 1);
        assert_eq!(d.session_stats().drops.malformed, 1);
        let session = d.link().sent.iter().find_map(|m| if let Message::Init(i) = m { Some(i.session) } else { None }).unwrap();
        d.link.inbox.push_back(Message::Goodbye(Goodbye { reason: GoodbyeReason::Shutdown, session }).encode_to_vec());
        d.poll();
        assert_eq!(d.state(), LinkState::Disconnected);
    }

    #[test]
    fn stray_session_messages_do_not_disturb_a_read() {
        let mut d = device(|r| {
            vec![
                Message::Goodbye(Goodbye { reason: GoodbyeReason::Refused, session: 0 }),
                Message::Config(Config { major: VERSION_MAJOR, minor: 0, caps: Caps::all(), session: 42, device: cfg() }),
                Message::Heartbeat(Heartbeat { instance: 5, session: 43 }),
                Message::Init(Init { major: VERSION_MAJOR, minor: 0, caps: Caps::all(), session: 1, prev_session: 0 }),
                resp(r.tag, 0x55),
                resp(r.tag, 0x66), // a second completion of the same read: stale
            ]
        });
        let bar = BarIndex::new(0).unwrap();
        assert_eq!(d.mmio_read(bar, 0, AccessSize::B4), 0x55);
        assert_eq!(d.state(), LinkState::Connected);
        d.poll();
        let drops = d.session_stats().drops;
        assert_eq!((drops.foreign, drops.wrong_direction, drops.stale), (3, 1, 1), "{drops:?}");
        assert_eq!(d.stats().mmio_reads, 1);
    }
}
