//! GEMM accelerator (`hdl/gemm_accel`, top `gemm_top`) against the host model, over real
//! ZeroMQ, with the Verilator simulation built by `make sim-gemm`: every test is `#[ignore]`d for a
//! plain `cargo test --workspace`; `make test-gemm` runs them (`--include-ignored`).
//!
//! Register offsets, fields, error codes and the PCI identity come from gemm-abi, the one
//! definition of docs/register-map.md. Random matrices come from a seed printed by every test
//! (`COSIM_SEED=<n>` reproduces a run).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use cosim_gemm_abi::{
    array, ctrl, defaults, field_get, field_put, job_priority, pci, regs, status, version, ErrorCode, UART_BANNER,
};
use cosim_host_model::{free_tcp_endpoint, sim_binary, temp_endpoint, HostModel, SimProcess};

const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// splitmix64: small, seedable, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The test's seed: `COSIM_SEED` or the clock; printed so a failure can be replayed.
fn seeded(test: &str) -> Rng {
    let seed = std::env::var("COSIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    println!("{test}: seed {seed} (set COSIM_SEED={seed} to replay)");
    Rng(seed)
}

/// A running `gemm_top` simulation and a host model connected to it.
struct Dut {
    host: HostModel,
    sim: SimProcess,
    _dir: cosim_transport::PrivateDir,
}

fn start() -> Result<Dut> {
    let (dir, ep) = temp_endpoint("gemm")?;
    start_at(dir, ep)
}

fn start_at(dir: cosim_transport::PrivateDir, ep: String) -> Result<Dut> {
    let bin = sim_binary("gemm_top", "sim-gemm")?;
    let sim = SimProcess::spawn(&bin, &ep, &[], Duration::from_secs(60))?;
    let host = HostModel::connect(&ep, Duration::from_secs(30)).with_context(|| format!("sim log:\n{}", sim.log()))?;
    Ok(Dut { host, sim, _dir: dir })
}

/// One GEMM job: dimensions, strides (0 = packed) and guest addresses.
#[derive(Debug, Clone, Copy)]
struct Job {
    m: u32,
    n: u32,
    k: u32,
    lda: u32,
    ldb: u32,
    ldc: u32,
    a: u64,
    b: u64,
    c: u64,
}

impl Job {
    fn packed(m: u32, n: u32, k: u32) -> Self {
        Job { m, n, k, lda: 0, ldb: 0, ldc: 0, a: 0x1000_0000, b: 0x2000_0000, c: 0x3000_0000 }
    }
    fn lda_e(&self) -> u64 {
        u64::from(if self.lda == 0 { self.k } else { self.lda })
    }
    fn ldb_e(&self) -> u64 {
        u64::from(if self.ldb == 0 { self.n } else { self.ldb })
    }
    fn ldc_e(&self) -> u64 {
        u64::from(if self.ldc == 0 { self.n } else { self.ldc })
    }
    fn c_bytes(&self) -> u64 {
        ((u64::from(self.m) - 1) * self.ldc_e() + u64::from(self.n)) * 4
    }
}

/// Cycle counters of a finished job.
#[derive(Debug, Clone, Copy)]
struct JobStats {
    cycles: u64,
    dma_wait: u64,
    wall: Duration,
}

impl Dut {
    fn rd(&mut self, off: u64) -> Result<u32> {
        Ok(u32::try_from(self.host.read(0, off, 4)?)?)
    }
    fn rd64(&mut self, off: u64) -> Result<u64> {
        Ok(self.host.read(0, off, 8)?)
    }
    fn wr(&mut self, off: u64, v: u32) -> Result<()> {
        Ok(self.host.write(0, off, 4, v.into())?)
    }

    fn program(&mut self, j: &Job) -> Result<()> {
        self.wr(regs::M, j.m)?;
        self.wr(regs::N, j.n)?;
        self.wr(regs::K, j.k)?;
        self.wr(regs::LDA, j.lda)?;
        self.wr(regs::LDB, j.ldb)?;
        self.wr(regs::LDC, j.ldc)?;
        self.host.write(0, regs::A_ADDR_LO, 8, j.a)?;
        self.host.write(0, regs::B_ADDR_LO, 8, j.b)?;
        self.host.write(0, regs::C_ADDR_LO, 8, j.c)?;
        Ok(())
    }

    /// Programs and starts `j` with the interrupt enabled on `vector`, waits for the interrupt
    /// and returns the ERROR register.
    fn run(&mut self, j: &Job, vector: u16) -> Result<(ErrorCode, JobStats)> {
        self.wr(regs::MSIX_VECTOR, vector.into())?;
        self.program(j)?;
        let t0 = Instant::now();
        self.wr(regs::CTRL, ctrl::START | ctrl::IRQ_EN)?;
        self.host
            .wait_irq(vector, JOB_TIMEOUT)
            .with_context(|| format!("waiting for the completion interrupt of {j:?}"))?;
        let wall = t0.elapsed();
        let st = self.rd(regs::STATUS)?;
        ensure!(st & status::BUSY == 0, "STATUS {st:#x}: still BUSY after the completion interrupt");
        ensure!(st & status::DONE != 0, "STATUS {st:#x}: DONE not set after the completion interrupt");
        let err = ErrorCode::try_from(self.rd(regs::ERROR)?).map_err(|e| anyhow!("ERROR register: {e}"))?;
        ensure!((st & status::ERROR != 0) == (err != ErrorCode::Ok), "STATUS {st:#x} disagrees with ERROR {err}");
        let stats = JobStats { cycles: self.rd64(regs::CYCLES_LO)?, dma_wait: self.rd64(regs::DMA_WAIT_LO)?, wall };
        Ok((err, stats))
    }

    /// Fills A and B (whole strided extents, gaps included) with random bytes and C's extent
    /// plus 8 guard bytes on both sides with 0xcd.
    fn fill(&mut self, j: &Job, rng: &mut Rng) {
        let a_len = ((u64::from(j.m) - 1) * j.lda_e() + u64::from(j.k)) as usize;
        let b_len = ((u64::from(j.k) - 1) * j.ldb_e() + u64::from(j.n)) as usize;
        let a = rng.bytes(a_len);
        let b = rng.bytes(b_len);
        let mem = self.host.mem();
        mem.write_bytes(j.a, &a);
        mem.write_bytes(j.b, &b);
        mem.fill(j.c - 8, j.c_bytes() as usize + 16, 0xcd);
    }

    /// Checks C bit-exactly against a CPU reference from the A and B in guest memory, and that
    /// nothing outside C's elements (row gaps, guards) was written.
    fn check(&mut self, j: &Job) -> Result<()> {
        let mem = self.host.mem();
        let a = mem.read_bytes(j.a, ((u64::from(j.m) - 1) * j.lda_e() + u64::from(j.k)) as usize);
        let b = mem.read_bytes(j.b, ((u64::from(j.k) - 1) * j.ldb_e() + u64::from(j.n)) as usize);
        let c = mem.read_bytes(j.c - 8, j.c_bytes() as usize + 16);
        let (m, n, k) = (j.m as usize, j.n as usize, j.k as usize);
        let (lda, ldb, ldc) = (j.lda_e() as usize, j.ldb_e() as usize, j.ldc_e() as usize);
        let mut bad = 0;
        for i in 0..m {
            for x in 0..n {
                let mut want: i32 = 0;
                for y in 0..k {
                    want = want.wrapping_add(i32::from(a[i * lda + y] as i8) * i32::from(b[y * ldb + x] as i8));
                }
                let p = 8 + (i * ldc + x) * 4;
                let got = i32::from_le_bytes([c[p], c[p + 1], c[p + 2], c[p + 3]]);
                if got != want {
                    if bad < 10 {
                        eprintln!("C[{i}][{x}] = {got}, want {want}");
                    }
                    bad += 1;
                }
            }
            if i + 1 < m {
                let gap = &c[8 + (i * ldc + n) * 4..8 + (i + 1) * ldc * 4];
                ensure!(gap.iter().all(|&v| v == 0xcd), "{j:?}: the gap after row {i} of C was written");
            }
        }
        ensure!(bad == 0, "{j:?}: {bad} of {} elements of C differ from the CPU reference", m * n);
        ensure!(c[..8].iter().all(|&v| v == 0xcd), "{j:?}: bytes before C were written");
        ensure!(c[c.len() - 8..].iter().all(|&v| v == 0xcd), "{j:?}: bytes after C were written");
        Ok(())
    }

    /// Runs `j` on random data and checks the result; returns the job's counters.
    fn gemm(&mut self, j: &Job, rng: &mut Rng) -> Result<JobStats> {
        self.fill(j, rng);
        let (err, stats) = self.run(j, 0)?;
        ensure!(err == ErrorCode::Ok, "{j:?} failed with error {err}");
        self.check(j)?;
        let ideal = u64::from(j.m) * u64::from(j.n) * u64::from(j.k) / u64::from(defaults::ROWS * defaults::COLS);
        println!(
            "ok {}x{}x{} (ld {},{},{}): {} cycles, ideal {} ({:.0}%), DMA wait {} ({:.0}%), wall {:?}",
            j.m,
            j.n,
            j.k,
            j.lda,
            j.ldb,
            j.ldc,
            stats.cycles,
            ideal,
            100.0 * ideal as f64 / stats.cycles as f64,
            stats.dma_wait,
            100.0 * stats.dma_wait as f64 / stats.cycles as f64,
            stats.wall
        );
        Ok(stats)
    }

    /// A job that must fail validation: error `code`, DONE and ERROR set, interrupt raised,
    /// memory untouched.
    fn expect_error(&mut self, j: &Job, code: ErrorCode, what: &str) -> Result<()> {
        let jobs = self.rd(regs::JOBS_DONE)?;
        let writes = self.host.stats().dma_writes;
        let (err, _) = self.run(j, 1).with_context(|| what.to_string())?;
        ensure!(err == code, "{what}: ERROR = {err}, want {code}");
        ensure!(self.rd(regs::STATUS)? == status::DONE | status::ERROR, "{what}: STATUS {:#x}", self.rd(regs::STATUS)?);
        ensure!(self.rd(regs::JOBS_DONE)? == jobs + 1, "{what}: JOBS_DONE did not count the failed job");
        if code != ErrorCode::DmaError {
            ensure!(self.host.stats().dma_writes == writes, "{what}: a rejected job wrote memory");
        }
        println!("ok error {code} ({what})");
        Ok(())
    }
}

#[test]
#[ignore = "needs `make sim-gemm`: run by `make test-gemm` (or `make test`)"]
fn gemm_identity_and_registers() -> Result<()> {
    let mut d = start()?;
    let cfg = d.host.config().clone();
    ensure!(
        cfg.vendor_id == pci::VENDOR_ID && cfg.device_id == pci::DEVICE_ID,
        "PCI IDs {:#x}:{:#x}",
        cfg.vendor_id,
        cfg.device_id
    );
    ensure!(
        cfg.subsystem_vendor_id == pci::SUBSYSTEM_VENDOR_ID && cfg.subsystem_id == pci::SUBSYSTEM_ID,
        "subsystem {:#x}:{:#x}",
        cfg.subsystem_vendor_id,
        cfg.subsystem_id
    );
    ensure!(cfg.class_code == pci::CLASS_CODE, "class code {:#x}", cfg.class_code);
    ensure!(cfg.revision == pci::REVISION, "revision {}", cfg.revision);
    ensure!(cfg.bars[0].size == pci::BAR0_SIZE && cfg.bars[2].size == pci::BAR2_SIZE, "BAR sizes {:?}", cfg.bars);
    ensure!(
        cfg.msix.vectors == pci::MSIX_VECTORS
            && cfg.msix.table_bar == pci::MSIX_TABLE_BAR
            && cfg.msix.table_offset == pci::MSIX_TABLE_OFFSET
            && cfg.msix.pba_bar == pci::MSIX_PBA_BAR
            && cfg.msix.pba_offset == pci::MSIX_PBA_OFFSET,
        "MSI-X {:?}",
        cfg.msix
    );
    ensure!(d.rd(regs::ID)? == regs::ID_VALUE, "ID");
    let v = d.rd(regs::VERSION)?;
    ensure!(v == regs::VERSION_VALUE, "VERSION {v:#x}, want {:#x}", regs::VERSION_VALUE);
    ensure!(field_get(v, version::MAJOR) == 1 && field_get(v, version::MINOR) == 1, "VERSION {v:#x}: not 1.1");
    let id_version = u64::from(regs::VERSION_VALUE) << 32 | u64::from(regs::ID_VALUE);
    ensure!(d.rd64(regs::ID)? == id_version, "ID+VERSION as one 8-byte read");
    let size = d.rd(regs::ARRAY)?;
    ensure!(
        field_get(size, array::ROWS) >= defaults::ROWS && field_get(size, array::COLS) >= defaults::COLS,
        "ARRAY {size:#x}: at least the default {}x{}",
        defaults::ROWS,
        defaults::COLS
    );
    ensure!(d.rd(regs::MAX_DIM)? == defaults::MAX_DIM, "MAX_DIM");
    // SCRATCH: every access size and byte lane.
    d.wr(regs::SCRATCH, 0xdead_beef)?;
    ensure!(d.rd(regs::SCRATCH)? == 0xdead_beef, "SCRATCH 4-byte");
    d.host.write(0, regs::SCRATCH + 1, 1, 0x55)?;
    ensure!(d.rd(regs::SCRATCH)? == 0xdead_55ef, "SCRATCH after a 1-byte write");
    d.host.write(0, regs::SCRATCH + 2, 2, 0x1234)?;
    ensure!(d.host.read(0, regs::SCRATCH + 2, 2)? == 0x1234, "SCRATCH 2-byte");
    ensure!(d.host.read(0, regs::SCRATCH + 3, 1)? == 0x12, "SCRATCH byte 3");
    d.host.write(0, regs::JOBS_DONE, 8, 0x1111_2222_0000_0000)?; // JOBS_DONE is RO; SCRATCH is the high half
    ensure!(d.rd(regs::SCRATCH)? == 0x1111_2222, "SCRATCH via an 8-byte write");
    ensure!(d.rd(regs::JOBS_DONE)? == 0, "JOBS_DONE is read-only");
    // RW parameter registers read back; RO and undefined offsets.
    d.host.write(0, regs::A_ADDR_LO, 8, 0x1234_5678_9abc_def0)?;
    ensure!(d.rd(regs::A_ADDR_HI)? == 0x1234_5678 && d.rd(regs::A_ADDR_LO)? == 0x9abc_def0, "A_ADDR halves");
    d.wr(regs::ID, 0)?;
    ensure!(d.rd(regs::ID)? == regs::ID_VALUE, "ID is read-only");
    ensure!(d.rd(0x0ffc)? == 0 && d.rd(0x07c)? == 0, "undefined offsets read 0");
    ensure!(d.rd(regs::STATUS)? == 0, "STATUS after reset");
    // Counters run: idle cycles grow while idle, busy cycles stay 0.
    let i0 = d.rd64(regs::IDLE_CYCLES_LO)?;
    let i1 = d.rd64(regs::IDLE_CYCLES_LO)?;
    ensure!(i1 > i0, "IDLE_CYCLES does not advance ({i0} -> {i1})");
    ensure!(d.rd64(regs::BUSY_CYCLES_LO)? == 0, "BUSY_CYCLES before any job");
    drop(d.sim);
    Ok(())
}

#[test]
#[ignore = "needs `make sim-gemm`: run by `make test-gemm` (or `make test`)"]
fn gemm_job_priority() -> Result<()> {
    use job_priority::{DEFAULT, HIGH, LOW, MEDIUM, PRIORITY};
    let mut rng = seeded("gemm_job_priority");
    let mut d = start()?;
    ensure!(d.rd(regs::JOB_PRIORITY)? == field_put(PRIORITY, DEFAULT), "JOB_PRIORITY after reset");
    for p in [LOW, MEDIUM, HIGH, DEFAULT] {
        d.wr(regs::JOB_PRIORITY, field_put(PRIORITY, p))?;
        let got = d.rd(regs::JOB_PRIORITY)?;
        ensure!(got == field_put(PRIORITY, p), "JOB_PRIORITY reads {got:#x} after writing priority {p}");
    }
    // Bits above PRIORITY read 0 and writes ignore them; a byte write that misses PRIORITY's
    // byte leaves it alone; an 8-byte write stores the low half (0x07c above it is undefined).
    d.wr(regs::JOB_PRIORITY, 0xffff_fffe)?;
    ensure!(d.rd(regs::JOB_PRIORITY)? == 0xffff_fffe & PRIORITY, "JOB_PRIORITY keeps bits above PRIORITY");
    d.host.write(0, regs::JOB_PRIORITY + 1, 1, 0xff)?;
    ensure!(d.rd(regs::JOB_PRIORITY)? == 0xffff_fffe & PRIORITY, "a write of byte 1 changed JOB_PRIORITY");
    d.host.write(0, regs::JOB_PRIORITY, 8, 0x1234_5678_0000_0007)?;
    ensure!(d.rd64(regs::JOB_PRIORITY)? == 7 & u64::from(PRIORITY), "JOB_PRIORITY after an 8-byte write");
    // The same job at every priority: C is the CPU reference each time (so the same), and the
    // priority is kept across the job.
    let j = Job::packed(9, 70, 33);
    d.fill(&j, &mut rng);
    let mut first: Option<Vec<u8>> = None;
    for p in [DEFAULT, HIGH, LOW, MEDIUM] {
        d.wr(regs::JOB_PRIORITY, field_put(PRIORITY, p))?;
        d.host.mem().fill(j.c - 8, j.c_bytes() as usize + 16, 0xcd);
        let (err, stats) = d.run(&j, 0)?;
        ensure!(err == ErrorCode::Ok, "job at priority {p}: error {err}");
        d.check(&j).with_context(|| format!("job at priority {p}"))?;
        let c = d.host.mem().read_bytes(j.c, j.c_bytes() as usize);
        ensure!(first.get_or_insert_with(|| c.clone()) == &c, "C at priority {p} differs from C at priority {DEFAULT}");
        ensure!(d.rd(regs::JOB_PRIORITY)? == field_put(PRIORITY, p), "JOB_PRIORITY not kept across a job");
        println!("ok job at priority {p}: {} cycles", stats.cycles);
    }
    // A host Reset returns it to 0.
    d.host.reset()?;
    d.host.wait_serial(UART_BANNER, Duration::from_secs(10)).context("banner after the reset")?;
    ensure!(d.rd(regs::JOB_PRIORITY)? == field_put(PRIORITY, DEFAULT), "JOB_PRIORITY after a host Reset");
    Ok(())
}

#[test]
#[ignore = "needs `make sim-gemm`: run by `make test-gemm` (or `make test`)"]
fn gemm_required_sizes_bit_exact() -> Result<()> {
    let mut rng = seeded("gemm_required_sizes_bit_exact");
    let mut d = start()?;
    for (m, n, k) in [(1, 1, 1), (4, 4, 4), (17, 33, 9), (64, 64, 64), (150, 20, 140), (3, 200, 7)] {
        d.gemm(&Job::packed(m, n, k), &mut rng)?;
    }
    // One dimension at MAX_DIM.
    d.gemm(&Job { m: 2, n: 3, k: defaults::MAX_DIM, ..Job::packed(0, 0, 0) }, &mut rng)?;
    // Extreme values: -128 * -128 * 1024 = 2^24 per element, all of one sign.
    let j = Job::packed(5, 9, 1024);
    d.host.mem().fill(j.a, 5 * 1024, 0x80);
    d.host.mem().fill(j.b, 9 * 1024, 0x80);
    d.host.mem().fill(j.c - 8, j.c_bytes() as usize + 16, 0xcd);
    let (err, _) = d.run(&j, 0)?;
    ensure!(err == ErrorCode::Ok, "extreme values: error {err}");
    d.check(&j)?;
    ensure!(d.host.mem().read_u32(j.c) == 1 << 24, "(-128)*(-128)*1024");
    Ok(())
}

/// Reproducible by default: the shell's default modelled DMA read latency makes CYCLES and
/// DMA_WAIT a property of the RTL and the job (docs/hdl-endpoint.md, "Modelled read latency").
/// The same jobs in two simulations started with default arguments, and each job twice in a
/// row, give the same counts, though the host model answers each DMA read after however long
/// the machine takes.
#[test]
#[ignore = "needs `make sim-gemm`: run by `make test-gemm` (or `make test`)"]
fn gemm_cycles_repeat_with_the_default_latency() -> Result<()> {
    let seed = seeded("gemm_cycles_repeat_with_the_default_latency").0;
    // Latency-bound, one read per operand; both engines' reads; B panels of one read per row.
    let jobs = [Job::packed(4, 4, 4), Job::packed(17, 33, 9), Job::packed(64, 64, 64), Job::packed(100, 100, 100)];
    let mut runs = Vec::new();
    for sim in 0..2 {
        let mut d = start()?;
        let mut rng = Rng(seed);
        let mut counts = Vec::new();
        for j in &jobs {
            for _ in 0..2 {
                let s = d.gemm(j, &mut rng)?;
                counts.push((j.m, j.n, j.k, s.cycles, s.dma_wait));
            }
        }
        for pair in counts.chunks(2) {
            ensure!(pair[0] == pair[1], "simulation {sim}: the same job twice gave {pair:?}");
        }
        ensure!(counts.iter().all(|c| c.4 > 0), "every job waits for its first operands: {counts:?}");
        runs.push(counts);
    }
    ensure!(runs[0] == runs[1], "two simulations with default arguments: {:?} and {:?}", runs[0], runs[1]);
    Ok(())
}

/// The idle sleep (docs/hdl-endpoint.md) stops the clock only while the design says idle: the
/// same jobs, with the modelled DMA latency and a pause between jobs long enough to sleep in,
/// give the same CYCLES and DMA_WAIT with the sleep on (the default) and with `--no-idle-sleep`.
#[test]
#[ignore = "needs `make sim-gemm`: run by `make test-gemm` (or `make test`)"]
fn gemm_cycles_unaffected_by_the_idle_sleep() -> Result<()> {
    let seed = seeded("gemm_cycles_unaffected_by_the_idle_sleep").0;
    let jobs = [Job::packed(17, 33, 9), Job::packed(64, 64, 64)];
    let bin = sim_binary("gemm_top", "sim-gemm")?;
    let mut runs = Vec::new();
    for extra in [None, Some("--no-idle-sleep")] {
        let (dir, ep) = temp_endpoint("gemm")?;
        let mut args = vec!["+cosim_dma_latency=100"];
        args.extend(extra);
        let sim = SimProcess::spawn(&bin, &ep, &args, Duration::from_secs(60))?;
        let host = HostModel::connect(&ep, Duration::from_secs(30)).with_context(|| format!("sim log:\n{}", sim.log()))?;
        let mut d = Dut { host, sim, _dir: dir };
        let mut rng = Rng(seed);
        let mut counts = Vec::new();
        for j in &jobs {
            d.host.poll(Duration::from_millis(50))?; // idle: time enough to fall asleep
            let s = d.gemm(j, &mut rng)?;
            counts.push((j.m, j.n, j.k, s.cycles, s.dma_wait));
        }
        d.host.goodbye()?;
        d.sim.wait_exit(Duration::from_secs(30))?;
        let log = d.sim.log();
        let slept = log.lines().any(|l| l.starts_with("cosim-sim: idle sleep: sleeps=") && !l.contains("sleeps=0 "));
        ensure!(slept == extra.is_none(), "{extra:?}: slept {slept}; log:\n{log}");
        runs.push(counts);
    }
    ensure!(runs[0] == runs[1], "with the idle sleep {:?}, without {:?}", runs[0], runs[1]);
    Ok(())
}

#[test]
#[ignore = "needs `make sim-gemm`: run by `make test-gemm` (or `make test`)"]
fn gemm_strides_and_alignment() -> Result<()> {
    let mut rng = seeded("gemm_strides_and_alignment");
    let mut d = start()?;
    // Non-packed strides, odd byte addresses for A and B, C at 4 mod 8, addresses above 4 GiB.
    let jobs = [
        Job { m: 5, n: 3, k: 7, lda: 11, ldb: 5, ldc: 9, a: 0x1000_0003, b: 0x2000_0005, c: 0x3000_0004 },
        Job { m: 9, n: 65, k: 3, lda: 0, ldb: 70, ldc: 65, a: 0x1_0000_0ff9, b: 0x2_0000_0001, c: 0x3_0000_0ffc },
        Job { m: 2, n: 7, k: 600, lda: 4097, ldb: 9, ldc: 8, a: 0x1000_0fff, b: 0x2000_0007, c: 0x3000_0008 },
        Job { m: 33, n: 130, k: 20, lda: 21, ldb: 131, ldc: 1000, a: 0x1000_0001, b: 0x2000_0002, c: 0x3000_0ff4 },
    ];
    for j in &jobs {
        d.gemm(j, &mut rng)?;
    }
    for _ in 0..6 {
        let (m, n, k) = (1 + rng.below(40) as u32, 1 + rng.below(150) as u32, 1 + rng.below(80) as u32);
        let j = Job {
            m,
            n,
            k,
            lda: if rng.below(2) == 0 { 0 } else { k + rng.below(9) as u32 },
            ldb: if rng.below(2) == 0 { 0 } else { n + rng.below(9) as u32 },
            ldc: if rng.below(2) == 0 { 0 } else { n + rng.below(9) as u32 },
            a: 0x1000_0000 + rng.below(8192),
            b: 0x2000_0000 + rng.below(8192),
            c: 0x3000_0000 + 4 * rng.below(2048),
        };
        d.gemm(&j, &mut rng)?;
    }
    Ok(())
}

#[test]
#[ignore = "needs `make sim-gemm`: run by `make test-gemm` (or `make test`)"]
fn gemm_back_to_back_jobs() -> Result<()> {
    let mut rng = seeded("gemm_back_to_back_jobs");
    let mut d = start()?;
    let jobs0 = d.rd(regs::JOBS_DONE)?;
    let mut cycles = Vec::new();
    for i in 0..6u32 {
        let j = Job {
            m: 8 + i,
            n: 12 + 3 * i,
            k: 16 + 5 * i,
            c: 0x3000_0000 + 0x10_0000 * u64::from(i),
            ..Job::packed(0, 0, 0)
        };
        let s = d.gemm(&j, &mut rng)?;
        cycles.push(s.cycles);
    }
    ensure!(d.rd(regs::JOBS_DONE)? == jobs0 + 6, "JOBS_DONE counts 6 jobs");
    // Polling instead of interrupts: START without IRQ_EN, poll STATUS.DONE.
    let j = Job::packed(16, 16, 16);
    d.fill(&j, &mut rng);
    d.program(&j)?;
    let irqs = d.host.irq_log().len();
    d.wr(regs::CTRL, ctrl::START)?;
    let deadline = Instant::now() + JOB_TIMEOUT;
    while d.rd(regs::STATUS)? & status::DONE == 0 {
        ensure!(Instant::now() < deadline, "polled job did not finish");
    }
    d.check(&j)?;
    d.host.poll(Duration::from_millis(50))?;
    ensure!(d.host.irq_log().len() == irqs, "an interrupt was raised without IRQ_EN");
    // Busy and idle cycles add up to the time since reset and both moved.
    let busy = d.rd64(regs::BUSY_CYCLES_LO)?;
    ensure!(busy >= cycles.iter().sum::<u64>(), "BUSY_CYCLES {busy} < sum of job cycles");
    // CLEAR clears DONE.
    d.wr(regs::CTRL, ctrl::CLEAR)?;
    ensure!(d.rd(regs::STATUS)? == 0, "CLEAR leaves DONE set");
    Ok(())
}

#[test]
#[ignore = "needs `make sim-gemm`: run by `make test-gemm` (or `make test`)"]
fn gemm_every_error_code() -> Result<()> {
    let mut rng = seeded("gemm_every_error_code");
    let mut d = start()?;
    let ok = Job::packed(4, 4, 4);
    d.fill(&ok, &mut rng);
    d.expect_error(&Job { m: 0, ..ok }, ErrorCode::ZeroDim, "M = 0")?;
    d.expect_error(&Job { n: 0, ..ok }, ErrorCode::ZeroDim, "N = 0")?;
    d.expect_error(&Job { k: 0, ..ok }, ErrorCode::ZeroDim, "K = 0")?;
    d.expect_error(&Job { m: defaults::MAX_DIM + 1, ..ok }, ErrorCode::DimTooLarge, "M = MAX_DIM + 1")?;
    d.expect_error(&Job { n: 0x8000_0000, ..ok }, ErrorCode::DimTooLarge, "N = 2^31")?;
    d.expect_error(&Job { k: defaults::MAX_DIM + 1, ..ok }, ErrorCode::DimTooLarge, "K = MAX_DIM + 1")?;
    d.expect_error(&Job { lda: 3, ..ok }, ErrorCode::BadStride, "LDA < K")?;
    d.expect_error(&Job { ldb: 3, ..ok }, ErrorCode::BadStride, "LDB < N")?;
    d.expect_error(&Job { ldc: 3, ..ok }, ErrorCode::BadStride, "LDC < N")?;
    d.expect_error(&Job { c: ok.c + 2, ..ok }, ErrorCode::Misaligned, "C_ADDR 2 mod 4")?;
    d.expect_error(&Job { c: ok.c + 1, ..ok }, ErrorCode::Misaligned, "C_ADDR 1 mod 4")?;

    // DMA_ERROR: B (then A) in a faulting range; the engine recovers for the next job.
    let j = Job::packed(9, 70, 33);
    d.fill(&j, &mut rng);
    d.host.mem().add_fault(j.b + 100..j.b + 101);
    d.expect_error(&j, ErrorCode::DmaError, "DMA read of B fails")?;
    d.host.mem().clear_faults();
    d.host.mem().add_fault(j.a + 5 * 33..j.a + 5 * 33 + 1);
    d.expect_error(&j, ErrorCode::DmaError, "DMA read of A fails")?;
    d.host.mem().clear_faults();
    d.gemm(&j, &mut rng).context("job after DMA errors")?;

    // BUSY: a START while a job runs is refused; the running job completes correctly.
    let big = Job::packed(128, 64, 256);
    d.fill(&big, &mut rng);
    d.program(&big)?;
    d.wr(regs::MSIX_VECTOR, 2)?;
    d.wr(regs::CTRL, ctrl::START | ctrl::IRQ_EN)?;
    ensure!(d.rd(regs::STATUS)? & status::BUSY != 0, "job not BUSY right after START");
    d.program(&Job::packed(1, 1, 1))?; // parameters written while busy do not disturb the job
    d.wr(regs::CTRL, ctrl::START | ctrl::IRQ_EN)?;
    let st = d.rd(regs::STATUS)?;
    ensure!(
        st & (status::BUSY | status::ERROR) == status::BUSY | status::ERROR,
        "STATUS {st:#x} after a refused START"
    );
    ensure!(d.rd(regs::ERROR)? == ErrorCode::Busy.code(), "ERROR after a START while busy");
    d.host.wait_irq(2, JOB_TIMEOUT).context("interrupt of the job that was running")?;
    d.host.poll(Duration::from_millis(100))?;
    ensure!(d.host.pending_irqs(2) == 0, "the refused START raised an interrupt");
    ensure!(d.rd(regs::STATUS)? == status::DONE, "STATUS after the running job completed: {:#x}", d.rd(regs::STATUS)?);
    ensure!(d.rd(regs::ERROR)? == ErrorCode::Ok.code(), "ERROR returns to 0 after the running job succeeds");
    d.check(&big)?;
    println!("ok error {} (START while busy)", ErrorCode::Busy);
    // CLEAR clears ERROR.
    d.expect_error(&Job { m: 0, ..ok }, ErrorCode::ZeroDim, "M = 0 again")?;
    d.wr(regs::CTRL, ctrl::CLEAR)?;
    ensure!(d.rd(regs::STATUS)? == 0, "CLEAR leaves DONE/ERROR set");
    Ok(())
}

#[test]
#[ignore = "needs `make sim-gemm`: run by `make test-gemm` (or `make test`)"]
fn gemm_serial_banner_and_echo() -> Result<()> {
    let mut rng = seeded("gemm_serial_banner_and_echo");
    let mut d = start()?;
    // The banner of the power-on reset (the bridge holds serial bytes until a host connects).
    d.host.wait_serial(UART_BANNER, Duration::from_secs(10)).context("banner after start")?;
    d.host.poll(Duration::from_millis(100))?;
    ensure!(d.host.serial_buffer().is_empty(), "bytes after the banner: {:?}", d.host.serial_buffer());
    let msg: Vec<u8> = (0..200).map(|_| b' ' + rng.below(95) as u8).collect();
    d.host.send_serial(&msg)?;
    let echo = d.host.wait_serial(&msg, Duration::from_secs(10)).context("echo of 200 bytes")?;
    ensure!(echo == msg, "echo has extra bytes: {:?}", String::from_utf8_lossy(&echo));
    ensure!(d.rd(regs::UART_RX_BYTES)? == 200, "UART_RX_BYTES");
    // Binary bytes too.
    let all: Vec<u8> = (0..=255).collect();
    d.host.send_serial(&all)?;
    d.host.wait_serial(&all, Duration::from_secs(10)).context("echo of all byte values")?;
    // A host Reset prints the banner again and clears the counter.
    d.host.reset()?;
    d.host.wait_serial(UART_BANNER, Duration::from_secs(10)).context("banner after a host reset")?;
    ensure!(d.rd(regs::UART_RX_BYTES)? == 0, "UART_RX_BYTES after reset");
    Ok(())
}

#[test]
#[ignore = "needs `make sim-gemm`: run by `make test-gemm` (or `make test`)"]
fn gemm_nic_frame_echo() -> Result<()> {
    let mut rng = seeded("gemm_nic_frame_echo");
    let mut d = start()?;
    let mut n = 0u32;
    for len in [60usize, 64, 61, 1514, 12, 13, 100, 9000, 9216, 5, 11] {
        let f = rng.bytes(len);
        d.host.send_frame(&f)?;
        let got = d.host.recv_frame(Duration::from_secs(10)).with_context(|| format!("echo of a {len}-byte frame"))?;
        let mut want = f.clone();
        if len >= 12 {
            want[..6].copy_from_slice(&f[6..12]);
            want[6..12].copy_from_slice(&f[..6]);
        }
        ensure!(got == want, "{len}-byte frame: echo differs (got {} bytes)", got.len());
        n += 1;
        ensure!(d.rd(regs::NIC_RX_FRAMES)? == n && d.rd(regs::NIC_TX_FRAMES)? == n, "frame counters after {n} frames");
    }
    // Several frames in a row without waiting.
    let frames: Vec<Vec<u8>> = (0..8).map(|i| rng.bytes(64 + 37 * i)).collect();
    for f in &frames {
        d.host.send_frame(f)?;
    }
    for f in &frames {
        let got = d.host.recv_frame(Duration::from_secs(10))?;
        ensure!(got.len() == f.len() && got[12..] == f[12..] && got[..6] == f[6..12], "burst of frames");
    }
    n += 8;
    ensure!(d.rd(regs::NIC_RX_FRAMES)? == n && d.rd(regs::NIC_TX_FRAMES)? == n, "frame counters after the burst");
    println!("ok {n} frames echoed");
    if d.host.stats().malformed != 0 {
        bail!("malformed messages from the simulation");
    }
    Ok(())
}

#[test]
#[ignore = "needs `make sim-gemm`: run by `make test-gemm` (or `make test`)"]
fn gemm_reset_during_a_job() -> Result<()> {
    let mut rng = seeded("gemm_reset_during_a_job");
    let mut d = start()?;
    let big = Job::packed(256, 256, 256);
    d.fill(&big, &mut rng);
    d.program(&big)?;
    d.wr(regs::CTRL, ctrl::START | ctrl::IRQ_EN)?;
    ensure!(d.rd(regs::STATUS)? & status::BUSY != 0, "job not running");
    d.host.poll(Duration::from_millis(20))?;
    // A host Reset aborts the job: registers return to their reset values, no interrupt.
    d.host.reset()?;
    d.host.wait_serial(UART_BANNER, Duration::from_secs(10)).context("banner after the reset")?;
    ensure!(d.rd(regs::STATUS)? == 0, "STATUS after a reset during a job: {:#x}", d.rd(regs::STATUS)?);
    ensure!(d.rd(regs::M)? == 0 && d.rd(regs::JOBS_DONE)? == 0, "job registers after reset");
    d.host.poll(Duration::from_millis(100))?;
    ensure!(d.host.pending_irqs(0) == 0, "interrupt from the aborted job");
    // The engine works normally afterwards.
    d.gemm(&Job::packed(20, 30, 40), &mut rng).context("job after a reset")?;
    Ok(())
}

#[test]
#[ignore = "needs `make sim-gemm`: run by `make test-gemm` (or `make test`)"]
fn gemm_over_tcp() -> Result<()> {
    let mut rng = seeded("gemm_over_tcp");
    let ep = free_tcp_endpoint()?;
    let dir = cosim_transport::PrivateDir::new("test")?;
    let mut d = start_at(dir, ep)?;
    d.host.wait_serial(UART_BANNER, Duration::from_secs(10)).context("banner over tcp")?;
    d.gemm(&Job::packed(17, 33, 9), &mut rng)?;
    d.gemm(
        &Job { m: 40, n: 70, k: 50, lda: 0, ldb: 0, ldc: 0, a: 0x1000_0001, b: 0x2000_0003, c: 0x3000_0004 },
        &mut rng,
    )?;
    Ok(())
}
