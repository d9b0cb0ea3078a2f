//! End-to-end tier, two hosts: the GEMM simulation on one "machine", QEMU with the guest on
//! another, over tcp with a key (docs/user-guide.md, "Two hosts"). The machines are two network
//! namespaces of this test joined by a veth pair (`netns/mod.rs`); the simulation runs in A,
//! `cosim-launch --connect` in B. While a long job runs, the test takes the link down for about
//! 3 s: that job must fail cleanly (the driver reports an error, no launcher stage times out, the
//! guest stays up), QEMU must report the session lost and up again, and the GEMMs before and
//! after the cut must be bit-exact.
//!
//! Needs root, iproute2 and `make qemu sim-gemm guest` (the `test-e2e` make target builds them):
//! that test is `#[ignore]`d for a plain `cargo test --workspace`; `make test-e2e` runs it
//! (`--include-ignored`). The argument checks of `--connect` need nothing and always run.

mod common;
mod netns;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{assert_exact, build_dir, gemm_item, gemms, run_bounded, LAUNCH};
use cosim_guest_results::Record;
use netns::{NetnsPair, A, B};
use serde_json::Value;

/// Wall-clock bound of the launcher run (its own stage timeouts are tighter).
const RUN_LIMIT: Duration = Duration::from_secs(600);
/// How long the link stays down.
const CUT: Duration = Duration::from_secs(3);
/// The guest prints this (as a COSIM-OUTPUT line) right before the long job starts.
const LONG_JOB_MARKER: &str = "two-hosts-long-job-next";
/// Base port: the simulation binds it in A, QEMU binds it + 1 in B.
const PORT: u16 = 7000;

/// The JSON object of every console line with `marker` (the guest's marker lines).
fn marker_lines(console: &str, marker: &str) -> Vec<Value> {
    console
        .lines()
        .filter_map(|l| l.strip_prefix(marker)?.trim().parse::<Value>().ok())
        .collect()
}

