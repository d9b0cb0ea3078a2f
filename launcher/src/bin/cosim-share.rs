//! `cosim-share`: several VMs sharing one accelerator simulation through `cosim-mediator`.
//!
//! Starts one simulation (`<sim> --endpoint ipc://<private dir>/sim`) and waits for its ready
//! line; writes the mediator's configuration (one `[[vm]]` per `--vm`, with its pool and
//! priorities) into the log directory, starts `cosim-mediator` and waits for its ready line; then
//! starts one `cosim-launch --json --connect ipc://<private dir>/vmI` per VM, all at the same
//! time, each booting one guest that runs its own workload. When every launcher has ended it
//! stops the mediator (SIGTERM: it writes its statistics) and the simulation, and prints a per-VM
//! table (guest results checked, RTL cycles from the guests' records, time queued from the
//! mediator's job log) and the order in which the jobs ran (docs/user-guide.md, "Several VMs on
//! one accelerator"; the mediator itself: docs/mediator.md).
//!
//! It owns every process it starts (each in its own process group; stopped on exit, on failure,
//! on a timeout and on Ctrl-C: the launchers first, then the mediator, then the simulation), and
//! every stage has a timeout whose message names the stage. Process supervision, signals, exit
//! codes and log directories come from the library (`cosim_launch`); this binary holds no
//! `unsafe`.
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use cosim_guest_results::{Check, Record};
use cosim_launch::procs::{self, Line, Output, Proc};
use cosim_launch::{child, default_build, exit, stages};

/// The line `cosim-mediator` prints on stdout once its session with the simulation is up.
const MEDIATOR_READY: &str = "cosim-mediator: ready:";
/// Lines of the simulation's and the mediator's output kept for error messages.
const TAIL: usize = 20;

#[derive(Parser, Debug)]
#[command(
    name = "cosim-share",
    version,
    about = "Several VMs sharing one accelerator simulation through cosim-mediator (pools, priorities, one queue)",
    long_about = "Starts one simulation of the accelerator, the mediator (cosim-mediator) in front of it, and one \
`cosim-launch --connect` per VM, all VMs at the same time: each boots its own guest with one accelerator-pcie \
that the mediator serves, and runs its own workload. The mediator queues the VMs' jobs by priority (high > \
medium > low, first come first served within one) and runs them one at a time on the RTL (docs/mediator.md).\n\n\
A VM is given with --vm SPEC: comma-separated KEY=VALUE pairs, `run=` last (it takes the rest of the text):\n  \
name=NAME       name in the tables and logs (letters, digits, - and _) [default: vmI]\n  \
pool=POOL       its pool [default: A for the first half of the VMs, B for the rest]\n  \
priority=P      default priority of its jobs: low, medium or high [default: low]\n  \
max=P           highest priority a job of this VM may ask for (JOB_PRIORITY register) [default: priority]\n  \
run=ITEMS       its workload: accel-tool arguments or sh:COMMAND, items separated by ';' \
[default: the --run items, else `gemm --m 64 --n 64 --k 64 --seed I+1 --check --repeat 4`]\n\
--vms N gives N VMs with every default (4 when no --vm is given).\n\n\
Stages, each with its own timeout: sim start (until the simulation prints its ready line), mediator start \
(until the mediator's session with the simulation is up), VMs (until every launcher has ended; each enforces \
its own stage timeouts as well), mediator stop (until the mediator has written its statistics and exited).\n\n\
Prints a per-VM table: its launcher's result, jobs the mediator ran for it, GEMM results checked against the \
guest CPU (ok/checked), RTL cycles summed from the guest's records, time its jobs spent queued (total and \
longest, from the mediator's job log); the RTL's busy fraction; and the order in which the jobs ran (by start \
time, with the number of earlier-submitted jobs each one overtook).\n\n\
Logs: <log-dir>/sim.log, mediator.toml (the configuration written), mediator.log, jobs.jsonl (the job log), \
mediator-stats.json, <vm>/ (each launcher's log directory), <vm>-launch.log (each launcher's stderr), \
results.json (same as --json).\n\n\
Exit status: 0 every VM's workload passed; 1 the VMs ran but a result failed; 2 usage error; 3 setup error \
(missing artifact, cannot start a process); 4 a stage timed out or a process died early (a launcher's own \
4 too); 130 interrupted (Ctrl-C, SIGTERM).",
    after_help = "Examples:\n  cosim-share --vms 2\n  cosim-share \\\n    --vm 'pool=A,priority=low,run=gemm --m 64 --n 64 --k 64 --seed 1 --check --repeat 8' \\\n    \
--vm 'pool=A,priority=low,run=gemm --m 64 --n 64 --k 64 --seed 2 --check --repeat 8' \\\n    \
--vm 'pool=B,priority=medium,max=high,run=gemm --m 32 --n 32 --k 32 --seed 3 --check --repeat 8' \\\n    \
--vm 'name=urgent,pool=B,priority=high,run=sh:sleep 2;gemm --m 16 --n 16 --k 16 --seed 4 --check --repeat 4;info'"
)]
struct Cli {
    /// A VM: KEY=VALUE pairs (name, pool, priority, max, run; see above). Repeatable.
    #[arg(long = "vm", value_name = "SPEC")]
    vms: Vec<String>,

    /// N VMs with the defaults, instead of --vm [default without --vm: 4].
    #[arg(long = "vms", value_name = "N", conflicts_with = "vms", value_parser = clap::value_parser!(u32).range(1..=16))]
    count: Option<u32>,

    /// Workload item of every VM whose spec has no run= (repeatable, in order).
    #[arg(long = "run", value_name = "ITEM")]
    runs: Vec<String>,

    /// The design's job model [default: hdl/gemm_accel/job-model.toml of this source tree].
    #[arg(long)]
    job_model: Option<PathBuf>,

