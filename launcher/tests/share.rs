//! End-to-end test of `cosim-share`: four guests, each in its own QEMU with one `accelerator-pcie`,
//! share one GEMM simulation through `cosim-mediator`. Three low-priority VMs submit GEMMs back to
//! back; a high-priority VM submits three short bursts while they run. Asserted from the guests'
//! own results and, independently of cosim-share's tables, from the mediator's job log: every GEMM
//! exact, each VM's job count and RTL cycles in its own records, strict priority with FIFO within a
//! priority at every job start, and a high-priority job overtaking queued low-priority ones.
//!
//! The tests without `#[ignore]` need no artefact: they check the stages' failures and messages
//! with stand-in programs. The end-to-end test needs `make share-artifacts` (QEMU, the GEMM
//! simulation, the guest, the launchers and the mediator); `make test-share` runs it.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{assert_exact, fresh_dir, gemms, read_json, run_bounded, run_json, JsonRun, LAUNCH, SHARE};
use serde::Deserialize;

/// Wall-clock bound of the end-to-end run (its own --timeout is tighter).
const RUN_LIMIT: Duration = Duration::from_secs(420);
/// After SIGTERM, cosim-share stops the launchers (each its QEMU), the mediator and the simulation.
const STOP_GRACE: Duration = Duration::from_secs(60);

/// One line of the mediator's job log (docs/mediator.md, "Job log").
#[derive(Debug, Clone, Deserialize)]
struct Job {
    seq: u64,
    vm: String,
    pool: String,
    priority: String,
    outcome: String,
    submitted_us: u64,
    started_us: Option<u64>,
    finished_us: u64,
    queued_us: u64,
    cycles: u64,
    error: u64,
}

fn rank(priority: &str) -> u8 {
    match priority {
        "low" => 0,
        "medium" => 1,
        "high" => 2,
        p => panic!("unknown priority {p:?} in the job log"),
    }
}

fn job_log(dir: &Path) -> Vec<Job> {
    let p = dir.join("jobs.jsonl");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("job log line is not a job ({e}): {l}")))
        .collect()
}

/// Was `o` waiting in the queue at time `t` (submitted before it, not yet started or cancelled)?
fn queued_at(o: &Job, t: u64) -> bool {
    o.submitted_us < t && o.started_us.map_or(o.finished_us > t, |s| s > t)
}

/// The scheduling rules, checked at every job start: no job queued at that moment had a higher
/// priority; none of the same priority was submitted earlier.
/// Returns the (high job, low job) pairs where a high-priority job started while a low-priority
/// job submitted before it was still queued.
fn check_schedule(jobs: &[Job]) -> Vec<(u64, u64)> {
    let mut started: Vec<&Job> = jobs.iter().filter(|j| j.started_us.is_some()).collect();
    started.sort_by_key(|j| j.started_us);
    // The mediator starts the next job as soon as the RTL signals the end of the previous one and
    // logs that one's finish after (so finish and next start overlap by a moment); starts are
    // one at a time.
    assert!(started.windows(2).all(|w| w[0].started_us < w[1].started_us), "two jobs started at the same µs");
    let mut overtakes = Vec::new();
    for j in &started {
        let t = j.started_us.unwrap();
        for o in jobs.iter().filter(|o| o.seq != j.seq && queued_at(o, t)) {
            assert!(
                rank(&o.priority) <= rank(&j.priority),
                "job {} ({}) started at {t} us while job {} of higher priority ({}) was queued: {j:?} / {o:?}",
                j.seq,
                j.priority,
                o.seq,
                o.priority
            );
            if o.priority == j.priority {
                assert!(
                    o.seq > j.seq,
                    "FIFO broken: job {} ({}) started at {t} us before job {} of the same priority, submitted \
                     earlier and still queued: {j:?} / {o:?}",
                    j.seq,
                    j.priority,
                    o.seq
                );
            }
            if j.priority == "high" && o.priority == "low" && o.seq < j.seq {
                overtakes.push((j.seq, o.seq));
            }
        }
    }
    overtakes
}

/// A low-priority VM: back-to-back 128^3 GEMMs (three such VMs keep the RTL busy for about 8 s).
const LOW_REPEAT: usize = 64;
/// The high-priority VM: three bursts of two GEMMs, 1, 3 and 5 s after its boot, so that the
/// bursts meet the low VMs' queue even when the boots are seconds apart.
const HIGH_BURSTS: usize = 3;
const HIGH_REPEAT: usize = 2;

fn low_vm(name: &str, pool: &str, seed: u64) -> String {
    format!("name={name},pool={pool},priority=low,run=gemm --m 128 --n 128 --k 128 --seed {seed} --check --repeat {LOW_REPEAT}")
}

