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

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use cosim_protocol::*;

use crate::burst::{Burst, BurstKind};
use crate::link::{SharedStats, SimLink, ToIo, ToSim};

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

/// AXI response codes.
/// Longest the clock is held for one DMA read. Past it the clock runs on (that read's latency is
/// then the host's): a host that cannot answer because it waits for this same simulation (one
/// QEMU vCPU in an MMIO read of another endpoint of this simulation) must not deadlock.
const HOLD_LIMIT: Duration = Duration::from_secs(1);

const OKAY: u8 = 0;
const SLVERR: u8 = 2;
const DECERR: u8 = 3;

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

/// One MMIO access as the AXI master drives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioBeat {
    /// True for a write.
    pub write: bool,
    /// AXI address (BAR base + offset).
    pub addr: u64,
    /// log2 of the access size (AxSIZE).
    pub size_log2: u8,
    /// BAR index (AxUSER).
    pub bar: u8,
    /// Write data on its byte lanes.
    pub wdata: u64,
    /// Write strobes.
    pub wstrb: u8,
}

#[derive(Debug, Clone, Copy)]
struct CurRead {
    tag: u32,
    bar: u8,
    offset: u64,
    addr: u64,
    size: AccessSize,
    /// From an older session: complete silently.
    stale: bool,
}

#[derive(Debug)]
enum ReadData {
    Waiting,
    Ok(Vec<u8>),
    Err(u8),
}

#[derive(Debug)]
struct ReadBurst {
    id: u32,
    tag: u32,
    /// Clock at which the first beat may be returned (see [`EpConfig::dma_latency`]).
    due: u64,
    /// The clock may be held for this read's completion (cleared after [`HOLD_LIMIT`]).
    hold: bool,
    burst: Burst,
    lo: u64,
    beat: u32,
    data: ReadData,
}

#[derive(Debug)]
struct WriteBurst {
    id: u32,
    burst: Burst,
    beat: u32,
}

/// One R-channel beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RBeat {
    /// RID.
    pub id: u32,
    /// RDATA.
    pub data: u64,
    /// RRESP.
    pub resp: u8,
    /// RLAST.
    pub last: bool,
}

