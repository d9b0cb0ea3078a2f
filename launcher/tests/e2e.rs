//! End-to-end tier: a real Linux guest in our QEMU with `-device accelerator-pcie`, its driver
//! and tool, against the GEMM RTL simulated by Verilator, all started by `cosim-launch`.
//!
//! Needs `make qemu sim-gemm guest` (the `test-e2e` make target builds them first); a missing
//! artifact fails the test with the launcher's message naming the make target. Every test is
//! `#[ignore]`d for a plain `cargo test --workspace`; `make test-e2e` runs them (`--include-ignored`).

mod common;

use std::time::Duration;

use common::{assert_exact, device_info, gemm_item, gemms, infos, results, run_json, JsonRun, LAUNCH};
use cosim_guest_results::{MmioBench, Record};

/// Wall-clock bound of one launcher run (the launcher's own stage timeouts are tighter).
const RUN_LIMIT: Duration = Duration::from_secs(600);
/// After SIGTERM, the launcher stops QEMU (5 s) and the simulations (10 s each).
const STOP_GRACE: Duration = Duration::from_secs(35);

fn launch(name: &str, args: &[&str]) -> JsonRun {
    run_json(LAUNCH, &format!("e2e-{name}"), args, &[], RUN_LIMIT, STOP_GRACE)
}

