//! Shared-accelerator benchmark (`make bench-share`, = `cargo run --release -p cosim-mediator
//! --example bench_share`), printed as markdown for docs/benchmarks.md. Needs `make sim-gemm`.
//!
//! 1. Pass-through MMIO read: a host model reads the GEMM design's BUSY_CYCLES_LO register
//!    (answered by the RTL) directly from a simulation, and through `cosim-mediator` (a
//!    pass-through register) from another; one simulation runs at a time (two simulations
//!    spinning on two cores would measure the scheduler), in four alternating phases;
//!    BENCH_READS per path (default 4000). Also a register the mediator answers itself (STATUS).
//! 2. Four VMs submitting back to back: host models vm0 (high), vm1 (medium), vm2 and vm3 (low)
//!    each run BENCH_JOBS GEMMs (default 12) of BENCH_SIZE^3 (default 64), each checked
//!    bit-exactly; the RTL's busy fraction between the first and the last completion (its
//!    BUSY_CYCLES and IDLE_CYCLES, read by the mediator at each completion), and the queue wait
//!    per priority from the job log.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use cosim_gemm_abi::regs;
use cosim_host_model::{sim_binary, temp_endpoint, HostModel, SimProcess};
use cosim_mediator::Priority;

use common::{vm_workload, MediatorProc};

fn env_num(name: &str, dflt: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(dflt)
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((s.len() as f64 - 1.0) * p).round() as usize]
}

fn timed_reads(h: &mut HostModel, off: u64, n: usize, out: &mut Vec<f64>) -> Result<()> {
    for _ in 0..3 {
        h.read(0, off, 4)?; // wake the simulation up
    }
    for _ in 0..n {
        let t = Instant::now();
        h.read(0, off, 4)?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(())
}

/// Phases of the read comparison (direct, then mediated, this many times).
const PHASES: usize = 4;

fn main() -> Result<()> {
    cosim_host_model::init_logging();
    let reads = env_num("BENCH_READS", 4000) as usize;
    let jobs = env_num("BENCH_JOBS", 12) as usize;
    let size = env_num("BENCH_SIZE", 64) as u32;
    let sim = sim_binary("gemm_top", "sim-gemm")?;

    // 1. Pass-through read, direct against mediated: one simulation at a time (two spinning
    //    simulations on two cores would measure the scheduler), in alternating phases.
    let (mut t_direct, mut t_med, mut t_local) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..PHASES {
        let per = reads / PHASES;
        {
            let (_d, ep) = temp_endpoint("direct")?;
            let _s = SimProcess::spawn(&sim, &ep, &[], Duration::from_secs(60))?;
            let mut direct = HostModel::connect(&ep, Duration::from_secs(30))?;
            for _ in 0..100 {
                direct.read(0, regs::BUSY_CYCLES_LO, 4)?;
            }
            timed_reads(&mut direct, regs::BUSY_CYCLES_LO, per, &mut t_direct)?;
        }
        {
            let (d, ep_sim) = temp_endpoint("share")?;
            let _s = SimProcess::spawn(&sim, &ep_sim, &[], Duration::from_secs(60))?;
            let vm_ep = format!("ipc://{}/vm0", d.path().display());
            let med = MediatorProc::start(d.path(), &ep_sim, &[("vm0".into(), vm_ep.clone(), "A", "low", "low")])?;
            let mut mediated = HostModel::connect(&vm_ep, Duration::from_secs(30))?;
            for _ in 0..100 {
                mediated.read(0, regs::BUSY_CYCLES_LO, 4)?;
            }
            timed_reads(&mut mediated, regs::BUSY_CYCLES_LO, per, &mut t_med)?;
            timed_reads(&mut mediated, regs::STATUS, per, &mut t_local)?;
            drop(mediated);
            med.stop()?;
        }
    }

    // 2. Four VMs back to back.
    let (d3, ep_sim) = temp_endpoint("share4")?;
    let s3 = SimProcess::spawn(&sim, &ep_sim, &[], Duration::from_secs(60))?;
    let ep = |i: usize| format!("ipc://{}/vm{i}", d3.path().display());
    let vms = [
        ("vm0".to_string(), ep(0), "A", "high", "high"),
        ("vm1".to_string(), ep(1), "A", "medium", "medium"),
        ("vm2".to_string(), ep(2), "B", "low", "low"),
        ("vm3".to_string(), ep(3), "B", "low", "low"),
    ];
    let med = MediatorProc::start(d3.path(), &ep_sim, &vms)?;
    let t0 = Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let ep = ep(i);
            std::thread::spawn(move || vm_workload(i, ep, jobs, 7, None, Some((size, size, size))))
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        h.join()
            .map_err(|_| anyhow::anyhow!("vm{i} panicked"))?
            .with_context(|| format!("vm{i}; sim log:\n{}", s3.log()))?;
    }
    let wall = t0.elapsed();
    let (log, stats) = med.stop_with_stats()?;
    ensure!(log.len() == 4 * jobs, "{} jobs in the log, want {}", log.len(), 4 * jobs);
    cosim_mediator::joblog::check_order(&log).map_err(anyhow::Error::msg)?;
    let busy = stats["rtl"]["busy_fraction"].as_f64().unwrap_or(0.0);
    let (bc, ic) =
        (stats["rtl"]["busy_cycles"].as_u64().unwrap_or(0), stats["rtl"]["idle_cycles"].as_u64().unwrap_or(0));

    let med_d = pct(&t_direct, 0.5);
    println!("### Shared accelerator (cosim-mediator)\n");
    println!("Command: `make bench-share` (BENCH_READS={reads}, BENCH_JOBS={jobs}, BENCH_SIZE={size}).\n");
    println!("| MMIO read (host model, 4 bytes) | median us | p99 us | vs direct |");
    println!("|---|---|---|---|");
    for (name, v) in [
        ("direct to the simulation (BUSY_CYCLES_LO)", &t_direct),
        ("through the mediator, pass-through to the RTL (BUSY_CYCLES_LO)", &t_med),
        ("through the mediator, answered by the mediator (STATUS)", &t_local),
    ] {
        println!("| {name} | {:.1} | {:.1} | {:.2}x |", pct(v, 0.5), pct(v, 0.99), pct(v, 0.5) / med_d);
    }
    println!();
    println!(
        "Four VMs submitting {size}^3 GEMMs back to back ({jobs} each, every C checked; {:.1} s): the RTL was busy \
         **{:.1}%** of the cycles between the first and the last completion ({bc} busy, {ic} idle).\n",
        wall.as_secs_f64(),
        100.0 * busy
    );
    println!("| priority | VMs | jobs | queue wait median ms | p90 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    for p in Priority::ALL {
        let q: Vec<f64> = log.iter().filter(|r| r.priority == p).map(|r| r.queued_us as f64 / 1000.0).collect();
        if q.is_empty() {
            continue;
        }
        let vms: std::collections::BTreeSet<&str> =
            log.iter().filter(|r| r.priority == p).map(|r| r.vm.as_str()).collect();
        let max = q.iter().copied().fold(0.0, f64::max);
        println!(
            "| {p} | {} | {} | {:.2} | {:.2} | {:.2} |",
            vms.into_iter().collect::<Vec<_>>().join(", "),
            q.len(),
            pct(&q, 0.5),
            pct(&q, 0.9),
            max
        );
    }
    Ok(())
}
