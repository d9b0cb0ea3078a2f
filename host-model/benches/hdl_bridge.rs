//! HDL bridge benchmarks (`make bench-hdl`), printed as markdown for docs/benchmarks.md:
//!
//! 1. Simulation speed of the idle test design: cycles/s with the DPI bridge polling every clock
//!    (no host, and with the host model connected) against the same binary with `--no-dpi-poll`.
//! 2. MMIO read round trip host model -> ZeroMQ -> DPI -> AXI -> RTL register -> back, against a
//!    raw ZeroMQ ping-pong (same transport, 24-byte frames, an echo process, no RTL) in the same run.
//!
//! Environment: BENCH_CYCLES (default 20000000), BENCH_RUNS (default 3), BENCH_READS (default 3000).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cosim_host_model::{sim_binary, temp_endpoint, HostModel, SimProcess};
use cosim_transport::{Endpoint, Side, Transport, ZmqOptions, ZmqTransport};

const ECHO_ENV: &str = "COSIM_BENCH_ECHO_ENDPOINT";

fn env_num(name: &str, dflt: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(dflt)
}

fn parse_stat(log: &str, key: &str) -> Option<f64> {
    let line = log.lines().rev().find(|l| l.starts_with("cosim-sim: stats "))?;
    line.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((s.len() as f64 - 1.0) * p).round() as usize]
}

/// One run of `sim --max-cycles N [extra]`; returns (cycles per wall second, cycles per CPU
/// second of the simulation thread) from its exit statistics.
fn run_sim(bin: &std::path::Path, cycles: u64, extra: &[&str], with_host: bool) -> Result<(f64, f64)> {
    let (_dir, ep) = temp_endpoint("bench")?;
    let n = cycles.to_string();
    let mut args = vec!["--max-cycles", n.as_str()];
    args.extend_from_slice(extra);
    let mut sim = SimProcess::spawn(bin, &ep, &args, Duration::from_secs(30))?;
    if with_host {
        let mut host = HostModel::connect(&ep, Duration::from_secs(10))?;
        // Serve heartbeats until the simulation ends (it says goodbye at max-cycles).
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline && host.poll(Duration::from_millis(100)).is_ok() {}
    }
    sim.wait_exit(Duration::from_secs(300))?;
    let log = sim.log();
    let wall = parse_stat(&log, "cycles_per_s").with_context(|| format!("no statistics in the simulation log:\n{log}"))?;
    let cpu = parse_stat(&log, "cycles_per_cpu_s").with_context(|| format!("no CPU statistics:\n{log}"))?;
    Ok((wall, cpu))
}

fn echo_server(ep: &str) -> Result<()> {
    let mut t = ZmqTransport::open(&Endpoint::parse(ep)?, Side::Device, &ZmqOptions::default())?;
    eprintln!("cosim-sim: ready endpoint={ep}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Some(f) = t.recv_frame(Duration::from_millis(100))? {
            if f.is_empty() {
                return Ok(());
            }
            t.send_frame(&f)?;
        }
    }
    Ok(())
}

fn zmq_ping_pong(reads: usize) -> Result<Vec<f64>> {
    let (_dir, ep) = temp_endpoint("echo")?;
    let me = std::env::current_exe()?;
    let _child = SimProcess::spawn_with(
        &me,
        &ep,
        cosim_host_model::SimOptions {
            env: vec![(ECHO_ENV.to_string(), ep.clone())],
            ready_timeout: Duration::from_secs(10),
            ..Default::default()
        },
    )?;
    let mut t = ZmqTransport::open(&Endpoint::parse(&ep)?, Side::Host, &ZmqOptions::default())?;
    let frame = [0x5au8; 24]; // the size of an MMIO read request frame
    // Warm up: wait until the echo answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        t.send_frame(&frame)?;
        if t.recv_frame(Duration::from_millis(100))?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            bail!("echo process does not answer");
        }
    }
    while t.recv_frame(Duration::from_millis(50))?.is_some() {}
    let mut us = Vec::with_capacity(reads);
    for _ in 0..reads {
        let t0 = Instant::now();
        t.send_frame(&frame)?;
        t.recv_frame(Duration::from_secs(5))?.context("echo lost")?;
        us.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    t.send_frame(&[])?;
    Ok(us)
}

