//! MMIO read round trip through QEMU (qtest -> QEMU -> fake HDL peer -> QEMU -> qtest) against
//! the raw ping-pong of the same message pair, in the same run, over both links: ZeroMQ and the
//! shared-memory link (QEMUs started with `COSIM_SHM=0` and `1`). Over shared memory twice: with
//! a peer that sleeps on its doorbell as soon as it has answered (the transport's default), and
//! with a peer that spins 500 us before sleeping, as awake as the Verilator simulation, which
//! keeps clocking and polling the link for its idle grace (500 us by default) after a message.
//! Besides the qtest timings, each QEMU's own read latency (its device statistics, request to
//! completion) shows the round trip without the qtest pipe. `make bench-qemu`.
//! BENCH_ITERS sets the number of timed round trips per row (default 2000).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::*;
use cosim_protocol::{
    AccessSize, BarDesc, BarIndex, Caps, Config, DeviceConfig, Init, Message, MmioRead, MmioReadResp, Status, VERSION_MAJOR,
    VERSION_MINOR,
};
use cosim_transport::{Endpoint, Side, Transport, ZmqOptions, ZmqTransport};

/// How long the awake peer spins before it sleeps: the simulation's default idle grace
/// (`sim --idle-grace-us`, docs/hdl-endpoint.md).
const PEER_AWAKE: Duration = Duration::from_micros(500);

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let p = |q: f64| us(v[((v.len() - 1) as f64 * q).round() as usize]);
    (p(0.5), p(0.99), us(v.iter().sum::<Duration>()) / v.len() as f64)
}

/// A raw ping-pong of the same message pair: host here, an echo thread as the device; with
/// `shm`, an INIT/CONFIG exchange first switches the pair to the shared-memory link.
struct RawPingPong {
    host: ZmqTransport,
    echo: Option<std::thread::JoinHandle<()>>,
    tag: u32,
}

impl RawPingPong {
    fn open(ep: &str, shm: bool) -> Result<Self> {
        let e = Endpoint::parse(ep)?;
        let opts = ZmqOptions { shm, ..ZmqOptions::default() };
        let mut dev = ZmqTransport::open(&e, Side::Device, &opts)?;
        let mut host = ZmqTransport::open(&e, Side::Host, &opts)?;
        let session = 0x5e55;
        host.send(&Message::Init(Init { major: VERSION_MAJOR, minor: VERSION_MINOR, caps: Caps::empty(), session, prev_session: 0 }))?;
        anyhow::ensure!(matches!(dev.recv(Duration::from_secs(10))?, Some(Message::Init(_))), "no INIT");
        let mut device = DeviceConfig { vendor_id: 0x1ded, device_id: 1, ..Default::default() };
        device.bars[0] = BarDesc::mem32(0x1000);
        dev.send(&Message::Config(Config { major: VERSION_MAJOR, minor: VERSION_MINOR, caps: Caps::empty(), session, device }))?;
        anyhow::ensure!(matches!(host.recv(Duration::from_secs(10))?, Some(Message::Config(_))), "no CONFIG");
        anyhow::ensure!(host.shm_active() == shm, "shared memory {} as asked", if shm { "off" } else { "on" });
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

/// QEMU's own view of the device's reads (docs/qemu-device.md, "Statistics"): the stats line the
/// device prints at exit, request to completion inside QEMU, so without the qtest pipe. Its
/// percentiles are the upper bounds of quarter-octave buckets (at most 19 % above the truth).
fn qemu_read_stats(mut q: Qemu) -> Result<(u64, f64, f64)> {
    q.terminate();
    let (_, stderr) = q.wait_exit(Duration::from_secs(10))?;
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("cosim-qemu: stats "))
        .with_context(|| format!("no stats line at exit:\n{stderr}"))?;
    let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("stats line {line:?}"))?;
    let num = |k: &str| v[k].as_f64().with_context(|| format!("{k} in {line}"));
    Ok((num("mmio_reads")? as u64, num("read_p50_us")?, num("read_p99_us")?))
}

fn timed_readl(q: &mut Qemu, addr: u64) -> Result<Duration> {
    let t0 = Instant::now();
    q.readl(addr)?;
    Ok(t0.elapsed())
}

