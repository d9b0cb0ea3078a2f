//! Support shared by the tests and the benchmark that run VMs (host models) through the real
//! `cosim-mediator` against the real GEMM simulation.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use accel_tool::gemm::{reference, Rng};
use anyhow::{bail, ensure, Context, Result};
use cosim_gemm_abi::{ctrl, regs, status};
use cosim_host_model::HostModel;
use cosim_mediator::joblog;

pub const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// The `cosim-mediator` binary: cargo's for tests; for the benchmark example, the one next to
/// its `examples/` directory (`make bench-share` builds it first).
pub fn mediator_bin() -> Result<PathBuf> {
    if let Some(p) = option_env!("CARGO_BIN_EXE_cosim-mediator") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let p = exe.parent().and_then(Path::parent).map(|d| d.join("cosim-mediator")).context("no target directory")?;
    ensure!(p.is_file(), "{} not found: build it first (cargo build --release -p cosim-mediator)", p.display());
    Ok(p)
}

/// A number in `lo..=hi` from the guest tool's generator.
fn range(rng: &mut Rng, lo: u32, hi: u32) -> u32 {
    lo + (rng.next_u64() % u64::from(hi - lo + 1)) as u32
}

/// `n` random int8 values.
fn random_i8(rng: &mut Rng, n: usize) -> Vec<i8> {
    let mut v = vec![0i8; n];
    rng.fill_i8(&mut v);
    v
}

fn as_bytes(v: &[i8]) -> Vec<u8> {
    v.iter().map(|&x| x as u8).collect()
}

