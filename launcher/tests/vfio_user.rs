//! vfio-user mode end to end: an unpatched QEMU (`make qemu-stock`: the same QEMU source as
//! cosim's, without its device) drives the GEMM RTL through `vfio-user-pci`, each simulation a
//! vfio-user server that maps the guest's shared RAM for DMA and raises MSI-X through QEMU's
//! eventfds. The guest, driver and GEMM checks are the patched mode's (common/e2e_checks.rs);
//! this file adds what proves the path: the QEMU is stock, its command line carries vfio-user
//! devices and shared RAM, and the simulation saw the MMIO, DMA and interrupts.
//!
//! The tests that boot a guest need `make qemu-stock sim-gemm guest` (the `test-vfio-user` make
//! target builds them first) and are `#[ignore]`d for a plain `cargo test --workspace`; a missing
//! artefact fails them with a message naming the make target. The usage and setup errors need no
//! artefact and always run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::e2e_checks::{self, VFIO_USER};
use common::{artefact, build_dir, device_info, fresh_dir, run_bounded, script, JsonRun, LAUNCH};
use serde_json::Value;

const NEEDS: &str = "needs `make qemu-stock sim-gemm guest`: run by `make test-vfio-user`";

/// The stock QEMU the launcher uses by default in vfio-user mode.
fn stock_qemu() -> PathBuf {
    artefact("COSIM_QEMU_STOCK", build_dir().join("qemu-stock/qemu-system-x86_64"), "make qemu-stock")
}

/// `qemu ARGS`' stdout (bounded: 30 s).
fn qemu_says(qemu: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new(qemu);
    cmd.args(args);
    let out =
        run_bounded(&format!("{} {args:?}", qemu.display()), cmd, Duration::from_secs(30), Duration::from_secs(5));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    out.stdout
}

