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

/// One run of `sim --max-cycles N [extra]`; returns cycles/s from its exit statistics.
fn run_sim(bin: &std::path::Path, cycles: u64, extra: &[&str], with_host: bool) -> Result<f64> {
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
    parse_stat(&log, "cycles_per_s").with_context(|| format!("no statistics in the simulation log:\n{log}"))
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

    let (mut bridge, mut bridge_host, mut nopoll) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        // Interleaved, so machine load drifts affect all variants alike.
        nopoll.push(run_sim(&bin, cycles, &["--no-dpi-poll"], false)?);
        bridge.push(run_sim(&bin, cycles, &[], false)?);
        bridge_host.push(run_sim(&bin, cycles, &[], true)?);
        eprintln!("run {i}: no-poll {:.2} M/s, bridge {:.2} M/s, bridge+host {:.2} M/s",
            nopoll[i] / 1e6, bridge[i] / 1e6, bridge_host[i] / 1e6);
    }
    let (np, b, bh) = (median(&mut nopoll), median(&mut bridge), median(&mut bridge_host));

    let ping = zmq_ping_pong(reads)?;
    let rt = mmio_round_trip(&bin, reads)?;

    println!("Idle test design (`cosim_test_top`), {cycles} cycles per run, median of {runs} interleaved runs:\n");
    println!("| variant | cycles/s | ratio to --no-dpi-poll |");
    println!("|---|---|---|");
    println!("| `--no-dpi-poll` (no DPI call per clock) | {:.2} M | 1.00 |", np / 1e6);
    println!("| bridge, no host connected | {:.2} M | {:.2} |", b / 1e6, b / np);
    println!("| bridge, host model connected (heartbeats) | {:.2} M | {:.2} |", bh / 1e6, bh / np);
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