fn mmio_round_trip(bin: &std::path::Path, reads: usize) -> Result<Vec<f64>> {
    let (_dir, ep) = temp_endpoint("rt")?;
    let _sim = SimProcess::spawn(bin, &ep, &[], Duration::from_secs(30))?;
    let mut host = HostModel::connect(&ep, Duration::from_secs(10))?;
    host.write(0, 0x8, 8, 0x1122_3344)?;
    for _ in 0..100 {
        host.read(0, 0x8, 8)?;
    }
    let mut us = Vec::with_capacity(reads);
    for _ in 0..reads {
        let t0 = Instant::now();
        let v = host.read(0, 0x8, 8)?;
        us.push(t0.elapsed().as_secs_f64() * 1e6);
        if v != 0x1122_3344 {
            bail!("read back {v:#x}");
        }
    }
    Ok(us)
}

/// Nanoseconds per `tick` of an idle endpoint (no host), the per-clock cost of the bridge.
fn tick_cost_ns() -> Result<f64> {
    let (_dir, ep) = temp_endpoint("tick")?;
    let mut b = cosim_dpi_bridge::EpBuilder::new("bench", &ep);
    b.ids(0x1ded, 0x7e57, 0x1ded, 1, 0x12_0000, 1);
    b.bar(0, 4096, false, false, 0)?;
    let mut e = b.start()?;
    let n = 50_000_000u64;
    let mut acc = 0u32;
    let t0 = Instant::now();
    for _ in 0..n {
        acc ^= std::hint::black_box(e.core.tick());
    }
    let ns = t0.elapsed().as_secs_f64() * 1e9 / n as f64;
    std::hint::black_box(acc);
    Ok(ns)
}

fn main() -> Result<()> {
    if let Ok(ep) = std::env::var(ECHO_ENV) {
        return echo_server(&ep);
    }
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let bin = sim_binary("cosim_test_top", "sim-test")?;
    let cycles = env_num("BENCH_CYCLES", 20_000_000);
    let runs = env_num("BENCH_RUNS", 3) as usize;
    let reads = env_num("BENCH_READS", 3000) as usize;

    // [variant][run] = (wall, cpu)
    let variants: [(&str, &[&str], bool); 3] = [
        ("`--no-dpi-poll` (no DPI call per clock)", &["--no-dpi-poll"], false),
        ("bridge, no host connected", &[], false),
        ("bridge, host model connected (heartbeats)", &[], true),
    ];
    let mut res: Vec<Vec<(f64, f64)>> = vec![Vec::new(); variants.len()];
    for i in 0..runs {
        // Interleaved, so machine load drifts affect all variants alike.
        for (v, (_, args, host)) in variants.iter().enumerate() {
            res[v].push(run_sim(&bin, cycles, args, *host)?);
        }
        eprintln!(
            "run {i}: {}",
            res.iter().map(|r| format!("{:.2}/{:.2} M/s", r[i].0 / 1e6, r[i].1 / 1e6)).collect::<Vec<_>>().join(", ")
        );
    }
    let med = |v: usize, cpu: bool| median(&mut res[v].iter().map(|r| if cpu { r.1 } else { r.0 }).collect::<Vec<_>>());
    let (base_w, base_c) = (med(0, false), med(0, true));

    let tick_ns = tick_cost_ns()?;
    let ping = zmq_ping_pong(reads)?;
    let rt = mmio_round_trip(&bin, reads)?;

    println!("Idle test design (`cosim_test_top`), {cycles} cycles per run, median of {runs} interleaved runs.");
    println!("Wall: cycles per wall-clock second of the clock loop. CPU: cycles per CPU second of the simulation thread.\n");
    println!("| variant | cycles/s (wall) | ratio | cycles/s (CPU) | ratio |");
    println!("|---|---|---|---|---|");
    for (v, (name, _, _)) in variants.iter().enumerate() {
        let (w, c) = (med(v, false), med(v, true));
        println!("| {name} | {:.2} M | {:.2} | {:.2} M | {:.2} |", w / 1e6, w / base_w, c / 1e6, c / base_c);
    }
    println!();
    println!(
        "Cost of the per-clock poll in isolation (`EpCore::tick` of an idle endpoint, 50 M calls): {tick_ns:.2} ns, \
         {:.1} % of one simulated cycle of the `--no-dpi-poll` build ({:.0} ns per CPU cycle-time).",
        100.0 * tick_ns * base_c / 1e9,
        1e9 / base_c
    );
    println!();
    println!("Round trips, {reads} each, same run (microseconds):\n");
    println!("| path | median | p90 | p99 | max |");
    println!("|---|---|---|---|---|");
    for (name, v) in [
        ("raw ZeroMQ ping-pong (24-byte frame, echo process, ipc)", &ping),
        ("MMIO read: host model -> DPI -> AXI -> RTL register -> host model (ipc)", &rt),
    ] {
        println!("| {name} | {:.1} | {:.1} | {:.1} | {:.1} |", pct(v, 0.5), pct(v, 0.9), pct(v, 0.99), pct(v, 1.0));
    }
    Ok(())
}
