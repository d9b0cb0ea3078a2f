//! Several VMs share the real GEMM simulation through the real `cosim-mediator` process: each VM is
//! a host model (QEMU's own device logic with fake guest memory, cosim-host-model) on its own
//! thread and endpoint. Needs the simulation built by `make sim-gemm`; `make test-share` runs these
//! (`--include-ignored`). Checks: every C exact; no VM's C ever appears in another VM's memory; the
//! job log obeys strict priority and first come first served; a VM that vanishes mid-job costs the
//! others nothing.

mod common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use cosim_gemm_abi::{ctrl, job_priority, regs, status};
use cosim_host_model::{sim_binary, temp_endpoint, HostModel, SimProcess};
use cosim_mediator::joblog;
use cosim_mediator::Outcome;

use common::{addrs, seed, vm_workload, MediatorProc, JOB_TIMEOUT, MAX_M, MAX_N};

#[test]
#[ignore = "needs make sim-gemm: the GEMM simulation (make test-share runs it)"]
fn four_vms_share_one_simulation_every_result_exact_and_in_its_own_memory_only() -> Result<()> {
    let seed = seed("four_vms");
    let (dir, sim_ep) = temp_endpoint("share")?;
    let sim = SimProcess::spawn(&sim_binary("gemm_top", "sim-gemm")?, &sim_ep, &[], Duration::from_secs(60))?;
    let ep = |i: usize| format!("ipc://{}/vm{i}", dir.path().display());
    let vms = [
        ("vm0".to_string(), ep(0), "A", "high", "high"),
        ("vm1".to_string(), ep(1), "A", "low", "low"),
        ("vm2".to_string(), ep(2), "B", "low", "high"),
        ("vm3".to_string(), ep(3), "B", "medium", "medium"),
    ];
    let med = MediatorProc::start(dir.path(), &sim_ep, &vms)?;
    const JOBS: usize = 6;
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let ep = ep(i);
            // vm3 asks for high through JOB_PRIORITY; it is capped at its max, medium.
            let prio = (i == 3).then_some(job_priority::HIGH);
            std::thread::spawn(move || vm_workload(i, ep, JOBS, seed, prio, None))
        })
        .collect();
    let mut hosts = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        let (host, cycles) = h
            .join()
            .map_err(|_| anyhow::anyhow!("vm{i} thread panicked"))?
            .with_context(|| format!("sim log:\n{}", sim.log()))?;
        ensure!(cycles.iter().all(|&c| c > 0), "vm{i}: a job reported 0 cycles");
        hosts.push(host);
    }
    // Isolation: no VM's memory holds anything at another VM's addresses (sparse memory reads 0
    // where nothing was written).
    for (i, h) in hosts.iter_mut().enumerate() {
        for j in (0..4).filter(|&j| j != i) {
            let (_, _, c) = addrs(j);
            let bytes = h.mem().read_bytes(c, (MAX_M * MAX_N * 4) as usize);
            ensure!(bytes.iter().all(|&b| b == 0), "vm{j}'s C area was written in vm{i}'s memory");
        }
    }
    drop(hosts);
    let log = med.stop()?;
    ensure!(log.len() == 4 * JOBS, "job log has {} records, want {}", log.len(), 4 * JOBS);
    ensure!(log.iter().all(|r| r.outcome == Outcome::Done && r.cycles > 0), "a job did not end Done: {log:?}");
    for i in 0..4 {
        let name = format!("vm{i}");
        ensure!(log.iter().filter(|r| r.vm == name).count() == JOBS, "{name}: not all its jobs in the log");
    }
    ensure!(
        log.iter().filter(|r| r.vm == "vm3").all(|r| r.priority == cosim_mediator::Priority::Medium),
        "vm3's request for high was not capped"
    );
    joblog::check_order(&log).map_err(anyhow::Error::msg)?;
    Ok(())
}