pub fn seed(test: &str) -> u64 {
    let s = std::env::var("COSIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    println!("{test}: seed {s} (COSIM_SEED={s} replays it)");
    s
}

/// The `cosim-mediator` process; stopped with SIGTERM on drop.
pub struct MediatorProc {
    child: Child,
    lines: mpsc::Receiver<String>,
    job_log: PathBuf,
    stats_json: PathBuf,
}

impl MediatorProc {
    pub fn start(dir: &Path, sim_ep: &str, vms: &[(String, String, &str, &str, &str)]) -> Result<Self> {
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hdl/gemm_accel/job-model.toml");
        let mut cfg = format!("job_model = {:?}\nsimulation = {sim_ep:?}\n", model.display().to_string());
        for (name, ep, pool, prio, max) in vms {
            cfg += &format!("[[vm]]\nname = {name:?}\nendpoint = {ep:?}\npool = {pool:?}\npriority = {prio:?}\nmax_priority = {max:?}\n");
        }
        let cfg_path = dir.join("mediator.toml");
        std::fs::write(&cfg_path, cfg)?;
        let job_log = dir.join("jobs.jsonl");
        let stats_json = dir.join("stats.json");
        let mut child = Command::new(mediator_bin()?)
            .arg("--config")
            .arg(&cfg_path)
            .arg("--job-log")
            .arg(&job_log)
            .arg("--stats-json")
            .arg(&stats_json)
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
        let me = Self { child, lines, job_log, stats_json };
        me.wait_line("cosim-mediator: ready", Duration::from_secs(60))?;
        Ok(me)
    }

    pub fn wait_line(&self, prefix: &str, timeout: Duration) -> Result<String> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok(l),
                Ok(_) => {}
                Err(_) => bail!("cosim-mediator printed no line starting with {prefix:?} within {timeout:?}"),
            }
        }
    }

    /// SIGTERM; waits for the statistics and the exit; returns the job log.
    pub fn stop(self) -> Result<Vec<cosim_mediator::JobRecord>> {
        Ok(self.stop_with_stats()?.0)
    }

    /// Like [`Self::stop`], also returning the statistics JSON.
    pub fn stop_with_stats(mut self) -> Result<(Vec<cosim_mediator::JobRecord>, serde_json::Value)> {
        let st = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status()?;
        ensure!(st.success(), "kill -TERM failed");
        self.wait_line("RTL busy", Duration::from_secs(10))?;
        let end = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            ensure!(Instant::now() < end, "cosim-mediator did not exit within 10 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        let code = self.child.wait()?;
        ensure!(code.success(), "cosim-mediator exited with {code}");
        let log = joblog::read(&self.job_log).map_err(anyhow::Error::msg)?;
        let stats: serde_json::Value = serde_json::from_slice(&std::fs::read(&self.stats_json)?)?;
        Ok((log, stats))
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
pub fn addrs(i: usize) -> (u64, u64, u64) {
    let base = 0x1000_0000 + (i as u64) * 0x0100_0000;
    (base, base + 0x0040_0000, base + 0x0080_0000)
}

/// Largest C a job writes (MAX_M x MAX_N int32).
pub const MAX_M: u32 = 40;
pub const MAX_N: u32 = 40;
pub const MAX_K: u32 = 48;

/// One VM's workload: `jobs` GEMMs of random sizes, each checked; returns its host model (for
/// the memory scan) and the RTL cycles it saw.
pub fn vm_workload(
    i: usize,
    ep: String,
    jobs: usize,
    seed: u64,
    priority: Option<u32>,
    size: Option<(u32, u32, u32)>,
) -> Result<(HostModel, Vec<u64>)> {
    let mut host = HostModel::connect(&ep, Duration::from_secs(30)).with_context(|| format!("vm{i}: connect"))?;
    let mut rng = Rng::new(seed ^ (i as u64).wrapping_mul(0x5851_f42d_4c95_7f2d));
    let (a_addr, b_addr, c_addr) = addrs(i);
    let mut cycles = Vec::new();
    ensure!(host.read(0, regs::ID, 4)? == u64::from(regs::ID_VALUE), "vm{i}: ID through the mediator");
    if let Some(p) = priority {
        host.write(0, regs::JOB_PRIORITY, 4, u64::from(p))?;
    }
    for j in 0..jobs {
        let (m, n, k) =
            size.unwrap_or_else(|| (range(&mut rng, 1, MAX_M), range(&mut rng, 1, MAX_N), range(&mut rng, 1, MAX_K)));
        let a = random_i8(&mut rng, (m * k) as usize);
        let b = random_i8(&mut rng, (k * n) as usize);
        host.mem().write_bytes(a_addr, &as_bytes(&a));
        host.mem().write_bytes(b_addr, &as_bytes(&b));
        host.mem().fill(c_addr, (m * n * 4) as usize, 0xcd);
        host.write(0, regs::MSIX_VECTOR, 4, (i % 4) as u64)?;
        for (off, v) in [(regs::M, m), (regs::N, n), (regs::K, k), (regs::LDA, 0), (regs::LDB, 0), (regs::LDC, 0)] {
            host.write(0, off, 4, u64::from(v))?;
        }
        host.write(0, regs::A_ADDR_LO, 8, a_addr)?;
        host.write(0, regs::B_ADDR_LO, 8, b_addr)?;
        host.write(0, regs::C_ADDR_LO, 8, c_addr)?;
        host.write(0, regs::CTRL, 4, u64::from(ctrl::START | ctrl::IRQ_EN))?;
        host.wait_irq((i % 4) as u16, JOB_TIMEOUT).with_context(|| format!("vm{i} job {j}: completion interrupt"))?;
        let st = host.read(0, regs::STATUS, 4)? as u32;
        ensure!(st == status::DONE, "vm{i} job {j} ({m}x{n}x{k}): STATUS {st:#x} after the interrupt");
        let got: Vec<i32> = host
            .mem()
            .read_bytes(c_addr, (m * n * 4) as usize)
            .chunks_exact(4)
            .map(|w| i32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        ensure!(
            got == reference(m as usize, n as usize, k as usize, &a, &b),
            "vm{i} job {j} ({m}x{n}x{k}): C differs from the CPU reference"
        );
        cycles.push(host.read(0, regs::CYCLES_LO, 8)?);
    }
    Ok((host, cycles))
}