    /// Simulation binary [default: $COSIM_BUILD/sim/gemm_top/sim].
    #[arg(long)]
    sim: Option<PathBuf>,

    /// Extra argument for the simulation (repeatable), e.g. --sim-arg=--stats.
    #[arg(long = "sim-arg", value_name = "ARG", allow_hyphen_values = true)]
    sim_args: Vec<String>,

    /// The mediator [default: cosim-mediator next to this binary].
    #[arg(long)]
    mediator: Option<PathBuf>,

    /// The launcher [default: cosim-launch next to this binary].
    #[arg(long)]
    launch: Option<PathBuf>,

    /// Extra argument for every VM's cosim-launch (repeatable), e.g. --launch-arg=--timeout-boot=300.
    #[arg(long = "launch-arg", value_name = "ARG", allow_hyphen_values = true)]
    launch_args: Vec<String>,

    /// Directory for the logs [default: ~/.cache/cosim/logs/share-<unix time>-<pid>; $COSIM_LOGS or
    /// $COSIM_CACHE/logs replace ~/.cache/cosim/logs].
    #[arg(long)]
    log_dir: Option<PathBuf>,

    /// Seconds until the simulation is ready.
    #[arg(long, default_value_t = 60)]
    timeout_sim_start: u64,
    /// Seconds until the mediator's session with the simulation is up.
    #[arg(long, default_value_t = 60)]
    timeout_mediator_start: u64,
    /// Seconds from starting the VMs until every launcher has ended.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Seconds from SIGTERM until the mediator has exited (then SIGKILL).
    #[arg(long, default_value_t = 20)]
    timeout_stop: u64,

    /// Print one JSON object with the whole run's results on stdout instead of the tables.
    #[arg(long)]
    json: bool,

    /// Also copy the launchers' stderr (stage progress) to stderr as it arrives, prefixed with the VM.
    #[arg(long, short)]
    verbose: bool,
}

/// A job's priority (the mediator's configuration and job log spell it in lower case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Priority {
    Low,
    Medium,
    High,
}

impl Priority {
    fn parse(s: &str) -> Result<Priority> {
        Ok(match s {
            "low" => Priority::Low,
            "medium" => Priority::Medium,
            "high" => Priority::High,
            _ => bail!("priority {s:?}: expected low, medium or high"),
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
        }
    }
}

/// One VM of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VmSpec {
    name: String,
    pool: String,
    priority: Priority,
    max: Priority,
    runs: Vec<String>,
}

/// The workload of VM `i` when neither its spec nor `--run` gives one.
fn default_runs(i: usize) -> Vec<String> {
    vec![format!("gemm --m 64 --n 64 --k 64 --seed {} --check --repeat 4", i + 1)]
}

/// VM `i` of `n` with every default: pool A for the first half, B for the rest.
fn default_vm(i: usize, n: usize, runs: &[String]) -> VmSpec {
    VmSpec {
        name: format!("vm{i}"),
        pool: if i < n.div_ceil(2) { "A" } else { "B" }.into(),
        priority: Priority::Low,
        max: Priority::Low,
        runs: if runs.is_empty() { default_runs(i) } else { runs.to_vec() },
    }
}

/// Parses the `--vm` spec of VM `i` of `n` (see `--help`); `runs`: the `--run` items.
fn parse_vm(spec: &str, i: usize, n: usize, runs: &[String]) -> Result<VmSpec> {
    let mut vm = default_vm(i, n, runs);
    let mut max = None;
    let mut rest = spec.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').with_context(|| format!("--vm {spec:?}: {rest:?} is not KEY=VALUE"))?;
        let key = key.trim();
        if key == "run" {
            vm.runs = after.split(';').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
            if vm.runs.is_empty() {
                bail!("--vm {spec:?}: run= has no item");
            }
            break;
        }
        let (value, next) = after.split_once(',').unwrap_or((after, ""));
        let value = value.trim();
        match key {
            "name" => {
                if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                    bail!("--vm {spec:?}: name {value:?} must be letters, digits, '-' and '_'");
                }
                vm.name = value.into();
            }
            "pool" => {
                if value.is_empty() || value.contains(['"', '\\']) {
                    bail!("--vm {spec:?}: pool {value:?} must be non-empty, without quotes or backslashes");
                }
                vm.pool = value.into();
            }
            "priority" => vm.priority = Priority::parse(value).with_context(|| format!("--vm {spec:?}"))?,
            "max" => max = Some(Priority::parse(value).with_context(|| format!("--vm {spec:?}"))?),
            _ => bail!("--vm {spec:?}: unknown key {key:?} (name, pool, priority, max, run)"),
        }
        rest = next.trim();
    }
    vm.max = max.unwrap_or(vm.priority);
    if vm.max < vm.priority {
        bail!(
            "--vm {spec:?}: max={} is below priority={}; a VM's jobs may ask for more than its default, not less",
            vm.max.as_str(),
            vm.priority.as_str()
        );
    }
    Ok(vm)
}

/// The VMs of the command line: `--vm` specs, else `--vms N` (default 4) with the defaults.
fn vm_specs(cli: &Cli) -> Result<Vec<VmSpec>> {
    let vms: Vec<VmSpec> = if cli.vms.is_empty() {
        let n = cli.count.unwrap_or(4) as usize;
        (0..n).map(|i| default_vm(i, n, &cli.runs)).collect()
    } else {
        let n = cli.vms.len();
        cli.vms.iter().enumerate().map(|(i, s)| parse_vm(s, i, n, &cli.runs)).collect::<Result<_>>()?
    };
    let mut names = HashSet::new();
    for v in &vms {
        if !names.insert(v.name.as_str()) {
            bail!("two VMs are named {:?}", v.name);
        }
    }
    Ok(vms)
}

