//! The simulation-thread half of one endpoint: everything the DPI functions do, in safe code.
//!
//! The SystemVerilog shell calls [`EpCore::tick`] once per clock; it costs one atomic load when
//! nothing arrived. The other methods are called only when `tick`'s mask (or an AXI handshake)
//! says there is work. Address and lane arithmetic lives here, so the shell stays small.
//!
//! The mask is also a licence: each `PEND_*` bit of a pop ([`EpCore::mmio_pop`],
//! [`EpCore::mmio_reject_queued`], [`EpCore::dma_r`], [`EpCore::nic_rx`], [`EpCore::uart_rx`])
//! allows one call of it until the next `tick`. A pop whose bit this clock's tick did not report
//! is refused: it returns nothing, takes nothing, and is counted and logged (rate-limited). A
//! shell that calls a pop on the right of `&&` (Verilator evaluates it even when the left side is
//! false) therefore cannot lose what it never saw, e.g. the DECERR beat of a DMA read accepted
//! after the tick while no host is connected.
//!
//! Layout: this module keeps the tick, the pending mask and pop gating, the session events and
//! the dispatch of host messages (and the MSI-X request). Each seam has its own state and its
//! own `impl EpCore` block: `mmio` (host MMIO requests for the AXI master and their
//! completions), `dma` (the AXI slave: reads with their modelled latency and clock hold, writes
//! coalesced into DMA_WRITE messages) and `streams` (NIC frames and UART bytes both ways).

mod dma;
mod mmio;
mod streams;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cosim_protocol::*;

use crate::link::{SharedStats, SimLink, ToIo, ToSim};

use self::dma::{DmaState, DECERR};
use self::mmio::MmioState;
use self::streams::Streams;

pub use self::dma::RBeat;
pub use self::mmio::MmioBeat;

/// `tick` mask: an MMIO request is queued ([`EpCore::mmio_pop`]).
pub const PEND_MMIO: u32 = 1 << 0;
/// `tick` mask: the oldest DMA read has data for the R channel ([`EpCore::dma_r`]).
pub const PEND_RBEAT: u32 = 1 << 1;
/// `tick` mask: a NIC frame waits for the RTL ([`EpCore::nic_rx`]).
pub const PEND_NIC_RX: u32 = 1 << 2;
/// `tick` mask: a serial byte waits for the RTL ([`EpCore::uart_rx`]).
pub const PEND_UART_RX: u32 = 1 << 3;
/// `tick` mask: the host asked for a device reset (reported once).
pub const PEND_RESET: u32 = 1 << 4;
/// `tick` mask: no more DMA reads may be accepted now (hold ARREADY low).
pub const PEND_AR_FULL: u32 = 1 << 5;

/// The `tick` bits that license a pop.
const POP_BITS: u32 = PEND_MMIO | PEND_RBEAT | PEND_NIC_RX | PEND_UART_RX;

/// The warning about refused pops: the first at once, then at most one line per interval.
const REFUSED_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Static configuration of one endpoint.
#[derive(Debug, Clone)]
pub struct EpConfig {
    /// Instance name (SystemVerilog hierarchical path), for logs.
    pub name: String,
    /// Base endpoint string.
    pub endpoint: String,
    /// PCI identity, BARs, MSI-X.
    pub device: DeviceConfig,
    /// Per-BAR base added to the BAR offset to form the AXI address.
    pub axi_base: [u64; NUM_BARS],
    /// Most DMA reads outstanding at once.
    pub max_reads: usize,
    /// Modelled DMA read latency in clocks (0: free-running). With a latency `L`, the data of a
    /// read accepted at clock `c` reaches the R channel at clock `c + L` exactly: earlier host
    /// completions are held, and if the host has not answered by then the simulation clock waits
    /// for it. Cycle counts then do not depend on how fast the host process answers.
    pub dma_latency: u64,
}

