//! The host model proper: QEMU's own device logic ([`HostDevice`] of `cosim-qemu-device`, the
//! code `-device accelerator-pcie` runs) over a real ZeroMQ transport, with fake guest memory and
//! the MSI-X table and PBA emulated as QEMU does, in place of QEMU's services.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use cosim_protocol::session::{DownReason, DropCounts, HostState};
use cosim_protocol::*;
use cosim_qemu_device::{DeviceError, DeviceOptions, DeviceStats, DmaError, HostDevice, LinkState, QemuOps, ReadError};
use cosim_transport::{Endpoint, Side, Transport, ZmqOptions, ZmqTransport};

use crate::msix::MsixEmu;
use crate::{GuestMemory, HostError, Result};

/// Counters of everything the host model exchanged with the device: QEMU's device counters
/// ([`DeviceStats`], reached through `Deref`: `stats().dma_writes`) and the dropped frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostStats {
    /// The device logic's counters (the same QEMU keeps).
    pub device: DeviceStats,
    /// Malformed frames received, including frames of another protocol version (dropped).
    pub malformed: u64,
    /// Messages of a kind the host never expects from a device (dropped).
    pub unexpected: u64,
    /// Every dropped frame, by reason (the session engine's counters).
    pub drops: DropCounts,
}

impl std::ops::Deref for HostStats {
    type Target = DeviceStats;
    fn deref(&self) -> &DeviceStats {
        &self.device
    }
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

/// QEMU's services, faked: guest memory, MSI-X delivery, the netdev and the chardev.
#[derive(Debug, Default)]
struct HarnessOps {
    mem: GuestMemory,
    msix: MsixEmu,
    irqs: HashMap<u16, u64>,
    irq_log: Vec<u16>,
    frames: VecDeque<Vec<u8>>,
    serial: Vec<u8>,
    hold_dma_reads: usize,
    held: Vec<DmaRead>,
}

impl HarnessOps {
    fn fire(&mut self, vector: u16) {
        *self.irqs.entry(vector).or_default() += 1;
        self.irq_log.push(vector);
    }
}

impl QemuOps for HarnessOps {
    fn dma_read(&mut self, addr: GuestAddr, buf: &mut [u8]) -> std::result::Result<(), DmaError> {
        if self.mem.faults(addr.0, buf.len() as u64) {
            return Err(DmaError { addr, len: buf.len() });
        }
        buf.copy_from_slice(&self.mem.read_bytes(addr.0, buf.len()));
        Ok(())
    }
    fn dma_write(&mut self, addr: GuestAddr, data: &[u8]) -> std::result::Result<(), DmaError> {
        if self.mem.dma_write(addr.0, data) {
            Ok(())
        } else {
            Err(DmaError { addr, len: data.len() })
        }
    }
    fn msix_notify(&mut self, vector: u16) {
        if self.msix.notify(vector) {
            self.fire(vector);
        }
    }
    fn nic_send(&mut self, frame: &[u8]) {
        self.frames.push_back(frame.to_vec());
    }
    fn serial_write(&mut self, data: &[u8]) {
        self.serial.extend_from_slice(data);
    }
    fn schedule_poll(&mut self) {}
    fn defer_dma_read(&mut self, read: &DmaRead) -> bool {
        if self.hold_dma_reads == 0 {
            return false;
        }
        self.held.push(*read);
        true
    }
}

/// A test double for QEMU's `accelerator-pcie` device (the host side of the protocol).
///
/// It runs the very device logic QEMU runs ([`HostDevice`]): the same session engine, the same
/// re-INIT rules, the same handling of DMA, MSI-X, frames and serial bytes. What QEMU would do
/// itself is faked: guest memory ([`GuestMemory`]) and the MSI-X table and PBA (emulated here,
/// never forwarded to the device; see [`crate::msix`]).
///
/// Single-threaded and synchronous: device traffic is served only while a method of this type
/// runs. Every waiting method serves it while it waits and returns as soon as what it waits for
/// happened (an interrupt wakes [`HostModel::wait_irq`] at once). A test that pauses for more
/// than the liveness timeout (1 s) should call [`HostModel::poll`] instead of sleeping, or the
/// device logs the host as lost (it keeps the session and carries on when the host speaks again).
///
/// Peer loss: if nothing of the session arrives from the device for 1 s, waiting calls return
/// [`HostError::PeerLost`] and later calls fail at once with the same error until the device is
/// heard again; a device that comes back (or a new simulation on the same endpoint) gets a fresh
/// INIT automatically ([`HostModel::wait_connected`] waits for it).
pub struct HostModel {
    dev: HostDevice<ZmqTransport, HarnessOps>,
    endpoint: String,
    mmio_timeout: Duration,
}

impl std::fmt::Debug for HostModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostModel").field("endpoint", &self.endpoint).field("state", &self.dev.state()).finish()
    }
}

