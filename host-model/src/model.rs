//! The host model proper: one session with one device over a real ZeroMQ transport.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use cosim_protocol::liveness::{Liveness, PeerEvent};
use cosim_protocol::*;
use cosim_transport::{Endpoint, Side, Transport, TransportError, ZmqOptions, ZmqTransport};

use crate::{GuestMemory, HostError, Result};

/// Counters of everything the host model exchanged with the device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostStats {
    /// MMIO reads completed (any status).
    pub mmio_reads: u64,
    /// MMIO writes sent.
    pub mmio_writes: u64,
    /// DMA read requests served.
    pub dma_reads: u64,
    /// Bytes returned to DMA reads.
    pub dma_read_bytes: u64,
    /// DMA write messages applied or dropped.
    pub dma_writes: u64,
    /// Bytes written by DMA.
    pub dma_write_bytes: u64,
    /// MSI-X interrupts received.
    pub irqs: u64,
    /// NIC frames received from the device.
    pub frames_rx: u64,
    /// NIC frames sent to the device.
    pub frames_tx: u64,
    /// Serial bytes received from the device.
    pub serial_rx: u64,
    /// Serial bytes sent to the device.
    pub serial_tx: u64,
    /// Malformed frames received (dropped).
    pub malformed: u64,
    /// Messages of a kind the host never expects from a device (dropped).
    pub unexpected: u64,
}

/// Tunables of [`HostModel::connect_with`].
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// How long [`HostModel::read`] waits for its completion.
    pub mmio_timeout: Duration,
    /// ZeroMQ socket options.
    pub zmq: ZmqOptions,
    /// Capabilities announced in INIT.
    pub caps: Caps,
}

impl Default for HostOptions {
    fn default() -> Self {
        Self {
            mmio_timeout: Duration::from_secs(10),
            zmq: ZmqOptions { send_timeout: Duration::from_secs(2), ..ZmqOptions::default() },
            caps: Caps::NIC | Caps::SERIAL | Caps::MSIX,
        }
    }
}

/// A test double for QEMU's `accelerator-pcie` device (the host side of the protocol).
///
/// Single-threaded and synchronous: device traffic (DMA reads and writes, MSI-X, frames, serial
/// bytes, heartbeats) is served only while a method of this type runs. Every waiting method
/// serves it while it waits, so an accelerator can DMA during [`HostModel::read`] or
/// [`HostModel::wait_irq`]. A test that pauses for more than the liveness timeout (1 s) should
/// call [`HostModel::poll`] instead of sleeping, or the device logs the host as lost (it keeps
/// the session and carries on when the host speaks again).
///
/// Peer loss: if nothing arrives from the device for 1 s, waiting calls return
/// [`HostError::PeerLost`] and later calls fail at once with the same error until the device is
/// heard again; a device that comes back (a heartbeat after loss, or a restart) gets a fresh INIT
/// automatically.
pub struct HostModel {
    transport: ZmqTransport,
    endpoint: String,
    opts: HostOptions,
    config: DeviceConfig,
    device_caps: Caps,
    session: u64,
    /// INIT sent for a new session whose CONFIG has not arrived yet.
    reconnecting: Option<u64>,
    instance: u64,
    liveness: Liveness,
    lost: bool,
    goodbye: Option<GoodbyeReason>,
    next_tag: u32,
    mem: GuestMemory,
    irqs: HashMap<u16, u64>,
    irq_log: Vec<u16>,
    frames: VecDeque<Vec<u8>>,
    serial: Vec<u8>,
    read_resp: Option<MmioReadResp>,
    hold_dma_reads: usize,
    held: Vec<DmaRead>,
    stats: HostStats,
}

impl std::fmt::Debug for HostModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostModel")
            .field("endpoint", &self.endpoint)
            .field("session", &format_args!("{:#x}", self.session))
            .field("lost", &self.lost)
            .finish()
    }
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish()
}

impl HostModel {
    /// Opens the host side of `endpoint` and performs the INIT exchange: sends INIT (repeating
    /// it every 200 ms, since the simulation may bind after us) until a CONFIG for this session
    /// arrives, then validates the configuration. Fails with [`HostError::Timeout`] after `timeout`.
    pub fn connect(endpoint: &str, timeout: Duration) -> Result<Self> {
        Self::connect_with(endpoint, timeout, HostOptions::default())
    }

