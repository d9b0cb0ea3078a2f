//! Patched mode against vfio-user mode, side by side in one run (docs/benchmarks.md, "vfio-user
//! mode"): the same guest and GEMM simulation, booted once through our QEMU's `accelerator-pcie`
//! and once through the stock QEMU's `vfio-user-pci`, alternately for `--rounds` rounds, with the
//! modelled DMA read latency off (`+cosim_dma_latency=0`). In each boot the guest runs
//! `accel-tool mmio-bench` on one device (guest-visible MMIO read latency), one GEMM of
//! `--size`^3 (device time: RTL cycles, the cycles its engine waited for DMA read data, and wall
//! time) and one DMA-bound GEMM, `--size` x 4 x `--size` (little compute, A read once: DMA
//! throughput = its operand bytes, A and B read and C written, over its device wall time).
//!
//! `make bench-vfio-user` (needs the artefacts of `make e2e-artifacts qemu-stock`); options:
//! `--reads N` (default 20000), `--size N` (default 256), `--rounds N` (default 2).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

struct Opts {
    reads: u32,
    size: u32,
    rounds: u32,
}

fn parse_opts() -> Result<Opts> {
    let mut o = Opts { reads: 20_000, size: 256, rounds: 2 };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || -> Result<u32> {
            args.next()
                .with_context(|| format!("{a} needs a value"))?
                .parse()
                .with_context(|| format!("{a}: not a number"))
        };
        match a.as_str() {
            "--reads" => o.reads = val()?,
            "--size" => o.size = val()?,
            "--rounds" => o.rounds = val()?,
            "--bench" => {} // cargo bench passes it
            "-h" | "--help" => {
                println!("usage: bench_modes [--reads N] [--size N] [--rounds N]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(o)
}

/// One boot's figures.
#[derive(Debug, Default, Clone)]
struct Sample {
    read_p50_us: f64,
    read_p99_us: f64,
    reads_per_s: f64,
    rtl_cycles: f64,
    dma_wait_cycles: f64,
    device_us: f64,
    /// The DMA-bound job's operand bytes over its device wall time.
    dma_mb_s: f64,
    dma_bound_wait_cycles: f64,
    wall_s: f64,
}

/// A row of the table: its name and how to read it from a sample.
type Row = (&'static str, fn(&Sample) -> f64);

fn launcher() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/cosim-launch")
}

fn boot(mode: &str, o: &Opts, log_dir: &Path) -> Result<Sample> {
    let n = o.size;
    let status = Command::new(launcher())
        .args(["--mode", mode, "--log-dir"])
        .arg(log_dir)
        .arg("--sim-arg=+cosim_dma_latency=0")
        .args(["--run", &format!("mmio-bench --devices 1 --reads {} --writes {}", o.reads, o.reads)])
        .args(["--run", &format!("gemm --m {n} --n {n} --k {n} --seed 1 --check")])
        .args(["--run", &format!("gemm --m {n} --n 4 --k {n} --seed 2 --check")])
        .status()
        .with_context(|| format!("starting {}", launcher().display()))?;
    let text = std::fs::read_to_string(log_dir.join("results.json"))
        .with_context(|| format!("{mode}: no results.json in {}", log_dir.display()))?;
    ensure!(status.success(), "{mode}: cosim-launch failed ({status}); logs in {}", log_dir.display());
    let v: Value = serde_json::from_str(&text)?;
    let results = v["guest"]["results"].as_array().context("guest.results")?;
    let find =
        |kind: &str| results.iter().find(|r| r["kind"] == kind).with_context(|| format!("{mode}: no {kind} record"));
    let m = find("mmio-bench")?;
    let gemms: Vec<&Value> = results.iter().filter(|r| r["kind"] == "gemm").collect();
    ensure!(gemms.len() == 2, "{mode}: expected two GEMM records, got {}", gemms.len());
    for g in &gemms {
        ensure!(g["ok"] == true && g["check"] == "pass", "{mode}: a GEMM failed: {g}");
    }
    let (g, d) = (gemms[0], gemms[1]);
    let f = |r: &Value, k: &str| r[k].as_f64().with_context(|| format!("{mode}: {k} missing in {r}"));
    let n = f64::from(n);
    let operand_bytes = n * n + n * 4.0 + n * 4.0 * 4.0; // A (int8), B (int8), C (int32)
    Ok(Sample {
        read_p50_us: f(m, "read_p50_us")?,
        read_p99_us: f(m, "read_p99_us")?,
        reads_per_s: f(m, "reads_per_s")?,
        rtl_cycles: f(g, "rtl_cycles")?,
        dma_wait_cycles: f(g, "dma_wait_cycles")?,
        device_us: f(g, "device_us")?,
        dma_mb_s: operand_bytes / f(d, "device_us")?,
        dma_bound_wait_cycles: f(d, "dma_wait_cycles")?,
        wall_s: v["wall_seconds"].as_f64().unwrap_or(0.0),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let k = v.len() / 2;
    if v.len() % 2 == 1 {
        v[k]
    } else {
        (v[k - 1] + v[k]) / 2.0
    }
}

fn main() -> Result<()> {
    let o = parse_opts()?;
    ensure!(launcher().exists(), "{} missing: make launcher", launcher().display());
    let root = std::env::temp_dir().join(format!("cosim-bench-modes-{}", std::process::id()));
    let modes = ["patched", "vfio-user"];
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(), Vec::new()];
    for round in 0..o.rounds {
        for (i, mode) in modes.iter().enumerate() {
            let dir = root.join(format!("{mode}-{round}"));
            eprintln!("[bench_modes] round {}/{}: {mode} (logs {})", round + 1, o.rounds, dir.display());
            samples[i].push(boot(mode, &o, &dir)?);
        }
    }
    let med = |i: usize, f: fn(&Sample) -> f64| median(samples[i].iter().map(f).collect());
    let rows: [Row; 9] = [
        ("guest MMIO read p50 (us)", |s| s.read_p50_us),
        ("guest MMIO read p99 (us)", |s| s.read_p99_us),
        ("guest MMIO reads/s", |s| s.reads_per_s),
        ("GEMM N^3: RTL cycles (device time)", |s| s.rtl_cycles),
        ("GEMM N^3: cycles waiting for DMA reads", |s| s.dma_wait_cycles),
        ("GEMM N^3: device wall time (ms)", |s| s.device_us / 1000.0),
        ("DMA-bound GEMM Nx4xN: DMA throughput (MB/s)", |s| s.dma_mb_s),
        ("DMA-bound GEMM Nx4xN: cycles waiting for DMA reads", |s| s.dma_bound_wait_cycles),
        ("launch to exit (s)", |s| s.wall_s),
    ];
    let n = o.size;
    println!();
    println!(
        "Patched vs vfio-user, medians of {} boots each (alternating), mmio-bench 1 device {} reads, N = {n}, \
         +cosim_dma_latency=0",
        o.rounds, o.reads
    );
    println!();
    println!("| figure | patched (accelerator-pcie) | vfio-user (stock QEMU) | vfio-user / patched |");
    println!("|---|---:|---:|---:|");
    for (name, f) in rows {
        let (a, b) = (med(0, f), med(1, f));
        let fmt = |x: f64| if x >= 100.0 { format!("{x:.0}") } else { format!("{x:.2}") };
        println!("| {name} | {} | {} | {:.2} |", fmt(a), fmt(b), b / a);
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
