//! End-to-end test of `cosim-dual`: the accelerator VM (our QEMU + GEMM RTL in Verilator) and the
//! baseline VM (Debian's stock QEMU, CPU only) at the same time, sharing a stream netdev on
//! loopback. Asserts the results themselves (identical C hashes, every frame sent, answered and
//! counted by the RTL on both ends), read both from cosim-dual's JSON and from the two launchers'
//! own results.json and the simulation's log.
//!
//! Needs `make qemu sim-gemm guest` and /usr/bin/qemu-system-x86_64 (`make deps`); the
//! `test-e2e` make target builds them first. A missing artifact fails with a message naming it.
//! Every test is `#[ignore]`d for a plain `cargo test --workspace`; `make test-e2e` runs them
//! (`--include-ignored`).

mod common;

use std::time::{Duration, Instant};

use common::{device_info, gemms, pid_alive, read_json, results, run_json, JsonRun, DUAL, LAUNCH};
use cosim_guest_results::{Check, Gemm, Net, Record, WaitNic};
use serde_json::Value;

/// Wall-clock bound of one cosim-dual run (its own --timeout is tighter).
const RUN_LIMIT: Duration = Duration::from_secs(600);
/// After SIGTERM, cosim-dual stops both launchers (and they their QEMUs and simulation).
const STOP_GRACE: Duration = Duration::from_secs(40);

fn dual(name: &str, args: &[&str]) -> JsonRun {
    run_json(DUAL, &format!("dual-{name}"), args, &["--launch", LAUNCH], RUN_LIMIT, STOP_GRACE)
}

fn gemm(launcher: &Value, m: u32, n: u32, k: u32, seed: u64) -> Gemm {
    gemms(launcher)
        .into_iter()
        .find(|r| (r.m, r.n, r.k, r.seed) == (m, n, k, seed))
        .unwrap_or_else(|| panic!("no gemm {m}x{n}x{k} seed {seed} in {launcher}"))
}

fn net_result(launcher: &Value) -> Net {
    results(launcher).iter().find_map(Record::as_net).cloned().unwrap_or_else(|| panic!("no net result in {launcher}"))
}

fn wait_nic(launcher: &Value) -> WaitNic {
    results(launcher)
        .iter()
        .find_map(Record::as_wait_nic)
        .cloned()
        .unwrap_or_else(|| panic!("no wait-nic result in {launcher}"))
}

