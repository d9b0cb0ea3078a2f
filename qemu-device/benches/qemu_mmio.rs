//! MMIO read round trip through QEMU (qtest -> QEMU -> fake HDL peer -> QEMU -> qtest) against
//! the raw ZeroMQ ping-pong of the same message pair, in the same run. `make bench-qemu`.
//! BENCH_ITERS sets the number of timed round trips per row (default 2000).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::*;
use cosim_protocol::{AccessSize, BarIndex, Message, MmioRead, MmioReadResp, Status};
use cosim_transport::{Endpoint, Side, Transport, ZmqOptions, ZmqTransport};

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let p = |q: f64| us(v[((v.len() - 1) as f64 * q).round() as usize]);
    (p(0.5), p(0.99), us(v.iter().sum::<Duration>()) / v.len() as f64)
}

/// A raw ZeroMQ ping-pong of the same message pair: host here, an echo thread as the device.
struct RawPingPong {
    host: ZmqTransport,
    echo: Option<std::thread::JoinHandle<()>>,
    tag: u32,
}

impl RawPingPong {
    fn open(ep: &str) -> Result<Self> {
        let e = Endpoint::parse(ep)?;
        let mut dev = ZmqTransport::open(&e, Side::Device, &ZmqOptions::default())?;
        let host = ZmqTransport::open(&e, Side::Host, &ZmqOptions::default())?;
        let echo = std::thread::spawn(move || loop {
            match dev.recv(Duration::from_secs(10)) {
                Ok(Some(Message::MmioRead(r))) => {
                    let _ = dev.send(&Message::MmioReadResp(MmioReadResp { tag: r.tag, status: Status::Ok, data: 1 }));
                }
                _ => return, // Reset (stop) or silence
            }
        });
        Ok(Self { host, echo: Some(echo), tag: 0 })
    }

    fn round_trip(&mut self) -> Result<Duration> {
        self.tag += 1;
        let t0 = Instant::now();
        let read = MmioRead { tag: self.tag, bar: BarIndex::new(0).unwrap(), size: AccessSize::B4, offset: 0 };
        self.host.send(&Message::MmioRead(read))?;
        match self.host.recv(Duration::from_secs(10))? {
            Some(Message::MmioReadResp(r)) if r.tag == self.tag => Ok(t0.elapsed()),
            other => anyhow::bail!("raw ping-pong: unexpected {other:?}"),
        }
    }
}

impl Drop for RawPingPong {
    fn drop(&mut self) {
        let _ = self.host.send(&Message::Reset);
        if let Some(t) = self.echo.take() {
            let _ = t.join();
        }
    }
}

fn timed_readl(q: &mut Qemu, addr: u64) -> Result<Duration> {
    let t0 = Instant::now();
    q.readl(addr)?;
    Ok(t0.elapsed())
}

fn main() -> Result<()> {
    let iters: usize = std::env::var("BENCH_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(2000);
    let dir = TempDir::new("bench");

    let mut pp = RawPingPong::open(&dir.endpoint("raw"))?;
    let ep = dir.endpoint("dev");
    let _peer = FakePeer::start(&ep, test_config(TEST_DEVICE));
    let mut q = Qemu::spawn(&device_args(&ep, "04.0", ""))?;
    map_bars(&mut q, 4, 0)?;
    for _ in 0..200 {
        pp.round_trip()?;
        timed_readl(&mut q, 0x1000)?;
        timed_readl(&mut q, BAR0_ADDR + 0x10)?;
    }
    // Interleaved in rounds of 50, so the machine's load hits all three rows alike.
    let (mut raw, mut ram, mut dev) = (Vec::new(), Vec::new(), Vec::new());
    while raw.len() < iters {
        for _ in 0..50 {
            raw.push(pp.round_trip()?);
        }
        for _ in 0..50 {
            ram.push(timed_readl(&mut q, 0x1000)?);
        }
        for _ in 0..50 {
            dev.push(timed_readl(&mut q, BAR0_ADDR + 0x10)?);
        }
    }

    let (rm, r99, ravg) = stats(raw);
    let (qm, q99, qavg) = stats(ram);
    let (dm, d99, davg) = stats(dev);
    println!("MMIO read round trip, {iters} timed iterations per row (after 200 warm-up), interleaved in rounds of 50, ipc endpoints");
    println!();
    println!("| path | median (us) | p99 (us) | mean (us) |");
    println!("|---|---:|---:|---:|");
    println!("| raw ZeroMQ ping-pong (MmioRead -> MmioReadResp, two threads) | {rm:.1} | {r99:.1} | {ravg:.1} |");
    println!("| qtest `readl` of guest RAM (qtest pipe only, no device) | {qm:.1} | {q99:.1} | {qavg:.1} |");
    println!("| qtest `readl` of accelerator-pcie BAR0 (QEMU -> peer -> QEMU) | {dm:.1} | {d99:.1} | {davg:.1} |");
    println!();
    println!(
        "device read / raw ZeroMQ (medians): {:.2}x; device read minus the qtest pipe (medians): {:.1} us = {:.2}x raw ZeroMQ",
        dm / rm,
        dm - qm,
        (dm - qm) / rm
    );
    Ok(())
}
