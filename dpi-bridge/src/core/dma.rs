//! DMA: the shell's AXI4 slave (`s_axi_*`) through which the design masters guest memory
//! (docs/hdl-endpoint.md, "DMA"). Reads: outstanding bursts, one DMA_READ each, R beats in
//! request order, the modelled read latency and the clock hold. Writes: one burst at a time, its
//! strobed bytes coalesced into DMA_WRITE messages.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use cosim_protocol::{DmaRead, DmaReadResp, DmaWrite, GuestAddr, Message, Status, MAX_DMA_LEN};

use super::{EpCore, PEND_RBEAT};
use crate::burst::{Burst, BurstKind};
use crate::link::SharedStats;

/// Longest the clock is held for one DMA read. Past it the clock runs on (that read's latency is
/// then the host's): a host that cannot answer because it waits for this same simulation (one
/// QEMU vCPU in an MMIO read of another endpoint of this simulation) must not deadlock.
const HOLD_LIMIT: Duration = Duration::from_secs(1);

// AXI response codes.
const OKAY: u8 = 0;
const SLVERR: u8 = 2;
pub(super) const DECERR: u8 = 3;

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
    /// Clock at which the first beat may be returned (see [`super::EpConfig::dma_latency`]).
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

/// The DMA state of one endpoint: reads in flight (oldest first) and the write burst being
/// received with the run of bytes not yet sent.
#[derive(Debug)]
pub(super) struct DmaState {
    reads: VecDeque<ReadBurst>,
    next_tag: u32,
    wburst: Option<WriteBurst>,
    wrun: Option<(u64, Vec<u8>)>,
    /// A DMA read failed for want of a host was logged (once per absence of the host).
    warned_no_host: bool,
}

impl DmaState {
    pub(super) fn new() -> Self {
        Self { reads: VecDeque::new(), next_tag: 1, wburst: None, wrun: None, warned_no_host: false }
    }

    /// Reads accepted whose last beat has not been given out.
    #[inline]
    pub(super) fn reads_in_flight(&self) -> usize {
        self.reads.len()
    }

    /// The oldest read is due at `cycle` and may hold the clock, but the host has not answered.
    #[inline]
    pub(super) fn front_read_holds_clock(&self, cycle: u64) -> bool {
        self.reads.front().is_some_and(|r| cycle >= r.due && r.hold && matches!(r.data, ReadData::Waiting))
    }

    /// The oldest read is due at `cycle` and has its data (or error): the `PEND_RBEAT` bit.
    #[inline]
    pub(super) fn front_read_has_beat(&self, cycle: u64) -> bool {
        self.reads.front().is_some_and(|r| cycle >= r.due && !matches!(r.data, ReadData::Waiting))
    }

    /// A host connected: the next read that fails for want of one is logged at warn again.
    pub(super) fn rearm_no_host_warning(&mut self) {
        self.warned_no_host = false;
    }

    /// Device reset: reads in flight and the write burst are forgotten (nothing is sent).
    pub(super) fn drop_transactions(&mut self) {
        self.reads.clear();
        self.wburst = None;
        self.wrun = None;
    }
}

impl EpCore {
    /// The oldest DMA read is due but the host has not answered: hold the simulation clock (this
    /// call does not return) until the completion arrives, a reset or a lost host drops the read,
    /// a stop is requested, or [`HOLD_LIMIT`] passes. Everything else the host sends meanwhile is
    /// taken in as usual.
    #[cold]
    pub(super) fn hold_clock_for_dma_read(&mut self) {
        let started = Instant::now();
        self.hold_until_front_read_completes(started);
        SharedStats::add(&self.stats.dma_hold_us, started.elapsed().as_micros() as u64);
    }