impl HostModel {
    /// Opens the host side of `endpoint` and performs the INIT exchange (INIT repeated every
    /// 200 ms, since the simulation may bind after us) until a CONFIG for this session arrives,
    /// then validates the configuration. Fails with [`HostError::Timeout`] after `timeout`.
    pub fn connect(endpoint: &str, timeout: Duration) -> Result<Self> {
        Self::connect_with(endpoint, timeout, HostOptions::default())
    }

    /// [`HostModel::connect`] with explicit options.
    pub fn connect_with(endpoint: &str, timeout: Duration, opts: HostOptions) -> Result<Self> {
        crate::init_logging();
        let ep = Endpoint::parse(endpoint)?;
        let transport = ZmqTransport::open(&ep, Side::Host, &opts.zmq)?;
        let dopts = DeviceOptions { name: "host-model".into(), endpoint: endpoint.to_string(), timeout, caps: opts.caps };
        let mut dev = HostDevice::connect(transport, HarnessOps::default(), dopts).map_err(|e| match e {
            DeviceError::InitTimeout { .. } => HostError::Timeout {
                what: format!("CONFIG from the device at {endpoint} (is the simulation running?)"),
                after: timeout,
            },
            DeviceError::Config { source, .. } => HostError::Config(source),
            DeviceError::Version { theirs, ours, .. } => HostError::Version { ours, theirs },
            DeviceError::Refused { .. } => HostError::Goodbye(GoodbyeReason::Refused),
            DeviceError::Transport { source, .. } => HostError::Transport(source),
        })?;
        let msix = MsixEmu::new(dev.config());
        dev.ops_mut().msix = msix;
        Ok(Self { dev, endpoint: endpoint.to_string(), mmio_timeout: opts.mmio_timeout })
    }

    /// The device's configuration from its CONFIG message (validated).
    pub fn config(&self) -> &DeviceConfig {
        self.dev.config()
    }

    /// The device's capabilities from CONFIG.
    pub fn device_caps(&self) -> Caps {
        self.dev.peer_caps()
    }

    /// The endpoint this model connected to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Fake guest memory that DMA reads and writes.
    pub fn mem(&mut self) -> &mut GuestMemory {
        &mut self.dev.ops_mut().mem
    }

    /// Counters so far.
    pub fn stats(&self) -> HostStats {
        let drops = self.dev.session_stats().drops;
        HostStats {
            device: self.dev.stats(),
            malformed: drops.malformed + drops.version,
            unexpected: drops.wrong_direction,
            drops,
        }
    }

    /// Sets how long [`HostModel::read`] waits for its completion.
    pub fn set_mmio_timeout(&mut self, t: Duration) {
        self.mmio_timeout = t;
    }

    /// Holds DMA read requests until `n` of them are outstanding, then answers them all in
    /// reverse order (0 = answer each at once, the default). Tests use it to check that the
    /// device handles several outstanding reads completed out of order.
    pub fn hold_dma_reads(&mut self, n: usize) {
        self.dev.ops_mut().hold_dma_reads = n;
        self.release_held(n == 0);
    }

    fn release_held(&mut self, all: bool) {
        let ops = self.dev.ops_mut();
        if ops.held.is_empty() || (!all && ops.held.len() < ops.hold_dma_reads) {
            return;
        }
        let held = std::mem::take(&mut ops.held);
        for r in held.into_iter().rev() {
            self.dev.complete_dma_read(r);
        }
    }

