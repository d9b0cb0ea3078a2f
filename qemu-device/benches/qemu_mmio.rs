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

fn raw_zmq(ep: &str, iters: usize) -> Result<Vec<Duration>> {
    let e = Endpoint::parse(ep)?;
    let mut dev = ZmqTransport::open(&e, Side::Device, &ZmqOptions::default())?;
    let mut host = ZmqTransport::open(&e, Side::Host, &ZmqOptions::default())?;
    let n = iters + 200;
    let echo = std::thread::spawn(move || -> Result<()> {
        for _ in 0..n {
            match dev.recv(Duration::from_secs(10))? {
                Some(Message::MmioRead(r)) => {
                    dev.send(&Message::MmioReadResp(MmioReadResp { tag: r.tag, status: Status::Ok, data: 1 }))?
                }
                other => anyhow::bail!("echo: unexpected {other:?}"),
            }
        }
        Ok(())
    });
    let mut out = Vec::with_capacity(iters);
    for i in 0..n {
        let t0 = Instant::now();
        let read = MmioRead { tag: i as u32, bar: BarIndex::new(0).unwrap(), size: AccessSize::B4, offset: 0 };
        host.send(&Message::MmioRead(read))?;
        match host.recv(Duration::from_secs(10))? {
            Some(Message::MmioReadResp(r)) if r.tag == i as u32 => {}
            other => anyhow::bail!("host: unexpected {other:?}"),
        }
        if i >= 200 {
            out.push(t0.elapsed());
        }
    }
    echo.join().unwrap()?;
    Ok(out)
}

fn qtest_reads(q: &mut Qemu, addr: u64, iters: usize) -> Result<Vec<Duration>> {
    for _ in 0..200 {
        q.readl(addr)?;
    }
    let mut out = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t0 = Instant::now();
        q.readl(addr)?;
        out.push(t0.elapsed());
    }
    Ok(out)
}

fn main() -> Result<()> {
    let iters: usize = std::env::var("BENCH_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(2000);
    let dir = TempDir::new("bench");

    let raw = raw_zmq(&dir.endpoint("raw"), iters)?;

    let ep = dir.endpoint("dev");
    let _peer = FakePeer::start(&ep, test_config(TEST_DEVICE));
    let mut q = Qemu::spawn(&device_args(&ep, "04.0", ""))?;
    map_bars(&mut q, 4, 0)?;
    let ram = qtest_reads(&mut q, 0x1000, iters)?;
    let dev = qtest_reads(&mut q, BAR0_ADDR + 0x10, iters)?;

    let (rm, r99, ravg) = stats(raw);
    let (qm, q99, qavg) = stats(ram);
    let (dm, d99, davg) = stats(dev);
    println!("MMIO read round trip, {iters} timed iterations per row (after 200 warm-up), ipc endpoints");
    println!();
    println!("| path | median (us) | p99 (us) | mean (us) |");
    println!("|---|---:|---:|---:|");
    println!("| raw ZeroMQ ping-pong (MmioRead -> MmioReadResp, two threads) | {rm:.1} | {r99:.1} | {ravg:.1} |");
    println!("| qtest `readl` of guest RAM (qtest pipe only, no device) | {qm:.1} | {q99:.1} | {qavg:.1} |");
    println!("| qtest `readl` of accelerator-pcie BAR0 (QEMU -> peer -> QEMU) | {dm:.1} | {d99:.1} | {davg:.1} |");
    println!("| device read minus qtest overhead (medians) | {:.1} | | |", dm - qm);
    Ok(())
}
