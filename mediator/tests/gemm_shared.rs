//! Several VMs share the real GEMM simulation through the real `cosim-mediator` process: each VM is
//! a host model (QEMU's own device logic with fake guest memory, cosim-host-model) on its own
//! thread and endpoint. Needs the simulation built by `make sim-gemm`; `make test-share` runs these
//! (`--include-ignored`). Checks: every C exact; no VM's C ever appears in another VM's memory; the
//! job log obeys strict priority and first come first served; a VM that vanishes mid-job costs the
//! others nothing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use cosim_gemm_abi::{ctrl, job_priority, regs, status};
use cosim_host_model::{sim_binary, temp_endpoint, HostModel, SimProcess};
use cosim_mediator::joblog;
use cosim_mediator::Outcome;

const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// splitmix64.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next() % u64::from(hi - lo + 1)) as u32
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn seed(test: &str) -> u64 {
    let s = std::env::var("COSIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("{test}: seed {s} (COSIM_SEED={s} replays it)");
    s
}

/// The `cosim-mediator` process; stopped with SIGTERM on drop.
struct MediatorProc {
    child: Child,
    lines: mpsc::Receiver<String>,
    job_log: PathBuf,
}

impl MediatorProc {
    fn start(dir: &Path, sim_ep: &str, vms: &[(String, String, &str, &str, &str)]) -> Result<Self> {
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hdl/gemm_accel/job-model.toml");
        let mut cfg = format!(
            "job_model = {:?}\nsimulation = {sim_ep:?}\n",
            model.display().to_string()
        );
        for (name, ep, pool, prio, max) in vms {
            cfg += &format!("[[vm]]\nname = {name:?}\nendpoint = {ep:?}\npool = {pool:?}\npriority = {prio:?}\nmax_priority = {max:?}\n");
        }
        let cfg_path = dir.join("mediator.toml");
        std::fs::write(&cfg_path, cfg)?;
        let job_log = dir.join("jobs.jsonl");
        let mut child = Command::new(env!("CARGO_BIN_EXE_cosim-mediator"))
            .arg("--config")
            .arg(&cfg_path)
            .arg("--job-log")
            .arg(&job_log)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting cosim-mediator")?;
        let out = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                println!("mediator: {l}");
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let me = Self {
            child,
            lines,
            job_log,
        };
        me.wait_line("cosim-mediator: ready", Duration::from_secs(60))?;
        Ok(me)
    }

    fn wait_line(&self, prefix: &str, timeout: Duration) -> Result<String> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok(l),
                Ok(_) => {}
                Err(_) => bail!(
                    "cosim-mediator printed no line starting with {prefix:?} within {timeout:?}"
                ),
            }
        }
    }

    /// SIGTERM; waits for the statistics and the exit; returns the job log.
    fn stop(mut self) -> Result<Vec<cosim_mediator::JobRecord>> {
        let st = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        ensure!(st.success(), "kill -TERM failed");
        self.wait_line("RTL busy", Duration::from_secs(10))?;
        let end = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            ensure!(
                Instant::now() < end,
                "cosim-mediator did not exit within 10 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let code = self.child.wait()?;
        ensure!(code.success(), "cosim-mediator exited with {code}");
        joblog::read(&self.job_log).map_err(anyhow::Error::msg)
    }
}

impl Drop for MediatorProc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Where VM `i` keeps its matrices: different for every VM, so a result in the wrong memory is
/// found by address.
fn addrs(i: usize) -> (u64, u64, u64) {
    let base = 0x1000_0000 + (i as u64) * 0x0100_0000;
    (base, base + 0x0040_0000, base + 0x0080_0000)
}

/// Largest C a job writes (MAX_M x MAX_N int32).
const MAX_M: u32 = 40;
const MAX_N: u32 = 40;
const MAX_K: u32 = 48;

fn reference(m: usize, n: usize, k: usize, a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(m * n * 4);
    for i in 0..m {
        for x in 0..n {
            let mut s: i32 = 0;
            for y in 0..k {
                s = s.wrapping_add(i32::from(a[i * k + y] as i8) * i32::from(b[y * n + x] as i8));
            }
            c.extend_from_slice(&s.to_le_bytes());
        }
    }
    c
}