fn main() -> Result<()> {
    let iters: usize = std::env::var("BENCH_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(2000);
    let dir = TempDir::new("bench");
    // The fake peers (device side, in this process) accept the shared-memory link; each QEMU
    // decides with its own COSIM_SHM.
    std::env::set_var(cosim_transport::SHM_ENV, "1");

    let mut pp_zmq = RawPingPong::open(&dir.endpoint("raw"), false)?;
    let mut pp_shm = RawPingPong::open(&dir.endpoint("rawshm"), true)?;
    let (ep_zmq, ep_shm, ep_awake) = (dir.endpoint("dev"), dir.endpoint("devshm"), dir.endpoint("devawake"));
    let _peer_zmq = FakePeer::start(&ep_zmq, test_config(TEST_DEVICE));
    let _peer_shm = FakePeer::start(&ep_shm, test_config(TEST_DEVICE));
    let awake = ZmqOptions { shm_spin: PEER_AWAKE, ..ZmqOptions::default() };
    let answer: Responder = Box::new(|r, _| default_read_value(r.bar.get(), r.offset));
    let _peer_awake = FakePeer::start_opts(&ep_awake, test_config(TEST_DEVICE), answer, &awake);
    let mut q_zmq = Qemu::spawn_env(&device_args(&ep_zmq, "04.0", ""), &[(cosim_transport::SHM_ENV, "0".into())])?;
    let mut q_shm = Qemu::spawn_env(&device_args(&ep_shm, "04.0", ""), &[(cosim_transport::SHM_ENV, "1".into())])?;
    let mut q_awake = Qemu::spawn_env(&device_args(&ep_awake, "04.0", ""), &[(cosim_transport::SHM_ENV, "1".into())])?;
    map_bars(&mut q_zmq, 4, 0)?;
    map_bars(&mut q_shm, 4, 0)?;
    map_bars(&mut q_awake, 4, 0)?;
    for _ in 0..200 {
        pp_zmq.round_trip()?;
        pp_shm.round_trip()?;
        timed_readl(&mut q_zmq, 0x1000)?;
        timed_readl(&mut q_zmq, BAR0_ADDR + 0x10)?;
        timed_readl(&mut q_shm, BAR0_ADDR + 0x10)?;
        timed_readl(&mut q_awake, BAR0_ADDR + 0x10)?;
    }
    // Interleaved in rounds of 50, so the machine's load hits all rows alike.
    let mut rows: [Vec<Duration>; 6] = Default::default();
    while rows[0].len() < iters {
        for _ in 0..50 {
            rows[0].push(pp_zmq.round_trip()?);
        }
        for _ in 0..50 {
            rows[1].push(pp_shm.round_trip()?);
        }
        for _ in 0..50 {
            rows[2].push(timed_readl(&mut q_zmq, 0x1000)?);
        }
        for _ in 0..50 {
            rows[3].push(timed_readl(&mut q_zmq, BAR0_ADDR + 0x10)?);
        }
        for _ in 0..50 {
            rows[4].push(timed_readl(&mut q_shm, BAR0_ADDR + 0x10)?);
        }
        for _ in 0..50 {
            rows[5].push(timed_readl(&mut q_awake, BAR0_ADDR + 0x10)?);
        }
    }
    let [(rm, r99, ravg), (sm, s99, savg), (qm, q99, qavg), (dm, d99, davg), (em, e99, eavg), (am, a99, aavg)] =
        rows.map(stats);
    println!("MMIO read round trip, {iters} timed iterations per row (after 200 warm-up), interleaved in rounds of 50, ipc endpoints");
    println!();
    println!("| path | median (us) | p99 (us) | mean (us) |");
    println!("|---|---:|---:|---:|");
    println!("| raw ZeroMQ ping-pong (MmioRead -> MmioReadResp, two threads) | {rm:.1} | {r99:.1} | {ravg:.1} |");
    println!("| raw shared-memory ping-pong (the same, over the rings) | {sm:.1} | {s99:.1} | {savg:.1} |");
    println!("| qtest `readl` of guest RAM (qtest pipe only, no device) | {qm:.1} | {q99:.1} | {qavg:.1} |");
    println!("| qtest `readl` of accelerator-pcie BAR0 over ZeroMQ (QEMU -> peer -> QEMU) | {dm:.1} | {d99:.1} | {davg:.1} |");
    println!("| qtest `readl` of accelerator-pcie BAR0 over shared memory | {em:.1} | {e99:.1} | {eavg:.1} |");
    println!("| the same, the peer awake (spins {} us) | {am:.1} | {a99:.1} | {aavg:.1} |", PEER_AWAKE.as_micros());
    println!();
    println!(
        "device read minus the qtest pipe (medians): ZeroMQ {:.1} us ({:.2}x raw ZeroMQ), shared memory {:.1} us ({:.2}x raw \
         shared memory), shared memory with the peer awake {:.1} us",
        dm - qm,
        (dm - qm) / rm,
        em - qm,
        (em - qm) / sm,
        am - qm
    );
    println!();
    println!("QEMU's own read latency (device statistics, request to completion, the 200 warm-up reads included; each");
    println!("figure is the upper bound of its quarter-octave bucket, at most 19 % above the truth):");
    println!();
    println!("| link | reads | p50 (us) | p99 (us) |");
    println!("|---|---:|---:|---:|");
    for (name, q) in [("ZeroMQ", q_zmq), ("shared memory", q_shm), ("shared memory, the peer awake", q_awake)] {
        let (n, p50, p99) = qemu_read_stats(q)?;
        println!("| {name} | {n} | {p50:.1} | {p99:.1} |");
    }
    Ok(())
}
