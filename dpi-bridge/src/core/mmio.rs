//! MMIO: host requests queued for the shell's AXI4 master (`m_axi_*`, one access at a time) and
//! their completions, timeouts and rejections (docs/hdl-endpoint.md, "MMIO").

use std::collections::VecDeque;

use cosim_protocol::{AccessSize, BarIndex, Message, MmioReadResp, Status};

use super::{EpCore, PEND_MMIO};
use crate::link::SharedStats;

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

/// The MMIO state of one endpoint: accesses the host sent that the AXI master has not taken
/// yet, and the read it is performing.
#[derive(Debug, Default)]
pub(super) struct MmioState {
    queue: VecDeque<(MmioBeat, Option<CurRead>)>,
    cur_read: Option<CurRead>,
    /// A write was given to the AXI master and its B response has not come yet.
    write_on_bus: bool,
    /// An access timed out and the AXI master still waits for the design's late answer (the
    /// shell reports none): the bus counts as busy until the shell pops the next access, which
    /// it does only once the master is free, so the idle sleep never stops the clock under it.
    stuck: bool,
}

impl MmioState {
    /// An access waits for [`EpCore::mmio_pop`] (the `PEND_MMIO` bit).
    #[inline]
    pub(super) fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// An access is queued or on the AXI master (the idle sleep waits for it).
    #[inline]
    pub(super) fn on_bus(&self) -> bool {
        self.cur_read.is_some() || self.write_on_bus || self.stuck
    }

    /// A new session or a device reset: queued accesses are dropped, and the read on the bus
    /// (which the design must still complete) is answered to no one.
    pub(super) fn forget_queued(&mut self) {
        self.queue.clear();
        self.write_on_bus = false;
        if let Some(c) = &mut self.cur_read {
            c.stale = true;
        }
    }
}

impl EpCore {
    pub(super) fn queue_mmio(&mut self, write: bool, tag: u32, bar: BarIndex, offset: u64, size: AccessSize, data: u64) {
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
        self.mmio.queue.push_back((beat, cur));
    }

    /// Takes the next MMIO access for the AXI master. Allowed once per tick that reported
    /// [`PEND_MMIO`]; otherwise refused (`None`, nothing taken).
    pub fn mmio_pop(&mut self) -> Option<MmioBeat> {
        if !self.take_pending(PEND_MMIO, "cosim_ep_mmio_pop") {
            return None;
        }
        let (beat, cur) = self.mmio.queue.pop_front()?;
        self.mmio.stuck = false;
        if beat.write {
            SharedStats::add(&self.stats.mmio_writes, 1);
            self.mmio.write_on_bus = true;
        } else {
            self.mmio.cur_read = cur;
        }
        Some(beat)
    }

    /// The AXI read for the current MMIO read returned `rdata` with `rresp`.
    pub fn mmio_read_done(&mut self, rresp: u8, rdata: u64) {
        let Some(c) = self.mmio.cur_read.take() else {
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
        self.mmio.write_on_bus = false;
        if bresp >= 2 {
            SharedStats::add(&self.stats.mmio_errors, 1);
            tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, bresp, "MMIO write answered with an AXI error (posted: the host is not told)");
        }
    }

    /// The RTL did not answer the current MMIO access within `cycles`: the host gets an error
    /// completion (for a read) and a warning is logged.
    pub fn mmio_timeout(&mut self, write: bool, cycles: u32) {
        SharedStats::add(&self.stats.mmio_errors, 1);
        self.mmio.stuck = true;
        if write {
            self.mmio.write_on_bus = false; // the shell calls no write_done for it
            tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, cycles,
                "MMIO write: the user design did not complete it in time; the bus stays busy until it does");
            return;
        }
        let Some(c) = self.mmio.cur_read.take() else { return };
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
        while let Some((beat, cur)) = self.mmio.queue.pop_front() {
            SharedStats::add(&self.stats.mmio_errors, 1);
            tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, bar = beat.bar, addr = format_args!("{:#x}", beat.addr),
                write = beat.write, "MMIO access rejected: the user design is still stuck on an earlier access");
            if let Some(c) = cur {
                SharedStats::add(&self.stats.mmio_reads, 1);
                self.send(Message::MmioReadResp(MmioReadResp { tag: c.tag, status: Status::CompleterAbort, data: u64::MAX }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cosim_protocol::{MmioRead, MmioWrite};

    use super::super::testing::{core, sent};
    use super::*;
    use crate::link::ToSim;

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
    fn a_timed_out_access_keeps_the_bus_busy_until_the_next_pop() {
        let (mut c, io) = core();
        let bar0 = BarIndex::new(0).unwrap();
        io.to_sim(ToSim::Msg(Message::MmioRead(MmioRead { tag: 1, bar: bar0, size: AccessSize::B4, offset: 0 })));
        assert_eq!(c.tick() & PEND_MMIO, PEND_MMIO);
        c.mmio_pop().unwrap();
        c.mmio_timeout(false, 100);
        assert!(c.mmio.on_bus(), "the AXI master still waits for the late answer: no idle sleep");
        io.to_sim(ToSim::Msg(Message::MmioRead(MmioRead { tag: 2, bar: bar0, size: AccessSize::B4, offset: 8 })));
        assert_eq!(c.tick() & PEND_MMIO, PEND_MMIO);
        c.mmio_pop().unwrap();
        c.mmio_read_done(0, 7);
        assert!(!c.mmio.on_bus(), "the shell popped again, so the master was free");
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
}