/// The mediator's configuration file (docs/mediator.md, "Configuration").
#[derive(Serialize)]
struct MediatorConfig<'a> {
    job_model: String,
    simulation: &'a str,
    vm: Vec<MediatorVm<'a>>,
}

#[derive(Serialize)]
struct MediatorVm<'a> {
    name: &'a str,
    endpoint: &'a str,
    pool: &'a str,
    priority: Priority,
    max_priority: Priority,
}

fn mediator_config(job_model: &Path, sim_endpoint: &str, vms: &[VmSpec], endpoints: &[String]) -> Result<String> {
    let cfg = MediatorConfig {
        job_model: job_model.display().to_string(),
        simulation: sim_endpoint,
        vm: vms
            .iter()
            .zip(endpoints)
            .map(|(v, ep)| MediatorVm {
                name: &v.name,
                endpoint: ep,
                pool: &v.pool,
                priority: v.priority,
                max_priority: v.max,
            })
            .collect(),
    };
    Ok(format!(
        "# Written by cosim-share for this run (docs/mediator.md, \"Configuration\").\n{}",
        toml::to_string(&cfg).context("cannot write the mediator's configuration")?
    ))
}

/// One line of the mediator's job log (`--job-log`), written as each job ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    seq: u64,
    vm: String,
    pool: String,
    priority: Priority,
    outcome: String,
    submitted_us: u64,
    started_us: Option<u64>,
    finished_us: u64,
    queued_us: u64,
    #[serde(default)]
    cycles: Option<u64>,
    #[serde(default)]
    dma_wait: Option<u64>,
    #[serde(default)]
    error: Option<u64>,
}

/// The job log's entries, and the lines that were not entries.
fn parse_job_log(text: &str) -> (Vec<Job>, Vec<String>) {
    let mut jobs = Vec::new();
    let mut bad = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Job>(line) {
            Ok(j) => jobs.push(j),
            Err(e) => bad.push(format!("{e}: {line}")),
        }
    }
    (jobs, bad)
}

/// A job in the order the jobs ran.
#[derive(Debug, Clone, PartialEq)]
struct Ran<'a> {
    job: &'a Job,
    /// Jobs submitted before it (lower `seq`) that were still queued when it started.
    overtook: usize,
}

/// The jobs by start time (jobs that never started, cancelled while queued, last, by `seq`), each
/// with the number of earlier-submitted jobs it overtook. Pure.
fn run_order(jobs: &[Job]) -> Vec<Ran<'_>> {
    let mut v: Vec<&Job> = jobs.iter().collect();
    v.sort_by_key(|j| (j.started_us.is_none(), j.started_us, j.seq));
    v.iter()
        .map(|&job| {
            let overtook = match job.started_us {
                None => 0,
                Some(t) => jobs
                    .iter()
                    .filter(|o| o.seq < job.seq)
                    .filter(|o| match o.started_us {
                        Some(s) => s > t,
                        None => o.finished_us > t,
                    })
                    .count(),
            };
            Ran { job, overtook }
        })
        .collect()
}

/// What cosim-share reports for one VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
struct VmRow {
    /// Jobs of this VM in the mediator's job log, and how many completed.
    jobs: usize,
    jobs_done: usize,
    /// The guest's GEMM records, those checked against its CPU, and those that passed.
    gemms: usize,
    checked: usize,
    checked_ok: usize,
    /// RTL cycles summed over the guest's GEMM records.
    rtl_cycles: u64,
    /// Time queued over the VM's jobs (job log), µs.
    queued_us_total: u64,
    queued_us_max: u64,
}

fn vm_row(name: &str, records: &[Record], jobs: &[Job]) -> VmRow {
    let mut r = VmRow::default();
    for g in records.iter().filter_map(Record::as_gemm) {
        r.gemms += 1;
        if matches!(g.check, Some(Check::Pass | Check::Fail)) {
            r.checked += 1;
            r.checked_ok += usize::from(g.ok && g.check == Some(Check::Pass));
        }
        r.rtl_cycles += g.rtl_cycles.unwrap_or(0);
    }
    for j in jobs.iter().filter(|j| j.vm == name) {
        r.jobs += 1;
        r.jobs_done += usize::from(j.outcome == "done");
        r.queued_us_total += j.queued_us;
        r.queued_us_max = r.queued_us_max.max(j.queued_us);
    }
    r
}

fn ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

fn opt_ms(us: Option<u64>) -> String {
    us.map_or_else(|| "-".into(), ms)
}

/// The per-VM table and the order of the jobs. Pure.
fn tables(vms: &[VmSpec], rows: &[VmRow], results: &[String], jobs: &[Job], rtl: &Value) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<10} {:<6} {:<14} {:<9} {:>5} {:>9} {:>12} {:>13} {:>11}",
        "VM", "pool", "priority(max)", "launcher", "jobs", "checked", "RTL cycles", "queued ms", "queued max"
    );
    let _ = writeln!(s, "{}", "-".repeat(97));
    for ((v, r), res) in vms.iter().zip(rows).zip(results) {
        let _ = writeln!(
            s,
            "{:<10} {:<6} {:<14} {:<9} {:>5} {:>9} {:>12} {:>13} {:>11}",
            v.name,
            v.pool,
            format!("{}({})", v.priority.as_str(), v.max.as_str()),
            res,
            r.jobs,
            format!("{}/{}", r.checked_ok, r.checked),
            r.rtl_cycles,
            ms(r.queued_us_total),
            ms(r.queued_us_max)
        );
    }
    if let Some(f) = rtl["busy_fraction"].as_f64() {
        let _ = writeln!(
            s,
            "RTL busy {:.1}% ({} busy, {} idle cycles, as the mediator counts them: docs/mediator.md)",
            f * 100.0,
            rtl["busy_cycles"],
            rtl["idle_cycles"]
        );
    }
    let _ = writeln!(
        s,
        "\njob order (by start; ms since the mediator started; overtook: jobs submitted earlier, still queued at its start):"
    );
    let _ = writeln!(
        s,
        "{:>4} {:>5} {:<10} {:<8} {:>11} {:>11} {:>10} {:<10} {:>8}",
        "#", "seq", "VM", "priority", "submitted", "started", "queued", "outcome", "overtook"
    );
    for (i, r) in run_order(jobs).iter().enumerate() {
        let j = r.job;
        let _ = writeln!(
            s,
            "{:>4} {:>5} {:<10} {:<8} {:>11} {:>11} {:>10} {:<10} {:>8}",
            i + 1,
            j.seq,
            j.vm,
            j.priority.as_str(),
            ms(j.submitted_us),
            opt_ms(j.started_us),
            ms(j.queued_us),
            j.outcome,
            r.overtook
        );
    }
    s
}

