//! The launcher's stage handling: exit codes and messages that name the stage, with stand-ins for
//! the simulation and QEMU (no guest needed), plus one boot of the real guest image under Debian's
//! stock QEMU without an accelerator (needs `make guest`: `#[ignore]`d for a plain
//! `cargo test --workspace`, run by `make test-guest` with `--include-ignored`).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{fresh_dir as tmpdir, run_bounded, script, Finished, LAUNCH};
use serde_json::Value;

/// Runs the launcher with `--json` within a wall-clock limit (fails the test past it).
fn launch(args: &[&str], limit: Duration) -> (Finished, Value) {
    let mut cmd = Command::new(LAUNCH);
    cmd.args(args).arg("--json");
    let out = run_bounded(&format!("cosim-launch {args:?}"), cmd, limit, Duration::from_secs(20));
    let v = out.json();
    (out, v)
}

/// Fake kernel/initrd/QEMU paths that exist, for tests that stop before a guest runs.
fn fakes(dir: &Path) -> (String, String) {
    let k = dir.join("bzImage");
    let i = dir.join("initrd");
    std::fs::write(&k, b"x").unwrap();
    std::fs::write(&i, b"x").unwrap();
    (k.display().to_string(), i.display().to_string())
}

#[test]
fn missing_artifact_is_a_setup_error_naming_how_to_build_it() {
    let d = tmpdir("missing");
    let log = d.join("logs").display().to_string();
    // A simulation of your own (--sim): the build script; the default one: its make target.
    let (out, v) = launch(
        &["--sim", "/nonexistent/sim", "--qemu", "/bin/true", "--log-dir", &log],
        Duration::from_secs(20),
    );
    assert_eq!(out.code(), Some(3), "{v}");
    let err = v["error"].as_str().unwrap();
    assert!(err.contains("/nonexistent/sim is missing") && err.contains("scripts/cosim-build-sim"), "{err}");
    let mut cmd = Command::new(LAUNCH);
    cmd.args(["--qemu", "/bin/true", "--json", "--log-dir", &log]).env("COSIM_BUILD", d.join("empty-build"));
    let out = run_bounded("cosim-launch (empty COSIM_BUILD)", cmd, Duration::from_secs(20), Duration::from_secs(20));
    assert_eq!(out.code(), Some(3), "{}", out.stderr);
    let err = out.json()["error"].as_str().unwrap().to_string();
    assert!(err.contains("make sim-gemm"), "{err}");
}

#[test]
fn simulation_that_exits_fails_stage_sim_start() {
    let d = tmpdir("simexit");
    let (k, i) = fakes(&d);
    let sim = script(&d, "sim", "echo 'cannot open model' >&2; exit 7");
    let log = d.join("logs").display().to_string();
    let (out, v) = launch(
        &["--sim", sim.to_str().unwrap(), "--qemu", "/bin/true", "--kernel", &k, "--initrd", &i, "--log-dir", &log],
        Duration::from_secs(20),
    );
    assert_eq!(out.code(), Some(4), "{v}");
    assert_eq!(v["failed_stage"], "sim start");
    let err = v["error"].as_str().unwrap();
    assert!(err.contains("exited") && err.contains("cannot open model"), "{err}");
}

#[test]
fn simulation_never_ready_times_out_and_is_stopped() {
    let d = tmpdir("simslow");
    let (k, i) = fakes(&d);
    let pidfile = d.join("sim.pid");
    let sim = script(&d, "sim", &format!("echo $$ > {}; exec sleep 60", pidfile.display()));
    let log = d.join("logs").display().to_string();
    let (out, v) = launch(
        &[
            "--sim", sim.to_str().unwrap(), "--qemu", "/bin/true", "--kernel", &k, "--initrd", &i,
            "--log-dir", &log, "--timeout-sim-start", "1",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(out.code(), Some(4), "{v}");
    assert!(v["error"].as_str().unwrap().contains("stage sim start timed out after 1 s"), "{v}");
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_string();
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the simulation (pid {pid}) was left running");
}

#[test]
fn qemu_that_exits_fails_stage_qemu_start_with_its_stderr() {
    let d = tmpdir("qemuexit");
    let (k, i) = fakes(&d);
    let sim = script(&d, "sim", "echo \"cosim-sim: ready endpoint=$2\" >&2; exec sleep 60");
    let qemu = script(&d, "qemu", "echo 'qemu: -device accelerator-pcie: no answer from the HDL' >&2; exit 1");
    let log = d.join("logs").display().to_string();
    let (out, v) = launch(
        &["--sim", sim.to_str().unwrap(), "--qemu", qemu.to_str().unwrap(), "--kernel", &k, "--initrd", &i, "--log-dir", &log],
        Duration::from_secs(30),
    );
    assert_eq!(out.code(), Some(4), "{v}");
    assert_eq!(v["failed_stage"], "QEMU start");
    assert!(v["error"].as_str().unwrap().contains("no answer from the HDL"), "{v}");
    let cmdline = std::fs::read_to_string(Path::new(&log).join("qemu-cmdline.txt")).unwrap();
    assert!(cmdline.contains("-device accelerator-pcie,id=accel0,addr=0x10.0,endpoint=ipc://"), "{cmdline}");
    assert!(cmdline.contains("cosim.run="), "{cmdline}");
}

/// The real guest image under Debian's QEMU, no accelerator: boots, the tool says so, and the
/// guest powers off; exit 1 (workload failed), not a hang.
#[test]
#[ignore = "needs `make guest`: run by `make test-guest` (or `make test`)"]
fn guest_without_accelerator_boots_and_reports_no_device() {
    let build = common::build_dir();
    let kernel = build.join("guest/bzImage");
    let initrd = build.join("guest/initramfs.cpio.gz");
    assert!(kernel.is_file() && initrd.is_file(), "guest image missing in {}: run `make guest`", build.display());
    let qemu = "/usr/bin/qemu-system-x86_64";
    assert!(Path::new(qemu).is_file(), "{qemu} missing: run `make deps` (qemu-system-x86 from bookworm-backports)");
    let d = tmpdir("noaccel");
    let log = d.join("logs").display().to_string();
    let (out, v) = launch(
        &[
            "--devices", "0", "--qemu", qemu, "--kernel", kernel.to_str().unwrap(), "--initrd",
            initrd.to_str().unwrap(), "--log-dir", &log, "--run", "info", "--run", "gemm --m 8 --n 8 --k 8 --cpu-only",
            "--timeout-boot", "120", "--timeout-workload", "60",
        ],
        Duration::from_secs(240),
    );
    assert_eq!(out.code(), Some(1), "{v}\n{}", out.stderr);
    let guest = &v["guest"];
    assert_eq!(guest["boot"]["devices"], 0, "{v}");
    assert_eq!(guest["done"]["items"], 2, "{v}");
    let fail = &guest["failures"][0];
    assert!(fail["message"].as_str().unwrap().contains("no accelerator found"), "{v}");
    let cpu = guest["results"].as_array().unwrap().iter().find(|r| r["device"] == "cpu").expect("cpu result");
    assert_eq!(cpu["ok"], true);
    assert!(cpu["cpu_us"].as_f64().unwrap() > 0.0);
}