#[test]
#[ignore = "needs `make qemu sim-gemm guest`, root and iproute2: run by `make test-e2e` (or `make test`)"]
fn gemms_across_a_link_that_drops_for_three_seconds() {
    let dir = common::fresh_dir("two-hosts");
    let log_dir = dir.join("launch");
    // The key lives in a private directory (mode 0700) that is removed on drop, panic or not.
    let key_dir = cosim_transport::PrivateDir::new("two-hosts").expect("private directory");
    let key = key_dir.path().join("link.key");
    cosim_transport::generate_key_file(&key).expect("key file");
    let sim = build_dir().join("sim/gemm_top/sim");

    let mut net = NetnsPair::create("2h");
    let (a, b) = (net.addr[A].clone(), net.addr[B].clone());
    let sim_ep = format!("tcp://{a}:{PORT}?peer={b}");
    let qemu_ep = format!("tcp://{b}:{PORT}?peer={a}");
    net.start_sim(A, &sim, &sim_ep, &[], &key, &dir.join("sim.log"));

    // Verified GEMMs, the marker, a long job (67 M RTL cycles: many seconds even on a fast
    // machine, so the cut lands mid-job), a bounded wait until the device answers again (the
    // job fails about 1.5 s into the cut, the link is back 3 s into it), verified GEMMs.
    let before: [(u64, u64, u64, u64); 3] = [(16, 16, 16, 41), (17, 33, 9, 42), (64, 64, 64, 43)];
    let after: [(u64, u64, u64, u64); 3] = [(64, 64, 64, 43), (33, 17, 40, 44), (96, 80, 72, 45)];
    let mut items: Vec<String> = before.iter().map(|&(m, n, k, s)| gemm_item(m, n, k, s)).collect();
    items.push(format!("sh:echo {LONG_JOB_MARKER}"));
    let long_item = items.len();
    items.push("gemm --m 1024 --n 1024 --k 1024 --seed 46 --no-cpu".into());
    // No ';' or '"' can reach the guest's command line: a loop in awk, its commands as arguments.
    // Up to 60 s of 0.2 s naps until JOBS_DONE reads something other than all ones.
    items.push(
        "sh:awk 'BEGIN { while (system(ARGV[1]) != 0) { if (n++ >= 300) { exit 1 } system(ARGV[2]) } }' \
         'grep -qvx 4294967295 /sys/class/cosim_accel/accel0/jobs_done_reg' 'sleep 0.2'"
            .into(),
    );
    let wait_item = items.len() - 1;
    items.extend(after.iter().map(|&(m, n, k, s)| gemm_item(m, n, k, s)));

    let mut cmd = net.command(B, LAUNCH);
    cmd.args(["--connect", &qemu_ep, "--json", "--log-dir"]).arg(&log_dir);
    for it in &items {
        cmd.args(["--run", it]);
    }
    cmd.env(cosim_transport::KEY_FILE_ENV, &key);
    let stdout_path = dir.join("launch.json");
    let stderr_path = dir.join("launch.err");
    cmd.stdout(std::fs::File::create(&stdout_path).unwrap()).stderr(std::fs::File::create(&stderr_path).unwrap());
    let launcher = net.adopt("cosim-launch", cmd.spawn().expect("start cosim-launch in namespace B"));

    // Follow the guest console; cut the link about 1 s after the long job starts, for CUT.
    let console_path = log_dir.join("console.log");
    let t0 = Instant::now();
    let mut cut_at: Option<Instant> = None;
    let mut restored: Option<Instant> = None;
    let mut back_after: Option<Duration> = None;
    let qemu_log = log_dir.join("qemu-stderr.log");
    let mut long_done_before_cut = false;
    let status = loop {
        if let Some(st) = net.try_wait(launcher) {
            break st;
        }
        assert!(
            t0.elapsed() < RUN_LIMIT,
            "cosim-launch did not finish within {RUN_LIMIT:?}; logs in {}",
            dir.display()
        );
        let console = std::fs::read_to_string(&console_path).unwrap_or_default();
        match cut_at {
            None => {
                let started = marker_lines(&console, "COSIM-OUTPUT")
                    .iter()
                    .any(|o| o["line"] == LONG_JOB_MARKER && o["item"] == long_item - 1);
                if started {
                    std::thread::sleep(Duration::from_secs(1));
                    let console = std::fs::read_to_string(&console_path).unwrap_or_default();
                    long_done_before_cut = console
                        .lines()
                        .filter_map(|l| Record::from_line(l.strip_prefix("COSIM-RESULT")?).ok())
                        .any(|r| r.as_gemm().is_some_and(|g| g.m == 1024));
                    eprintln!("two_hosts: link down ({} s into the run)", t0.elapsed().as_secs());
                    net.set_link(B, false);
                    cut_at = Some(Instant::now());
                }
            }
            Some(t) if restored.is_none() && t.elapsed() >= CUT => {
                net.set_link(B, true);
                restored = Some(Instant::now());
                eprintln!("two_hosts: link up again after {:.1} s", t.elapsed().as_secs_f64());
            }
            Some(_) => {}
        }
        if let (Some(r), None) = (restored, back_after) {
            if std::fs::read_to_string(&qemu_log).unwrap_or_default().contains("up again") {
                back_after = Some(r.elapsed());
                eprintln!("two_hosts: QEMU's session up again {:.2} s after the link came back", r.elapsed().as_secs_f64());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if restored.is_none() && cut_at.is_some() {
        net.set_link(B, true);
    }
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let run: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("launcher printed no JSON ({e}); status {status}; stderr:\n{stderr}"));
    let ctx = format!("logs in {}\n{run:#}", dir.display());
    assert!(cut_at.is_some(), "the guest never announced the long job; {ctx}");
    assert!(!long_done_before_cut, "the long job ended before the link was cut; {ctx}");
    assert!(restored.is_some(), "the run ended while the link was still down; {ctx}");

    // The launcher used the running simulation and started none.
    assert_eq!(run["connect"][0], qemu_ep.as_str(), "{ctx}");
    assert!(run["stage_seconds"].get("sim_start").is_none(), "no sim start stage with --connect: {ctx}");
    // The workload ran to its end, and only the job during the cut failed.
    assert_eq!(status.code(), Some(1), "exit 1: a workload item failed; {ctx}");
    assert!(run["failed_stage"].is_null(), "no stage may time out: {ctx}");
    assert_eq!(run["guest"]["done"]["items"], items.len(), "{ctx}");
    let failures = run["guest"]["failures"].as_array().unwrap();
    let failed: Vec<u64> = failures.iter().filter_map(|f| f["item"].as_u64()).collect();
    assert_eq!(failed, [long_item as u64], "only the long job may fail (the wait, item {wait_item}, must not); {ctx}");

    let gemms = gemms(&run);
    assert_eq!(gemms.len(), before.len() + 1 + after.len(), "{ctx}");
    for (r, &(m, n, k, _)) in gemms.iter().zip(before.iter().chain([(1024, 1024, 1024, 0)].iter()).chain(after.iter())) {
        assert_eq!((u64::from(r.m), u64::from(r.n), u64::from(r.k)), (m, n, k), "{ctx}");
    }
    for r in gemms[..before.len()].iter().chain(&gemms[before.len() + 1..]) {
        assert_exact(r);
    }
    // The job during the cut: the driver's error (EIO, "device stopped answering").
    let long = &gemms[before.len()];
    assert_eq!((long.ok, long.errno), (false, Some(Some(5))), "EIO expected: {long:?}");
    let klog = run["guest"]["klog"].to_string();
    assert!(klog.contains("device stopped answering"), "the driver must log the lost device: {ctx}");
    // The same GEMM before and after the cut gives the same C.
    assert_eq!(gemms[2].c_hash, gemms[before.len() + 1].c_hash, "{ctx}");

    // QEMU saw the session go and come back.
    let qemu = std::fs::read_to_string(log_dir.join("qemu-stderr.log")).expect("qemu-stderr.log");
    assert!(qemu.contains("the device is lost"), "QEMU must report the lost session:\n{qemu}");
    assert!(qemu.contains("up again"), "QEMU must report the session up again:\n{qemu}");
    let sim_log = std::fs::read_to_string(dir.join("sim.log")).unwrap_or_default();
    assert!(sim_log.contains("host lost"), "the simulation must notice the host going:\n{sim_log}");
}

/// `--connect` refuses a link beyond loopback without a key, and the options that start
/// simulations. No guest is booted.
#[test]
fn connect_needs_a_key_beyond_loopback_and_excludes_sim_options() {
    let dir = common::fresh_dir("two-hosts-args");
    let fake = dir.join("fake");
    std::fs::write(&fake, b"x").unwrap();
    let run = |args: &[&str]| {
        let mut cmd = Command::new(LAUNCH);
        cmd.args(["--qemu", fake.to_str().unwrap(), "--kernel", fake.to_str().unwrap()])
            .args(["--initrd", fake.to_str().unwrap(), "--log-dir", dir.join("logs").to_str().unwrap()])
            .args(args)
            .env_remove(cosim_transport::KEY_FILE_ENV);
        let out = run_bounded(&format!("cosim-launch {args:?}"), cmd, Duration::from_secs(30), Duration::from_secs(5));
        (out.code(), out.stdout, out.stderr)
    };
    let (code, stdout, stderr) = run(&["--connect", "tcp://10.0.0.1:7000?peer=10.0.0.2", "--json"]);
    assert_eq!(code, Some(3), "setup error without a key: {stdout} {stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).expect("JSON");
    assert!(v["error"].as_str().unwrap_or("").contains("COSIM_KEY_FILE"), "{v}");
    for bad in [&["--devices", "2"][..], &["--sim-arg=--stats"], &["--transport", "tcp"], &["--kill-sim-after", "1"]] {
        let mut args = vec!["--connect", "tcp://127.0.0.1:7000"];
        args.extend_from_slice(bad);
        let (code, _, stderr) = run(&args);
        assert_eq!(code, Some(2), "--connect with {bad:?} is a usage error: {stderr}");
        assert!(stderr.contains("cannot be used with"), "{stderr}");
    }
    let (code, _, stderr) = run(&["--connect", "udp://x"]);
    assert_eq!(code, Some(2), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