/// One VM's workload: `jobs` GEMMs of random sizes, each checked; returns its host model (for
/// the memory scan) and the RTL cycles it saw.
fn vm_workload(
    i: usize,
    ep: String,
    jobs: usize,
    seed: u64,
    priority: Option<u32>,
) -> Result<(HostModel, Vec<u64>)> {
    let mut host = HostModel::connect(&ep, Duration::from_secs(30))
        .with_context(|| format!("vm{i}: connect"))?;
    let mut rng = Rng(seed ^ (i as u64).wrapping_mul(0x5851_f42d_4c95_7f2d));
    let (a_addr, b_addr, c_addr) = addrs(i);
    let mut cycles = Vec::new();
    ensure!(
        host.read(0, regs::ID, 4)? == u64::from(regs::ID_VALUE),
        "vm{i}: ID through the mediator"
    );
    if let Some(p) = priority {
        host.write(0, regs::JOB_PRIORITY, 4, u64::from(p))?;
    }
    for j in 0..jobs {
        let (m, n, k) = (
            rng.range(1, MAX_M),
            rng.range(1, MAX_N),
            rng.range(1, MAX_K),
        );
        let a = rng.bytes((m * k) as usize);
        let b = rng.bytes((k * n) as usize);
        host.mem().write_bytes(a_addr, &a);
        host.mem().write_bytes(b_addr, &b);
        host.mem().fill(c_addr, (m * n * 4) as usize, 0xcd);
        host.write(0, regs::MSIX_VECTOR, 4, (i % 4) as u64)?;
        for (off, v) in [
            (regs::M, m),
            (regs::N, n),
            (regs::K, k),
            (regs::LDA, 0),
            (regs::LDB, 0),
            (regs::LDC, 0),
        ] {
            host.write(0, off, 4, u64::from(v))?;
        }
        host.write(0, regs::A_ADDR_LO, 8, a_addr)?;
        host.write(0, regs::B_ADDR_LO, 8, b_addr)?;
        host.write(0, regs::C_ADDR_LO, 8, c_addr)?;
        host.write(0, regs::CTRL, 4, u64::from(ctrl::START | ctrl::IRQ_EN))?;
        host.wait_irq((i % 4) as u16, JOB_TIMEOUT)
            .with_context(|| format!("vm{i} job {j}: completion interrupt"))?;
        let st = host.read(0, regs::STATUS, 4)? as u32;
        ensure!(
            st == status::DONE,
            "vm{i} job {j} ({m}x{n}x{k}): STATUS {st:#x} after the interrupt"
        );
        let got = host.mem().read_bytes(c_addr, (m * n * 4) as usize);
        ensure!(
            got == reference(m as usize, n as usize, k as usize, &a, &b),
            "vm{i} job {j} ({m}x{n}x{k}): C differs from the CPU reference"
        );
        cycles.push(host.read(0, regs::CYCLES_LO, 8)?);
    }
    Ok((host, cycles))
}