/// The simulation-thread state of one endpoint.
#[derive(Debug)]
pub struct EpCore {
    cfg: EpConfig,
    link: SimLink,
    stats: Arc<SharedStats>,
    connected: bool,
    /// Host MMIO requests: queued, and the read on the AXI master.
    mmio: MmioState,
    /// The DMA slave: outstanding reads, the write burst being received.
    dma: DmaState,
    /// NIC frames and UART bytes, both ways.
    streams: Streams,
    reset_pending: bool,
    goodbye: bool,
    warned_disconnected: bool,
    serial_backlog: Vec<u8>,
    /// Clocks seen by [`EpCore::tick`].
    cycle: u64,
    /// The pops this clock may still make: the pop bits of the last `tick`'s mask, each cleared
    /// by the one pop it allows.
    allowed: u32,
    /// Pops refused because their bit was not reported (a shell bug).
    refused: Refusals,
    /// vfio-user endpoints: what this thread carries out itself instead of sending it to the
    /// I/O side ([`EpCore::set_direct`]).
    direct: Option<Arc<crate::vfio_user::Direct>>,
    /// Direct DMA read completions, taken in at the next tick (as a message from the host would be).
    direct_done: VecDeque<DmaReadResp>,
}

/// Counts pops refused for want of their pending bit and rate-limits the warning about them.
/// Time is passed in, so the rule is tested without sleeping.
#[derive(Debug, Default)]
struct Refusals {
    total: u64,
    /// Refused since the last warning.
    unreported: u64,
    last_warn: Option<Instant>,
}

impl Refusals {
    /// Counts one refusal at `now`. Returns how many refusals the warning due now covers (the
    /// first refusal, then at most one warning per [`REFUSED_WARN_INTERVAL`]), or `None`.
    fn note(&mut self, now: Instant) -> Option<u64> {
        self.total += 1;
        self.unreported += 1;
        match self.last_warn {
            Some(t) if now.saturating_duration_since(t) < REFUSED_WARN_INTERVAL => None,
            _ => {
                self.last_warn = Some(now);
                Some(std::mem::take(&mut self.unreported))
            }
        }
    }
}

/// Serial bytes kept while no host is connected.
const SERIAL_BACKLOG: usize = 64 * 1024;

impl EpCore {
    pub(crate) fn new(cfg: EpConfig, link: SimLink, stats: Arc<SharedStats>) -> Self {
        Self {
            cfg,
            link,
            stats,
            connected: false,
            mmio: MmioState::default(),
            dma: DmaState::new(),
            streams: Streams::default(),
            reset_pending: false,
            goodbye: false,
            warned_disconnected: false,
            serial_backlog: Vec::new(),
            cycle: 0,
            allowed: 0,
            refused: Refusals::default(),
            direct: None,
            direct_done: VecDeque::new(),
        }
    }

    /// A vfio-user endpoint: the design's DMA goes straight to the client's shared memory (a
    /// read completes for the next clock, a write at once; the modelled read latency still
    /// applies), MMIO read completions straight to the waiting server thread, MSI-X straight to
    /// the client's eventfds.
    pub(crate) fn set_direct(&mut self, direct: Arc<crate::vfio_user::Direct>) {
        self.direct = Some(direct);
    }

    /// The configuration.
    pub fn config(&self) -> &EpConfig {
        &self.cfg
    }

    /// True once the host said goodbye.
    pub fn goodbye(&self) -> bool {
        self.goodbye
    }

    /// Pops refused so far because this clock's tick had not reported their pending bit (0 with
    /// a correct shell).
    pub fn refused_pops(&self) -> u64 {
        self.refused.total
    }

    /// Allows the one pop that `bit` of this clock's tick mask licenses (clearing the bit), or
    /// refuses it: counted, and logged at most once per [`REFUSED_WARN_INTERVAL`].
    #[inline]
    fn take_pending(&mut self, bit: u32, what: &'static str) -> bool {
        if self.allowed & bit != 0 {
            self.allowed &= !bit;
            return true;
        }
        self.refuse(bit, what);
        false
    }

