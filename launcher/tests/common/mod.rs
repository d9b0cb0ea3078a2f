//! What the launcher's integration tests share: running `cosim-launch`, `cosim-dual` or
//! `cosim-share` to its end within a wall-clock bound (past it: SIGTERM, so the program stops what
//! it started, then SIGKILL after a grace period, and the test fails with the program's stderr),
//! their stdout and stderr drained by threads while the test waits (a child never blocks on a full
//! pipe), the JSON they print, fresh log directories, and the guest's results in that JSON.

#![allow(dead_code)] // each test file uses a different part

pub mod e2e_checks;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cosim_guest_results::{Check, DeviceInfo, Gemm, Info, Record};
use serde::Deserialize;
use serde_json::Value;

pub const LAUNCH: &str = env!("CARGO_BIN_EXE_cosim-launch");
pub const DUAL: &str = env!("CARGO_BIN_EXE_cosim-dual");
pub const SHARE: &str = env!("CARGO_BIN_EXE_cosim-share");

/// The build directory with the artefacts: `$COSIM_BUILD`, else `<repo>/build`.
pub fn build_dir() -> PathBuf {
    std::env::var_os("COSIM_BUILD")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../build"))
}

/// An empty directory `<temp>/cosim-test-<name>-<pid>` (removed first if it exists).
pub fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cosim-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
    d
}

/// A program that ran to its end.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The one JSON object the program printed on stdout; fails the test (with its stderr) if
    /// there is none.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!("no JSON on stdout ({e}; status {}):\n{}\nstderr:\n{}", self.status, self.stdout, self.stderr)
        })
    }
}

/// A stream read to its end by a thread; what arrived so far is readable at any time.
struct Drained {
    buf: Arc<Mutex<Vec<u8>>>,
    thread: JoinHandle<()>,
}

impl Drained {
    fn start(mut input: impl Read + Send + 'static) -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let thread = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = input.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        Drained { buf, thread }
    }

    /// What arrived so far.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    /// Everything, once the stream ended (or what arrived within `wait`, if a process the
    /// program left behind still holds the pipe).
    fn finish(self, wait: Duration) -> String {
        let t0 = Instant::now();
        while !self.thread.is_finished() && t0.elapsed() < wait {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.text()
    }
}

/// Runs `cmd` (stdin from /dev/null) to its end. Past `limit` it gets SIGTERM, `grace` later
/// SIGKILL, and the test fails naming `what` with the stderr so far. The stderr is also printed
/// (the test harness shows it for a failing test).
pub fn run_bounded(what: &str, mut cmd: Command, limit: Duration, grace: Duration) -> Finished {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stdout = Drained::start(child.stdout.take().expect("piped stdout"));
    let stderr = Drained::start(child.stderr.take().expect("piped stderr"));
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for the child") {
            break st;
        }
        if t0.elapsed() > limit {
            // SIGTERM first: the program then stops the processes it started.
            cosim_launch::procs::signal_pid(child.id(), libc::SIGTERM);
            let t1 = Instant::now();
            while t1.elapsed() < grace && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}; its stderr:\n{}", stderr.text());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout.finish(Duration::from_secs(10));
    let stderr = stderr.finish(Duration::from_secs(10));
    eprintln!("--- {what} ---\n{stderr}");
    Finished { status, stdout, stderr }
}

/// A run of `cosim-launch`, `cosim-dual` or `cosim-share` with `--json` and a log directory of
/// its own.
pub struct JsonRun {
    pub code: i32,
    pub json: Value,
    pub stderr: String,
    pub log_dir: PathBuf,
}

/// Runs `program ARGS EXTRA --json --log-dir <fresh dir for name>` with [`run_bounded`]; fails
/// the test if it prints no JSON.
pub fn run_json(program: &str, name: &str, args: &[&str], extra: &[&str], limit: Duration, grace: Duration) -> JsonRun {
    let log_dir = fresh_dir(name);
    let mut cmd = Command::new(program);
    cmd.args(args).args(extra).arg("--json").arg("--log-dir").arg(&log_dir);
    let short = Path::new(program).file_name().map_or(program.into(), |n| n.to_string_lossy());
    let out = run_bounded(&format!("{short} {args:?} (logs in {})", log_dir.display()), cmd, limit, grace);
    JsonRun { code: out.code().unwrap_or(-1), json: out.json(), stderr: out.stderr, log_dir }
}