#[test]
#[ignore = "needs make sim-gemm: the GEMM simulation (make test-share runs it)"]
fn four_vms_share_one_simulation_every_result_exact_and_in_its_own_memory_only() -> Result<()> {
    let seed = seed("four_vms");
    let (dir, sim_ep) = temp_endpoint("share")?;
    let sim = SimProcess::spawn(
        &sim_binary("gemm_top", "sim-gemm")?,
        &sim_ep,
        &[],
        Duration::from_secs(60),
    )?;
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
            std::thread::spawn(move || vm_workload(i, ep, JOBS, seed, prio))
        })
        .collect();
    let mut hosts = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        let (host, cycles) = h
            .join()
            .map_err(|_| anyhow::anyhow!("vm{i} thread panicked"))?
            .with_context(|| format!("sim log:\n{}", sim.log()))?;
        ensure!(
            cycles.iter().all(|&c| c > 0),
            "vm{i}: a job reported 0 cycles"
        );
        hosts.push(host);
    }
    // Isolation: no VM's memory holds anything at another VM's addresses (sparse memory reads 0
    // where nothing was written).
    for (i, h) in hosts.iter_mut().enumerate() {
        for j in (0..4).filter(|&j| j != i) {
            let (_, _, c) = addrs(j);
            let bytes = h.mem().read_bytes(c, (MAX_M * MAX_N * 4) as usize);
            ensure!(
                bytes.iter().all(|&b| b == 0),
                "vm{j}'s C area was written in vm{i}'s memory"
            );
        }
    }
    drop(hosts);
    let log = med.stop()?;
    ensure!(
        log.len() == 4 * JOBS,
        "job log has {} records, want {}",
        log.len(),
        4 * JOBS
    );
    ensure!(
        log.iter()
            .all(|r| r.outcome == Outcome::Done && r.cycles > 0),
        "a job did not end Done: {log:?}"
    );
    for i in 0..4 {
        let name = format!("vm{i}");
        ensure!(
            log.iter().filter(|r| r.vm == name).count() == JOBS,
            "{name}: not all its jobs in the log"
        );
    }
    ensure!(
        log.iter()
            .filter(|r| r.vm == "vm3")
            .all(|r| r.priority == cosim_mediator::Priority::Medium),
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
    let sim = SimProcess::spawn(
        &sim_binary("gemm_top", "sim-gemm")?,
        &sim_ep,
        &[],
        Duration::from_secs(60),
    )?;
    let ep = |i: usize| format!("ipc://{}/vm{i}", dir.path().display());
    let vms = [
        ("vm0".to_string(), ep(0), "A", "high", "high"),
        ("vm1".to_string(), ep(1), "A", "low", "low"),
    ];
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
    let (_, cycles) =
        vm_workload(1, ep(1), 2, seed, None).with_context(|| format!("sim log:\n{}", sim.log()))?;
    ensure!(cycles.len() == 2);
    ensure!(
        t0.elapsed() < Duration::from_secs(60),
        "vm1 waited {:?}",
        t0.elapsed()
    );
    let log = med.stop()?;
    let vm0: Vec<_> = log.iter().filter(|r| r.vm == "vm0").collect();
    ensure!(
        vm0.len() == 1 && vm0[0].outcome == Outcome::Cancelled,
        "vm0's job: {vm0:?}"
    );
    ensure!(
        log.iter()
            .filter(|r| r.vm == "vm1" && r.outcome == Outcome::Done)
            .count()
            == 2,
        "vm1's jobs: {log:?}"
    );
    Ok(())
}

#[test]
#[ignore = "needs make sim-gemm: the GEMM simulation (make test-share runs it)"]
fn a_vm_that_programs_nonsense_gets_the_devices_error_in_its_own_context_only() -> Result<()> {
    let seed = seed("nonsense");
    let (dir, sim_ep) = temp_endpoint("share")?;
    let _sim = SimProcess::spawn(
        &sim_binary("gemm_top", "sim-gemm")?,
        &sim_ep,
        &[],
        Duration::from_secs(60),
    )?;
    let ep = |i: usize| format!("ipc://{}/vm{i}", dir.path().display());
    let vms = [
        ("vm0".to_string(), ep(0), "A", "low", "low"),
        ("vm1".to_string(), ep(1), "B", "low", "low"),
    ];
    let med = MediatorProc::start(dir.path(), &sim_ep, &vms)?;
    let mut bad = HostModel::connect(&ep(0), Duration::from_secs(30))?;
    // K = 0 and a misaligned C: the RTL refuses the job (ZERO_DIM) without touching memory.
    for (off, v) in [
        (regs::M, 8u64),
        (regs::N, 8),
        (regs::K, 0),
        (regs::C_ADDR_LO, 0x1002),
    ] {
        bad.write(0, off, 4, v)?;
    }
    bad.write(0, regs::CTRL, 4, u64::from(ctrl::START | ctrl::IRQ_EN))?;
    bad.wait_irq(0, JOB_TIMEOUT)?;
    let st = bad.read(0, regs::STATUS, 4)? as u32;
    ensure!(st == status::DONE | status::ERROR, "vm0 STATUS {st:#x}");
    let code = bad.read(0, regs::ERROR, 4)? as u32;
    ensure!(
        code == cosim_gemm_abi::ErrorCode::ZeroDim.code(),
        "vm0 ERROR {code}"
    );
    // vm1 sees a clean device and runs exact jobs.
    let (mut good, _) = vm_workload(1, ep(1), 2, seed, None)?;
    ensure!(
        good.read(0, regs::ERROR, 4)? == 0
            && good.read(0, regs::STATUS, 4)? == u64::from(status::DONE),
        "vm1 sees vm0's error"
    );
    let log = med.stop()?;
    ensure!(
        log.iter()
            .any(|r| r.vm == "vm0" && r.outcome == Outcome::Failed && r.error == code),
        "vm0's job in the log: {log:?}"
    );
    Ok(())
}