    #[cold]
    fn refuse(&mut self, bit: u32, what: &'static str) {
        SharedStats::add(&self.stats.refused_pops, 1);
        let Some(count) = self.refused.note(Instant::now()) else { return };
        tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, what, bit, cycle = self.cycle, count,
            total = self.refused.total,
            "DPI pop refused: called in a clock whose cosim_ep_tick did not report its pending bit (or after \
             the one pop the bit allows); nothing was taken. The shell must call it only under the bit, in a \
             nested if (Verilator evaluates a DPI call on the right of && even when the left is false)");
    }

    fn send(&mut self, mut m: Message) {
        if !self.connected {
            if let Message::Serial(b) = m {
                // Console output before the host connects is kept (like a chardev log), up to a limit.
                self.serial_backlog.extend(b);
                let excess = self.serial_backlog.len().saturating_sub(SERIAL_BACKLOG);
                self.serial_backlog.drain(..excess);
                return;
            }
            if !self.warned_disconnected {
                tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name,
                    "no host session: device-to-host traffic is dropped until QEMU (or the host model) connects");
                self.warned_disconnected = true;
            }
            return;
        }
        if let Some(d) = &self.direct {
            match d.take(m) {
                crate::vfio_user::Taken::ReadDone(done) => return self.direct_done.push_back(done),
                crate::vfio_user::Taken::Done => return,
                crate::vfio_user::Taken::NotMine(back) => m = back,
            }
        }
        if self.link.tx.send(ToIo::Send(m)).is_ok() {
            self.link.waker.wake();
        }
    }

    /// Asks the I/O thread to say goodbye and stop.
    pub(crate) fn shutdown(&mut self) {
        if self.refused.unreported > 0 {
            tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, count = self.refused.unreported,
                total = self.refused.total, "DPI pops refused since the last warning (their pending bit was not reported)");
        }
        self.flush_uart();
        let _ = self.link.tx.send(ToIo::Shutdown);
        self.link.waker.wake();
    }

    /// Once per clock: takes in what the I/O thread delivered and returns the `PEND_*` mask.
    #[inline]
    pub fn tick(&mut self) -> u32 {
        // Direct DMA completions (vfio-user) first: they answer reads issued before anything now
        // in the link. An empty queue costs one length check.
        while let Some(r) = self.direct_done.pop_front() {
            self.on_dma_read_resp(r);
        }
        // A plain load first: the locked swap only when something arrived.
        if self.link.pending.load(Ordering::Relaxed) && self.link.pending.swap(false, Ordering::Acquire) {
            while let Ok(m) = self.link.rx.try_recv() {
                self.on_message(m);
            }
        }
        if self.streams.has_uart_tx() {
            self.flush_uart();
        }
        // A held clock takes in host messages, so every bit of the mask is computed after it (or
        // what arrived during the hold would wait a clock longer). The mask is recorded: the pops
        // of this clock are allowed only for the bits it reports (see `take_pending`).
        self.cycle += 1;
        if self.dma.front_read_holds_clock(self.cycle) {
            self.hold_clock_for_dma_read();
        }
        let mut mask = 0;
        if self.mmio.has_queued() {
            mask |= PEND_MMIO;
        }
        if self.dma.front_read_has_beat(self.cycle) {
            mask |= PEND_RBEAT;
        }
        if self.streams.has_nic_rx() {
            mask |= PEND_NIC_RX;
        }
        if self.streams.has_uart_rx() {
            mask |= PEND_UART_RX;
        }
        if self.reset_pending {
            self.reset_pending = false;
            mask |= PEND_RESET;
        }
        if self.dma.reads_in_flight() >= self.cfg.max_reads {
            mask |= PEND_AR_FULL;
        }
        self.allowed = mask & POP_BITS;
        if mask != 0 || self.dma.reads_in_flight() != 0 || self.mmio.on_bus() {
            self.mark_busy();
        }
        mask
    }

    /// This clock had something pending or in flight: the simulation must not sleep yet
    /// (registry::idle). A plain store on x86 (relaxed; written and read by this thread).
    #[inline]
    fn mark_busy(&self) {
        self.link.wake.busy_mark.store(self.cycle, Ordering::Relaxed);
    }

    fn on_message(&mut self, m: ToSim) {
        match m {
            ToSim::Msg(Message::MmioRead(r)) => self.queue_mmio(false, r.tag, r.bar, r.offset, r.size, 0),
            ToSim::Msg(Message::MmioWrite(w)) => self.queue_mmio(true, 0, w.bar, w.offset, w.size, w.data),
            ToSim::Msg(Message::DmaReadResp(r)) => self.on_dma_read_resp(r),
            ToSim::Msg(Message::NicFrame(f)) => self.on_nic_frame(f),
            ToSim::Msg(Message::Serial(b)) => self.on_serial(b),
            ToSim::Msg(Message::Reset) => {
                SharedStats::add(&self.stats.resets, 1);
                tracing::info!(target: "cosim::dpi", ep = %self.cfg.name, "device reset from the host");
                self.drop_transactions();
                self.reset_pending = true;
            }
            ToSim::Msg(other) => {
                tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, opcode = ?other.opcode(), "unexpected message dropped");
            }
            ToSim::NewSession => {
                self.host_connected();
                self.mmio.forget_queued();
                self.fail_waiting_reads(DECERR);
            }
            ToSim::HostLost => {
                self.connected = false;
                self.fail_waiting_reads(DECERR);
            }
            ToSim::HostBack => self.host_connected(),
            ToSim::Goodbye => {
                self.goodbye = true;
                crate::registry::request_stop("the host said goodbye");
            }
        }
    }

    /// A host session began (or the lost host spoke again): warnings about its absence are
    /// re-armed and the serial bytes kept meanwhile are sent.
    fn host_connected(&mut self) {
        self.connected = true;
        self.warned_disconnected = false;
        self.dma.rearm_no_host_warning();
        let backlog = std::mem::take(&mut self.serial_backlog);
        for c in backlog.chunks(MAX_SERIAL_LEN) {
            self.send(Message::Serial(c.to_vec()));
        }
    }

    /// Drops all in-flight transactions (device reset): the RTL side is being reset too.
    fn drop_transactions(&mut self) {
        self.mmio.forget_queued();
        self.dma.drop_transactions();
        self.streams.drop_partial_frames();
    }

    /// MSI-X request for `vector`.
    pub fn msix(&mut self, vector: u32) {
        if vector >= u32::from(self.cfg.device.msix.vectors) {
            tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, vector, vectors = self.cfg.device.msix.vectors,
                "MSI-X request for a vector the device does not have; dropped");
            return;
        }
        SharedStats::add(&self.stats.irqs, 1);
        self.send(Message::Msix(Msix { vector: vector as u16 }));
    }
}

