//! Idle sleep of the simulation (docs/hdl-endpoint.md, "Idle sleep"), printed as markdown for
//! docs/benchmarks.md. Needs `make sim-test`; run with `cargo bench -p cosim-host-model --bench idle`.
//!
//! 1. CPU of an idle simulation: the test design with the host model connected (session up,
//!    heartbeats both ways) and nothing else to do for BENCH_IDLE_S seconds, by default and with
//!    `--no-idle-sleep`: CPU seconds of the simulation process (/proc/<pid>/stat) per wall second.
//! 2. Wake latency: MMIO reads of a register, each after BENCH_GAP_MS of idleness (long enough
//!    for the simulation to fall asleep), by default and with `--no-idle-sleep`, in four blocks
//!    per variant alternating in the same run, one simulation alive at a time; the difference of
//!    the medians is what waking costs a host's access. The bridge's own wake latencies (the
//!    simulation's `idle sleep` line) are printed too.
//!
//! Environment: BENCH_IDLE_S (default 5), BENCH_READS (default 200), BENCH_GAP_MS (default 5).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use cosim_host_model::{sim_binary, temp_endpoint, HostModel, SimOptions, SimProcess};

const SCRATCH0: u64 = 0x008;

fn env_num(name: &str, dflt: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(dflt)
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((s.len() as f64 - 1.0) * p).round() as usize]
}

struct Rig {
    sim: SimProcess,
    host: HostModel,
    _dir: cosim_transport::PrivateDir,
}

fn start(bin: &std::path::Path, args: &[&str]) -> Result<Rig> {
    let (dir, ep) = temp_endpoint("idle")?;
    let sim = SimProcess::spawn_with(
        bin,
        &ep,
        SimOptions {
            args: args.iter().map(|s| s.to_string()).collect(),
            log: Some(dir.path().join("sim.log")),
            ready_timeout: Duration::from_secs(30),
            env: Vec::new(),
        },
    )?;
    let mut host = HostModel::connect(&ep, Duration::from_secs(10))?;
    host.write(0, SCRATCH0, 8, 0x5a)?;
    Ok(Rig { sim, host, _dir: dir })
}

fn finish(mut r: Rig) -> Result<String> {
    r.host.goodbye()?;
    r.sim.wait_exit(Duration::from_secs(30))?;
    Ok(r.sim.log())
}

/// Share of one core the simulation used over `secs` of idleness.
fn idle_cpu(bin: &std::path::Path, args: &[&str], secs: u64) -> Result<(f64, String)> {
    let mut r = start(bin, args)?;
    r.host.poll(Duration::from_millis(100))?;
    let (c0, t0) = (r.sim.cpu_seconds()?, Instant::now());
    r.host.poll(Duration::from_secs(secs))?;
    let share = (r.sim.cpu_seconds()? - c0) / t0.elapsed().as_secs_f64();
    Ok((share, finish(r)?))
}

fn main() -> Result<()> {
    let bin = sim_binary("cosim_test_top", "sim-test")?;
    let secs = env_num("BENCH_IDLE_S", 5);
    let reads = env_num("BENCH_READS", 200) as usize;
    let gap = Duration::from_millis(env_num("BENCH_GAP_MS", 5));

    let (sleep_cpu, log) = idle_cpu(&bin, &[], secs)?;
    ensure!(log.contains("idle sleep: sleeps="), "the simulation did not report its idle sleep:\n{log}");
    let (spin_cpu, _) = idle_cpu(&bin, &["--no-idle-sleep"], secs)?;

    // Reads after a gap, in blocks that alternate between the variants, one simulation alive at a
    // time (a spinning neighbour would take a core from the sleeping one's wake).
    let (mut ta, mut tb) = (Vec::with_capacity(reads), Vec::with_capacity(reads));
    let mut log_a = String::new();
    let blocks = 4;
    for _ in 0..blocks {
        for (args, t) in [(&[][..], &mut ta), (&["--no-idle-sleep"][..], &mut tb)] {
            let mut r = start(&bin, args)?;
            for _ in 0..reads.div_ceil(blocks) {
                std::thread::sleep(gap);
                let t0 = Instant::now();
                let v = r.host.read(0, SCRATCH0, 8)?;
                t.push(t0.elapsed().as_secs_f64() * 1e6);
                ensure!(v == 0x5a, "read {v:#x}");
            }
            let log = finish(r)?;
            if args.is_empty() {
                log_a.push_str(&log);
            }
        }
    }
    let wake: Vec<&str> = log_a.lines().filter(|l| l.starts_with("cosim-sim: idle sleep: ")).collect();
    ensure!(wake.len() == blocks, "no idle sleep line in a block:\n{log_a}");
    let field = |line: &str, k: &str| -> Result<f64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
            .with_context(|| format!("no {k} in {line}"))
    };
    let mut sleeps = 0.0;
    let mut wakes = 0.0;
    let (mut p50, mut p99, mut max) = (Vec::new(), Vec::new(), 0.0f64);
    for l in &wake {
        sleeps += field(l, "sleeps")?;
        wakes += field(l, "wakes")?;
        p50.push(field(l, "wake_us_p50")?);
        p99.push(field(l, "wake_us_p99")?);
        max = max.max(field(l, "wake_us_max")?);
    }
    println!("| idle simulation, {secs} s, host connected | CPU (share of one core) |");
    println!("|---|---|");
    println!("| default (idle sleep) | {:.2} % |", 100.0 * sleep_cpu);
    println!("| `--no-idle-sleep` | {:.1} % |", 100.0 * spin_cpu);
    println!("| ratio | {:.4} |", sleep_cpu / spin_cpu);
    println!();
    println!(
        "| MMIO read after {} ms idle ({reads} reads, alternating blocks) | median (us) | p90 | p99 |",
        gap.as_millis()
    );
    println!("|---|---|---|---|");
    for (name, t) in [("default (asleep: the read wakes it)", &ta), ("`--no-idle-sleep` (clock running)", &tb)] {
        println!("| {name} | {:.1} | {:.1} | {:.1} |", pct(t, 0.5), pct(t, 0.9), pct(t, 0.99));
    }
    println!();
    println!(
        "Difference of the medians: {:.1} us. The sleeping simulation slept {sleeps} times for {} reads; its own \
         wake latency (I/O thread writes the eventfd -> simulation thread running), {wakes} wakes: per block \
         medians {p50:?} us, p99s {p99:?} us, max {max:.1} us.",
        pct(&ta, 0.5) - pct(&tb, 0.5),
        ta.len()
    );
    Ok(())
}
