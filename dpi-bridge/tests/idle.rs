//! The idle sleep on the bridge's Rust half (docs/hdl-endpoint.md, "Idle sleep"), without
//! Verilator: the test thread plays the simulation main (`registry::idle`, `registry::sleep`)
//! and the shell (`tick`), a raw ZeroMQ transport plays the host.

#[allow(dead_code)] // helpers other test files use
mod common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use cosim_dpi_bridge::{registry, PEND_MMIO};
use cosim_protocol::*;
use cosim_transport::Transport;

use common::{endpoint, expect, host, init, start};

/// One test (the registry is per process): the session's timers stay well under the 1 s after
/// which the I/O thread would report the silent host lost (a message that wakes the sleeper).
#[test]
fn a_host_message_ends_the_sleep_and_marks_the_bridge_busy() -> Result<()> {
    let (_d, e) = endpoint()?;
    let mut ep = start(&e)?;
    let mut h = host(&e)?;
    h.send(&init(5))?;
    expect(&mut h, &mut ep, "CONFIG", |m| matches!(m, Message::Config(c) if c.session == 5))?;
    // The I/O thread may queue the session's start for the simulation after CONFIG went out:
    // take everything in first.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(100) {
        ep.core.tick();
        std::thread::sleep(Duration::from_millis(1));
    }
    // Quiet: nothing pending, and a tick with nothing to do leaves the mark where it was.
    let quiet = registry::idle();
    ep.core.tick();
    let again = registry::idle();
    ensure!(!again.pending && again.bridge_mark == quiet.bridge_mark, "not quiet: {quiet:?} then {again:?}");

    // Nothing arrives: the sleep lasts its timeout.
    let t0 = Instant::now();
    ensure!(!registry::sleep(50), "woken with nothing sent");
    ensure!(t0.elapsed() >= Duration::from_millis(40), "slept only {:?}", t0.elapsed());

    // A message sent while the simulation sleeps ends the sleep at once.
    let bar0 = BarIndex::new(0).unwrap();
    let read = Message::MmioRead(MmioRead { tag: 3, bar: bar0, size: AccessSize::B4, offset: 0x10 });
    let sender = std::thread::spawn(move || -> Result<_> {
        std::thread::sleep(Duration::from_millis(100));
        h.send(&read)?;
        Ok(h)
    });
    let t0 = Instant::now();
    let woken = registry::sleep(5_000);
    let slept = t0.elapsed();
    let mut h = sender.join().map_err(|_| anyhow::anyhow!("sender panicked"))??;
    ensure!(woken && slept < Duration::from_secs(2), "woken {woken} after {slept:?}");
    ensure!(registry::idle().pending, "the message is pending until a tick takes it in");
    ensure!(registry::wake_stats().wakes >= 1, "the wake was not measured: {:?}", registry::wake_stats());

    // A message already pending: no sleep at all.
    let t0 = Instant::now();
    ensure!(registry::sleep(5_000) && t0.elapsed() < Duration::from_secs(1), "slept with a message pending");

    // The tick takes it in; the access on the bus keeps the bridge busy until it completes.
    ensure!(ep.core.tick() & PEND_MMIO != 0);
    let b = ep.core.mmio_pop().expect("the read");
    ensure!(!b.write);
    let busy = registry::idle();
    ensure!(busy.bridge_mark != quiet.bridge_mark && !busy.pending, "{busy:?}");
    ep.core.tick();
    ensure!(registry::idle().bridge_mark != busy.bridge_mark, "a read on the bus is not quiet");
    ep.core.mmio_read_done(0, 0x42);
    let m = expect(&mut h, &mut ep, "MMIO completion", |m| !matches!(m, Message::Heartbeat(_)))?;
    ensure!(m == Message::MmioReadResp(MmioReadResp { tag: 3, status: Status::Ok, data: 0x42 }), "{m:?}");
    let done = registry::idle();
    ep.core.tick();
    ensure!(registry::idle().bridge_mark == done.bridge_mark, "quiet again after the completion");
    Ok(())
}