/// Cores wired to an in-memory link, for the unit tests of every seam.
#[cfg(test)]
mod testing {
    use super::*;
    use crate::link::{link, IoLink};

    pub(super) fn core() -> (EpCore, IoLink) {
        core_with_latency(0)
    }

    pub(super) fn core_with_latency(dma_latency: u64) -> (EpCore, IoLink) {
        let (mut c, io) = core_without_host(dma_latency);
        io.to_sim(ToSim::NewSession);
        c.tick();
        (c, io)
    }

    /// A core no host has connected to yet.
    pub(super) fn core_without_host(dma_latency: u64) -> (EpCore, IoLink) {
        let (s, io) = link().unwrap();
        let mut d = DeviceConfig { vendor_id: 0x1ded, device_id: 0xacc1, ..Default::default() };
        d.bars[0] = BarDesc::mem32(0x1000);
        d.bars[2] = BarDesc::mem64(0x4000, false);
        d.msix = MsixConfig { vectors: 4, table_bar: 2, table_offset: 0, pba_bar: 2, pba_offset: 0x2000 };
        let cfg = EpConfig {
            name: "t".into(),
            endpoint: "ipc:///tmp/x".into(),
            device: d,
            axi_base: [0x1000_0000, 0, 0x2000_0000, 0, 0, 0],
            max_reads: 4,
            dma_latency,
        };
        (EpCore::new(cfg, s, Arc::new(SharedStats::default())), io)
    }

