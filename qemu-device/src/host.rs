//! The device logic: session with the HDL, MMIO requests, and serving what the HDL starts.
//!
//! Session rules (docs/protocol.md, "Session"): INIT -> CONFIG at realize; heartbeats every
//! 100 ms while a session is up; peer lost after 1000 ms of silence -> reads return all ones;
//! a returning or restarted peer gets a new INIT and must announce the configuration the PCI
//! function was realized with.

use std::time::{Duration, Instant};

use cosim_protocol::liveness::{Liveness, PeerEvent};
use cosim_protocol::{
    AccessSize, BarIndex, Caps, ConfigError, DeviceConfig, DmaReadResp, GoodbyeReason, Heartbeat,
    Init, Message, MmioRead, MmioWrite, Status, HEARTBEAT_INTERVAL_MS, MAX_DMA_LEN, MAX_FRAME_LEN,
    MAX_SERIAL_LEN, VERSION_MAJOR, VERSION_MINOR,
};
use cosim_transport::{MemTransport, Transport, TransportError, ZmqTransport};

use crate::ops::QemuOps;

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

/// State of the session with the HDL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Session up: requests are forwarded.
    Connected,
    /// INIT sent to a returning peer; waiting for its CONFIG.
    AwaitingConfig {
        /// The session number of that INIT.
        session: u64,
        /// When it was sent.
        since: Instant,
    },
    /// No peer: reads return all ones.
    Disconnected,
    /// The peer came back with a configuration other than the realized one; stays
    /// disconnected until it restarts.
    Mismatch,
}

/// The device: one session with one HDL simulation.
pub struct HostDevice<L: HostLink, Q: QemuOps> {
    link: L,
    ops: Q,
    opts: DeviceOptions,
    config: DeviceConfig,
    peer_caps: Caps,
    state: LinkState,
    liveness: Liveness,
    instance: u64,
    next_tag: u32,
    last_heartbeat: Option<Instant>,
}

fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish()
}