/// What every vfio-user run must show besides the guest's results: the launcher's mode, QEMU's
/// command line (vfio-user devices at the accelerators' slots, guest RAM in a shared memfd, no
/// cosim device), each simulation serving vfio-user, and statistics from the simulations only.
fn assert_vfio_user_run(run: &JsonRun, devices: usize) {
    let v = &run.json;
    assert_eq!(v["mode"], "vfio-user", "{v}");
    assert_eq!(v["guest"]["boot"]["devices"], devices, "{v}");
    assert_eq!(v["guest"]["boot"]["gemm"], devices, "the GEMM driver binds the vfio-user functions by their IDs: {v}");
    let cmdline = std::fs::read_to_string(run.log_dir.join("qemu-cmdline.txt")).expect("qemu-cmdline.txt");
    let qemu = cmdline.split_whitespace().next().unwrap_or_default();
    let same = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(same(Path::new(qemu)), same(&stock_qemu()), "the stock QEMU: {cmdline}");
    assert!(!cmdline.contains("accelerator-pcie"), "{cmdline}");
    assert!(cmdline.contains("-M q35,memory-backend=cosim-ram"), "{cmdline}");
    assert!(cmdline.contains("memory-backend-memfd,id=cosim-ram,size=512M,share=on"), "{cmdline}");
    for i in 0..devices {
        let dev = format!(r#""driver":"vfio-user-pci","id":"accel{i}","addr":"0x{:02x}.0""#, 0x10 + i);
        assert!(cmdline.contains(&dev), "{dev} in {cmdline}");
        let sim = std::fs::read_to_string(run.log_dir.join(format!("sim{i}.log"))).expect("simN.log");
        let sock = format!("accel{i}.sock");
        assert!(
            sim.lines().any(|l| l.contains("cosim-sim: ready endpoint=vfio-user:///") && l.ends_with(&sock)),
            "simulation {i} must serve vfio-user on {sock}:\n{sim}"
        );
        assert!(!run.log_dir.join(format!("accel{i}-uart.log")).exists(), "no UART chardev without the patched device");
        let stats = &v["device_stats"][i];
        assert!(stats["qemu"].is_null(), "stock QEMU prints no cosim statistics: {stats}");
        let sim = &stats["sim"];
        let n = |k: &str| sim[k].as_u64().unwrap_or_else(|| panic!("no {k} in the simulation's statistics: {stats}"));
        assert!(n("mmio_reads") > 0 && n("mmio_writes") > 0, "{stats}");
        assert_eq!(n("mmio_errors"), 0, "{stats}");
        assert!(n("dma_read_bytes") > 0 && n("dma_write_bytes") > 0, "DMA through the shared guest RAM: {stats}");
        assert!(n("irqs") > 0, "MSI-X through QEMU's eventfds: {stats}");
    }
}

/// The driver's view of `dev` after the jobs: one MSI-X interrupt per job at least, no timeout.
fn assert_interrupts_per_job(v: &Value, dev: &str) {
    let info = device_info(v, dev);
    assert!(info.msix_vectors > 0, "{info:?}");
    assert!(info.jobs > 0 && info.irqs >= info.jobs, "every job completes with an interrupt: {info:?}");
    assert_eq!((info.timeouts, info.errors), (0, 0), "{info:?}");
}

#[test]
#[ignore = "needs `make qemu-stock sim-gemm guest`: run by `make test-vfio-user`"]
fn the_stock_qemu_has_the_vfio_user_client_and_no_cosim_device() {
    let qemu = stock_qemu();
    let help = qemu_says(&qemu, &["-device", "help"]);
    assert!(help.contains("name \"vfio-user-pci\""), "{NEEDS}; {} lists no vfio-user-pci:\n{help}", qemu.display());
    assert!(!help.contains("accelerator-pcie"), "{} is cosim's patched QEMU, not the stock one", qemu.display());
    let version = qemu_says(&qemu, &["-version"]);
    let v: Vec<u32> = version
        .split_whitespace()
        .find_map(|w| w.split('.').map(|p| p.parse().ok()).collect::<Option<Vec<u32>>>().filter(|v| v.len() >= 2))
        .unwrap_or_else(|| panic!("no version number in {version:?}"));
    assert!((v[0], v[1]) >= (10, 1), "vfio-user-pci is in QEMU 10.1 and later: {version}");
}

#[test]
#[ignore = "needs `make qemu-stock sim-gemm guest`: run by `make test-vfio-user`"]
fn single_device_gemms_are_exact_through_an_unpatched_qemu() {
    let run = e2e_checks::single_device_gemms_are_exact(&VFIO_USER);
    assert_vfio_user_run(&run, 1);
    assert_interrupts_per_job(&run.json, "/dev/accel0");
}

#[test]
#[ignore = "needs `make qemu-stock sim-gemm guest`: run by `make test-vfio-user`"]
fn two_vfio_user_devices_in_one_guest_work_at_the_same_time() {
    let run = e2e_checks::two_devices_work_at_the_same_time(&VFIO_USER);
    assert_vfio_user_run(&run, 2);
    assert_interrupts_per_job(&run.json, "/dev/accel0");
    assert_interrupts_per_job(&run.json, "/dev/accel1");
}

#[test]
#[ignore = "needs `make qemu-stock sim-gemm guest`: run by `make test-vfio-user`"]
fn guest_mmio_reaches_the_rtl_through_vfio_user() {
    let (run, bench) = e2e_checks::mmio_bench_smoke(&VFIO_USER);
    assert_vfio_user_run(&run, 1);
    // Every read of the bench was a vfio-user region read answered by the RTL.
    let reads = run.json["device_stats"][0]["sim"]["mmio_reads"].as_u64().unwrap_or(0);
    assert!(reads >= u64::from(bench.reads), "the simulation saw {reads} reads, the bench made {}", bench.reads);
}

// ---------------------------------------------------------------------------------------------
// Usage and setup errors: no artefact needed.

/// `cosim-launch --mode vfio-user ARGS --log-dir LOG` with `env`, bounded (20 s).
fn launch_vfio_user(args: &[&str], log: &Path, env: &[(&str, &Path)]) -> common::Finished {
    let mut cmd = Command::new(LAUNCH);
    cmd.args(["--mode", "vfio-user"]).args(args).arg("--log-dir").arg(log).env_remove("COSIM_QEMU_STOCK");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_bounded(
        &format!("cosim-launch --mode vfio-user {args:?}"),
        cmd,
        Duration::from_secs(20),
        Duration::from_secs(10),
    )
}

#[test]
fn options_that_need_the_patched_device_are_usage_errors_before_anything_starts() {
    let d = fresh_dir("vfio-user-usage");
    let log = d.join("logs");
    let cases: [&[&str]; 5] = [
        &["--accel-netdev", "user"],
        &["--connect", "ipc:///tmp/nowhere/accel0"],
        &["--transport", "tcp"],
        &["--inject-stray", "100"],
        &["--iommu"],
    ];
    for args in cases {
        let out = launch_vfio_user(args, &log, &[]);
        assert_eq!(out.code(), Some(2), "{args:?}: {}", out.stderr);
        let said = |w: &str| out.stderr.contains(w);
        assert!(
            said(&format!("error: {}", args[0])) && said(" is not available in vfio-user mode"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(!log.exists(), "{args:?}: a usage error must come before the log directory is made");
    }
}

#[test]
fn a_qemu_without_the_vfio_user_client_is_a_setup_error_that_names_its_version() {
    let d = fresh_dir("vfio-user-old-qemu");
    let started = d.join("sim-started");
    let sim = script(&d, "sim", &format!("touch {}; sleep 30", started.display()));
    // QEMU 10.0's answers: a device list without vfio-user-pci.
    let qemu = script(
        &d,
        "qemu",
        "case \"$*\" in\n\
         '-device help') printf 'Misc devices:\\nname \"vfio-pci\", bus PCI, desc \"VFIO-based PCI device assignment\"\\n' ;;\n\
         '-version') echo 'QEMU emulator version 10.0.13 (Debian 1:10.0.13+ds-1)' ;;\n\
         *) exit 1 ;;\n\
         esac",
    );
    let log = d.join("logs");
    let args = ["--sim", sim.to_str().unwrap(), "--qemu", qemu.to_str().unwrap(), "--json"];
    let out = launch_vfio_user(&args, &log, &[]);
    assert_eq!(out.code(), Some(3), "{}", out.stderr);
    let err = out.json()["error"].as_str().unwrap_or_default().to_string();
    for want in
        ["has no vfio-user-pci device", "QEMU 10.1 or later", "QEMU emulator version 10.0.13", "make qemu-stock"]
    {
        assert!(err.contains(want), "{want:?} not in {err}");
    }
    assert!(!started.exists(), "no simulation may start with a QEMU that cannot drive it");
}

#[test]
fn a_missing_stock_qemu_names_its_make_target_and_the_environment_variable_wins() {
    let d = fresh_dir("vfio-user-no-qemu");
    let sim = script(&d, "sim", "sleep 30");
    let empty = d.join("empty-build");
    let args = ["--sim", sim.to_str().unwrap(), "--json"];
    let out = launch_vfio_user(&args, &d.join("logs"), &[("COSIM_BUILD", &empty)]);
    assert_eq!(out.code(), Some(3), "{}", out.stderr);
    let err = out.json()["error"].as_str().unwrap_or_default().to_string();
    let default = empty.join("qemu-stock/qemu-system-x86_64");
    assert!(err.contains(&format!("{} is missing", default.display())) && err.contains("make qemu-stock"), "{err}");
    let named = d.join("my-qemu");
    let out = launch_vfio_user(&args, &d.join("logs2"), &[("COSIM_BUILD", &empty), ("COSIM_QEMU_STOCK", &named)]);
    assert_eq!(out.code(), Some(3), "{}", out.stderr);
    let err = out.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(err.contains(&format!("{} is missing", named.display())), "$COSIM_QEMU_STOCK is the default: {err}");
}