fn high_vm(name: &str, pool: &str) -> String {
    let bursts: Vec<String> = (0..HIGH_BURSTS)
        .map(|i| {
            let pause = if i == 0 { 1 } else { 2 };
            format!("sh:sleep {pause};gemm --m 32 --n 32 --k 32 --seed {} --check --repeat {HIGH_REPEAT}", 10 + i)
        })
        .collect();
    format!("name={name},pool={pool},priority=high,run={}", bursts.join(";"))
}

#[test]
#[ignore = "needs make share-artifacts (QEMU, sim-gemm, guest, launcher, cosim-mediator): run by make test-share"]
fn four_guests_share_one_simulation_and_high_priority_overtakes() {
    let mediator = Path::new(LAUNCH).with_file_name("cosim-mediator");
    assert!(mediator.is_file(), "{} is missing: cargo build --release -p cosim-mediator", mediator.display());
    let vms = [low_vm("lo0", "A", 1), low_vm("lo1", "A", 2), low_vm("lo2", "B", 3), high_vm("hi", "B")];
    let mut args = Vec::new();
    for v in &vms {
        args.push("--vm");
        args.push(v.as_str());
    }
    args.extend(["--timeout", "360"]);
    let mediator_s = mediator.display().to_string();
    let out =
        run_json(SHARE, "share-e2e", &args, &["--launch", LAUNCH, "--mediator", &mediator_s], RUN_LIMIT, STOP_GRACE);
    let j = &out.json;
    assert_eq!(out.code, 0, "cosim-share failed: {j:#}");
    assert_eq!(j["ok"], true, "{j:#}");

    // The guests: every GEMM exact; each VM ran its own jobs.
    let want = [("lo0", LOW_REPEAT), ("lo1", LOW_REPEAT), ("lo2", LOW_REPEAT), ("hi", HIGH_BURSTS * HIGH_REPEAT)];
    let mut guest_cycles: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (name, n) in want {
        let launcher = read_json(&out.log_dir.join(name).join("results.json"));
        assert_eq!(launcher["exit_code"], 0, "VM {name}: {launcher:#}");
        let g = gemms(&launcher);
        assert_eq!(g.len(), n, "VM {name}: {n} GEMMs expected: {g:?}");
        for r in &g {
            assert_exact(r);
        }
        let mut c: Vec<u64> = g.iter().map(|r| r.rtl_cycles.unwrap()).collect();
        c.sort_unstable();
        guest_cycles.insert(name, c);
        let row = j["vms"].as_array().unwrap().iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("{j:#}"));
        assert_eq!(row["checked_ok"], n, "{row}");
        assert_eq!(row["jobs"], n, "{row}");
    }

    // The mediator's job log, read here, not through cosim-share.
    let jobs = job_log(&out.log_dir);
    assert_eq!(jobs.len(), want.iter().map(|w| w.1).sum::<usize>(), "{jobs:#?}");
    let seqs: HashSet<u64> = jobs.iter().map(|j| j.seq).collect();
    let first = *seqs.iter().min().unwrap();
    assert_eq!(seqs, (first..first + jobs.len() as u64).collect(), "seq does not number the jobs once each");
    let mut by_seq: Vec<&Job> = jobs.iter().collect();
    by_seq.sort_by_key(|j| j.seq);
    assert!(by_seq.windows(2).all(|w| w[0].submitted_us <= w[1].submitted_us), "seq is not the submission order");
    for job in &jobs {
        assert_eq!((job.outcome.as_str(), job.error), ("done", 0), "{job:?}");
        let start = job.started_us.unwrap_or_else(|| panic!("a done job without a start: {job:?}"));
        assert!(job.submitted_us <= start && start <= job.finished_us, "{job:?}");
        // queued_us comes from the mediator's clock before rounding to µs.
        assert!(job.queued_us.abs_diff(start - job.submitted_us) <= 1, "{job:?}");
        let (pool, prio) = match job.vm.as_str() {
            "lo0" | "lo1" => ("A", "low"),
            "lo2" => ("B", "low"),
            "hi" => ("B", "high"),
            other => panic!("job of an unknown VM {other:?}: {job:?}"),
        };
        assert_eq!((job.pool.as_str(), job.priority.as_str()), (pool, prio), "{job:?}");
    }
    // Each VM's results came back to that VM: the cycle counts the guest read are its own jobs'.
    for (name, cycles) in &guest_cycles {
        let mut log: Vec<u64> = jobs.iter().filter(|j| j.vm == *name).map(|j| j.cycles).collect();
        log.sort_unstable();
        assert_eq!(&log, cycles, "VM {name}: RTL cycles in the job log and in the guest's records differ");
    }

    let overtakes = check_schedule(&jobs);
    assert!(
        !overtakes.is_empty(),
        "no high-priority job started while an earlier low-priority job was queued; the job order:\n{}",
        std::fs::read_to_string(out.log_dir.join("jobs.jsonl")).unwrap_or_default()
    );
    eprintln!("high-priority jobs overtook queued low-priority ones (high seq, low seq): {overtakes:?}");

    // The mediator's statistics.
    let stats = read_json(&out.log_dir.join("mediator-stats.json"));
    for (name, n) in want {
        let s =
            stats["vms"].as_array().unwrap().iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("{stats:#}"));
        assert_eq!((s["jobs"].as_u64(), s["done"].as_u64()), (Some(n as u64), Some(n as u64)), "{s}");
        assert_eq!((s["failed"].as_u64(), s["refused"].as_u64()), (Some(0), Some(0)), "{s}");
    }
    let busy = stats["rtl"]["busy_fraction"].as_f64().unwrap_or_else(|| panic!("{stats:#}"));
    assert!(busy > 0.0 && busy <= 1.0, "{stats:#}");
}

