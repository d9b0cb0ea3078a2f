//! The launcher's stage handling: exit codes and messages that name the stage, with stand-ins for
//! the simulation and QEMU (no guest needed), plus one boot of the real guest image under Debian's
//! stock QEMU without an accelerator (needs `make guest`: `#[ignore]`d for a plain
//! `cargo test --workspace`, run by `make test-guest` with `--include-ignored`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

const LAUNCH: &str = env!("CARGO_BIN_EXE_cosim-launch");

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cosim-launch-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    let mut perm = std::fs::metadata(&p).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&p, perm).unwrap();
    p
}

/// Runs the launcher with a wall-clock limit (kills it and fails the test past the limit).
fn launch(args: &[&str], limit: Duration) -> (Output, Value) {
    let mut child = Command::new(LAUNCH)
        .args(args)
        .arg("--json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start cosim-launch");
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("cosim-launch {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
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
fn missing_artifact_is_a_setup_error_naming_the_make_target() {
    let d = tmpdir("missing");
    let log = d.join("logs").display().to_string();
    let (out, v) = launch(
        &["--sim", "/nonexistent/sim", "--qemu", "/bin/true", "--log-dir", &log],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(3), "{v}");
    let err = v["error"].as_str().unwrap();
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
    assert_eq!(out.status.code(), Some(4), "{v}");
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
    assert_eq!(out.status.code(), Some(4), "{v}");
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
    assert_eq!(out.status.code(), Some(4), "{v}");
    assert_eq!(v["failed_stage"], "QEMU start");
    assert!(v["error"].as_str().unwrap().contains("no answer from the HDL"), "{v}");
    let cmdline = std::fs::read_to_string(Path::new(&log).join("qemu-cmdline.txt")).unwrap();
    assert!(cmdline.contains("-device accelerator-pcie,id=accel0,endpoint=ipc://"), "{cmdline}");
    assert!(cmdline.contains("cosim.run="), "{cmdline}");
}

/// The real guest image under Debian's QEMU, no accelerator: boots, the tool says so, and the
/// guest powers off; exit 1 (workload failed), not a hang.
#[test]
#[ignore = "needs `make guest`: run by `make test-guest` (or `make test`)"]
fn guest_without_accelerator_boots_and_reports_no_device() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let build = std::env::var_os("COSIM_BUILD").map(PathBuf::from).unwrap_or_else(|| root.join("build"));
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
    assert_eq!(out.status.code(), Some(1), "{v}\n{}", String::from_utf8_lossy(&out.stderr));
    let guest = &v["guest"];
    assert_eq!(guest["boot"]["devices"], 0, "{v}");
    assert_eq!(guest["done"]["items"], 2, "{v}");
    let fail = &guest["failures"][0];
    assert!(fail["message"].as_str().unwrap().contains("no accelerator found"), "{v}");
    let cpu = guest["results"].as_array().unwrap().iter().find(|r| r["device"] == "cpu").expect("cpu result");
    assert_eq!(cpu["ok"], true);
    assert!(cpu["cpu_us"].as_f64().unwrap() > 0.0);
}