#[test]
#[ignore = "needs make sim-gemm: the GEMM simulation (make test-share runs it)"]
fn a_vm_that_vanishes_mid_job_costs_the_others_nothing() -> Result<()> {
    let seed = seed("vanish");
    let (dir, sim_ep) = temp_endpoint("share")?;
    let sim = SimProcess::spawn(&sim_binary("gemm_top", "sim-gemm")?, &sim_ep, &[], Duration::from_secs(60))?;
    let ep = |i: usize| format!("ipc://{}/vm{i}", dir.path().display());
    let vms = [("vm0".to_string(), ep(0), "A", "high", "high"), ("vm1".to_string(), ep(1), "A", "low", "low")];
    let med = MediatorProc::start(dir.path(), &sim_ep, &vms)?;
    // vm0 starts a big job and vanishes (no GOODBYE) while the RTL reads its matrices.
    let mut gone = HostModel::connect(&ep(0), Duration::from_secs(30))?;
    gone.hold_dma_reads(usize::MAX);
    let (a, b, c) = addrs(0);
    for (off, v) in [
        (regs::M, 256u64),
        (regs::N, 256),
        (regs::K, 256),
        (regs::A_ADDR_LO, a),
        (regs::B_ADDR_LO, b),
        (regs::C_ADDR_LO, c),
    ] {
        gone.write(0, off, if off >= regs::A_ADDR_LO { 8 } else { 4 }, v)?;
    }
    gone.write(0, regs::CTRL, 4, u64::from(ctrl::START | ctrl::IRQ_EN))?;
    gone.poll(Duration::from_millis(300))?;
    drop(gone);
    // vm1's jobs complete, exact, once the mediator noticed (1 s of silence).
    let t0 = Instant::now();
    let (_, cycles) = vm_workload(1, ep(1), 2, seed, None, None).with_context(|| format!("sim log:\n{}", sim.log()))?;
    ensure!(cycles.len() == 2);
    ensure!(t0.elapsed() < Duration::from_secs(60), "vm1 waited {:?}", t0.elapsed());
    let log = med.stop()?;
    let vm0: Vec<_> = log.iter().filter(|r| r.vm == "vm0").collect();
    ensure!(vm0.len() == 1 && vm0[0].outcome == Outcome::Cancelled, "vm0's job: {vm0:?}");
    ensure!(log.iter().filter(|r| r.vm == "vm1" && r.outcome == Outcome::Done).count() == 2, "vm1's jobs: {log:?}");
    Ok(())
}

#[test]
#[ignore = "needs make sim-gemm: the GEMM simulation (make test-share runs it)"]
fn a_vm_that_programs_nonsense_gets_the_devices_error_in_its_own_context_only() -> Result<()> {
    let seed = seed("nonsense");
    let (dir, sim_ep) = temp_endpoint("share")?;
    let _sim = SimProcess::spawn(&sim_binary("gemm_top", "sim-gemm")?, &sim_ep, &[], Duration::from_secs(60))?;
    let ep = |i: usize| format!("ipc://{}/vm{i}", dir.path().display());
    let vms = [("vm0".to_string(), ep(0), "A", "low", "low"), ("vm1".to_string(), ep(1), "B", "low", "low")];
    let med = MediatorProc::start(dir.path(), &sim_ep, &vms)?;
    let mut bad = HostModel::connect(&ep(0), Duration::from_secs(30))?;
    // K = 0 and a misaligned C: the RTL refuses the job (ZERO_DIM) without touching memory.
    for (off, v) in [(regs::M, 8u64), (regs::N, 8), (regs::K, 0), (regs::C_ADDR_LO, 0x1002)] {
        bad.write(0, off, 4, v)?;
    }
    bad.write(0, regs::CTRL, 4, u64::from(ctrl::START | ctrl::IRQ_EN))?;
    bad.wait_irq(0, JOB_TIMEOUT)?;
    let st = bad.read(0, regs::STATUS, 4)? as u32;
    ensure!(st == status::DONE | status::ERROR, "vm0 STATUS {st:#x}");
    let code = bad.read(0, regs::ERROR, 4)? as u32;
    ensure!(code == cosim_gemm_abi::ErrorCode::ZeroDim.code(), "vm0 ERROR {code}");
    // vm1 sees a clean device and runs exact jobs.
    let (mut good, _) = vm_workload(1, ep(1), 2, seed, None, None)?;
    ensure!(
        good.read(0, regs::ERROR, 4)? == 0 && good.read(0, regs::STATUS, 4)? == u64::from(status::DONE),
        "vm1 sees vm0's error"
    );
    let log = med.stop()?;
    ensure!(
        log.iter().any(|r| r.vm == "vm0" && r.outcome == Outcome::Failed && r.error == code),
        "vm0's job in the log: {log:?}"
    );
    Ok(())
}