    fn hold_until_front_read_completes(&mut self, started: Instant) {
        loop {
            let Some(r) = self.dma.reads.front() else { return };
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
                if let Some(r) = self.dma.reads.front_mut() {
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

    pub(super) fn fail_waiting_reads(&mut self, resp: u8) {
        for r in &mut self.dma.reads {
            if matches!(r.data, ReadData::Waiting) {
                tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, tag = r.tag, addr = format_args!("{:#x}", r.lo),
                    "DMA read without a host to answer it: completing with DECERR");
                r.data = ReadData::Err(resp);
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
        let tag = self.dma.next_tag;
        self.dma.next_tag = self.dma.next_tag.wrapping_add(1).max(1);
        let data = if self.connected {
            SharedStats::add(&self.stats.dma_reads, 1);
            SharedStats::add(&self.stats.dma_read_bytes, hi - lo);
            self.send(Message::DmaRead(DmaRead { tag, addr: GuestAddr(lo), len: (hi - lo) as u32 }));
            ReadData::Waiting
        } else {
            if self.dma.warned_no_host {
                tracing::debug!(target: "cosim::dpi", ep = %self.cfg.name, addr = format_args!("{lo:#x}"), len = hi - lo,
                    "DMA read with no host connected: DECERR");
            } else {
                self.dma.warned_no_host = true;
                tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, addr = format_args!("{lo:#x}"), len = hi - lo,
                    "DMA read with no host connected: DECERR (further ones until a host connects are logged at debug level)");
            }
            ReadData::Err(DECERR)
        };
        if self.dma.reads.len() >= self.cfg.max_reads {
            tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, "AR accepted beyond the outstanding-read limit");
        }
        let due = self.cycle + self.cfg.dma_latency;
        let hold = self.cfg.dma_latency > 0;
        self.dma.reads.push_back(ReadBurst { id, tag, due, hold, burst: b, lo, beat: 0, data });
        self.dma.reads.len() >= self.cfg.max_reads
    }

    pub(super) fn on_dma_read_resp(&mut self, r: DmaReadResp) {
        let Some(rb) = self.dma.reads.iter_mut().find(|x| x.tag == r.tag && matches!(x.data, ReadData::Waiting)) else {
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
        let rb = self.dma.reads.front_mut()?;
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
            self.dma.reads.pop_front();
        }
        Some(beat)
    }

    /// DMA write address handshake.
    pub fn dma_aw(&mut self, id: u32, addr: u64, len: u8, size: u8, burst: u8) {
        if self.dma.wburst.is_some() {
            tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, "AW before the previous burst's last beat; previous burst ended");
            self.flush_write();
        }
        let b = self.burst("AW", addr, len, size, burst);
        self.dma.wburst = Some(WriteBurst { id, burst: b, beat: 0 });
    }

    /// One W beat. Returns `Some((bid, bresp))` when the burst is complete.
    pub fn dma_w(&mut self, data: u64, strb: u8, last: bool) -> Option<(u32, u8)> {
        let Some(w) = self.dma.wburst.as_mut() else {
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
            let id = self.dma.wburst.as_ref().map_or(0, |w| w.id);
            self.flush_write();
            return Some((id, OKAY));
        }
        None
    }

    fn put_write_byte(&mut self, addr: u64, b: u8) {
        match &mut self.dma.wrun {
            Some((start, buf)) if start.wrapping_add(buf.len() as u64) == addr && buf.len() < MAX_DMA_LEN => buf.push(b),
            _ => {
                self.flush_run();
                self.dma.wrun = Some((addr, vec![b]));
            }
        }
    }

    fn flush_run(&mut self) {
        if let Some((addr, data)) = self.dma.wrun.take() {
            SharedStats::add(&self.stats.dma_writes, 1);
            SharedStats::add(&self.stats.dma_write_bytes, data.len() as u64);
            self.send(Message::DmaWrite(DmaWrite { addr: GuestAddr(addr), data }));
        }
    }

    fn flush_write(&mut self) {
        self.flush_run();
        self.dma.wburst = None;
    }
}

#[cfg(test)]
mod tests {
    use cosim_protocol::{AccessSize, BarIndex, MmioRead};

    use super::super::testing::{core, core_with_latency, core_without_host, sent};
    use super::super::{PEND_AR_FULL, PEND_MMIO};
    use super::*;
    use crate::link::{IoLink, ToSim};

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

    /// A vfio-user endpoint's DMA: straight into the client's memory, no message on the link; a
    /// read's data is on the R channel the next clock (or at its modelled latency), a miss is
    /// DECERR, a write lands at once.
    #[test]
    fn direct_dma_completes_without_messages() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(8192).unwrap();
        let (direct, _mmio_rx) = crate::vfio_user::Direct::new("t", 4);
        let direct = std::sync::Arc::new(direct);
        let mem = &direct.dma;
        mem.mem.map(0x4000, 8192, Some(&f), 0, true).unwrap();
        mem.mem.write(0x4100, &[7; 16]).unwrap();
        for latency in [0u64, 5] {
            let (mut c, io) = core_with_latency(latency);
            c.set_direct(direct.clone());
            c.dma_ar(1, 0x4100, 1, 3, 1);
            let mut clocks = 1;
            while c.tick() & PEND_RBEAT == 0 {
                clocks += 1;
                assert!(clocks < 10, "no read data");
            }
            assert_eq!(clocks, latency.max(1), "read data after {clocks} clocks with latency {latency}");
            assert_eq!(c.dma_r().map(|b| (b.data, b.resp)), Some((0x0707_0707_0707_0707, 0)));
            c.dma_ar(2, 0x9_0000, 0, 3, 1);
            for _ in 0..6 {
                c.tick();
            }
            c.tick();
            assert_eq!(c.dma_r().map(|b| (b.data, b.resp)), Some((0x0707_0707_0707_0707, 0)), "second beat");
            c.tick();
            assert_eq!(c.dma_r().map(|b| b.resp), Some(DECERR), "a read outside the client's memory");
            c.dma_aw(3, 0x4200, 0, 3, 1);
            assert_eq!(c.dma_w(0x1122_3344_5566_7788, 0xff, true), Some((3, 0)));
            assert_eq!(mem.mem.read(0x4200, 8).unwrap(), 0x1122_3344_5566_7788u64.to_le_bytes());
            assert!(sent(&io).is_empty(), "no DMA message went to the I/O thread");
        }
        assert_eq!(mem.faults(), 2);
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
