//! End-to-end tier: a real Linux guest in our QEMU with `-device accelerator-pcie`, its driver
//! and tool, against the GEMM RTL simulated by Verilator, all started by `cosim-launch`. The
//! checks both QEMU devices must pass are in common/e2e_checks.rs (vfio_user.rs runs them through
//! a stock QEMU); this file adds what only the patched device has (UART, QEMU's statistics, the
//! cosim link's fault handling).
//!
//! Needs `make qemu sim-gemm guest` (the `test-e2e` make target builds them first); a missing
//! artifact fails the test with the launcher's message naming the make target. Every test is
//! `#[ignore]`d for a plain `cargo test --workspace`; `make test-e2e` runs them (`--include-ignored`).

mod common;

use common::e2e_checks::{self, PATCHED};
use common::{assert_exact, gemm_item, gemms};

fn launch(name: &str, args: &[&str]) -> common::JsonRun {
    PATCHED.launch(name, args)
}

#[test]
#[ignore = "needs `make qemu sim-gemm guest`: run by `make test-e2e` (or `make test`)"]
fn single_device_gemms_are_exact_and_the_uart_banner_reaches_the_chardev() {
    let run = e2e_checks::single_device_gemms_are_exact(&PATCHED);
    // The UART channel needs the patched device (vfio-user mode has none).
    let uart = std::fs::read(run.log_dir.join("accel0-uart.log")).expect("UART chardev log");
    assert!(
        String::from_utf8_lossy(&uart).contains(String::from_utf8_lossy(cosim_gemm_abi::UART_BANNER).trim_end()),
        "the RTL's UART banner must reach QEMU's chardev; got {:?}",
        String::from_utf8_lossy(&uart)
    );
}

#[test]
#[ignore = "needs `make qemu sim-gemm guest`: run by `make test-e2e` (or `make test`)"]
fn two_devices_in_one_guest_work_at_the_same_time_with_independent_counters() {
    e2e_checks::two_devices_work_at_the_same_time(&PATCHED);
}

#[test]
#[ignore = "needs `make qemu sim-gemm guest`: run by `make test-e2e` (or `make test`)"]
fn simulation_stopped_mid_job_gives_the_guest_a_driver_error_and_the_guest_stays_up() {
    // 67 M RTL cycles: over ten seconds even on a fast machine, so the kill after 2 s always lands
    // mid-job. --no-cpu: the guest need not compute the reference for a job that is meant to fail.
    let big = "gemm --m 1024 --n 1024 --k 1024 --seed 31 --no-cpu".to_string();
    let run = launch(
        "killed",
        &[
            "--kill-sim-after",
            "2",
            "--device-opt",
            "timeout-ms=2000",
            "--run",
            &big,
            "--run",
            "sh:echo guest-still-up",
            "--run",
            "info",
        ],
    );
    // The workload ran to the end (the guest powered off by itself) but the GEMM failed.
    assert_eq!(run.code, 1, "stderr:\n{}", run.stderr);
    assert!(run.json["failed_stage"].is_null(), "no stage may time out: {}", run.json);
    assert_eq!(run.json["guest"]["done"]["items"], 3, "{}", run.json);
    let failures = run.json["guest"]["failures"].as_array().unwrap();
    assert!(failures.iter().any(|f| f["item"] == 0), "the GEMM must fail: {failures:?}");
    assert!(run.json["guest"]["output"].to_string().contains("guest-still-up"));
    let klog = run.json["guest"]["klog"].to_string();
    assert!(klog.contains("cosim_accel"), "the driver must log the failure: {klog}");
}