/// Which process a line of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    Sim,
    Mediator,
    Vm(usize),
}

/// A stage that failed: exit code, stage name, message.
struct StageFail {
    code: u8,
    stage: &'static str,
    message: String,
}

impl From<anyhow::Error> for StageFail {
    fn from(e: anyhow::Error) -> Self {
        StageFail { code: exit::SETUP, stage: "setup", message: format!("{e:#}") }
    }
}

impl From<cosim_launch::Error> for StageFail {
    fn from(e: cosim_launch::Error) -> Self {
        anyhow::Error::from(e).into()
    }
}

/// One VM's launcher.
struct VmRun {
    proc: Proc,
    log_dir: PathBuf,
    stopped_by_us: bool,
}

/// Every process of the run and what they said.
struct Share {
    log_dir: PathBuf,
    verbose: bool,
    names: Vec<String>,
    tx: mpsc::Sender<Line<Src>>,
    rx: mpsc::Receiver<Line<Src>>,
    sim: Option<Proc>,
    mediator: Option<Proc>,
    vms: Vec<VmRun>,
    sim_ready: bool,
    mediator_ready: bool,
    sim_tail: Vec<String>,
    mediator_tail: Vec<String>,
    stage_seconds: serde_json::Map<String, Value>,
}

fn push_tail(v: &mut Vec<String>, line: String) {
    v.push(line);
    if v.len() > TAIL {
        v.remove(0);
    }
}

impl Share {
    fn handle(&mut self, l: Line<Src>) {
        match l.source {
            Src::Sim => {
                if !self.sim_ready && l.text.contains(stages::SIM_READY) {
                    self.sim_ready = true;
                    tracing::info!("simulation ready: {}", l.text);
                }
                push_tail(&mut self.sim_tail, l.text);
            }
            Src::Mediator => {
                if !self.mediator_ready && l.text.contains(MEDIATOR_READY) {
                    self.mediator_ready = true;
                    tracing::info!("{}", l.text);
                }
                push_tail(&mut self.mediator_tail, l.text);
            }
            Src::Vm(i) => {
                if self.verbose {
                    eprintln!("[{}] {}", self.names[i], l.text);
                }
            }
        }
    }

    /// Handles the lines that arrive within `wait`.
    fn pump(&mut self, wait: Duration) {
        if let Ok(l) = self.rx.recv_timeout(wait) {
            self.handle(l);
            while let Ok(l) = self.rx.try_recv() {
                self.handle(l);
            }
        }
    }

    /// Handles lines until none arrives for 100 ms (at most 1 s): what a process wrote before it
    /// ended, which the pump threads deliver a moment later.
    fn drain(&mut self) {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(1) {
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => self.handle(l),
                Err(_) => break,
            }
        }
    }

    /// The simulation's or the mediator's exit, if it ended, with its last lines.
    fn died(&mut self) -> Option<String> {
        let sim = self.sim.as_mut().and_then(Proc::poll);
        let med = self.mediator.as_mut().and_then(Proc::poll);
        if sim.is_none() && med.is_none() {
            return None;
        }
        self.drain();
        let (what, st, tail, log) = match (sim, med) {
            (Some(st), _) => ("the simulation", st, &self.sim_tail, "sim.log"),
            (None, Some(st)) => ("the mediator", st, &self.mediator_tail, "mediator.log"),
            (None, None) => return None,
        };
        Some(format!(
            "{what} exited ({st}); its last lines ({}):\n  {}",
            self.log_dir.join(log).display(),
            tail.join("\n  ")
        ))
    }

    /// Waits until `done(self)`, handling lines; fails on a timeout, an interrupt, or the end of
    /// the simulation or the mediator.
    fn wait(
        &mut self,
        stage: &'static str,
        timeout: Duration,
        mut done: impl FnMut(&mut Share) -> bool,
    ) -> Result<(), StageFail> {
        let t0 = Instant::now();
        tracing::info!("stage {stage}: waiting (timeout {} s)", timeout.as_secs());
        loop {
            if done(self) {
                let secs = t0.elapsed().as_secs_f64();
                self.stage_seconds.insert(stage.replace(' ', "_"), json!((secs * 1000.0).round() / 1000.0));
                tracing::info!("stage {stage}: done in {secs:.1} s");
                return Ok(());
            }
            if procs::interrupted() {
                return Err(StageFail {
                    code: exit::INTERRUPTED,
                    stage,
                    message: format!("interrupted during stage {stage}"),
                });
            }
            if t0.elapsed() > timeout {
                let tail = match stage {
                    "sim start" => format!("; the simulation's last lines:\n  {}", self.sim_tail.join("\n  ")),
                    "mediator start" => format!("; the mediator's last lines:\n  {}", self.mediator_tail.join("\n  ")),
                    _ => String::new(),
                };
                return Err(StageFail {
                    code: exit::STAGE,
                    stage,
                    message: format!(
                        "stage {stage} timed out after {} s{tail}\n  logs: {}",
                        timeout.as_secs(),
                        self.log_dir.display()
                    ),
                });
            }
            self.pump(Duration::from_millis(50));
            if let Some(why) = self.died() {
                return Err(StageFail { code: exit::STAGE, stage, message: format!("during stage {stage}, {why}") });
            }
        }
    }

    /// Every launcher has ended.
    fn vms_done(&mut self) -> bool {
        self.vms.iter_mut().all(|v| v.proc.poll().is_some())
    }

    /// Stops every VM that still runs.
    fn stop_vms(&mut self, why: &str) {
        for (v, name) in self.vms.iter_mut().zip(&self.names) {
            if child::stop(&mut v.proc, &v.log_dir, &format!("VM {name}"), why) {
                v.stopped_by_us = true;
            }
        }
    }

    /// Stops everything in order: the VMs, the mediator, the simulation.
    fn stop_all(&mut self, why: &str) {
        self.stop_vms(why);
        if let Some(m) = self.mediator.as_mut() {
            m.stop(Duration::from_secs(10));
        }
        if let Some(s) = self.sim.as_mut() {
            s.stop(Duration::from_secs(10));
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.stop_all("cosim-share is exiting");
    }
}