    /// [`HostModel::connect`] with explicit options.
    pub fn connect_with(endpoint: &str, timeout: Duration, opts: HostOptions) -> Result<Self> {
        crate::init_logging();
        let ep = Endpoint::parse(endpoint)?;
        let transport = ZmqTransport::open(&ep, Side::Host, &opts.zmq)?;
        let mut m = Self {
            transport,
            endpoint: endpoint.to_string(),
            opts,
            config: DeviceConfig::default(),
            device_caps: Caps::empty(),
            session: 0,
            reconnecting: None,
            instance: random_u64(),
            liveness: Liveness::new(),
            lost: false,
            goodbye: None,
            next_tag: 1,
            mem: GuestMemory::new(),
            irqs: HashMap::new(),
            irq_log: Vec::new(),
            frames: VecDeque::new(),
            serial: Vec::new(),
            read_resp: None,
            hold_dma_reads: 0,
            held: Vec::new(),
            stats: HostStats::default(),
        };
        m.handshake(timeout)?;
        Ok(m)
    }

    fn handshake(&mut self, timeout: Duration) -> Result<()> {
        let session = random_u64();
        let deadline = Instant::now() + timeout;
        let mut next_init = Instant::now();
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(HostError::Timeout {
                    what: format!("CONFIG from the device at {} (is the simulation running?)", self.endpoint),
                    after: timeout,
                });
            }
            if now >= next_init {
                self.send(&Message::Init(Init {
                    major: VERSION_MAJOR,
                    minor: VERSION_MINOR,
                    caps: self.opts.caps,
                    session,
                }))?;
                next_init = now + Duration::from_millis(200);
            }
            let wait = next_init.min(deadline).saturating_duration_since(Instant::now());
            match self.transport.recv(wait) {
                Ok(Some(Message::Config(c))) if c.session == session => {
                    if c.major != VERSION_MAJOR {
                        return Err(HostError::Version { ours: VERSION_MAJOR, theirs: c.major });
                    }
                    c.device.validate()?;
                    self.accept_config(c);
                    return Ok(());
                }
                Ok(Some(Message::Goodbye(GoodbyeReason::Refused))) => {
                    return Err(HostError::Goodbye(GoodbyeReason::Refused));
                }
                Ok(Some(other)) => tracing::debug!(opcode = ?other.opcode(), "ignored before CONFIG"),
                Ok(None) => {}
                Err(TransportError::Decode(e)) => {
                    self.stats.malformed += 1;
                    tracing::warn!(target: "cosim::host", error = %e, "malformed frame dropped");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn accept_config(&mut self, c: Config) {
        tracing::info!(target: "cosim::host", session = format_args!("{:#x}", c.session),
            vendor = format_args!("{:#06x}", c.device.vendor_id),
            device = format_args!("{:#06x}", c.device.device_id), "device configured");
        self.config = c.device;
        self.device_caps = c.caps;
        self.session = c.session;
        self.reconnecting = None;
        self.lost = false;
        self.goodbye = None;
        self.liveness.on_receive(Instant::now(), None);
    }

    /// The device's configuration from its CONFIG message (validated).
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// The device's capabilities from CONFIG.
    pub fn device_caps(&self) -> Caps {
        self.device_caps
    }

    /// The endpoint this model connected to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Fake guest memory that DMA reads and writes.
    pub fn mem(&mut self) -> &mut GuestMemory {
        &mut self.mem
    }

    /// Counters so far.
    pub fn stats(&self) -> HostStats {
        self.stats
    }

    /// Sets how long [`HostModel::read`] waits for its completion.
    pub fn set_mmio_timeout(&mut self, t: Duration) {
        self.opts.mmio_timeout = t;
    }

    /// Holds DMA read requests until `n` of them are outstanding, then answers them all in
    /// reverse order (0 = answer each at once, the default). Tests use it to check that the
    /// device handles several outstanding reads completed out of order.
    pub fn hold_dma_reads(&mut self, n: usize) {
        self.hold_dma_reads = n;
        if n == 0 {
            self.release_held();
        }
    }

    fn check_peer(&self) -> Result<()> {
        if let Some(r) = self.goodbye {
            return Err(HostError::Goodbye(r));
        }
        if self.lost {
            return Err(HostError::PeerLost { endpoint: self.endpoint.clone() });
        }
        Ok(())
    }

    fn check_bar(&self, bar: u8, offset: u64, size: u8) -> Result<(BarIndex, AccessSize)> {
        let b = BarIndex::new(bar).ok_or(HostError::BadAccess { bar, offset, size, reason: "no such BAR" })?;
        let s = AccessSize::try_from(size)
            .map_err(|_| HostError::BadAccess { bar, offset, size, reason: "size must be 1, 2, 4 or 8" })?;
        let desc = self.config.bars[bar as usize];
        if !desc.present() {
            return Err(HostError::BadAccess { bar, offset, size, reason: "BAR is absent" });
        }
        if offset.checked_add(u64::from(size)).filter(|&end| end <= desc.size).is_none() {
            return Err(HostError::BadAccess { bar, offset, size, reason: "beyond the end of the BAR" });
        }
        Ok((b, s))
    }

    /// MMIO read of `size` (1, 2, 4 or 8) bytes at `offset` of BAR `bar`; the data is in the low
    /// bytes. Serves device traffic while waiting. A completion with an error status gives
    /// [`HostError::Completion`]; no completion within the MMIO timeout gives
    /// [`HostError::Timeout`]; a dead device gives [`HostError::PeerLost`].
    pub fn read(&mut self, bar: u8, offset: u64, size: u8) -> Result<u64> {
        let (b, s) = self.check_bar(bar, offset, size)?;
        self.service(Duration::ZERO)?;
        self.check_peer()?;
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1).max(1);
        let _span = tracing::debug_span!("mmio_read", tag, bar, offset = format_args!("{offset:#x}"), size).entered();
        self.read_resp = None;
        self.send(&Message::MmioRead(MmioRead { tag, bar: b, size: s, offset }))?;
        let deadline = Instant::now() + self.opts.mmio_timeout;
        loop {
            if let Some(r) = self.read_resp.take() {
                if r.tag == tag {
                    self.stats.mmio_reads += 1;
                    return match r.status {
                        Status::Ok => Ok(r.data & s.mask()),
                        status => Err(HostError::Completion { bar, offset, status }),
                    };
                }
                tracing::warn!(target: "cosim::host", got = r.tag, want = tag, "MMIO completion with a stale tag dropped");
            }
            self.check_peer()?;
            let now = Instant::now();
            if now >= deadline {
                return Err(HostError::Timeout {
                    what: format!("MMIO read completion (tag {tag}, BAR{bar} offset {offset:#x})"),
                    after: self.opts.mmio_timeout,
                });
            }
            self.service((deadline - now).min(Duration::from_millis(50)))?;
        }
    }

    /// Posted MMIO write of the low `size` bytes of `data` at `offset` of BAR `bar`.
    pub fn write(&mut self, bar: u8, offset: u64, size: u8, data: u64) -> Result<()> {
        let (b, s) = self.check_bar(bar, offset, size)?;
        self.service(Duration::ZERO)?;
        self.check_peer()?;
        self.send(&Message::MmioWrite(MmioWrite { bar: b, size: s, offset, data: data & s.mask() }))?;
        self.stats.mmio_writes += 1;
        Ok(())
    }

    /// Serves device traffic for `dur`.
    pub fn poll(&mut self, dur: Duration) -> Result<()> {
        let deadline = Instant::now() + dur;
        loop {
            let now = Instant::now();
            let left = deadline.saturating_duration_since(now);
            self.service(left.min(Duration::from_millis(50)))?;
            self.check_peer()?;
            if left.is_zero() {
                return Ok(());
            }
        }
    }

    /// Waits until `done(self)` is true, serving traffic; [`HostError::Timeout`] names `what`.
    fn wait_for(&mut self, timeout: Duration, what: &str, mut done: impl FnMut(&mut Self) -> bool) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return Ok(());
            }
            self.check_peer()?;
            let now = Instant::now();
            if now >= deadline {
                return Err(HostError::Timeout { what: what.to_string(), after: timeout });
            }
            self.service((deadline - now).min(Duration::from_millis(50)))?;
        }
    }

    /// True while a session with a live device exists (not lost, no goodbye, no re-INIT pending).
    pub fn connected(&self) -> bool {
        !self.lost && self.goodbye.is_none() && self.reconnecting.is_none()
    }

    /// Serves traffic until the device is connected again after [`HostError::PeerLost`] or a
    /// device restart (a new simulation on the same endpoint): its heartbeat triggers a fresh
    /// INIT, and this returns once the CONFIG arrived. Returns at once if already connected.
    pub fn wait_connected(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.connected() {
            let now = Instant::now();
            if now >= deadline {
                return Err(HostError::Timeout { what: format!("the device at {} to come back", self.endpoint), after: timeout });
            }
            self.service((deadline - now).min(Duration::from_millis(50)))?;
        }
        Ok(())
    }

    /// Waits for one interrupt on `vector` and consumes it.
    pub fn wait_irq(&mut self, vector: u16, timeout: Duration) -> Result<()> {
        self.wait_for(timeout, &format!("MSI-X vector {vector}"), |m| match m.irqs.get_mut(&vector) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        })
    }

    /// Interrupts received and not consumed by [`HostModel::wait_irq`], per vector.
    pub fn pending_irqs(&self, vector: u16) -> u64 {
        self.irqs.get(&vector).copied().unwrap_or(0)
    }

    /// Every interrupt received so far, in arrival order (not consumed by `wait_irq`).
    pub fn irq_log(&self) -> &[u16] {
        &self.irq_log
    }

    /// Sends one Ethernet frame to the device.
    pub fn send_frame(&mut self, f: &[u8]) -> Result<()> {
        self.check_peer()?;
        self.send(&Message::NicFrame(f.to_vec()))?;
        self.stats.frames_tx += 1;
        Ok(())
    }

    /// Waits for the next frame from the device.
    pub fn recv_frame(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        self.wait_for(timeout, "a NIC frame from the device", |m| !m.frames.is_empty())?;
        Ok(self.frames.pop_front().unwrap_or_default())
    }

    /// Sends serial bytes to the device (split into protocol-sized chunks).
    pub fn send_serial(&mut self, b: &[u8]) -> Result<()> {
        self.check_peer()?;
        for c in b.chunks(MAX_SERIAL_LEN) {
            self.send(&Message::Serial(c.to_vec()))?;
            self.stats.serial_tx += c.len() as u64;
        }
        Ok(())
    }

    /// Waits until the serial bytes received contain `needle`; returns and consumes everything
    /// up to and including it.
    pub fn wait_serial(&mut self, needle: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        let what = format!("serial output containing {:?}", String::from_utf8_lossy(needle));
        let mut end = 0;
        self.wait_for(timeout, &what, |m| match find(&m.serial, needle) {
            Some(i) => {
                end = i + needle.len();
                true
            }
            None => false,
        })?;
        Ok(self.serial.drain(..end).collect())
    }

    /// Serial bytes received and not yet consumed by [`HostModel::wait_serial`].
    pub fn serial_buffer(&self) -> &[u8] {
        &self.serial
    }

    /// Sends a device reset (the RTL sees `user_resetn` low for a few cycles) and forgets
    /// held DMA reads, queued frames, serial bytes and interrupts.
    pub fn reset(&mut self) -> Result<()> {
        self.check_peer()?;
        self.send(&Message::Reset)?;
        self.held.clear();
        self.frames.clear();
        self.serial.clear();
        self.irqs.clear();
        Ok(())
    }

    /// Sends raw bytes as one frame (tests send malformed messages with it).
    pub fn send_raw(&mut self, frame: &[u8]) -> Result<()> {
        self.transport.send_frame(frame)?;
        Ok(())
    }

    /// Sends GOODBYE(Shutdown); the simulation ends. The model is unusable afterwards.
    pub fn goodbye(&mut self) -> Result<()> {
        self.send(&Message::Goodbye(GoodbyeReason::Shutdown))?;
        self.goodbye = Some(GoodbyeReason::Shutdown);
        Ok(())
    }

    fn send(&mut self, msg: &Message) -> Result<()> {
        self.transport.send(msg).map_err(HostError::from)
    }

    /// Receives and handles messages for up to `wait` (at least one check), sending heartbeats
    /// and checking liveness.
    fn service(&mut self, wait: Duration) -> Result<()> {
        let deadline = Instant::now() + wait;
        let mut first = true;
        loop {
            let now = Instant::now();
            if self.liveness.heartbeat_due(now) {
                self.send(&Message::Heartbeat(Heartbeat { instance: self.instance }))?;
            }
            if self.liveness.poll(now) == PeerEvent::Lost && !self.lost {
                tracing::error!(target: "cosim::host", endpoint = %self.endpoint,
                    "device lost: nothing received for {LIVENESS_TIMEOUT_MS} ms; MMIO reads now fail");
                self.lost = true;
                self.held.clear();
            }
            let left = deadline.saturating_duration_since(now);
            if !first && left.is_zero() {
                return Ok(());
            }
            first = false;
            // Wake at least every heartbeat interval.
            let step = left.min(Duration::from_millis(HEARTBEAT_INTERVAL_MS / 2));
            match self.transport.recv(step) {
                Ok(Some(msg)) => {
                    self.handle(msg)?;
                    // Drain whatever else is queued without waiting.
                    while let Some(m) = self.recv_now()? {
                        self.handle(m)?;
                    }
                    if self.read_resp.is_some() {
                        return Ok(());
                    }
                }
                Ok(None) => {}
                Err(TransportError::Decode(e)) => self.malformed(e),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn recv_now(&mut self) -> Result<Option<Message>> {
        loop {
            match self.transport.recv(Duration::ZERO) {
                Ok(m) => return Ok(m),
                Err(TransportError::Decode(e)) => self.malformed(e),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn malformed(&mut self, e: DecodeError) {
        self.stats.malformed += 1;
        tracing::warn!(target: "cosim::host", error = %e, "malformed frame from the device dropped");
    }

    fn handle(&mut self, msg: Message) -> Result<()> {
        let hb = match &msg {
            Message::Heartbeat(h) => Some(h.instance),
            _ => None,
        };
        match self.liveness.on_receive(Instant::now(), hb) {
            PeerEvent::Appeared if self.lost => self.start_reconnect("device is back")?,
            PeerEvent::Restarted => self.start_reconnect("device restarted")?,
            _ => {}
        }
        match msg {
            Message::Config(c) => {
                if Some(c.session) == self.reconnecting {
                    match c.device.validate() {
                        Ok(()) => self.accept_config(c),
                        Err(e) => tracing::error!(target: "cosim::host", error = %e, "device sent an invalid configuration"),
                    }
                }
            }
            Message::MmioReadResp(r) => self.read_resp = Some(r),
            Message::DmaRead(r) => {
                if self.hold_dma_reads > 0 {
                    self.held.push(r);
                    if self.held.len() >= self.hold_dma_reads {
                        self.release_held();
                    }
                } else {
                    self.answer_dma_read(r)?;
                }
            }
            Message::DmaWrite(w) => {
                self.stats.dma_writes += 1;
                self.stats.dma_write_bytes += w.data.len() as u64;
                if !self.mem.dma_write(w.addr.0, &w.data) {
                    tracing::warn!(target: "cosim::host", addr = %w.addr, len = w.data.len(), "DMA write to a fault range dropped");
                }
            }
            Message::Msix(m) => {
                if u32::from(m.vector) >= u32::from(self.config.msix.vectors) {
                    tracing::warn!(target: "cosim::host", vector = m.vector, "MSI-X vector out of range");
                }
                self.stats.irqs += 1;
                *self.irqs.entry(m.vector).or_default() += 1;
                self.irq_log.push(m.vector);
            }
            Message::NicFrame(f) => {
                self.stats.frames_rx += 1;
                self.frames.push_back(f);
            }
            Message::Serial(b) => {
                self.stats.serial_rx += b.len() as u64;
                self.serial.extend_from_slice(&b);
            }
            Message::Heartbeat(_) => {}
            Message::Goodbye(r) => {
                tracing::info!(target: "cosim::host", reason = ?r, "device said goodbye");
                self.goodbye = Some(r);
                self.liveness.on_goodbye();
            }
            other => {
                self.stats.unexpected += 1;
                tracing::warn!(target: "cosim::host", opcode = ?other.opcode(), "message a device never sends; dropped");
            }
        }
        Ok(())
    }

    fn start_reconnect(&mut self, why: &str) -> Result<()> {
        let session = random_u64();
        tracing::info!(target: "cosim::host", why, "sending INIT for a new session");
        self.reconnecting = Some(session);
        self.goodbye = None;
        self.held.clear();
        self.send(&Message::Init(Init { major: VERSION_MAJOR, minor: VERSION_MINOR, caps: self.opts.caps, session }))
    }

    fn release_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        for r in held.into_iter().rev() {
            if let Err(e) = self.answer_dma_read(r) {
                tracing::warn!(target: "cosim::host", error = %e, "cannot answer a held DMA read");
            }
        }
    }

    fn answer_dma_read(&mut self, r: DmaRead) -> Result<()> {
        let resp = if r.len == 0 || r.len as usize > MAX_DMA_LEN || self.mem.faults(r.addr.0, u64::from(r.len)) {
            tracing::warn!(target: "cosim::host", tag = r.tag, addr = %r.addr, len = r.len, "DMA read refused");
            DmaReadResp { tag: r.tag, status: Status::UnsupportedRequest, data: Vec::new() }
        } else {
            DmaReadResp { tag: r.tag, status: Status::Ok, data: self.mem.read_bytes(r.addr.0, r.len as usize) }
        };
        self.stats.dma_reads += 1;
        self.stats.dma_read_bytes += resp.data.len() as u64;
        self.send(&Message::DmaReadResp(resp))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}
