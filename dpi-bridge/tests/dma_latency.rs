//! The modelled DMA read latency (docs/hdl-endpoint.md, "Modelled read latency") through the
//! real I/O thread. A process of its own: a test that asks the simulation to stop (the
//! registry's stop flag is process-wide) would release every held clock at once.

mod common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use cosim_dpi_bridge::{PEND_MMIO, PEND_RBEAT};
use cosim_protocol::*;
use cosim_transport::Transport;

use common::{endpoint, expect, host, init, start, tick_until};

/// Regression (the lost MMIO read with the modelled DMA read latency, docs/hdl-endpoint.md,
/// "Modelled read latency"), through the real I/O thread with the default latency: one MMIO
/// read is on the bus when a DMA read falls due, a second arrives while the clock waits for the
/// late completion (as QEMU's vCPU sends it and then serves the DMA read while it waits). The
/// clock is held exactly until the completion (the due clock is the latency's, not a clock
/// later), the tick that returns reports the queued read with the beat (the shell pops only what
/// the mask shows), and both reads are answered.
#[test]
fn mmio_reads_around_a_clock_held_for_a_late_dma_read_are_answered() -> Result<()> {
    let (_d, e) = endpoint()?;
    let mut ep = start(&e)?;
    let mut h = host(&e)?;
    h.send(&init(1))?;
    expect(&mut h, &mut ep, "CONFIG", |m| matches!(m, Message::Config(_)))?;
    let bar0 = BarIndex::new(0).unwrap();
    let read =
        move |tag: u32, offset: u64| Message::MmioRead(MmioRead { tag, bar: bar0, size: AccessSize::B4, offset });
    h.send(&read(1, 0x10))?;
    ensure!(tick_until(&mut ep, PEND_MMIO, Duration::from_secs(5)), "MMIO read 1 never reached the RTL");
    ensure!(ep.core.mmio_pop().is_some_and(|b| !b.write && b.addr == 0x10));
    // The DMA read, accepted after this clock's tick: due DEFAULT_DMA_LATENCY clocks later.
    ep.core.dma_ar(3, 0x2000, 0, 3, 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    let tag = loop {
        if let Some(Message::DmaRead(r)) = h.recv(Duration::from_millis(20))? {
            break r.tag;
        }
        ensure!(Instant::now() < deadline, "no DMA read at the host");
    };
    let hostside = std::thread::spawn(move || -> Result<Vec<MmioReadResp>> {
        std::thread::sleep(Duration::from_millis(200));
        h.send(&read(2, 0x18))?;
        std::thread::sleep(Duration::from_millis(100));
        h.send(&Message::DmaReadResp(DmaReadResp { tag, status: Status::Ok, data: vec![0x5a; 8] }))?;
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < 2 {
            if let Some(Message::MmioReadResp(r)) = h.recv(Duration::from_millis(20))? {
                got.push(r);
            }
            ensure!(Instant::now() < deadline, "MMIO completions so far: {got:?}");
        }
        Ok(got)
    });
    let t0 = Instant::now();
    let mut clocks = 0;
    let mask = loop {
        let m = ep.core.tick();
        clocks += 1;
        if m & PEND_RBEAT != 0 || clocks > 10 * cosim_dpi_bridge::DEFAULT_DMA_LATENCY {
            break m;
        }
    };
    let held = t0.elapsed();
    ensure!(clocks == cosim_dpi_bridge::DEFAULT_DMA_LATENCY, "data after {clocks} clocks, held {held:?}");
    ensure!(held >= Duration::from_millis(250), "the clock was not held for the completion: {held:?}");
    ensure!(mask & PEND_MMIO != 0, "MMIO read 2, taken in while the clock was held, is not in the mask");
    // The design answers read 1, then the shell pops read 2 under this clock's bit.
    ep.core.mmio_read_done(0, 0x1111);
    ensure!(ep.core.mmio_pop().is_some_and(|b| !b.write && b.addr == 0x18), "MMIO read 2 was not popped");
    let beat = ep.core.dma_r().unwrap();
    ensure!(beat.id == 3 && beat.resp == 0 && beat.last && beat.data == 0x5a5a_5a5a_5a5a_5a5a, "{beat:?}");
    ep.core.mmio_read_done(0, 0x2222);
    for _ in 0..100 {
        ep.core.tick();
    }
    let got = hostside.join().map_err(|_| anyhow::anyhow!("host thread panicked"))??;
    let want = [(1, 0x1111), (2, 0x2222)].map(|(tag, data)| MmioReadResp { tag, status: Status::Ok, data });
    ensure!(got == want, "{got:?}");
    ensure!(ep.core.refused_pops() == 0);
    Ok(())
}