fn require_file(p: &Path, what: &str, how: &str) -> Result<()> {
    if !p.is_file() {
        bail!("{what} {} is missing: {how}", p.display());
    }
    Ok(())
}

/// The run up to the end of the VMs stage and the mediator's stop.
fn execute(
    cli: &Cli,
    vms: &[VmSpec],
    share: &mut Share,
    tmp: &mut Option<cosim_transport::PrivateDir>,
) -> Result<(), StageFail> {
    let build = default_build();
    let sim_bin = cli.sim.clone().unwrap_or_else(|| build.join("sim/gemm_top/sim"));
    let job_model = match &cli.job_model {
        Some(p) => p.clone(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../hdl/gemm_accel/job-model.toml"),
    };
    let mediator_bin = child::sibling(cli.mediator.as_deref(), "cosim-mediator").context("no path of this binary")?;
    let launch = child::sibling(cli.launch.as_deref(), "cosim-launch").context("no path of this binary")?;
    require_file(&sim_bin, "simulation binary", "build it with `make sim-gemm`")?;
    require_file(&job_model, "job model", "give the design's job model with --job-model")?;
    require_file(&mediator_bin, "mediator", "build it with `make launcher` (cargo build --release -p cosim-mediator)")?;
    require_file(&launch, "launcher", "build it with `make launcher`")?;
    let job_model = job_model.canonicalize().with_context(|| format!("cannot resolve {}", job_model.display()))?;
    // The launchers check their own artefacts (QEMU, guest); all the VMs' items before anything starts.
    for v in vms {
        cosim_launch::qemu::workload(&v.runs).with_context(|| format!("VM {}", v.name))?;
    }

    // Endpoints, private to this user (docs/protocol.md, "Access control").
    let dir = cosim_transport::PrivateDir::new("share").context("cannot create the run's private directory")?;
    let sim_ep = dir.endpoint("sim");
    let vm_eps: Vec<String> = (0..vms.len()).map(|i| dir.endpoint(&format!("vm{i}"))).collect();
    *tmp = Some(dir);
    let log_dir = share.log_dir.clone();

    // Stage: sim start.
    let mut cmd = Command::new(&sim_bin);
    cosim_dpi_bridge::sim_process::keep_bridge_beside(&mut cmd, &sim_bin);
    cmd.arg("--endpoint").arg(&sim_ep).args(&cli.sim_args);
    let sim_log = log_dir.join("sim.log");
    tracing::info!("starting the simulation: {} --endpoint {sim_ep} (log {})", sim_bin.display(), sim_log.display());
    let out = Output::Log(&sim_log, Src::Sim);
    share.sim = Some(Proc::spawn("the simulation", cmd, out, out, &share.tx)?);
    share.wait("sim start", Duration::from_secs(cli.timeout_sim_start), |s| s.sim_ready)?;

    // Stage: mediator start.
    let cfg_path = log_dir.join("mediator.toml");
    std::fs::write(&cfg_path, mediator_config(&job_model, &sim_ep, vms, &vm_eps)?)
        .with_context(|| format!("cannot write {}", cfg_path.display()))?;
    let mut cmd = Command::new(&mediator_bin);
    cmd.arg("--config")
        .arg(&cfg_path)
        .arg("--job-log")
        .arg(log_dir.join("jobs.jsonl"))
        .arg("--stats-json")
        .arg(log_dir.join("mediator-stats.json"));
    let med_log = log_dir.join("mediator.log");
    tracing::info!(
        "starting the mediator: {} --config {} (log {})",
        mediator_bin.display(),
        cfg_path.display(),
        med_log.display()
    );
    let out = Output::Log(&med_log, Src::Mediator);
    share.mediator = Some(Proc::spawn("the mediator", cmd, out, out, &share.tx)?);
    share.wait("mediator start", Duration::from_secs(cli.timeout_mediator_start), |s| s.mediator_ready)?;

    // Stage: VMs, all at the same time.
    let mut pids = serde_json::Map::new();
    pids.insert("sim".into(), json!(share.sim.as_ref().map(Proc::pid)));
    pids.insert("mediator".into(), json!(share.mediator.as_ref().map(Proc::pid)));
    for (i, (v, ep)) in vms.iter().zip(&vm_eps).enumerate() {
        let mut args = vec!["--connect".to_string(), ep.clone()];
        for r in &v.runs {
            args.push("--run".into());
            args.push(r.clone());
        }
        args.extend(cli.launch_args.iter().cloned());
        let vm_log = log_dir.join(&v.name);
        let stderr_log = log_dir.join(format!("{}-launch.log", v.name));
        let proc =
            child::spawn(&format!("VM {}", v.name), &launch, &args, &vm_log, &stderr_log, Src::Vm(i), &share.tx)?;
        pids.insert(v.name.clone(), json!(proc.pid()));
        share.vms.push(VmRun { proc, log_dir: vm_log, stopped_by_us: false });
    }
    let _ = std::fs::write(log_dir.join("pids.json"), Value::Object(pids).to_string() + "\n");
    share.wait("VMs", Duration::from_secs(cli.timeout), Share::vms_done)?;

    // Stage: mediator stop. SIGTERM: it prints its table, writes --stats-json and exits 0.
    let t_stop = Duration::from_secs(cli.timeout_stop);
    let t0 = Instant::now();
    tracing::info!("stage mediator stop: SIGTERM (timeout {} s)", t_stop.as_secs());
    let Some(m) = share.mediator.as_mut() else { return Ok(()) };
    let st = m.terminate(t_stop);
    share.drain();
    match st {
        None => {
            return Err(StageFail {
                code: exit::STAGE,
                stage: "mediator stop",
                message: format!(
                    "stage mediator stop timed out after {} s (SIGTERM); its last lines:\n  {}",
                    t_stop.as_secs(),
                    share.mediator_tail.join("\n  ")
                ),
            })
        }
        Some(st) if !st.success() => {
            return Err(StageFail {
                code: exit::STAGE,
                stage: "mediator stop",
                message: format!(
                    "the mediator exited ({st}) on SIGTERM; its last lines:\n  {}",
                    share.mediator_tail.join("\n  ")
                ),
            })
        }
        Some(_) => {}
    }
    let secs = t0.elapsed().as_secs_f64();
    share.stage_seconds.insert("mediator_stop".into(), json!((secs * 1000.0).round() / 1000.0));
    Ok(())
}

/// The launcher's result in the table: pass, FAIL (exit 1), or its error (stage) or exit code.
fn launcher_result(code: Option<i32>, summary: &Value, stopped_by_us: bool) -> String {
    match code {
        Some(0) => "pass".into(),
        Some(1) => "FAIL".into(),
        _ if stopped_by_us => "stopped".into(),
        c => match summary["failed_stage"].as_str() {
            Some(stage) => format!("ERR:{stage}"),
            None => format!("exit {}", c.map_or("?".into(), |c| c.to_string())),
        },
    }
}

struct Outcome {
    code: u8,
    error: Option<String>,
    summary: Value,
    text: String,
}

fn run(cli: &Cli, vms: &[VmSpec], log_dir: &Path) -> Outcome {
    let t0 = Instant::now();
    let (tx, rx) = mpsc::channel();
    let mut share = Share {
        log_dir: log_dir.to_path_buf(),
        verbose: cli.verbose,
        names: vms.iter().map(|v| v.name.clone()).collect(),
        tx,
        rx,
        sim: None,
        mediator: None,
        vms: Vec::new(),
        sim_ready: false,
        mediator_ready: false,
        sim_tail: Vec::new(),
        mediator_tail: Vec::new(),
        stage_seconds: serde_json::Map::new(),
    };
    let mut tmp = None;
    let outcome = execute(cli, vms, &mut share, &mut tmp);
    let why = match &outcome {
        Ok(()) => "the run is over".to_string(),
        Err(f) if f.code == exit::INTERRUPTED => "interrupted".to_string(),
        Err(f) => format!("stage {} failed", f.stage),
    };
    share.stop_all(&why);
    drop(tmp);
    share.drain();

    // What the VMs, the mediator and its job log say.
    let (jobs, bad_lines) = parse_job_log(&std::fs::read_to_string(log_dir.join("jobs.jsonl")).unwrap_or_default());
    let stats: Value = std::fs::read_to_string(log_dir.join("mediator-stats.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    let mut vm_json = Vec::new();
    let mut rows = Vec::new();
    let mut results = Vec::new();
    let mut launcher_error: Option<(u8, String)> = None;
    let mut all_checked = true;
    for (i, v) in vms.iter().enumerate() {
        let (code, summary, stopped) = match share.vms.get_mut(i) {
            Some(r) => (r.proc.status().and_then(|s| s.code()), child::summary(&mut r.proc), r.stopped_by_us),
            None => (None, Value::Null, false),
        };
        let records = child::results(&summary);
        let row = vm_row(&v.name, &records, &jobs);
        // Every GEMM checked against the guest CPU passed (the launcher judges the other records).
        all_checked &= row.checked_ok == row.checked;
        if let (Some(c), false) = (code, stopped) {
            if c != 0 && c != 1 && launcher_error.is_none() {
                let msg = summary["error"].as_str().unwrap_or("no summary").to_string();
                launcher_error = Some((c.clamp(0, 255) as u8, format!("VM {}: launcher exit {c}: {msg}", v.name)));
            }
        }
        results.push(if share.vms.get(i).is_some() { launcher_result(code, &summary, stopped) } else { "-".into() });
        let stat = stats["vms"].as_array().and_then(|a| a.iter().find(|s| s["name"] == v.name.as_str())).cloned();
        vm_json.push(json!({
            "name": v.name, "pool": v.pool, "priority": v.priority, "max_priority": v.max, "runs": v.runs,
            "launcher_exit": code, "stopped_by_cosim_share": stopped, "result": results[i],
            "ok": summary["ok"].clone(), "failed_stage": summary["failed_stage"].clone(),
            "error": summary["error"].clone(), "log_dir": log_dir.join(&v.name).display().to_string(),
            "stage_seconds": summary["stage_seconds"].clone(),
            "jobs": row.jobs, "jobs_done": row.jobs_done, "gemms": row.gemms, "checked": row.checked,
            "checked_ok": row.checked_ok, "rtl_cycles": row.rtl_cycles,
            "queued_us_total": row.queued_us_total, "queued_us_max": row.queued_us_max,
            "mediator": stat,
        }));
        rows.push(row);
    }

    let (code, stage, mut error) = match outcome {
        Err(f) => (f.code, Some(f.stage), Some(f.message)),
        Ok(()) => match launcher_error {
            Some((c, msg)) => (c, None, Some(msg)),
            None => {
                let launchers_ok = share.vms.iter().all(|v| v.proc.status().and_then(|s| s.code()) == Some(0));
                if launchers_ok && all_checked && bad_lines.is_empty() {
                    (exit::OK, None, None)
                } else if !bad_lines.is_empty() {
                    (
                        exit::FAILED,
                        None,
                        Some(format!("the job log has lines that are not jobs: {}", bad_lines.join("; "))),
                    )
                } else {
                    (
                        exit::FAILED,
                        None,
                        Some("a VM's workload failed or a checked GEMM did not match (see the table)".into()),
                    )
                }
            }
        },
    };
    if code != exit::OK && error.is_none() {
        error = Some("see the table".into());
    }
    let order: Vec<Value> = run_order(&jobs)
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r.job).unwrap_or(Value::Null);
            v["overtook"] = json!(r.overtook);
            v
        })
        .collect();
    let summary = json!({
        "ok": code == exit::OK,
        "exit_code": code,
        "failed_stage": stage,
        "error": error,
        "log_dir": log_dir.display().to_string(),
        "stage_seconds": Value::Object(share.stage_seconds.clone()),
        "wall_seconds": (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "vms": vm_json,
        "rtl": stats["rtl"].clone(),
        "job_order": order,
        "job_log_errors": bad_lines,
    });
    let text = tables(vms, &rows, &results, &jobs, &stats["rtl"]);
    Outcome { code, error, summary, text }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A bad --vm is a usage error, like clap's own.
    let vms = match vm_specs(&cli) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e:#}\n\nFor more information, try '--help'.");
            return ExitCode::from(exit::USAGE);
        }
    };
    let Some(log_dir) = cosim_launch::start_supervisor(cli.log_dir.clone(), "share") else {
        return ExitCode::from(exit::SETUP);
    };
    let out = run(&cli, &vms, &log_dir);
    let _ = std::fs::write(log_dir.join("results.json"), format!("{:#}\n", out.summary));
    if let Some(e) = &out.error {
        tracing::error!("{e}");
    }
    if cli.json {
        println!("{}", out.summary);
    } else {
        print!("{}", out.text);
        match out.code {
            exit::OK => println!("result: PASS (logs in {})", log_dir.display()),
            exit::FAILED => {
                println!("result: FAIL: {} (logs in {})", out.error.as_deref().unwrap_or("?"), log_dir.display())
            }
            c => println!(
                "result: ERROR (exit {c}) in stage {}: see above (logs in {})",
                out.summary["failed_stage"].as_str().unwrap_or("?"),
                log_dir.display()
            ),
        }
    }
    ExitCode::from(out.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(spec: &str) -> Result<VmSpec> {
        parse_vm(spec, 1, 4, &[])
    }

    #[test]
    fn parses_a_vm_spec() {
        let v = vm("name=hi,pool=B,priority=medium,max=high,run=gemm --m 4 --n 4 --k 4 --check; info ;").unwrap();
        assert_eq!(
            v,
            VmSpec {
                name: "hi".into(),
                pool: "B".into(),
                priority: Priority::Medium,
                max: Priority::High,
                runs: vec!["gemm --m 4 --n 4 --k 4 --check".into(), "info".into()],
            }
        );
        // run= takes the rest, commas included.
        let v = vm("run=bench --sizes 8,16 --repeat 2").unwrap();
        assert_eq!(v.runs, ["bench --sizes 8,16 --repeat 2"]);
        assert_eq!((v.name.as_str(), v.pool.as_str(), v.priority, v.max), ("vm1", "A", Priority::Low, Priority::Low));
        // max defaults to the priority.
        assert_eq!(vm("priority=high").unwrap().max, Priority::High);
        // Defaults: pool B for the second half, the default workload with seed i+1.
        let v = parse_vm("", 3, 4, &[]).unwrap();
        assert_eq!((v.pool.as_str(), v.runs.clone()), ("B", default_runs(3)));
        assert!(v.runs[0].contains("--seed 4"));
        let v = parse_vm("pool=C", 0, 4, &["info".into()]).unwrap();
        assert_eq!(v.runs, ["info"]);
    }

    #[test]
    fn refuses_bad_vm_specs() {
        for bad in [
            "priority=urgent",
            "max=low,priority=high",
            "colour=red",
            "name=a b",
            "name=",
            "pool=",
            "run=",
            "run= ; ",
            "nonsense",
        ] {
            assert!(vm(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn names_must_differ() {
        let cli = Cli::parse_from(["cosim-share", "--vm", "name=x", "--vm", "name=x"]);
        assert!(vm_specs(&cli).is_err());
        let cli = Cli::parse_from(["cosim-share", "--vms", "3"]);
        let v = vm_specs(&cli).unwrap();
        assert_eq!(v.iter().map(|v| v.pool.as_str()).collect::<Vec<_>>(), ["A", "A", "B"]);
        assert!(Cli::try_parse_from(["cosim-share", "--vms", "2", "--vm", "name=x"]).is_err());
        assert!(Cli::try_parse_from(["cosim-share", "--vms", "0"]).is_err());
    }

    #[test]
    fn config_is_the_mediators_toml() {
        let vms = [vm("name=a,priority=low,max=high").unwrap(), vm("name=b,pool=B,priority=medium").unwrap()];
        let eps = ["ipc:///tmp/x/vm0".to_string(), "ipc:///tmp/x/vm1".to_string()];
        let text = mediator_config(Path::new("/r/hdl/job \"model\".toml"), "ipc:///tmp/x/sim", &vms, &eps).unwrap();
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["job_model"].as_str(), Some("/r/hdl/job \"model\".toml"));
        assert_eq!(v["simulation"].as_str(), Some("ipc:///tmp/x/sim"));
        let vm = v["vm"].as_array().unwrap();
        assert_eq!(vm.len(), 2);
        assert_eq!(vm[0]["name"].as_str(), Some("a"));
        assert_eq!(vm[0]["endpoint"].as_str(), Some("ipc:///tmp/x/vm0"));
        assert_eq!(vm[0]["pool"].as_str(), Some("A"));
        assert_eq!(vm[0]["priority"].as_str(), Some("low"));
        assert_eq!(vm[0]["max_priority"].as_str(), Some("high"));
        assert_eq!(vm[1]["max_priority"].as_str(), Some("medium"));
        // Only the keys the mediator knows (it refuses unknown ones).
        let keys: Vec<&String> = vm[1].as_table().unwrap().keys().collect();
        assert_eq!(keys, ["endpoint", "max_priority", "name", "pool", "priority"]);
    }

    fn job(seq: u64, vm: &str, priority: Priority, submitted: u64, started: Option<u64>, finished: u64) -> Job {
        Job {
            seq,
            vm: vm.into(),
            pool: "A".into(),
            priority,
            outcome: if started.is_some() { "done" } else { "cancelled" }.into(),
            submitted_us: submitted,
            started_us: started,
            finished_us: finished,
            queued_us: started.unwrap_or(finished) - submitted,
            cycles: started.map(|_| 100),
            dma_wait: Some(0),
            error: Some(0),
        }
    }

    #[test]
    fn order_and_overtakes() {
        use Priority::*;
        // 0 runs; 1 and 2 (low) queue behind it, 3 (low) too until it is cancelled at 250; 4 (high)
        // arrives at 150 and runs next, at 200.
        let jobs = vec![
            job(4, "h", High, 150, Some(200), 300),
            job(0, "a", Low, 0, Some(10), 200),
            job(2, "c", Low, 30, Some(400), 500),
            job(3, "d", Low, 40, None, 250),
            job(1, "b", Low, 20, Some(300), 400),
        ];
        let o = run_order(&jobs);
        let seqs: Vec<u64> = o.iter().map(|r| r.job.seq).collect();
        assert_eq!(seqs, [0, 4, 1, 2, 3]);
        let overtook: Vec<usize> = o.iter().map(|r| r.overtook).collect();
        // Job 4 overtook 1, 2 and 3 (3 left the queue at 250, after 4's start).
        assert_eq!(overtook, [0, 3, 0, 0, 0]);
        // Had 3 been cancelled before 200, it would not count.
        let mut early = jobs.clone();
        early[3].finished_us = 190;
        assert_eq!(run_order(&early)[1].overtook, 2);
        let rows = vm_row("h", &[], &jobs);
        assert_eq!((rows.jobs, rows.jobs_done, rows.queued_us_total, rows.queued_us_max), (1, 1, 50, 50));
    }

    #[test]
    fn job_log_lines() {
        let text =
            "{\"seq\":0,\"vm\":\"vm0\",\"pool\":\"A\",\"priority\":\"low\",\"outcome\":\"done\",\"submitted_us\":5,\
\"started_us\":6,\"finished_us\":9,\"queued_us\":1,\"cycles\":17475,\"dma_wait\":3,\"error\":0}\n\
{\"seq\":1,\"vm\":\"vm1\",\"pool\":\"B\",\"priority\":\"high\",\"outcome\":\"cancelled\",\"submitted_us\":7,\
\"started_us\":null,\"finished_us\":8,\"queued_us\":1,\"cycles\":0,\"dma_wait\":0,\"error\":0}\n\nnot json\n";
        let (jobs, bad) = parse_job_log(text);
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].cycles, Some(17475));
        assert_eq!(jobs[1].started_us, None);
        assert_eq!(jobs[1].priority, Priority::High);
        assert_eq!(bad.len(), 1, "{bad:?}");
    }

    #[test]
    fn table_reads_the_guest_records() {
        use cosim_guest_results::Gemm;
        let g = |ok, check, cycles| {
            Record::Gemm(Gemm {
                ok,
                check: Some(check),
                rtl_cycles: cycles,
                ..Gemm::new("/dev/accel0".into(), (4, 4, 4), 1)
            })
        };
        let recs = [g(true, Check::Pass, Some(100)), g(false, Check::Fail, Some(50)), g(true, Check::Skipped, Some(7))];
        let jobs =
            vec![job(0, "vm0", Priority::Low, 0, Some(1000), 2000), job(1, "vm0", Priority::Low, 0, Some(2000), 3000)];
        let row = vm_row("vm0", &recs, &jobs);
        assert_eq!((row.gemms, row.checked, row.checked_ok, row.rtl_cycles), (3, 2, 1, 157));
        assert_eq!((row.queued_us_total, row.queued_us_max), (3000, 2000));
        let vms = [vm("name=vm0,max=high").unwrap()];
        let rtl = json!({"busy_cycles": 90, "idle_cycles": 10, "busy_fraction": 0.9});
        let t = tables(&vms, &[row], &["FAIL".into()], &jobs, &rtl);
        assert!(t.contains("low(high)"), "{t}");
        assert!(t.contains("1/2"), "{t}");
        assert!(t.contains("RTL busy 90.0%"), "{t}");
        assert!(t.lines().any(|l| l.trim_start().starts_with("2     1 vm0")), "{t}");
    }

    #[test]
    fn launcher_results() {
        assert_eq!(launcher_result(Some(0), &Value::Null, false), "pass");
        assert_eq!(launcher_result(Some(1), &Value::Null, false), "FAIL");
        assert_eq!(launcher_result(Some(4), &json!({"failed_stage": "boot"}), false), "ERR:boot");
        assert_eq!(launcher_result(Some(130), &Value::Null, true), "stopped");
        assert_eq!(launcher_result(None, &Value::Null, false), "exit ?");
    }
}