/// The simulation-thread state of one endpoint.
#[derive(Debug)]
pub struct EpCore {
    cfg: EpConfig,
    link: SimLink,
    stats: Arc<SharedStats>,
    connected: bool,
    mmio_q: VecDeque<(MmioBeat, Option<CurRead>)>,
    cur_read: Option<CurRead>,
    reads: VecDeque<ReadBurst>,
    next_dma_tag: u32,
    wburst: Option<WriteBurst>,
    wrun: Option<(u64, Vec<u8>)>,
    nic_tx: Vec<u8>,
    nic_tx_drop: bool,
    nic_rx: VecDeque<Vec<u8>>,
    nic_rx_pos: usize,
    uart_tx: Vec<u8>,
    uart_rx: VecDeque<u8>,
    reset_pending: bool,
    goodbye: bool,
    warned_disconnected: bool,
    /// A DMA read failed for want of a host was logged (once per absence of the host).
    warned_dma_no_host: bool,
    serial_backlog: Vec<u8>,
    /// Clocks seen by [`EpCore::tick`].
    cycle: u64,
    /// The pops this clock may still make: the pop bits of the last `tick`'s mask, each cleared
    /// by the one pop it allows.
    allowed: u32,
    /// Pops refused because their bit was not reported (a shell bug).
    refused: Refusals,
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
            mmio_q: VecDeque::new(),
            cur_read: None,
            reads: VecDeque::new(),
            next_dma_tag: 1,
            wburst: None,
            wrun: None,
            nic_tx: Vec::new(),
            nic_tx_drop: false,
            nic_rx: VecDeque::new(),
            nic_rx_pos: 0,
            uart_tx: Vec::new(),
            uart_rx: VecDeque::new(),
            reset_pending: false,
            goodbye: false,
            warned_disconnected: false,
            warned_dma_no_host: false,
            serial_backlog: Vec::new(),
            cycle: 0,
            allowed: 0,
            refused: Refusals::default(),
        }
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

    fn send(&mut self, m: Message) {
        crate::registry::note_activity();
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
        // A plain load first: the locked swap only when something arrived.
        if self.link.pending.load(Ordering::Relaxed) && self.link.pending.swap(false, Ordering::Acquire) {
            while let Ok(m) = self.link.rx.try_recv() {
                self.on_message(m);
            }
        }
        if !self.uart_tx.is_empty() {
            self.flush_uart();
        }
        // A held clock takes in host messages, so every bit of the mask is computed after it (or
        // what arrived during the hold would wait a clock longer). The mask is recorded: the pops
        // of this clock are allowed only for the bits it reports (see `take_pending`).
        self.cycle += 1;
        if let Some(r) = self.reads.front() {
            if self.cycle >= r.due && r.hold && matches!(r.data, ReadData::Waiting) {
                self.hold_clock_for_dma_read();
            }
        }
        let mut mask = 0;
        if !self.mmio_q.is_empty() {
            mask |= PEND_MMIO;
        }
        if self.reads.front().is_some_and(|r| self.cycle >= r.due && !matches!(r.data, ReadData::Waiting)) {
            mask |= PEND_RBEAT;
        }
        if !self.nic_rx.is_empty() {
            mask |= PEND_NIC_RX;
        }
        if !self.uart_rx.is_empty() {
            mask |= PEND_UART_RX;
        }
        if self.reset_pending {
            self.reset_pending = false;
            mask |= PEND_RESET;
        }
        if self.reads.len() >= self.cfg.max_reads {
            mask |= PEND_AR_FULL;
        }
        self.allowed = mask & POP_BITS;
        mask
    }

    /// The oldest DMA read is due but the host has not answered: hold the simulation clock (this
    /// call does not return) until the completion arrives, a reset or a lost host drops the read,
    /// a stop is requested, or [`HOLD_LIMIT`] passes. Everything else the host sends meanwhile is
    /// taken in as usual.
    #[cold]
    fn hold_clock_for_dma_read(&mut self) {
        let started = Instant::now();
        self.hold_until_front_read_completes(started);
        SharedStats::add(&self.stats.dma_hold_us, started.elapsed().as_micros() as u64);
    }

    fn hold_until_front_read_completes(&mut self, started: Instant) {
        loop {
            let Some(r) = self.reads.front() else { return };
            if !matches!(r.data, ReadData::Waiting) {
                return;
            }
            let (tag, lo) = (r.tag, r.lo);
            if crate::registry::stop_requested() {
                return;
            }
            if started.elapsed() >= HOLD_LIMIT {
                tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, tag, addr = format_args!("{lo:#x}"), cycle = self.cycle,
                    "the host has not completed a DMA read {HOLD_LIMIT:?} after it was due; the clock runs on \
                     (this read's latency, and the cycle count of the job, now depend on the host)");
                if let Some(r) = self.reads.front_mut() {
                    r.hold = false;
                }
                return;
            }
            match self.link.rx.recv_timeout(Duration::from_millis(20)) {
                Ok(m) => self.on_message(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail_waiting_reads(DECERR);
                    return;
                }
            }
        }
    }

    fn on_message(&mut self, m: ToSim) {
        crate::registry::note_activity();
        match m {
            ToSim::Msg(Message::MmioRead(r)) => self.queue_mmio(false, r.tag, r.bar, r.offset, r.size, 0),
            ToSim::Msg(Message::MmioWrite(w)) => self.queue_mmio(true, 0, w.bar, w.offset, w.size, w.data),
            ToSim::Msg(Message::DmaReadResp(r)) => self.on_dma_read_resp(r),
            ToSim::Msg(Message::NicFrame(f)) => {
                SharedStats::add(&self.stats.frames_rx, 1);
                if f.is_empty() {
                    tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, "empty NIC frame from the host dropped");
                } else {
                    self.nic_rx.push_back(f);
                }
            }
            ToSim::Msg(Message::Serial(b)) => {
                SharedStats::add(&self.stats.serial_rx, b.len() as u64);
                self.uart_rx.extend(b);
            }
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
                self.connected = true;
                self.warned_disconnected = false;
                self.warned_dma_no_host = false;
                let backlog = std::mem::take(&mut self.serial_backlog);
                for c in backlog.chunks(MAX_SERIAL_LEN) {
                    self.send(Message::Serial(c.to_vec()));
                }
                self.mmio_q.clear();
                if let Some(c) = &mut self.cur_read {
                    c.stale = true;
                }
                self.fail_waiting_reads(DECERR);
            }
            ToSim::HostLost => {
                self.connected = false;
                self.fail_waiting_reads(DECERR);
            }
            ToSim::HostBack => {
                self.connected = true;
                self.warned_disconnected = false;
                self.warned_dma_no_host = false;
                let backlog = std::mem::take(&mut self.serial_backlog);
                for c in backlog.chunks(MAX_SERIAL_LEN) {
                    self.send(Message::Serial(c.to_vec()));
                }
            }
            ToSim::Goodbye => {
                self.goodbye = true;
                crate::registry::request_stop("the host said goodbye");
            }
        }
    }

    /// Drops all in-flight transactions (device reset): the RTL side is being reset too.
    fn drop_transactions(&mut self) {
        self.mmio_q.clear();
        if let Some(c) = &mut self.cur_read {
            c.stale = true;
        }
        self.reads.clear();
        self.wburst = None;
        self.wrun = None;
        self.nic_tx.clear();
        self.nic_tx_drop = false;
        if self.nic_rx_pos != 0 {
            self.nic_rx.pop_front();
            self.nic_rx_pos = 0;
        }
    }

    fn fail_waiting_reads(&mut self, resp: u8) {
        for r in &mut self.reads {
            if matches!(r.data, ReadData::Waiting) {
                tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, tag = r.tag, addr = format_args!("{:#x}", r.lo),
                    "DMA read without a host to answer it: completing with DECERR");
                r.data = ReadData::Err(resp);
            }
        }
    }

    fn queue_mmio(&mut self, write: bool, tag: u32, bar: BarIndex, offset: u64, size: AccessSize, data: u64) {
        let b = bar.get();
        let desc = self.cfg.device.bars[b as usize];
        let n = size.bytes() as u64;
        let reject = if !desc.present() {
            Some("BAR is absent")
        } else if offset.checked_add(n).filter(|&e| e <= desc.size).is_none() {
            Some("access beyond the end of the BAR")
        } else if (offset & 7) + n > 8 {
            Some("access crosses an 8-byte boundary (the 64-bit AXI bus cannot carry it in one beat)")
        } else {
            None
        };
        if let Some(reason) = reject {
            SharedStats::add(&self.stats.mmio_errors, 1);
            tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, bar = b, offset = format_args!("{offset:#x}"), size = n,
                write, reason, "MMIO access rejected");
            if !write {
                self.send(Message::MmioReadResp(MmioReadResp { tag, status: Status::UnsupportedRequest, data: u64::MAX }));
                SharedStats::add(&self.stats.mmio_reads, 1);
            }
            return;
        }
        let addr = self.cfg.axi_base[b as usize].wrapping_add(offset);
        let lane = (addr & 7) as u32;
        let beat = MmioBeat {
            write,
            addr,
            size_log2: n.trailing_zeros() as u8,
            bar: b,
            wdata: if write { (data & size.mask()) << (8 * lane) } else { 0 },
            wstrb: (((1u32 << n) - 1) << lane) as u8,
        };
        let cur = (!write).then_some(CurRead { tag, bar: b, offset, addr, size, stale: false });
        self.mmio_q.push_back((beat, cur));
    }

    /// Takes the next MMIO access for the AXI master. Allowed once per tick that reported
    /// [`PEND_MMIO`]; otherwise refused (`None`, nothing taken).
    pub fn mmio_pop(&mut self) -> Option<MmioBeat> {
        if !self.take_pending(PEND_MMIO, "cosim_ep_mmio_pop") {
            return None;
        }
        let (beat, cur) = self.mmio_q.pop_front()?;
        if beat.write {
            SharedStats::add(&self.stats.mmio_writes, 1);
        } else {
            self.cur_read = cur;
        }
        Some(beat)
    }

    /// The AXI read for the current MMIO read returned `rdata` with `rresp`.
    pub fn mmio_read_done(&mut self, rresp: u8, rdata: u64) {
        let Some(c) = self.cur_read.take() else {
            tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, "MMIO read completion without a read in flight");
            return;
        };
        if c.stale {
            return;
        }
        let status = match rresp {
            0 | 1 => Status::Ok,
            2 => Status::CompleterAbort,
            _ => Status::UnsupportedRequest,
        };
        if status != Status::Ok {
            SharedStats::add(&self.stats.mmio_errors, 1);
            tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, bar = c.bar, offset = format_args!("{:#x}", c.offset),
                rresp, ?status, "MMIO read answered with an AXI error");
        }
        let data = (rdata >> (8 * (c.addr & 7))) & c.size.mask();
        SharedStats::add(&self.stats.mmio_reads, 1);
        self.send(Message::MmioReadResp(MmioReadResp { tag: c.tag, status, data }));
    }

    /// The AXI write of the last MMIO write completed with `bresp`.
    pub fn mmio_write_done(&mut self, bresp: u8) {
        if bresp >= 2 {
            SharedStats::add(&self.stats.mmio_errors, 1);
            tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, bresp, "MMIO write answered with an AXI error (posted: the host is not told)");
        }
    }

    /// The RTL did not answer the current MMIO access within `cycles`: the host gets an error
    /// completion (for a read) and a warning is logged.
    pub fn mmio_timeout(&mut self, write: bool, cycles: u32) {
        SharedStats::add(&self.stats.mmio_errors, 1);
        if write {
            tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, cycles,
                "MMIO write: the user design did not complete it in time; the bus stays busy until it does");
            return;
        }
        let Some(c) = self.cur_read.take() else { return };
        tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, bar = c.bar, offset = format_args!("{:#x}", c.offset), cycles,
            "MMIO read timed out: the user design did not answer; completing with CompleterAbort");
        if !c.stale {
            SharedStats::add(&self.stats.mmio_reads, 1);
            self.send(Message::MmioReadResp(MmioReadResp { tag: c.tag, status: Status::CompleterAbort, data: u64::MAX }));
        }
    }

    /// While the AXI master is stuck on a timed-out access: fails every queued MMIO access.
    /// Allowed once per tick that reported [`PEND_MMIO`]; otherwise refused (nothing failed).
    pub fn mmio_reject_queued(&mut self) {
        if !self.take_pending(PEND_MMIO, "cosim_ep_mmio_reject_queued") {
            return;
        }
        while let Some((beat, cur)) = self.mmio_q.pop_front() {
            SharedStats::add(&self.stats.mmio_errors, 1);
            tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, bar = beat.bar, addr = format_args!("{:#x}", beat.addr),
                write = beat.write, "MMIO access rejected: the user design is still stuck on an earlier access");
            if let Some(c) = cur {
                SharedStats::add(&self.stats.mmio_reads, 1);
                self.send(Message::MmioReadResp(MmioReadResp { tag: c.tag, status: Status::CompleterAbort, data: u64::MAX }));
            }
        }
    }

    fn burst(&self, what: &str, addr: u64, len: u8, size: u8, burst: u8) -> Burst {
        let kind = BurstKind::from_axi(burst).unwrap_or_else(|| {
            tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, what, burst, "reserved AxBURST value treated as INCR");
            BurstKind::Incr
        });
        if size > 3 {
            tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, what, size, "AxSIZE wider than the 64-bit bus treated as 8 bytes");
        }
        Burst { addr, len, size: size.min(3), kind }
    }

    /// DMA read address handshake. Sends the DMA read (or fails it at once without a host).
    /// Returns true if no further read can be accepted now (hold ARREADY low).
    pub fn dma_ar(&mut self, id: u32, addr: u64, len: u8, size: u8, burst: u8) -> bool {
        let b = self.burst("AR", addr, len, size, burst);
        let (lo, hi) = b.byte_range();
        let tag = self.next_dma_tag;
        self.next_dma_tag = self.next_dma_tag.wrapping_add(1).max(1);
        let data = if self.connected {
            SharedStats::add(&self.stats.dma_reads, 1);
            SharedStats::add(&self.stats.dma_read_bytes, hi - lo);
            self.send(Message::DmaRead(DmaRead { tag, addr: GuestAddr(lo), len: (hi - lo) as u32 }));
            ReadData::Waiting
        } else {
            if self.warned_dma_no_host {
                tracing::debug!(target: "cosim::dpi", ep = %self.cfg.name, addr = format_args!("{lo:#x}"), len = hi - lo,
                    "DMA read with no host connected: DECERR");
            } else {
                self.warned_dma_no_host = true;
                tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, addr = format_args!("{lo:#x}"), len = hi - lo,
                    "DMA read with no host connected: DECERR (further ones until a host connects are logged at debug level)");
            }
            ReadData::Err(DECERR)
        };
        if self.reads.len() >= self.cfg.max_reads {
            tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, "AR accepted beyond the outstanding-read limit");
        }
        let due = self.cycle + self.cfg.dma_latency;
        let hold = self.cfg.dma_latency > 0;
        self.reads.push_back(ReadBurst { id, tag, due, hold, burst: b, lo, beat: 0, data });
        self.reads.len() >= self.cfg.max_reads
    }

    fn on_dma_read_resp(&mut self, r: DmaReadResp) {
        let Some(rb) = self.reads.iter_mut().find(|x| x.tag == r.tag && matches!(x.data, ReadData::Waiting)) else {
            tracing::debug!(target: "cosim::dpi", ep = %self.cfg.name, tag = r.tag, "DMA read completion for no outstanding read (after a reset?) dropped");
            return;
        };
        let (lo, hi) = rb.burst.byte_range();
        rb.data = match r.status {
            Status::Ok if r.data.len() as u64 == hi - lo => ReadData::Ok(r.data),
            Status::Ok => {
                tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, tag = r.tag, got = r.data.len(), want = hi - lo,
                    "DMA read completion of the wrong length: SLVERR");
                ReadData::Err(SLVERR)
            }
            Status::CompleterAbort => ReadData::Err(SLVERR),
            Status::UnsupportedRequest => ReadData::Err(DECERR),
        };
        if let ReadData::Err(_) = rb.data {
            tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, tag = r.tag, addr = format_args!("{lo:#x}"), status = ?r.status,
                "DMA read failed");
        }
    }

    /// Next R-channel beat of the oldest DMA read, if its data arrived. Allowed once per tick
    /// that reported [`PEND_RBEAT`]; otherwise refused (`None`, the beat stays), so a read
    /// accepted after this clock's tick (e.g. failed at once for want of a host) waits for the
    /// next tick to report it.
    pub fn dma_r(&mut self) -> Option<RBeat> {
        if !self.take_pending(PEND_RBEAT, "cosim_ep_dma_r") {
            return None;
        }
        let rb = self.reads.front_mut()?;
        if self.cycle < rb.due {
            return None;
        }
        let i = rb.beat;
        let last = i + 1 >= rb.burst.beats();
        let (data, resp) = match &rb.data {
            ReadData::Waiting => return None,
            ReadData::Err(e) => (0, *e),
            ReadData::Ok(bytes) => {
                let a = rb.burst.beat_addr(i) & !7;
                let mut v = [0u8; 8];
                for (j, slot) in v.iter_mut().enumerate() {
                    let off = (a + j as u64).wrapping_sub(rb.lo);
                    if let Some(b) = bytes.get(off as usize) {
                        if off < bytes.len() as u64 {
                            *slot = *b;
                        }
                    }
                }
                (u64::from_le_bytes(v), OKAY)
            }
        };
        let beat = RBeat { id: rb.id, data, resp, last };
        rb.beat += 1;
        if last {
            self.reads.pop_front();
        }
        Some(beat)
    }

    /// DMA write address handshake.
    pub fn dma_aw(&mut self, id: u32, addr: u64, len: u8, size: u8, burst: u8) {
        if self.wburst.is_some() {
            tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, "AW before the previous burst's last beat; previous burst ended");
            self.flush_write();
        }
        let b = self.burst("AW", addr, len, size, burst);
        self.wburst = Some(WriteBurst { id, burst: b, beat: 0 });
    }

    /// One W beat. Returns `Some((bid, bresp))` when the burst is complete.
    pub fn dma_w(&mut self, data: u64, strb: u8, last: bool) -> Option<(u32, u8)> {
        let Some(w) = self.wburst.as_mut() else {
            tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, "W beat without a write address; dropped");
            return None;
        };
        let i = w.beat;
        let lanes = w.burst.beat_lanes(i);
        let base = w.burst.beat_addr(i) & !7;
        if strb & !lanes != 0 {
            tracing::debug!(target: "cosim::dpi", ep = %self.cfg.name, strb, lanes, "WSTRB outside the beat's byte lanes ignored");
        }
        let fixed = w.burst.kind == BurstKind::Fixed;
        let end_by_count = i + 1 >= w.burst.beats();
        w.beat += 1;
        let bytes = data.to_le_bytes();
        for j in 0..8u64 {
            if strb & lanes & (1 << j) != 0 {
                self.put_write_byte(base + j, bytes[j as usize]);
            }
        }
        if fixed {
            self.flush_run();
        }
        if last || end_by_count {
            if last != end_by_count {
                tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, beat = i, wlast = last,
                    "WLAST does not match AWLEN; burst ended here");
            }
            let id = self.wburst.as_ref().map_or(0, |w| w.id);
            self.flush_write();
            return Some((id, OKAY));
        }
        None
    }

    fn put_write_byte(&mut self, addr: u64, b: u8) {
        match &mut self.wrun {
            Some((start, buf)) if start.wrapping_add(buf.len() as u64) == addr && buf.len() < MAX_DMA_LEN => buf.push(b),
            _ => {
                self.flush_run();
                self.wrun = Some((addr, vec![b]));
            }
        }
    }

    fn flush_run(&mut self) {
        if let Some((addr, data)) = self.wrun.take() {
            SharedStats::add(&self.stats.dma_writes, 1);
            SharedStats::add(&self.stats.dma_write_bytes, data.len() as u64);
            self.send(Message::DmaWrite(DmaWrite { addr: GuestAddr(addr), data }));
        }
    }

    fn flush_write(&mut self) {
        self.flush_run();
        self.wburst = None;
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

    /// One beat of the NIC transmit stream (user -> network).
    pub fn nic_tx(&mut self, data: u64, keep: u8, last: bool) {
        let bytes = data.to_le_bytes();
        for (j, b) in bytes.iter().enumerate() {
            if keep & (1 << j) != 0 {
                if self.nic_tx.len() >= MAX_FRAME_LEN {
                    self.nic_tx_drop = true;
                } else {
                    self.nic_tx.push(*b);
                }
            }
        }
        if last {
            let f = std::mem::take(&mut self.nic_tx);
            if self.nic_tx_drop || f.is_empty() {
                tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, len = f.len(), max = MAX_FRAME_LEN,
                    "NIC frame from the RTL is empty or too long; dropped");
            } else {
                SharedStats::add(&self.stats.frames_tx, 1);
                self.send(Message::NicFrame(f));
            }
            self.nic_tx_drop = false;
        }
    }

    /// Next beat of the NIC receive stream (network -> user): `(data, keep, last)`. Allowed once
    /// per tick that reported [`PEND_NIC_RX`]; otherwise refused (`None`, nothing taken).
    pub fn nic_rx(&mut self) -> Option<(u64, u8, bool)> {
        if !self.take_pending(PEND_NIC_RX, "cosim_ep_nic_rx") {
            return None;
        }
        let f = self.nic_rx.front()?;
        let end = (self.nic_rx_pos + 8).min(f.len());
        let chunk = &f[self.nic_rx_pos..end];
        let mut v = [0u8; 8];
        v[..chunk.len()].copy_from_slice(chunk);
        let keep = ((1u32 << chunk.len()) - 1) as u8;
        let last = end == f.len();
        if last {
            self.nic_rx.pop_front();
            self.nic_rx_pos = 0;
        } else {
            self.nic_rx_pos = end;
        }
        Some((u64::from_le_bytes(v), keep, last))
    }

    /// One byte from the RTL's UART (batched, sent at the next tick).
    pub fn uart_tx(&mut self, b: u8) {
        self.uart_tx.push(b);
    }

    fn flush_uart(&mut self) {
        if self.uart_tx.is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut self.uart_tx);
        SharedStats::add(&self.stats.serial_tx, bytes.len() as u64);
        for c in bytes.chunks(MAX_SERIAL_LEN) {
            self.send(Message::Serial(c.to_vec()));
        }
    }

    /// Next byte for the RTL's UART receiver. Allowed once per tick that reported
    /// [`PEND_UART_RX`]; otherwise refused (`None`, nothing taken).
    pub fn uart_rx(&mut self) -> Option<u8> {
        if !self.take_pending(PEND_UART_RX, "cosim_ep_uart_rx") {
            return None;
        }
        self.uart_rx.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{link, IoLink};

    fn core() -> (EpCore, IoLink) {
        core_with_latency(0)
    }

    fn core_with_latency(dma_latency: u64) -> (EpCore, IoLink) {
        let (mut c, io) = core_without_host(dma_latency);
        io.to_sim(ToSim::NewSession);
        c.tick();
        (c, io)
    }

    /// A core no host has connected to yet.
    fn core_without_host(dma_latency: u64) -> (EpCore, IoLink) {
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

    fn sent(io: &IoLink) -> Vec<Message> {
        io.rx.try_iter().filter_map(|m| if let ToIo::Send(m) = m { Some(m) } else { None }).collect()
    }

    #[test]
    fn mmio_lanes_strobes_and_read_extraction() {
        let (mut c, io) = core();
        let bar0 = BarIndex::new(0).unwrap();
        io.to_sim(ToSim::Msg(Message::MmioWrite(MmioWrite { bar: bar0, size: AccessSize::B2, offset: 0x16, data: 0xbeef })));
        io.to_sim(ToSim::Msg(Message::MmioRead(MmioRead { tag: 9, bar: bar0, size: AccessSize::B1, offset: 0x13 })));
        assert_eq!(c.tick() & PEND_MMIO, PEND_MMIO);
        let w = c.mmio_pop().unwrap();
        assert_eq!((w.write, w.addr, w.size_log2, w.wdata, w.wstrb), (true, 0x1000_0016, 1, 0xbeef << 48, 0b1100_0000));
        assert_eq!(c.tick() & PEND_MMIO, PEND_MMIO, "one pop per clock: the read is next");
        let r = c.mmio_pop().unwrap();
        assert_eq!((r.write, r.addr, r.wstrb), (false, 0x1000_0013, 0b0000_1000));
        c.mmio_read_done(0, 0x1122_3344_5566_7788);
        assert_eq!(sent(&io), vec![Message::MmioReadResp(MmioReadResp { tag: 9, status: Status::Ok, data: 0x55 })]);
        assert_eq!(c.tick() & PEND_MMIO, 0);
    }

    #[test]
    fn mmio_rejects_and_errors() {
        let (mut c, io) = core();
        let bar = |i| BarIndex::new(i).unwrap();
        io.to_sim(ToSim::Msg(Message::MmioRead(MmioRead { tag: 1, bar: bar(1), size: AccessSize::B4, offset: 0 })));
        io.to_sim(ToSim::Msg(Message::MmioRead(MmioRead { tag: 2, bar: bar(0), size: AccessSize::B8, offset: 4 })));
        io.to_sim(ToSim::Msg(Message::MmioRead(MmioRead { tag: 3, bar: bar(0), size: AccessSize::B4, offset: 0xffe })));
        io.to_sim(ToSim::Msg(Message::MmioRead(MmioRead { tag: 4, bar: bar(0), size: AccessSize::B4, offset: 0 })));
        c.tick();
        let got = sent(&io);
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|m| matches!(m, Message::MmioReadResp(r) if r.status == Status::UnsupportedRequest)));
        c.mmio_pop().unwrap();
        c.mmio_read_done(2, 0);
        assert!(matches!(sent(&io)[..], [Message::MmioReadResp(MmioReadResp { tag: 4, status: Status::CompleterAbort, .. })]));
    }

    #[test]
    fn dma_write_partial_strobes_coalesce() {
        let (mut c, io) = core();
        c.dma_aw(3, 0x1003, 2, 3, 1);
        assert_eq!(c.dma_w(0x8877_6655_4433_2211, 0xff, false), None);
        // Beat 1: lanes 0,1 and 4 only.
        assert_eq!(c.dma_w(0x1111_1111_1111_1111, 0b0001_0011, false), None);
        assert_eq!(c.dma_w(0x2222_2222_2222_2222, 0x0f, true), Some((3, 0)));
        let got = sent(&io);
        assert_eq!(
            got,
            vec![
                Message::DmaWrite(DmaWrite { addr: GuestAddr(0x1003), data: vec![0x44, 0x55, 0x66, 0x77, 0x88, 0x11, 0x11] }),
                Message::DmaWrite(DmaWrite { addr: GuestAddr(0x100c), data: vec![0x11] }),
                Message::DmaWrite(DmaWrite { addr: GuestAddr(0x1010), data: vec![0x22; 4] }),
            ]
        );
    }

    #[test]
    fn dma_reads_outstanding_out_of_order_completion() {
        let (mut c, io) = core();
        c.dma_ar(1, 0x100, 1, 3, 1);
        c.dma_ar(2, 0x205, 0, 3, 1);
        let reqs: Vec<DmaRead> = sent(&io)
            .into_iter()
            .filter_map(|m| if let Message::DmaRead(r) = m { Some(r) } else { None })
            .collect();
        assert_eq!(reqs.len(), 2);
        assert_eq!((reqs[1].addr, reqs[1].len), (GuestAddr(0x205), 3));
        io.to_sim(ToSim::Msg(Message::DmaReadResp(DmaReadResp { tag: reqs[1].tag, status: Status::Ok, data: vec![1, 2, 3] })));
        assert_eq!(c.tick() & PEND_RBEAT, 0, "in-order delivery waits for the oldest");
        io.to_sim(ToSim::Msg(Message::DmaReadResp(DmaReadResp {
            tag: reqs[0].tag,
            status: Status::Ok,
            data: (0..16).collect(),
        })));
        let mut beats = Vec::new();
        while c.tick() & PEND_RBEAT != 0 {
            beats.push(c.dma_r().unwrap());
        }
        assert_eq!(
            beats,
            [
                RBeat { id: 1, data: 0x0706_0504_0302_0100, resp: 0, last: false },
                RBeat { id: 1, data: 0x0f0e_0d0c_0b0a_0908, resp: 0, last: true },
                RBeat { id: 2, data: 0x0302_0100_0000_0000, resp: 0, last: true },
            ]
        );
        assert_eq!(c.refused_pops(), 0);
    }

    fn dma_read_tag(io: &IoLink) -> u32 {
        sent(io).into_iter().find_map(|m| if let Message::DmaRead(r) = m { Some(r.tag) } else { None }).unwrap()
    }

    #[test]
    fn modelled_latency_holds_an_early_completion_until_it_is_due() {
        let (mut c, io) = core_with_latency(10);
        c.dma_ar(1, 0x100, 0, 3, 1);
        let tag = dma_read_tag(&io);
        io.to_sim(ToSim::Msg(Message::DmaReadResp(DmaReadResp { tag, status: Status::Ok, data: vec![7; 8] })));
        // The read was accepted after clock 1, so its data is due at clock 11.
        for clock in 2..11 {
            assert_eq!(c.tick() & PEND_RBEAT, 0, "clock {clock}: not due yet");
        }
        assert_ne!(c.tick() & PEND_RBEAT, 0, "due at clock 11");
        assert_eq!(c.dma_r(), Some(RBeat { id: 1, data: 0x0707_0707_0707_0707, resp: 0, last: true }));
    }

    #[test]
    fn modelled_latency_holds_the_clock_for_a_late_completion() {
        let (mut c, io) = core_with_latency(2);
        c.dma_ar(3, 0x200, 0, 3, 1);
        let tag = dma_read_tag(&io);
        assert_eq!(c.tick() & PEND_RBEAT, 0);
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            // An MMIO read that arrives while the clock is held must show in this tick's mask
            // (the shell pops whatever its bit says).
            let bar = BarIndex::new(0).unwrap();
            io.to_sim(ToSim::Msg(Message::MmioRead(MmioRead { tag: 9, bar, size: AccessSize::B4, offset: 0x10 })));
            io.to_sim(ToSim::Msg(Message::DmaReadResp(DmaReadResp { tag, status: Status::Ok, data: vec![1; 8] })));
            io
        });
        let t0 = Instant::now();
        // Due now: this tick does not return before the host's answer.
        let mask = c.tick();
        assert_ne!(mask & PEND_RBEAT, 0);
        assert_ne!(mask & PEND_MMIO, 0, "a message taken in during the hold is in the same tick's mask");
        assert!(t0.elapsed() >= Duration::from_millis(100), "the clock was held");
        assert_eq!(c.dma_r().map(|b| b.data), Some(0x0101_0101_0101_0101));
        let io = late.join().unwrap();
        // A lost host releases a held clock with an error response.
        c.dma_ar(4, 0x300, 0, 3, 1);
        io.to_sim(ToSim::HostLost);
        for _ in 0..3 {
            c.tick();
        }
        assert_eq!(c.dma_r().map(|b| b.resp), Some(DECERR));
    }

    #[test]
    fn dma_ar_reports_full_at_the_limit() {
        let (mut c, _io) = core();
        assert!(!c.dma_ar(0, 0, 0, 3, 1));
        assert!(!c.dma_ar(1, 8, 0, 3, 1));
        assert!(!c.dma_ar(2, 16, 0, 3, 1));
        assert!(c.dma_ar(3, 24, 0, 3, 1), "the fourth of max_reads = 4 fills the slots");
        assert_ne!(c.tick() & PEND_AR_FULL, 0);
    }

    #[test]
    fn nic_and_uart_streams() {
        let (mut c, io) = core();
        c.nic_tx(0x0807_0605_0403_0201, 0xff, false);
        c.nic_tx(0x000b_0a09, 0x07, true);
        c.uart_tx(b'h');
        c.uart_tx(b'i');
        c.tick();
        assert_eq!(
            sent(&io),
            vec![Message::NicFrame((1..=11).collect()), Message::Serial(b"hi".to_vec())]
        );
        io.to_sim(ToSim::Msg(Message::NicFrame((1..=9).collect())));
        io.to_sim(ToSim::Msg(Message::Serial(b"ok".to_vec())));
        let (mut nic, mut uart) = (Vec::new(), Vec::new());
        loop {
            let m = c.tick();
            if m & (PEND_NIC_RX | PEND_UART_RX) == 0 {
                break;
            }
            if m & PEND_NIC_RX != 0 {
                nic.push(c.nic_rx().unwrap());
            }
            if m & PEND_UART_RX != 0 {
                uart.push(c.uart_rx().unwrap());
            }
        }
        assert_eq!(nic, [(0x0807_0605_0403_0201, 0xff, false), (9, 0x01, true)]);
        assert_eq!(uart, b"ok");
        assert_eq!(c.refused_pops(), 0);
    }

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

    /// Clocks `c` as the shell did while it wrote `(pend & PEND_RBEAT) != 0 && cosim_ep_dma_r(...)`
    /// (Verilator calls `dma_r` whatever the mask, after the clock's AR handshake): per clock the
    /// tick, the DMA reads of `ars` accepted at that clock (`(clock, id, arlen)`), then `dma_r`. A
    /// beat given out without its bit would be lost by such a shell, and its read would never end.
    /// Returns the beats the design got, with their clock.
    fn clock_like_an_and_shell(c: &mut EpCore, clocks: u64, ars: &[(u64, u32, u8)]) -> Vec<(u64, RBeat)> {
        let mut got = Vec::new();
        for _ in 0..clocks {
            let m = c.tick();
            let clock = c.cycle;
            for &(_, id, len) in ars.iter().filter(|a| a.0 == clock) {
                c.dma_ar(id, 0x1000 * u64::from(id), len, 3, 1);
            }
            let beat = c.dma_r();
            if m & PEND_RBEAT != 0 {
                got.push((clock, beat.expect("a reported beat is given out")));
            } else {
                assert_eq!(beat, None, "clock {clock}: a beat given out without its bit is lost");
            }
        }
        got
    }

    fn decerr_beats(id: u32, n: u32) -> Vec<RBeat> {
        (0..n).map(|i| RBeat { id, data: 0, resp: DECERR, last: i + 1 == n }).collect()
    }

    /// Regression (issue 9, item 6): a DMA read accepted while no host was ever connected fails at
    /// once with DECERR; its beats reach the design from the next tick on (or when the modelled
    /// latency has passed), every one of them, so the design never hangs.
    fn dma_read_with_no_host_connected(latency: u64) {
        let (mut c, io) = core_without_host(latency);
        let got = clock_like_an_and_shell(&mut c, latency + 20, &[(1, 5, 3), (2, 6, 0)]);
        let beats: Vec<RBeat> = got.iter().map(|g| g.1).collect();
        assert_eq!(beats, [decerr_beats(5, 4), decerr_beats(6, 1)].concat());
        assert_eq!(got[0].0, (1 + latency).max(2), "first beat: the clock after the AR, or c + latency");
        let clocks: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert!(clocks.windows(2).all(|w| w[1] == w[0] + 1), "one beat per clock: {clocks:?}");
        assert!(c.refused_pops() > 0, "the unconditional dma_r calls were refused");
        assert!(sent(&io).is_empty(), "nothing is sent without a host");
    }

    #[test]
    fn dma_read_with_no_host_connected_gives_decerr_beats_latency_0() {
        dma_read_with_no_host_connected(0);
    }

    #[test]
    fn dma_read_with_no_host_connected_gives_decerr_beats_with_modelled_latency() {
        dma_read_with_no_host_connected(1);
        dma_read_with_no_host_connected(30);
    }

    /// The host goes away while DMA reads wait for it; reads accepted afterwards fail at once.
    fn dma_reads_when_the_host_goes_away(latency: u64) {
        let (mut c, io) = core_with_latency(latency);
        let start = c.cycle;
        // Two reads sent to the host (never answered), then the host is lost before they are due
        // (so the clock is not held), then a read accepted with no host.
        let mut got = clock_like_an_and_shell(&mut c, 2, &[(start + 1, 1, 1), (start + 2, 2, 0)]);
        assert_eq!(sent(&io).iter().filter(|m| matches!(m, Message::DmaRead(_))).count(), 2);
        io.to_sim(ToSim::HostLost);
        got.extend(clock_like_an_and_shell(&mut c, latency + 20, &[]));
        // Accepted when nothing else is queued: its DECERR beats are ready at once after the AR.
        let next = c.cycle + 1;
        got.extend(clock_like_an_and_shell(&mut c, latency + 20, &[(next, 3, 2)]));
        let beats: Vec<RBeat> = got.iter().map(|g| g.1).collect();
        assert_eq!(beats, [decerr_beats(1, 2), decerr_beats(2, 1), decerr_beats(3, 3)].concat());
        assert!(sent(&io).is_empty(), "nothing is sent without a host");
        // A new host: reads go to it again.
        io.to_sim(ToSim::NewSession);
        let next = c.cycle + 1;
        clock_like_an_and_shell(&mut c, 1, &[(next, 4, 0)]);
        assert!(matches!(sent(&io)[..], [Message::DmaRead(_)]));
    }

    #[test]
    fn dma_reads_when_the_host_goes_away_give_decerr_beats_latency_0() {
        dma_reads_when_the_host_goes_away(0);
    }

    #[test]
    fn dma_reads_when_the_host_goes_away_give_decerr_beats_with_modelled_latency() {
        dma_reads_when_the_host_goes_away(25);
    }
}
