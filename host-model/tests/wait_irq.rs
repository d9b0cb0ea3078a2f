//! `HostModel::wait_irq` returns when the interrupt arrives, not at the next poll slice: the device
//! side is the bridge's Rust half (`cosim_dpi_bridge::Ep`) ticked by a thread, no simulation
//! needed. The device sends each MSI-X well after the host has started waiting (so a model that
//! checks every 50 ms, as the old one did, returns 20 to 50 ms after the send), and the test
//! measures from the send to the return.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use cosim_dpi_bridge::EpBuilder;
use cosim_host_model::{temp_endpoint, HostModel};
use cosim_protocol::MsixConfig;

/// How long after the host's "waiting" signal the device sends the interrupt.
const SEND_AFTER: Duration = Duration::from_millis(30);

#[test]
fn wait_irq_returns_when_the_interrupt_arrives() -> Result<()> {
    let (_dir, ep) = temp_endpoint("irq")?;
    let mut b = EpBuilder::new("irq-test", &ep);
    b.ids(0x1ded, 0x7e57, 0x1ded, 1, 0xff_0000, 1);
    b.bar(0, 0x1000, false, false, 0)?;
    b.bar(2, 0x4000, true, false, 0)?;
    b.msix(MsixConfig { vectors: 2, table_bar: 2, table_offset: 0, pba_bar: 2, pba_offset: 0x2000 });
    let mut dev = b.start()?;

    // The device thread: ticks like a clock; on each request, waits SEND_AFTER, sends MSI-X
    // vector 1 and reports when it sent it.
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (sent_tx, sent_rx) = mpsc::channel::<Instant>();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_dev = stop.clone();
    let device = std::thread::spawn(move || {
        let mut due: Option<Instant> = None;
        while !stop_dev.load(Ordering::Relaxed) {
            dev.core.tick();
            if due.is_none() && go_rx.try_recv().is_ok() {
                due = Some(Instant::now() + SEND_AFTER);
            }
            if due.is_some_and(|d| Instant::now() >= d) {
                dev.core.msix(1);
                let _ = sent_tx.send(Instant::now());
                due = None;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    });

    let result = (|| -> Result<Vec<Duration>> {
        let mut host = HostModel::connect(&ep, Duration::from_secs(10))?;
        let mut lat = Vec::new();
        for i in 0..10 {
            go_tx.send(()).context("device thread gone")?;
            host.wait_irq(1, Duration::from_secs(5)).with_context(|| format!("interrupt {i}"))?;
            let back = Instant::now();
            let sent = sent_rx.recv_timeout(Duration::from_secs(5)).context("device did not report its send")?;
            lat.push(back.saturating_duration_since(sent));
        }
        ensure!(host.pending_irqs(1) == 0, "more interrupts than sent");
        Ok(lat)
    })();
    stop.store(true, Ordering::Relaxed);
    device.join().map_err(|_| anyhow::anyhow!("device thread panicked"))?;
    let mut lat = result?;
    lat.sort();
    // Woken by the message: about a millisecond on an idle machine. A model that looks every
    // 50 ms returns 20..50 ms after the send (the send comes 30 ms into the wait), so its median
    // cannot be below 15 ms; the margin absorbs a loaded machine.
    ensure!(lat[lat.len() / 2] < Duration::from_millis(15), "wait_irq returned {lat:?} after the interrupt was sent");
    Ok(())
}
