//! Four devices probed at once, with QEMU's big lock released or held while an MMIO read waits
//! (docs/benchmarks.md, "Guest MMIO from user space"; docs/qemu-device.md, "Threads and the big
//! lock"). One guest per boot with `cosim-launch --devices 4`, running `accel-tool mmio-bench
//! --devices 4 --concurrent` (one thread per device, released together); the variants alternate
//! boot by boot for `--rounds` rounds:
//!
//! - `-smp 1`, lock released (the default device; one vCPU, so one read in flight at a time);
//! - `-smp 2`, lock held (`-device accelerator-pcie,x-hold-bql=on`: the behaviour before reads
//!   released it);
//! - `-smp 2`, lock released (reads of the two vCPUs overlap);
//! - `-smp 4`, lock released (a vCPU per probing thread).
//!
//! `make bench-guest-mmio` runs it after the single-boot table; options `--reads N` (per device,
//! default 10000) and `--rounds N` (default 3).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

struct Opts {
    reads: u32,
    rounds: u32,
}

fn parse_opts() -> Result<Opts> {
    let mut o = Opts { reads: 10_000, rounds: 3 };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || -> Result<u32> {
            args.next().with_context(|| format!("{a} needs a value"))?.parse().with_context(|| format!("{a}: not a number"))
        };
        match a.as_str() {
            "--reads" => o.reads = val()?,
            "--rounds" => o.rounds = val()?,
            "--bench" => {} // cargo bench passes it
            "-h" | "--help" => {
                println!("usage: bench_bql [--reads N] [--rounds N]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(o)
}

/// One variant: its name, the guest's vCPUs, and whether the lock is held through a read's wait.
struct Variant {
    name: &'static str,
    smp: u32,
    hold: bool,
}

const VARIANTS: [Variant; 4] = [
    Variant { name: "-smp 1, released", smp: 1, hold: false },
    Variant { name: "-smp 2, held (x-hold-bql=on)", smp: 2, hold: true },
    Variant { name: "-smp 2, released", smp: 2, hold: false },
    Variant { name: "-smp 4, released", smp: 4, hold: false },
];

/// One boot's figures, over its four devices.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Reads per second of the slowest and of the fastest device.
    min_reads_s: f64,
    max_reads_s: f64,
    /// The four devices' reads per second added up.
    total_reads_s: f64,
    /// Median of the four devices' read p50, and the largest of their p99.
    p50_us: f64,
    worst_p99_us: f64,
    /// QEMU's `reads_in_flight_max`.
    in_flight_max: f64,
}

fn launcher() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/cosim-launch")
}

fn boot(v: &Variant, o: &Opts, log_dir: &Path) -> Result<Sample> {
    let mut cmd = Command::new(launcher());
    cmd.args(["--devices", "4", "--smp", &v.smp.to_string(), "--log-dir"]).arg(log_dir);
    if v.hold {
        cmd.args(["--device-opt", "x-hold-bql=on"]);
    }
    cmd.args(["--run", &format!("mmio-bench --devices 4 --concurrent --reads {} --writes 100", o.reads)]);
    let status = cmd.status().with_context(|| format!("starting {}", launcher().display()))?;
    let text = std::fs::read_to_string(log_dir.join("results.json"))
        .with_context(|| format!("{}: no results.json in {}", v.name, log_dir.display()))?;
    ensure!(status.success(), "{}: cosim-launch failed ({status}); logs in {}", v.name, log_dir.display());
    let j: Value = serde_json::from_str(&text)?;
    let results = j["guest"]["results"].as_array().context("guest.results")?;
    let benches: Vec<&Value> = results.iter().filter(|r| r["kind"] == "mmio-bench").collect();
    ensure!(benches.len() == 4, "{}: expected 4 mmio-bench records, got {}", v.name, benches.len());
    let f = |r: &Value, k: &str| r[k].as_f64().with_context(|| format!("{}: {k} missing in {r}", v.name));
    let mut rates = Vec::new();
    let mut p50 = Vec::new();
    let mut p99: f64 = 0.0;
    for b in &benches {
        ensure!(b["ok"] == true && b["read_errors"] == 0, "{}: a probe failed: {b}", v.name);
        rates.push(f(b, "reads_per_s")?);
        p50.push(f(b, "read_p50_us")?);
        p99 = p99.max(f(b, "read_p99_us")?);
    }
    let in_flight = j["device_stats"][0]["qemu"]["reads_in_flight_max"].as_f64().unwrap_or(f64::NAN);
    Ok(Sample {
        min_reads_s: rates.iter().copied().fold(f64::INFINITY, f64::min),
        max_reads_s: rates.iter().copied().fold(0.0, f64::max),
        total_reads_s: rates.iter().sum(),
        p50_us: median(p50),
        worst_p99_us: p99,
        in_flight_max: in_flight,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn main() -> Result<()> {
    let o = parse_opts()?;
    ensure!(launcher().exists(), "{} missing: make launcher", launcher().display());
    let root = std::env::temp_dir().join(format!("cosim-bench-bql-{}", std::process::id()));
    let mut samples: Vec<Vec<Sample>> = VARIANTS.iter().map(|_| Vec::new()).collect();
    for round in 0..o.rounds {
        for (i, v) in VARIANTS.iter().enumerate() {
            let dir = root.join(format!("v{i}-{round}"));
            eprintln!("[bench_bql] round {}/{}: {} (logs {})", round + 1, o.rounds, v.name, dir.display());
            samples[i].push(boot(v, &o, &dir)?);
        }
    }
    println!();
    println!(
        "4 devices probed at once (mmio-bench --devices 4 --concurrent, {} reads each), medians of {} boots per \
         variant (alternating)",
        o.reads, o.rounds
    );
    println!();
    println!("| variant | reads/s, slowest device | fastest | all four | read p50 (us) | worst p99 (us) | reads in flight, most | all four / -smp 1 |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let med = |i: usize, f: fn(&Sample) -> f64| median(samples[i].iter().map(f).collect());
    let base = med(0, |s| s.total_reads_s);
    for (i, v) in VARIANTS.iter().enumerate() {
        let total = med(i, |s| s.total_reads_s);
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.2} |",
            v.name,
            med(i, |s| s.min_reads_s),
            med(i, |s| s.max_reads_s),
            total,
            med(i, |s| s.p50_us),
            med(i, |s| s.worst_p99_us),
            med(i, |s| s.in_flight_max),
            total / base
        );
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