    pub(super) fn sent(io: &IoLink) -> Vec<Message> {
        io.rx.try_iter().filter_map(|m| if let ToIo::Send(m) = m { Some(m) } else { None }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{core, sent};
    use super::*;

    #[test]
    fn reset_drops_transactions_and_reports_once() {
        let (mut c, io) = core();
        c.dma_ar(1, 0x100, 0, 3, 1);
        io.to_sim(ToSim::Msg(Message::Reset));
        assert_ne!(c.tick() & PEND_RESET, 0);
        assert_eq!(c.tick() & (PEND_RESET | PEND_RBEAT), 0, "reported once; the read is gone");
        io.to_sim(ToSim::HostLost);
        c.tick();
        c.dma_ar(1, 0x100, 0, 3, 1);
        assert_ne!(c.tick() & PEND_RBEAT, 0);
        assert_eq!(c.dma_r().map(|b| b.resp), Some(DECERR));
    }

    #[test]
    fn a_pop_without_its_bit_is_refused_and_takes_nothing() {
        let (mut c, io) = core();
        let bar0 = BarIndex::new(0).unwrap();
        for tag in [1, 2] {
            io.to_sim(ToSim::Msg(Message::MmioRead(MmioRead { tag, bar: bar0, size: AccessSize::B4, offset: 8 * tag as u64 })));
        }
        io.to_sim(ToSim::Msg(Message::NicFrame((1..=9).collect())));
        io.to_sim(ToSim::Msg(Message::Serial(b"ab".to_vec())));
        // Not yet reported by a tick: every pop is refused.
        assert_eq!((c.mmio_pop(), c.nic_rx(), c.uart_rx(), c.dma_r()), (None, None, None, None));
        c.mmio_reject_queued();
        assert_eq!(c.refused_pops(), 5);
        let m = c.tick();
        assert_eq!(m & POP_BITS, PEND_MMIO | PEND_NIC_RX | PEND_UART_RX);
        // Each reported bit allows one pop; a second one in the same clock is refused and the
        // queue keeps what it refused.
        assert_eq!(c.dma_r(), None, "no R beat was reported");
        assert_eq!(c.mmio_pop().map(|b| b.addr), Some(0x1000_0008));
        assert_eq!(c.mmio_pop(), None);
        c.mmio_reject_queued();
        assert_eq!(c.nic_rx(), Some((0x0807_0605_0403_0201, 0xff, false)));
        assert_eq!(c.nic_rx(), None);
        assert_eq!(c.uart_rx(), Some(b'a'));
        assert_eq!(c.uart_rx(), None);
        assert_eq!(c.refused_pops(), 10);
        assert!(sent(&io).is_empty(), "the refused mmio_reject_queued failed nothing");
        // The next clock hands out the rest.
        c.mmio_read_done(0, 0);
        sent(&io);
        let m = c.tick();
        assert_eq!(m & POP_BITS, PEND_MMIO | PEND_NIC_RX | PEND_UART_RX);
        assert_eq!(c.mmio_pop().map(|b| b.addr), Some(0x1000_0010));
        assert_eq!(c.nic_rx(), Some((9, 0x01, true)));
        assert_eq!(c.uart_rx(), Some(b'b'));
        // A tick that reports nothing withdraws the licence of the last one.
        assert_eq!(c.tick() & POP_BITS, 0);
        assert_eq!((c.mmio_pop(), c.nic_rx(), c.uart_rx()), (None, None, None));
        assert_eq!(c.refused_pops(), 13);
    }

    #[test]
    fn refusal_warnings_are_rate_limited() {
        let mut r = Refusals::default();
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        assert_eq!(r.note(t0), Some(1), "the first refusal is logged at once");
        assert_eq!(r.note(s(1)), None);
        assert_eq!(r.note(s(9)), None);
        assert_eq!(r.note(s(10)), Some(3), "then one line per interval with the count since the last");
        assert_eq!(r.note(s(11)), None);
        assert_eq!((r.total, r.unreported), (5, 1));
    }
}