#[test]
#[ignore = "needs `make qemu sim-gemm guest`: run by `make test-e2e` (or `make test`)"]
fn stray_frames_into_both_channels_cost_the_running_guest_nothing() {
    // The scenario of a local process pushing stray and hostile frames (malformed, other
    // protocol versions, other sessions' INIT/CONFIG/GOODBYE/HEARTBEAT, stale completions) into
    // the simulation's h2d and QEMU's d2h channels while a guest runs verified GEMMs.
    let items: Vec<String> = (0..40u64).map(|i| gemm_item(16 + i % 24, 24 + i % 9, 32 + i % 17, 100 + i)).collect();
    let mut args: Vec<&str> = vec!["--inject-stray", "1000"];
    for it in &items {
        args.extend(["--run", it]);
    }
    let run = launch("stray", &args);
    assert_eq!(run.code, 0, "every GEMM must pass: {}", run.json);
    let gemms = gemms(&run.json);
    assert_eq!(gemms.len(), 40, "{}", run.json);
    for r in &gemms {
        assert_exact(r);
    }
    // 1000 frames/s into each of 2 channels for the whole workload stage (the injector starts
    // before it and stops after it); how long that is depends on the machine.
    let injected = run.json["stray_frames_injected"].as_u64().unwrap_or(0);
    let workload_s = run.json["stage_seconds"]["workload"].as_f64().unwrap();
    let due = 2.0 * 1000.0 * workload_s;
    assert!(
        injected >= 2000 && injected as f64 >= 0.95 * due,
        "the injector pushed only {injected} frames in {workload_s} s: {}",
        run.json
    );
    // The simulation counted them and never refused or restarted the live session.
    let sim = std::fs::read_to_string(run.log_dir.join("sim0.log")).expect("sim0.log");
    let dropped: u64 = sim
        .split_whitespace()
        .find_map(|w| w.strip_prefix("dropped="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no dropped= in the simulation's statistics:\n{sim}"));
    assert!(dropped >= injected / 4, "simulation dropped {dropped} of about {} frames:\n{sim}", injected / 2);
    assert!(sim.contains("sessions=1 "), "the session must never restart:\n{sim}");
    assert!(!sim.contains("refusing"), "a live host was refused:\n{sim}");
    assert!(sim.contains("refused_pops=0 "), "the shell popped without its pending bit:\n{sim}");
    // QEMU kept its session and its log stayed short (rate-limited warnings).
    let qemu = std::fs::read_to_string(run.log_dir.join("qemu-stderr.log")).expect("qemu-stderr.log");
    for bad in ["is lost", "up again", "said goodbye", "cannot serve"] {
        assert!(!qemu.contains(bad), "QEMU's session flapped ({bad:?}):\n{qemu}");
    }
    let lines = qemu.lines().count();
    assert!(lines < 60, "QEMU logged {lines} lines for {injected} stray frames (must be rate-limited):\n{qemu}");
    assert!(qemu.contains("frames dropped"), "QEMU must report the drops:\n{qemu}");
}

#[test]
#[ignore = "needs `make qemu sim-gemm guest`: run by `make test-e2e` (or `make test`)"]
fn mmio_bench_smoke_reports_plausible_latencies_and_gives_the_device_back_to_the_driver() {
    let (run, _) = e2e_checks::mmio_bench_smoke(&PATCHED);
    // QEMU's statistics at exit, next to the simulation's: the same reads on both sides, the
    // bench's among them, and the shell's default design clock from CONFIG.
    let stats = &run.json["device_stats"][0];
    let (qemu, sim) = (&stats["qemu"], &stats["sim"]);
    assert_eq!(qemu["clock_hz"], 100_000_000, "{stats}");
    let reads = qemu["mmio_reads"].as_u64().unwrap_or_else(|| panic!("QEMU's mmio_reads: {stats}"));
    assert!(reads > 200, "{stats}");
    assert_eq!(sim["mmio_reads"].as_u64(), Some(reads), "QEMU's and the simulation's read counts: {stats}");
    assert_eq!((qemu["session_losses"].as_u64(), qemu["mmio_reads_failed"].as_u64()), (Some(0), Some(0)), "{stats}");
    assert!(qemu["read_p50_us"].as_f64().is_some_and(|p| p > 1.0), "{stats}");
    assert!(qemu["dma_read_bytes"].as_u64().is_some_and(|b| b >= 2 * 64), "the GEMM's operands: {stats}");
}

#[test]
#[ignore = "needs `make qemu sim-gemm guest`: run by `make test-e2e` (or `make test`)"]
fn reads_of_two_vcpus_to_two_devices_overlap_and_each_is_answered() {
    // Two vCPUs, each with a thread reading its own device: an MMIO read waits for its
    // simulation with QEMU's big lock released, so the two vCPUs' reads are in flight at the
    // same time (QEMU's process-wide reads_in_flight_max: 2; with the lock held through the
    // wait, as before, it stays 1). Nothing is lost on the way, and both drivers get their
    // devices back for a GEMM each.
    let gemm = gemm_item(16, 16, 16, 41).replace("--check", "--check --device all");
    let bench = "mmio-bench --devices 2 --concurrent --reads 3000 --writes 100";
    let run = launch("overlap", &["--devices", "2", "--smp", "2", "--run", bench, "--run", &gemm]);
    assert_eq!(run.code, 0, "{}", run.json);
    let benches: Vec<_> = common::results(&run.json)
        .into_iter()
        .filter_map(|r| match r {
            cosim_guest_results::Record::MmioBench(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(benches.len(), 2, "one record per device: {}", run.json);
    for b in &benches {
        assert!(b.ok && b.read_errors == 0 && b.reads == 3000, "{b:?}");
    }
    let gemms = gemms(&run.json);
    assert_eq!(gemms.len(), 2, "{}", run.json);
    gemms.iter().for_each(assert_exact);
    for stats in run.json["device_stats"].as_array().expect("device_stats") {
        let q = &stats["qemu"];
        assert_eq!((q["mmio_reads_failed"].as_u64(), q["session_losses"].as_u64()), (Some(0), Some(0)), "{stats}");
        assert!(q["reads_in_flight_max"].as_u64().is_some_and(|n| n >= 2), "reads of the two vCPUs never overlapped: {stats}");
    }
}