#[test]
#[ignore = "needs `make qemu sim-gemm guest`: run by `make test-e2e` (or `make test`)"]
fn dual_vm_gemms_agree_and_frames_are_answered() {
    const FRAMES: u32 = 12;
    let sizes = [(16u32, 16u32, 16u32), (17, 33, 9), (64, 64, 64), (100, 40, 72)];
    let sizes_arg = sizes.iter().map(|(m, n, k)| format!("{m}x{n}x{k}")).collect::<Vec<_>>().join(",");
    let seed0 = 11u64;
    let out = dual(
        "ok",
        &["--sizes", &sizes_arg, "--seed", &seed0.to_string(), "--frames", &FRAMES.to_string(), "--timeout", "500"],
    );
    let j = &out.json;
    assert_eq!(out.code, 0, "cosim-dual failed: {j:#}");
    assert_eq!(j["ok"], true, "{j:#}");

    // cosim-dual's own comparison.
    let rows = j["sizes"].as_array().expect("sizes");
    assert_eq!(rows.len(), sizes.len());
    for r in rows {
        assert_eq!(r["accel"]["check"], "pass", "{r}");
        assert!(r["accel"]["rtl_cycles"].as_u64().unwrap() >= r["accel"]["ideal_cycles"].as_u64().unwrap(), "{r}");
        assert!(r["baseline"]["cpu_us"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["same_c"], true, "{r}");
        assert_eq!(r["accel"]["c_hash"], r["baseline"]["c_hash"], "{r}");
    }
    let net = &j["net"];
    for key in ["sent", "answered", "rtl_nic_rx_frames", "rtl_nic_tx_frames", "sim_frames_rx", "sim_frames_tx"] {
        assert_eq!(net[key].as_u64(), Some(u64::from(FRAMES)), "{key} in {net}");
    }
    assert_eq!(net["lost"], 0, "{net}");

    // Independently, from the two launchers' own results and the simulation's log.
    let accel = read_json(&out.log_dir.join("accel/results.json"));
    let base = read_json(&out.log_dir.join("baseline/results.json"));
    assert_eq!(accel["ok"], true, "{accel:#}");
    assert_eq!(base["ok"], true, "{base:#}");
    assert_eq!(accel["guest"]["boot"]["devices"], 1);
    assert_eq!(base["guest"]["boot"]["devices"], 0);
    for (i, &(m, n, k)) in sizes.iter().enumerate() {
        let seed = seed0 + i as u64;
        let a = gemm(&accel, m, n, k, seed);
        let b = gemm(&base, m, n, k, seed);
        assert_eq!(a.check, Some(Check::Pass), "{a:?}");
        assert_eq!(a.device, "/dev/accel0", "{a:?}");
        assert_eq!(b.device, "cpu", "{b:?}");
        assert!(a.c_hash.is_some(), "accel c_hash: {a:?}");
        assert_eq!(a.c_hash, b.c_hash, "C differs between the VMs for {m}x{n}x{k}");
    }
    let sent = net_result(&base);
    assert_eq!((sent.sent, sent.received), (FRAMES, FRAMES), "{sent:?}");
    let info = device_info(&accel, "/dev/accel0");
    assert_eq!((info.nic_rx_frames, info.nic_tx_frames), (FRAMES, FRAMES), "{info:?}");
    assert!(wait_nic(&accel).ok);
    let sim_log = std::fs::read_to_string(out.log_dir.join("accel/sim0.log")).unwrap();
    let stats = sim_log.lines().rev().find(|l| l.contains("cosim-sim: stats ")).expect("sim stats line");
    assert!(stats.contains(&format!(" frames_tx={FRAMES} ")), "{stats}");
    assert!(stats.contains(&format!(" frames_rx={FRAMES} ")), "{stats}");

    // The baseline really ran on the stock QEMU without an accelerator, the accelerator VM on
    // ours with its NIC channel on the shared stream netdev.
    let base_cmd = std::fs::read_to_string(out.log_dir.join("baseline/qemu-cmdline.txt")).unwrap();
    assert!(base_cmd.starts_with("/usr/bin/qemu-system-x86_64 "), "{base_cmd}");
    assert!(!base_cmd.contains("accelerator-pcie") && base_cmd.contains("server=off"), "{base_cmd}");
    let accel_cmd = std::fs::read_to_string(out.log_dir.join("accel/qemu-cmdline.txt")).unwrap();
    assert!(accel_cmd.contains("netdev=accnet0") && accel_cmd.contains("server=on"), "{accel_cmd}");
    let port = j["port"].as_u64().unwrap();
    assert!(accel_cmd.contains(&format!("addr.port={port},")) && base_cmd.contains(&format!("addr.port={port},")));
}

#[test]
#[ignore = "needs `make qemu sim-gemm guest`: run by `make test-e2e` (or `make test`)"]
fn overall_timeout_stops_everything() {
    // Both guests end their workload with a long sleep, so both VMs are still running when the
    // 25 s overall limit expires: the run must end with exit 4, a message naming the overall
    // timeout, and none of the processes the launchers started left running.
    let t0 = Instant::now();
    let out = dual(
        "timeout",
        &[
            "--sizes",
            "8x8x8",
            "--frames",
            "2",
            "--timeout",
            "25",
            "--accel-arg=--run",
            "--accel-arg",
            "sh:sleep 300",
            "--baseline-arg=--run",
            "--baseline-arg",
            "sh:sleep 300",
        ],
    );
    let j = &out.json;
    assert_eq!(out.code, 4, "{j:#}");
    assert_eq!(j["ok"], false);
    let err = j["error"].as_str().unwrap_or_default();
    assert!(err.contains("overall timeout of 25 s"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(90), "stopping took {:?}", t0.elapsed());
    for vm in ["accel", "baseline"] {
        assert_eq!(j["vms"][vm]["stopped_by_cosim_dual"], true, "{j:#}");
        let pids = read_json(&out.log_dir.join(vm).join("pids.json"));
        for (name, pid) in pids.as_object().unwrap() {
            let pid = pid.as_u64().unwrap();
            assert!(!pid_alive(pid), "{vm} VM's {name} (pid {pid}) still running");
        }
    }
}