/// An executable shell script in `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Runs cosim-share with stand-ins for the simulation and the mediator (no artefact needed).
fn with_stand_ins(name: &str, sim: &Path, mediator: &Path, extra: &[&str]) -> JsonRun {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let (sim, mediator, model) =
        (sim.display().to_string(), mediator.display().to_string(), model.display().to_string());
    let mut args =
        vec!["--vms", "2", "--sim", &sim, "--mediator", &mediator, "--job-model", &model, "--launch", LAUNCH];
    args.extend(extra);
    run_json(SHARE, name, &args, &[], Duration::from_secs(60), Duration::from_secs(20))
}

#[test]
fn a_simulation_that_ends_fails_the_sim_start_stage() {
    let dir = fresh_dir("share-stand-ins-1");
    let sim = script(&dir, "sim", "echo 'cosim-sim: cannot bind'; exit 7");
    let out = with_stand_ins("share-sim-ends", &sim, Path::new("/bin/false"), &[]);
    assert_eq!(out.code, 4, "{:#}", out.json);
    assert_eq!(out.json["failed_stage"], "sim start", "{:#}", out.json);
    let e = out.json["error"].as_str().unwrap();
    assert!(e.contains("the simulation exited") && e.contains("cannot bind"), "{e}");
}

#[test]
fn a_silent_simulation_times_out_in_the_sim_start_stage() {
    let dir = fresh_dir("share-stand-ins-2");
    let sim = script(&dir, "sim", "exec sleep 30");
    let out = with_stand_ins("share-sim-silent", &sim, Path::new("/bin/false"), &["--timeout-sim-start", "1"]);
    assert_eq!(out.code, 4, "{:#}", out.json);
    assert_eq!(out.json["failed_stage"], "sim start", "{:#}", out.json);
    assert!(out.json["error"].as_str().unwrap().contains("stage sim start timed out after 1 s"), "{:#}", out.json);
}

#[test]
fn a_mediator_that_ends_fails_the_mediator_start_stage_and_gets_its_config() {
    let dir = fresh_dir("share-stand-ins-3");
    let pid_file = dir.join("sim.pid");
    let body = format!("echo $$ > {}; echo \"cosim-sim: ready endpoint=$2\" >&2; exec sleep 30", pid_file.display());
    let sim = script(&dir, "sim", &body);
    // The stand-in mediator shows the configuration it was given, then fails.
    let mediator = script(&dir, "mediator", "cat \"$2\"; echo 'cosim-mediator: error: no job model'; exit 1");
    let out = with_stand_ins("share-mediator-ends", &sim, &mediator, &[]);
    assert_eq!(out.code, 4, "{:#}", out.json);
    assert_eq!(out.json["failed_stage"], "mediator start", "{:#}", out.json);
    let e = out.json["error"].as_str().unwrap();
    assert!(e.contains("the mediator exited") && e.contains("no job model"), "{e}");
    // The configuration cosim-share wrote: the simulation's endpoint and one [[vm]] per VM.
    let cfg = std::fs::read_to_string(out.log_dir.join("mediator.toml")).unwrap();
    assert_eq!(cfg.matches("[[vm]]").count(), 2, "{cfg}");
    assert!(cfg.contains("simulation = \"ipc://") && cfg.contains("/sim\""), "{cfg}");
    assert!(cfg.contains("name = \"vm0\"") && cfg.contains("pool = \"B\""), "{cfg}");
    let sim_log = std::fs::read_to_string(out.log_dir.join("sim.log")).unwrap();
    assert!(sim_log.contains("cosim-sim: ready endpoint=ipc://"), "{sim_log}");
    // The simulation was stopped, not left behind.
    let pid: u64 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert!(!common::pid_alive(pid), "the stand-in simulation (pid {pid}) still runs");
}

#[test]
fn bad_vm_specs_are_usage_errors() {
    for spec in ["priority=urgent", "max=low,priority=high", "colour=red", "run="] {
        let mut cmd = Command::new(SHARE);
        cmd.args(["--vm", spec]);
        let out =
            run_bounded(&format!("cosim-share --vm {spec:?}"), cmd, Duration::from_secs(20), Duration::from_secs(5));
        assert_eq!(out.code(), Some(2), "--vm {spec:?}: {}", out.stderr);
        assert!(out.stderr.contains("--vm"), "{}", out.stderr);
    }
}