/// A JSON file; fails the test if it cannot be read or parsed.
pub fn read_json(p: &Path) -> Value {
    let s = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The guest's results in a launcher's JSON (`guest.results`), in order, as accel-tool's records;
/// fails the test if one is not a record.
pub fn results(launcher: &Value) -> Vec<Record> {
    launcher["guest"]["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| Record::deserialize(v).unwrap_or_else(|e| panic!("not an accel-tool record ({e}): {v}")))
        .collect()
}

/// The guest's `gemm` results, in order.
pub fn gemms(launcher: &Value) -> Vec<Gemm> {
    results(launcher).iter().filter_map(Record::as_gemm).cloned().collect()
}

/// The guest's `info` results, in order.
pub fn infos(launcher: &Value) -> Vec<Info> {
    results(launcher).iter().filter_map(Record::as_info).cloned().collect()
}

/// The details of a successful `info` for `device`; fails the test if there is none.
pub fn device_info(launcher: &Value, device: &str) -> DeviceInfo {
    infos(launcher)
        .into_iter()
        .find(|i| i.device == device)
        .and_then(|i| i.info)
        .unwrap_or_else(|| panic!("no info for {device}: {launcher}"))
}

/// A `--run` item: a GEMM checked against the guest CPU.
pub fn gemm_item(m: u64, n: u64, k: u64, seed: u64) -> String {
    format!("gemm --m {m} --n {n} --k {k} --seed {seed} --check")
}

/// A GEMM result that passed its check bit-exactly, in no fewer RTL cycles than the ideal.
pub fn assert_exact(r: &Gemm) {
    assert!(r.ok, "GEMM failed: {r:?}");
    assert_eq!(r.check, Some(Check::Pass), "guest CPU reference disagrees: {r:?}");
    assert_eq!(r.mismatches, Some(0), "{r:?}");
    let cycles = r.rtl_cycles.unwrap_or_else(|| panic!("no rtl_cycles: {r:?}"));
    let ideal = r.ideal_cycles.unwrap_or_else(|| panic!("no ideal_cycles: {r:?}"));
    assert!(ideal > 0 && cycles >= ideal, "RTL cycles {cycles} below the ideal {ideal}: {r:?}");
}

/// True while process `pid` exists (a zombie still does; a reaped one does not).
pub fn pid_alive(pid: u64) -> bool {
    u32::try_from(pid).is_ok_and(|p| cosim_launch::procs::signal_pid(p, 0))
}

/// A file a test needs: `$env` if set, else `default`; fails the test naming `make` if missing.
pub fn artefact(env: &str, default: PathBuf, make: &str) -> PathBuf {
    let p = std::env::var_os(env).map(PathBuf::from).unwrap_or(default);
    assert!(p.is_file(), "{} missing (${env}): run `{make}`", p.display());
    p
}

/// What the guest's "sh:" items printed (`guest.output`), line by line in order.
pub fn sh_output(launcher: &Value) -> Vec<String> {
    let out = launcher["guest"]["output"].as_array().cloned().unwrap_or_default();
    out.iter().filter_map(|o| o["line"].as_str().map(String::from)).collect()
}

/// `cosim-launch ARGS --iommu` with one accelerator (boot and workload 180/120 s, 400 s in all):
/// asserts exit 0 and a boot line with the function at 0000:00:10.0 bound to vfio-pci and none
/// left to the GEMM driver; returns the run and its "sh:" output lines.
pub fn run_vfio(name: &str, args: &[&str]) -> (JsonRun, Vec<String>) {
    let mut all = vec!["--iommu"];
    all.extend_from_slice(args);
    let run = run_json(
        LAUNCH,
        name,
        &all,
        &["--timeout-boot", "180", "--timeout-workload", "120"],
        Duration::from_secs(400),
        Duration::from_secs(20),
    );
    let v = &run.json;
    assert_eq!(run.code, 0, "launcher failed: {v:#}\n{}", run.stderr);
    let boot = &v["guest"]["boot"];
    assert_eq!(boot["devices"], 1, "{boot}");
    assert_eq!(boot["gemm"], 0, "the GEMM driver must not hold the function: {boot}");
    assert_eq!(boot["vfio"], serde_json::json!(["0000:00:10.0"]), "{boot}");
    let lines = sh_output(v);
    (run, lines)
}

/// An executable shell script `name` in `dir` (fake QEMUs and simulations for setup-error tests).
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    let mut perm = std::fs::metadata(&p).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&p, perm).unwrap();
    p
}