    /// Masks (or unmasks) the whole MSI-X function, as the capability's function-mask bit does;
    /// interrupts signalled meanwhile stay pending and fire on unmask.
    pub fn set_msix_function_mask(&mut self, masked: bool) {
        let ops = self.dev.ops_mut();
        for v in ops.msix.set_function_mask(masked) {
            ops.fire(v);
        }
    }

    fn check_peer(&self) -> Result<()> {
        match self.dev.session_state() {
            HostState::Up { .. } => Ok(()),
            HostState::Down(DownReason::Goodbye(r)) => Err(HostError::Goodbye(*r)),
            HostState::Down(DownReason::Closed) => Err(HostError::Goodbye(GoodbyeReason::Shutdown)),
            _ => Err(HostError::PeerLost { endpoint: self.endpoint.clone() }),
        }
    }

    fn check_bar(&self, bar: u8, offset: u64, size: u8) -> Result<(BarIndex, AccessSize)> {
        let b = BarIndex::new(bar).ok_or(HostError::BadAccess { bar, offset, size, reason: "no such BAR" })?;
        let s = AccessSize::try_from(size)
            .map_err(|_| HostError::BadAccess { bar, offset, size, reason: "size must be 1, 2, 4 or 8" })?;
        let desc = self.config().bars[bar as usize];
        if !desc.present() {
            return Err(HostError::BadAccess { bar, offset, size, reason: "BAR is absent" });
        }
        if offset.checked_add(u64::from(size)).filter(|&end| end <= desc.size).is_none() {
            return Err(HostError::BadAccess { bar, offset, size, reason: "beyond the end of the BAR" });
        }
        Ok((b, s))
    }

    /// MMIO read of `size` (1, 2, 4 or 8) bytes at `offset` of BAR `bar`; the data is in the low
    /// bytes. Serves device traffic while waiting. The MSI-X table and PBA are answered here, as
    /// QEMU does. A completion with an error status gives [`HostError::Completion`]; no
    /// completion within the MMIO timeout gives [`HostError::Timeout`]; no session gives
    /// [`HostError::PeerLost`] (or [`HostError::Goodbye`]).
    pub fn read(&mut self, bar: u8, offset: u64, size: u8) -> Result<u64> {
        let (b, s) = self.check_bar(bar, offset, size)?;
        if self.dev.ops().msix.covers(bar, offset) {
            return Ok(self.dev.ops().msix.read(bar, offset, size));
        }
        self.dev.service(Duration::ZERO);
        self.check_peer()?;
        let r = self.dev.mmio_read_checked(b, offset, s, self.mmio_timeout);
        self.release_held(false);
        match r {
            Ok(v) => Ok(v),
            Err(ReadError::Status(status)) => Err(HostError::Completion { bar, offset, status }),
            Err(ReadError::Timeout) => Err(HostError::Timeout {
                what: format!("MMIO read completion (BAR{bar} offset {offset:#x})"),
                after: self.mmio_timeout,
            }),
            Err(ReadError::NoSession) => {
                self.check_peer()?;
                Err(HostError::PeerLost { endpoint: self.endpoint.clone() })
            }
        }
    }

    /// Posted MMIO write of the low `size` bytes of `data` at `offset` of BAR `bar` (the MSI-X
    /// table is written here, as QEMU does).
    pub fn write(&mut self, bar: u8, offset: u64, size: u8, data: u64) -> Result<()> {
        let (b, s) = self.check_bar(bar, offset, size)?;
        if self.dev.ops().msix.covers(bar, offset) {
            let ops = self.dev.ops_mut();
            for v in ops.msix.write(bar, offset, size, data) {
                ops.fire(v);
            }
            return Ok(());
        }
        self.dev.service(Duration::ZERO);
        self.check_peer()?;
        self.dev.mmio_write(b, offset, s, data);
        Ok(())
    }