#[test]
#[ignore = "needs `make qemu sim-gemm guest`: run by `make test-e2e` (or `make test`)"]
fn single_device_gemms_are_exact_and_the_uart_banner_reaches_the_chardev() {
    let sizes: [(u64, u64, u64, u64); 5] = [(1, 1, 1, 11), (4, 4, 4, 12), (17, 33, 9, 13), (64, 64, 64, 14), (130, 20, 7, 15)];
    let items: Vec<String> = sizes.iter().map(|&(m, n, k, s)| gemm_item(m, n, k, s)).collect();
    let mut args: Vec<&str> = Vec::new();
    for it in &items {
        args.extend(["--run", it]);
    }
    // Nonsense from the guest: a dimension above MAX_DIM is refused with an errno, and the
    // guest carries on with the next item.
    // The same job again: the same C, and with the default modelled DMA read latency the same
    // RTL cycles and DMA wait, whatever QEMU's (TCG, loaded machine) response times were.
    let again = gemm_item(64, 64, 64, 14);
    args.extend(["--run", &again]);
    args.extend(["--run", "gemm --m 2000 --n 1 --k 1 --check"]);
    args.extend(["--run", "info"]);
    let run = launch("single", &args);
    assert_eq!(run.code, 1, "only the deliberately bad item may fail: {}", run.json);
    let gemms = gemms(&run.json);
    assert_eq!(gemms.len(), sizes.len() + 2, "one result per size, the repeat and the refused one: {}", run.json);
    let repeat = &gemms[sizes.len()];
    assert_exact(repeat);
    assert_eq!(repeat.c_hash, gemms[3].c_hash);
    let counts = |r: &cosim_guest_results::Gemm| (r.rtl_cycles, r.dma_wait_cycles);
    assert_eq!(counts(repeat), counts(&gemms[3]), "same job, same RTL cycles: {repeat:?} vs {:?}", gemms[3]);
    let refused = &gemms[sizes.len() + 1];
    assert_eq!((refused.ok, refused.errno), (false, Some(Some(22))), "EINVAL: {refused:?}");
    assert!(run.json["guest"]["klog"].to_string().contains("bad size m=2000"), "driver log line: {}", run.json);
    for (r, &(m, n, k, _)) in gemms.iter().zip(&sizes) {
        assert_eq!((u64::from(r.m), u64::from(r.n), u64::from(r.k)), (m, n, k));
        assert_exact(r);
    }
    let failures = run.json["guest"]["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["item"], sizes.len() + 1, "the oversize GEMM is the failing item: {failures:?}");
    assert_eq!(infos(&run.json).len(), 1);
    assert_eq!(device_info(&run.json, "/dev/accel0").jobs, sizes.len() as u64 + 1, "driver job counter");
    let uart = std::fs::read(run.log_dir.join("accel0-uart.log")).expect("UART chardev log");
    assert!(
        String::from_utf8_lossy(&uart).contains("GEMM accelerator v1.0 ready"),
        "the RTL's UART banner must reach QEMU's chardev; got {:?}",
        String::from_utf8_lossy(&uart)
    );
}

#[test]
#[ignore = "needs `make qemu sim-gemm guest`: run by `make test-e2e` (or `make test`)"]
fn two_devices_in_one_guest_work_at_the_same_time_with_independent_counters() {
    let both = "gemm --m 48 --n 40 --k 56 --seed 21 --check --device all".to_string();
    let second = "gemm --m 9 --n 7 --k 5 --seed 22 --check --device /dev/accel1".to_string();
    let run = launch("dual-dev", &["--devices", "2", "--run", &both, "--run", &second, "--run", "info"]);
    assert_eq!(run.code, 0, "{}", run.json);
    let gemms = gemms(&run.json);
    assert_eq!(gemms.len(), 3, "{}", run.json);
    for r in &gemms {
        assert_exact(r);
    }
    let devs: Vec<&str> = gemms.iter().map(|r| r.device.as_str()).collect();
    assert!(devs[..2].contains(&"/dev/accel0") && devs[..2].contains(&"/dev/accel1"), "{devs:?}");
    // The same GEMM on both devices, at the same time, gives the same C in the same RTL cycles.
    assert_eq!(gemms[0].c_hash, gemms[1].c_hash);
    assert_eq!(
        (gemms[0].rtl_cycles, gemms[0].dma_wait_cycles),
        (gemms[1].rtl_cycles, gemms[1].dma_wait_cycles),
        "{:?} vs {:?}",
        gemms[0],
        gemms[1]
    );
    assert_eq!(device_info(&run.json, "/dev/accel0").jobs, 1, "accel0 ran one job");
    assert_eq!(device_info(&run.json, "/dev/accel1").jobs, 2, "accel1 ran two jobs");
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
    // A short accel-tool mmio-bench on one device (make bench-guest-mmio runs the long one), then
    // a GEMM: the bench unbinds the driver for its run and must bind it again.
    let gemm = gemm_item(8, 8, 8, 31);
    let run = launch("mmio-bench", &["--run", "mmio-bench --reads 200 --writes 200", "--run", &gemm]);
    assert_eq!(run.code, 0, "{}", run.json);
    let benches: Vec<MmioBench> = results(&run.json)
        .into_iter()
        .filter_map(|r| match r {
            Record::MmioBench(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(benches.len(), 1, "one record for the one device: {}", run.json);
    let b = &benches[0];
    assert!(b.ok && b.error.is_none(), "{b:?}");
    assert_eq!((b.devices, b.reads, b.writes, b.read_errors), (1, 200, 200, 0), "{b:?}");
    assert!(b.device.contains(':') && b.device.contains('.'), "a PCI address: {b:?}");
    // Ordered percentiles, each read a real round trip to the simulation (well above 1 us, below
    // the launcher's workload timeout), and rates that agree with the latencies.
    assert!(1.0 < b.read_p50_us && b.read_p50_us <= b.read_p90_us, "{b:?}");
    assert!(b.read_p90_us <= b.read_p99_us && b.read_p99_us <= b.read_max_us, "{b:?}");
    assert!(b.read_max_us < 10_000_000.0, "{b:?}");
    assert!(b.read_p50_us <= b.read_mean_us * 10.0 && b.read_mean_us <= b.read_max_us, "{b:?}");
    let from_mean = 1e6 / b.read_mean_us;
    assert!(b.reads_per_s > 0.5 * from_mean && b.reads_per_s < 1.5 * from_mean, "reads/s vs mean latency: {b:?}");
    assert!(b.writes_per_s > 0.0, "{b:?}");
    assert!(b.driver_unbound, "the driver holds BAR0, so the tool must have unbound it: {b:?}");
    let gemms = gemms(&run.json);
    assert_eq!(gemms.len(), 1, "{}", run.json);
    assert_exact(&gemms[0]);
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