impl<L: HostLink, Q: QemuOps> HostDevice<L, Q> {
    /// Runs the INIT exchange on `link` and returns the device with the HDL's configuration.
    /// Waits at most `opts.timeout`.
    pub fn connect(mut link: L, ops: Q, opts: DeviceOptions) -> Result<Self, DeviceError> {
        let endpoint = opts.endpoint.clone();
        let terr = |source| DeviceError::Transport { endpoint: endpoint.clone(), source };
        let session = random_u64();
        let init = Init { major: VERSION_MAJOR, minor: VERSION_MINOR, caps: opts.caps, session };
        link.send(&Message::Init(init)).map_err(terr)?;
        tracing::debug!(target: PEER, endpoint = %endpoint, session = format_args!("{session:#x}"), "INIT sent");
        let deadline = Instant::now() + opts.timeout;
        let mut liveness = Liveness::new();
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(DeviceError::InitTimeout { endpoint, timeout_ms: opts.timeout.as_millis() });
            }
            match link.recv((deadline - now).min(Duration::from_millis(100))) {
                Ok(Some(Message::Config(c))) if c.session == session => {
                    if c.major != VERSION_MAJOR {
                        return Err(DeviceError::Version { endpoint, theirs: c.major, ours: VERSION_MAJOR });
                    }
                    c.device.validate().map_err(|source| DeviceError::Config { endpoint: endpoint.clone(), source })?;
                    liveness.on_receive(Instant::now(), None);
                    tracing::info!(target: PEER, endpoint = %endpoint, config = ?c.device, "HDL configuration received");
                    return Ok(Self {
                        link,
                        ops,
                        opts,
                        config: c.device,
                        peer_caps: c.caps,
                        state: LinkState::Connected,
                        liveness,
                        instance: random_u64(),
                        next_tag: 1,
                        last_heartbeat: None,
                    });
                }
                Ok(Some(Message::Goodbye(GoodbyeReason::Refused))) => return Err(DeviceError::Refused { endpoint }),
                Ok(Some(Message::Heartbeat(h))) => {
                    liveness.on_receive(now, Some(h.instance));
                }
                Ok(Some(other)) => {
                    tracing::debug!(target: PEER, op = ?other.opcode(), "ignored while waiting for CONFIG");
                }
                Ok(None) => {}
                Err(TransportError::Decode(e)) => {
                    tracing::warn!(target: PEER, "malformed frame from the HDL dropped: {e}");
                }
                Err(e) => return Err(terr(e)),
            }
        }
    }

    /// The configuration the device was realized with.
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// The peer's capabilities.
    pub fn peer_caps(&self) -> Caps {
        self.peer_caps
    }

    /// Current session state.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// The transport (tests use it to check for pending frames).
    pub fn link(&self) -> &L {
        &self.link
    }

    /// The QEMU services (tests inspect the fake).
    pub fn ops(&self) -> &Q {
        &self.ops
    }

    /// Mutable access to the QEMU services.
    pub fn ops_mut(&mut self) -> &mut Q {
        &mut self.ops
    }

    fn connected(&self) -> bool {
        self.state == LinkState::Connected
    }

    /// An MMIO read of `size` bytes at `offset` of `bar`. Blocks until the completion arrives
    /// (serving DMA, MSI-X and everything else the HDL sends meanwhile) or the timeout passes.
    /// Returns all ones when the HDL is absent, answers with an error status, or times out.
    pub fn mmio_read(&mut self, bar: BarIndex, offset: u64, size: AccessSize) -> u64 {
        let ones = size.mask();
        if !self.connected() {
            tracing::debug!(target: PEER, bar = bar.get(), offset = format_args!("{offset:#x}"), "read while disconnected: all ones");
            return ones;
        }
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1).max(1);
        let span = tracing::debug_span!("mmio_read", tag, bar = bar.get(), offset = format_args!("{offset:#x}"), len = size.bytes());
        let _g = span.enter();
        if let Err(e) = self.link.send(&Message::MmioRead(MmioRead { tag, bar, size, offset })) {
            self.lost(&format!("sending an MMIO read failed: {e}"));
            return ones;
        }
        let start = Instant::now();
        let deadline = start + self.opts.timeout;
        let result = loop {
            let now = Instant::now();
            self.tick(now);
            if !self.connected() {
                break ones;
            }
            if now >= deadline {
                tracing::error!(
                    target: PEER,
                    "{}: MMIO read of BAR{} offset {offset:#x} ({} bytes, tag {tag}) got no completion from the HDL at {} within {} ms; returning all ones",
                    self.opts.name, bar.get(), size.bytes(), self.opts.endpoint, self.opts.timeout.as_millis()
                );
                break ones;
            }
            match self.link.recv((deadline - now).min(READ_SLICE)) {
                Ok(Some(Message::MmioReadResp(r))) if r.tag == tag => {
                    self.liveness.on_receive(Instant::now(), None);
                    if r.status == Status::Ok {
                        tracing::trace!(data = format_args!("{:#x}", r.data & ones), "completed");
                        break r.data & ones;
                    }
                    tracing::warn!(target: PEER, status = ?r.status, "MMIO read completed with an error status; all ones");
                    break ones;
                }
                Ok(Some(m)) => self.handle(m, Instant::now()),
                Ok(None) => {}
                Err(TransportError::Decode(e)) => {
                    self.liveness.on_receive(Instant::now(), None);
                    tracing::warn!(target: PEER, "malformed frame from the HDL dropped: {e}");
                }
                Err(e) => {
                    self.lost(&format!("receive failed: {e}"));
                    break ones;
                }
            }
        };
        if self.link.has_pending() {
            self.ops.schedule_poll();
        }
        result
    }

    /// A posted MMIO write (dropped while disconnected).
    pub fn mmio_write(&mut self, bar: BarIndex, offset: u64, size: AccessSize, data: u64) {
        if !self.connected() {
            tracing::debug!(target: PEER, bar = bar.get(), offset = format_args!("{offset:#x}"), "write while disconnected: dropped");
            return;
        }
        let data = data & size.mask();
        tracing::trace!(bar = bar.get(), offset = format_args!("{offset:#x}"), len = size.bytes(), data = format_args!("{data:#x}"), "mmio_write");
        if let Err(e) = self.link.send(&Message::MmioWrite(MmioWrite { bar, size, offset, data })) {
            self.lost(&format!("sending an MMIO write failed: {e}"));
        }
    }

    /// Device reset (PCI or system reset): forwarded to the HDL.
    pub fn reset(&mut self) {
        if self.connected() {
            tracing::debug!(target: PEER, "reset forwarded");
            if let Err(e) = self.link.send(&Message::Reset) {
                self.lost(&format!("sending RESET failed: {e}"));
            }
        }
    }

    /// A frame from the netdev to the HDL's NIC.
    pub fn nic_receive(&mut self, frame: &[u8]) {
        if frame.is_empty() || frame.len() > MAX_FRAME_LEN {
            tracing::warn!(target: GUEST, len = frame.len(), "NIC frame of impossible length dropped");
            return;
        }
        if self.connected() {
            if let Err(e) = self.link.send(&Message::NicFrame(frame.to_vec())) {
                self.lost(&format!("sending a NIC frame failed: {e}"));
            }
        }
    }

    /// Bytes from the chardev to the HDL's UART.
    pub fn serial_receive(&mut self, data: &[u8]) {
        if !self.connected() {
            return;
        }
        for chunk in data.chunks(MAX_SERIAL_LEN) {
            if let Err(e) = self.link.send(&Message::Serial(chunk.to_vec())) {
                self.lost(&format!("sending serial bytes failed: {e}"));
                return;
            }
        }
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
                Ok(Some(m)) => {
                    handled += 1;
                    self.handle(m, Instant::now());
                }
                Ok(None) => {
                    if !self.link.has_pending() {
                        return;
                    }
                }
                Err(TransportError::Decode(e)) => {
                    handled += 1;
                    self.liveness.on_receive(Instant::now(), None);
                    tracing::warn!(target: PEER, "malformed frame from the HDL dropped: {e}");
                }
                Err(e) => {
                    self.lost(&format!("receive failed: {e}"));
                    return;
                }
            }
        }
    }

    /// Periodic work (every [`HEARTBEAT_INTERVAL_MS`] or sooner): heartbeats and liveness.
    pub fn tick(&mut self, now: Instant) {
        let up = matches!(self.state, LinkState::Connected | LinkState::AwaitingConfig { .. });
        let interval = Duration::from_millis(HEARTBEAT_INTERVAL_MS);
        let due = !matches!(self.last_heartbeat, Some(t) if now.saturating_duration_since(t) < interval);
        if up && due {
            self.last_heartbeat = Some(now);
            if let Err(e) = self.link.send(&Message::Heartbeat(Heartbeat { instance: self.instance })) {
                self.lost(&format!("sending a heartbeat failed: {e}"));
                return;
            }
        }
        if let LinkState::AwaitingConfig { since, .. } = self.state {
            if now.saturating_duration_since(since) >= self.opts.timeout {
                tracing::warn!(target: PEER, "{}: no CONFIG from the returning HDL; sending INIT again", self.opts.name);
                self.start_session(now);
            }
        }
        if self.liveness.poll(now) == PeerEvent::Lost && up {
            self.lost("nothing received for 1000 ms");
        }
    }

    /// Says goodbye to the HDL (QEMU is removing the device or quitting).
    pub fn shutdown(&mut self) {
        if self.connected() {
            let _ = self.link.send(&Message::Goodbye(GoodbyeReason::Shutdown));
        }
        self.state = LinkState::Disconnected;
    }

    fn lost(&mut self, why: &str) {
        if matches!(self.state, LinkState::Connected | LinkState::AwaitingConfig { .. }) {
            tracing::error!(
                target: PEER,
                "{}: lost the HDL simulation at {} ({why}); MMIO reads return all ones until it comes back",
                self.opts.name,
                self.opts.endpoint
            );
        }
        self.state = LinkState::Disconnected;
    }

    fn start_session(&mut self, now: Instant) {
        let session = random_u64();
        let init = Init { major: VERSION_MAJOR, minor: VERSION_MINOR, caps: self.opts.caps, session };
        self.state = LinkState::AwaitingConfig { session, since: now };
        if let Err(e) = self.link.send(&Message::Init(init)) {
            self.lost(&format!("sending INIT failed: {e}"));
        }
    }

    fn handle(&mut self, msg: Message, now: Instant) {
        let hb = match &msg {
            Message::Heartbeat(h) => Some(h.instance),
            _ => None,
        };
        match self.liveness.on_receive(now, hb) {
            PeerEvent::Appeared if matches!(self.state, LinkState::Disconnected | LinkState::Mismatch) => {
                tracing::warn!(target: PEER, "{}: the HDL simulation at {} is back; sending INIT", self.opts.name, self.opts.endpoint);
                self.start_session(now);
            }
            PeerEvent::Restarted => {
                tracing::warn!(target: PEER, "{}: the HDL simulation at {} restarted; sending INIT", self.opts.name, self.opts.endpoint);
                self.start_session(now);
            }
            _ => {}
        }
        match msg {
            Message::Config(c) => self.on_config(c),
            Message::MmioReadResp(r) => {
                tracing::warn!(target: PEER, tag = r.tag, "MMIO completion for a read that is not outstanding (late?) dropped");
            }
            Message::DmaRead(r) => {
                if !self.connected() {
                    tracing::warn!(target: PEER, tag = r.tag, "DMA read outside a session dropped");
                    return;
                }
                let len = r.len as usize;
                let resp = if len == 0 || len > MAX_DMA_LEN {
                    tracing::warn!(target: PEER, tag = r.tag, len, "DMA read of impossible length");
                    DmaReadResp { tag: r.tag, status: Status::CompleterAbort, data: Vec::new() }
                } else {
                    let mut buf = vec![0u8; len];
                    match self.ops.dma_read(r.addr, &mut buf) {
                        Ok(()) => DmaReadResp { tag: r.tag, status: Status::Ok, data: buf },
                        Err(e) => {
                            tracing::warn!(target: GUEST, tag = r.tag, "{e} (bus mastering off or no memory there)");
                            DmaReadResp { tag: r.tag, status: Status::UnsupportedRequest, data: Vec::new() }
                        }
                    }
                };
                if let Err(e) = self.link.send(&Message::DmaReadResp(resp)) {
                    self.lost(&format!("sending a DMA completion failed: {e}"));
                }
            }
            Message::DmaWrite(w) => {
                if !self.connected() {
                    tracing::warn!(target: PEER, addr = %w.addr, "DMA write outside a session dropped");
                    return;
                }
                if let Err(e) = self.ops.dma_write(w.addr, &w.data) {
                    tracing::warn!(target: GUEST, "{e} (bus mastering off or no memory there)");
                }
            }
            Message::Msix(m) => {
                if !self.connected() {
                    return;
                }
                if m.vector >= self.config.msix.vectors {
                    tracing::warn!(target: PEER, vector = m.vector, vectors = self.config.msix.vectors, "MSI-X vector out of range dropped");
                    return;
                }
                self.ops.msix_notify(m.vector);
            }
            Message::NicFrame(f) => {
                if self.connected() {
                    self.ops.nic_send(&f);
                }
            }
            Message::Serial(b) => {
                if self.connected() {
                    self.ops.serial_write(&b);
                }
            }
            Message::Goodbye(reason) => {
                self.liveness.on_goodbye();
                if matches!(self.state, LinkState::Connected | LinkState::AwaitingConfig { .. }) {
                    tracing::error!(
                        target: PEER,
                        "{}: the HDL simulation at {} said goodbye ({reason:?}); MMIO reads return all ones until it comes back",
                        self.opts.name,
                        self.opts.endpoint
                    );
                }
                self.state = LinkState::Disconnected;
            }
            Message::Heartbeat(_) => {}
            other @ (Message::Init(_) | Message::MmioRead(_) | Message::MmioWrite(_) | Message::DmaReadResp(_) | Message::Reset) => {
                tracing::warn!(target: PEER, op = ?other.opcode(), "host-bound only message received from the HDL; dropped");
            }
        }
    }

    fn on_config(&mut self, c: cosim_protocol::Config) {
        let LinkState::AwaitingConfig { session, .. } = self.state else {
            tracing::debug!(target: PEER, "CONFIG outside a handshake ignored");
            return;
        };
        if c.session != session {
            tracing::debug!(target: PEER, "CONFIG for an old session ignored");
            return;
        }
        if c.major != VERSION_MAJOR {
            tracing::error!(target: PEER, "{}: the returning HDL speaks protocol {}.x, we speak {VERSION_MAJOR}.x; staying disconnected", self.opts.name, c.major);
            self.state = LinkState::Mismatch;
            return;
        }
        if c.device != self.config {
            tracing::error!(
                target: PEER,
                "{}: the HDL simulation at {} came back with a different configuration than the one this PCI device was realized with \
                 (realized: {:?}; now: {:?}); staying disconnected: restart the HDL with the original configuration or restart QEMU",
                self.opts.name, self.opts.endpoint, self.config, c.device
            );
            self.state = LinkState::Mismatch;
            return;
        }
        self.peer_caps = c.caps;
        self.state = LinkState::Connected;
        tracing::warn!(target: PEER, "{}: reconnected to the HDL simulation at {}", self.opts.name, self.opts.endpoint);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use cosim_protocol::{BarDesc, Config, DmaRead, DmaWrite, GuestAddr, MmioReadResp, Msix, MsixConfig};

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
        assert_eq!(d.mmio_read(bar, 0, AccessSize::B1), 0xff);
        d.mmio_write(bar, 0, AccessSize::B4, 1);
        assert!(!d.link().sent.iter().any(|m| matches!(m, Message::MmioWrite(_))), "writes dropped while lost");
        // The peer comes back: heartbeat -> INIT -> CONFIG (same layout) -> connected.
        d.link.inbox.push_back(Message::Heartbeat(Heartbeat { instance: 77 }).encode_to_vec());
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
        d.link.inbox.push_back(Message::Heartbeat(Heartbeat { instance: 1 }).encode_to_vec());
        d.link.inbox.push_back(Message::Heartbeat(Heartbeat { instance: 2 }).encode_to_vec()); // restart
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
        d.link.inbox.push_back(Message::Goodbye(GoodbyeReason::Shutdown).encode_to_vec());
        d.poll();
        assert_eq!(d.state(), LinkState::Disconnected);
    }
}