    /// Serves device traffic for `dur`.
    pub fn poll(&mut self, dur: Duration) -> Result<()> {
        let deadline = Instant::now() + dur;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            self.dev.service(left.min(Duration::from_millis(50)));
            self.release_held(false);
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
            self.dev.service((deadline - now).min(Duration::from_millis(50)));
            self.release_held(false);
        }
    }

    /// True while a session with a live device exists (not lost, no goodbye, no re-INIT pending).
    pub fn connected(&self) -> bool {
        self.dev.state() == LinkState::Connected
    }

    /// Serves traffic until the device is connected again after [`HostError::PeerLost`] or a
    /// device restart (a new simulation on the same endpoint; noticed within the liveness
    /// timeout): its heartbeat triggers a fresh INIT, and this returns once the CONFIG arrived.
    /// Returns at once if already connected.
    pub fn wait_connected(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.connected() {
            let now = Instant::now();
            if now >= deadline {
                return Err(HostError::Timeout { what: format!("the device at {} to come back", self.endpoint), after: timeout });
            }
            self.dev.service((deadline - now).min(Duration::from_millis(50)));
        }
        Ok(())
    }

    /// Waits for one interrupt on `vector` and consumes it.
    pub fn wait_irq(&mut self, vector: u16, timeout: Duration) -> Result<()> {
        self.wait_for(timeout, &format!("MSI-X vector {vector}"), |m| match m.dev.ops_mut().irqs.get_mut(&vector) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        })
    }

    /// Interrupts received and not consumed by [`HostModel::wait_irq`], per vector.
    pub fn pending_irqs(&self, vector: u16) -> u64 {
        self.dev.ops().irqs.get(&vector).copied().unwrap_or(0)
    }

    /// Every interrupt received so far, in arrival order (not consumed by `wait_irq`).
    pub fn irq_log(&self) -> &[u16] {
        &self.dev.ops().irq_log
    }

    /// Sends one Ethernet frame to the device.
    pub fn send_frame(&mut self, f: &[u8]) -> Result<()> {
        self.check_peer()?;
        self.dev.nic_receive(f);
        Ok(())
    }

    /// Waits for the next frame from the device.
    pub fn recv_frame(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        self.wait_for(timeout, "a NIC frame from the device", |m| !m.dev.ops().frames.is_empty())?;
        Ok(self.dev.ops_mut().frames.pop_front().unwrap_or_default())
    }

    /// Sends serial bytes to the device (split into protocol-sized chunks).
    pub fn send_serial(&mut self, b: &[u8]) -> Result<()> {
        self.check_peer()?;
        self.dev.serial_receive(b);
        Ok(())
    }

    /// Waits until the serial bytes received contain `needle`; returns and consumes everything
    /// up to and including it.
    pub fn wait_serial(&mut self, needle: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        let what = format!("serial output containing {:?}", String::from_utf8_lossy(needle));
        let mut end = 0;
        self.wait_for(timeout, &what, |m| match find(&m.dev.ops().serial, needle) {
            Some(i) => {
                end = i + needle.len();
                true
            }
            None => false,
        })?;
        Ok(self.dev.ops_mut().serial.drain(..end).collect())
    }

    /// Serial bytes received and not yet consumed by [`HostModel::wait_serial`].
    pub fn serial_buffer(&self) -> &[u8] {
        &self.dev.ops().serial
    }

    /// Sends a device reset (the RTL sees `user_resetn` low for a few cycles) and forgets
    /// held DMA reads, queued frames, serial bytes and interrupts.
    pub fn reset(&mut self) -> Result<()> {
        self.check_peer()?;
        self.dev.reset();
        let ops = self.dev.ops_mut();
        ops.held.clear();
        ops.frames.clear();
        ops.serial.clear();
        ops.irqs.clear();
        Ok(())
    }

    /// Sends raw bytes as one frame (tests send malformed messages with it).
    pub fn send_raw(&mut self, frame: &[u8]) -> Result<()> {
        self.dev.link_mut().send_frame(frame)?;
        Ok(())
    }

    /// The session number, while a session is up (tests forge frames of other sessions with it).
    pub fn session(&self) -> Option<u64> {
        match self.dev.session_state() {
            HostState::Up { session } => Some(*session),
            _ => None,
        }
    }

    /// Sends GOODBYE(Shutdown); the simulation ends. The model is unusable afterwards.
    pub fn goodbye(&mut self) -> Result<()> {
        if let Some(report) = self.dev.shutdown() {
            tracing::warn!(target: "cosim::host", "{report}");
        }
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}
