//! Starting and stopping a simulation binary for a test.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{HostError, Result};

/// The line a simulation prints on stderr once its channels are bound.
pub const READY_PREFIX: &str = "cosim-sim: ready endpoint=";

/// A running simulation (`<sim> --endpoint E ...`), killed on drop.
///
/// The simulation is any binary built by `verilator-tb` (`scripts/cosim-build-sim`, the GEMM
/// example, your own design): give its path. [`SimProcess::start`] is the one-line entry point (a
/// fresh private endpoint, default options); [`SimProcess::spawn`] and [`SimProcess::spawn_with`]
/// take the endpoint and options. [`sim_from_env`] finds the path from `COSIM_SIM`. A simulation
/// with `libcosim_dpi_bridge.so` beside it loads that copy: entries of `LD_LIBRARY_PATH` that hold
/// another one (cargo adds its target directories) are left out of the child's environment.
///
/// Its stdout and stderr go to a log file (default: a file in the system temp directory named
/// after the process; see [`SimProcess::log_path`]), which [`SimProcess::log`] reads back.
#[derive(Debug)]
pub struct SimProcess {
    child: Child,
    endpoint: String,
    log_path: PathBuf,
    exit: Option<ExitStatus>,
    /// The private directory of the endpoint when [`SimProcess::start`] made it; removed after
    /// the process is killed (fields drop after `Drop::drop`).
    _dir: Option<cosim_transport::PrivateDir>,
}

/// Options of [`SimProcess::spawn_with`].
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Extra command-line arguments after `--endpoint E`.
    pub args: Vec<String>,
    /// Where to write the simulation's output (default: a new file in the temp directory).
    pub log: Option<PathBuf>,
    /// How long to wait for the ready line.
    pub ready_timeout: Duration,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self { args: Vec::new(), log: None, ready_timeout: Duration::from_secs(30), env: Vec::new() }
    }
}

impl SimProcess {
    /// Starts the simulation `binary` on a fresh private `ipc://` endpoint (a new 0700 directory,
    /// removed on drop) and waits up to 30 s for its ready line. Connect with
    /// `HostModel::connect(sim.endpoint(), ...)`.
    pub fn start(binary: &Path) -> Result<Self> {
        let (dir, ep) = temp_endpoint("dev")?;
        let mut sim = Self::spawn_with(binary, &ep, SimOptions::default())?;
        sim._dir = Some(dir);
        Ok(sim)
    }

    /// Starts `binary --endpoint endpoint args...` and waits up to `ready_timeout` for its
    /// ready line.
    pub fn spawn(binary: &Path, endpoint: &str, args: &[&str], ready_timeout: Duration) -> Result<Self> {
        Self::spawn_with(
            binary,
            endpoint,
            SimOptions { args: args.iter().map(|s| s.to_string()).collect(), ready_timeout, ..Default::default() },
        )
    }

    /// [`SimProcess::spawn`] with all options.
    pub fn spawn_with(binary: &Path, endpoint: &str, opts: SimOptions) -> Result<Self> {
        if !binary.is_file() {
            return Err(HostError::Sim(format!(
                "simulation binary {} does not exist; build it first (scripts/cosim-build-sim, docs/user-guide.md)",
                binary.display()
            )));
        }
        let log_path = opts.log.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!(
                "cosim-sim-{}-{}.log",
                std::process::id(),
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
            ))
        });
        let mut log = std::fs::File::create(&log_path)
            .map_err(|e| HostError::Sim(format!("cannot create log {}: {e}", log_path.display())))?;
        let stdout_log = log
            .try_clone()
            .map_err(|e| HostError::Sim(format!("cannot duplicate log handle: {e}")))?;
        let mut cmd = Command::new(binary);
        cmd.arg("--endpoint").arg(endpoint).args(&opts.args);
        cmd.stdin(Stdio::null()).stdout(Stdio::from(stdout_log)).stderr(Stdio::piped());
        cosim_dpi_bridge::sim_process::keep_bridge_beside(&mut cmd, binary);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child =
            cmd.spawn().map_err(|e| HostError::Sim(format!("cannot start {}: {e}", binary.display())))?;
        let stderr = child.stderr.take().ok_or_else(|| HostError::Sim("no stderr pipe".into()))?;
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("sim-log".into())
            .spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let _ = writeln!(log, "{line}");
                    if line.starts_with(READY_PREFIX) {
                        if let Some(t) = tx.take() {
                            let _ = t.send(line);
                        }
                    }
                }
            })
            .map_err(|e| HostError::Sim(format!("cannot start log thread: {e}")))?;
        let mut sim = Self { child, endpoint: endpoint.to_string(), log_path, exit: None, _dir: None };
        let deadline = Instant::now() + opts.ready_timeout;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(_) => return Ok(sim),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stderr closed: the process died before becoming ready.
                    let status = sim.wait_exit(Duration::from_secs(2)).ok();
                    return Err(HostError::Sim(format!(
                        "simulation {} exited ({status:?}) before printing its ready line; log {}:\n{}",
                        binary.display(),
                        sim.log_path.display(),
                        sim.log()
                    )));
                }
            }
            if Instant::now() >= deadline {
                return Err(HostError::Sim(format!(
                    "simulation {} printed no ready line within {:?}; log {}:\n{}",
                    binary.display(),
                    opts.ready_timeout,
                    sim.log_path.display(),
                    sim.log()
                )));
            }
        }
    }

    /// The endpoint given with `--endpoint`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds (user + system) the simulation used so far, from `/proc/<pid>/stat` (which
    /// counts in USER_HZ, 100 on Linux whatever the kernel's HZ): e.g. to check that an idle
    /// simulation sleeps.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let pid = self.pid();
        let bad = |why: &str| HostError::Sim(format!("/proc/{pid}/stat: {why}"));
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| bad(&e.to_string()))?;
        // The fields after the command name (which may hold spaces) in parentheses: utime is the
        // 14th field of the line, stime the 15th.
        let rest = stat.rfind(')').and_then(|i| stat.get(i + 2..)).ok_or_else(|| bad("no command name"))?;
        let f: Vec<&str> = rest.split(' ').collect();
        let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| bad("no utime/stime"));
        Ok((tick(11)? + tick(12)?) as f64 / 100.0)
    }

    /// Path of the captured output.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Captured output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits up to `timeout` until the captured output contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return Ok(log);
            }
            if Instant::now() >= deadline {
                return Err(HostError::Timeout { what: format!("{needle:?} in the simulation log"), after: timeout });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (e.g. `libc::SIGTERM`, `libc::SIGINT`, `libc::SIGKILL`).
    pub fn signal(&self, sig: i32) -> Result<()> {
        let pid = libc::pid_t::try_from(self.child.id()).map_err(|_| HostError::Sim("pid out of range".into()))?;
        // SAFETY: kill(2) with a pid we own (our child, not yet reaped: `exit` is None or the
        // call is harmless ESRCH) has no memory-safety requirements.
        let rc = unsafe { libc::kill(pid, sig) };
        if rc != 0 && self.exit.is_none() {
            return Err(HostError::Sim(format!("kill({pid}, {sig}) failed: {}", std::io::Error::last_os_error())));
        }
        Ok(())
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(s) = self.exit {
            return Ok(s);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().map_err(|e| HostError::Sim(format!("wait failed: {e}")))? {
                self.exit = Some(s);
                // Give the log thread a moment to write the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(HostError::Timeout { what: "simulation exit".into(), after: timeout });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then waits up to `timeout` for a clean exit.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        self.wait_exit(timeout)
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh private directory (mode 0700, docs/protocol.md "Access control") and an `ipc://`
/// endpoint inside it, for one test. The directory (with its sockets) is removed when the
/// returned guard drops.
pub fn temp_endpoint(name: &str) -> Result<(cosim_transport::PrivateDir, String)> {
    let dir = cosim_transport::PrivateDir::new("test")
        .map_err(|e| HostError::Sim(format!("cannot create a private dir: {e}")))?;
    let ep = dir.endpoint(name);
    Ok((dir, ep))
}

/// A TCP endpoint on 127.0.0.1 with two consecutive free ports (base and base + 1), picked now.
pub fn free_tcp_endpoint() -> Result<String> {
    let port = cosim_transport::free_port_pair("127.0.0.1").map_err(|e| HostError::Sim(format!("free tcp ports: {e}")))?;
    Ok(format!("tcp://127.0.0.1:{port}"))
}

/// The environment variable [`sim_from_env`] reads: the path of the simulation to test.
pub const SIM_ENV: &str = "COSIM_SIM";

/// The simulation to test: the path in the environment variable `COSIM_SIM` if set, else
/// `default` (relative paths are taken from the current directory; `cargo test` runs in the
/// crate's directory). Fails, naming both, if that file does not exist. For a crate outside
/// this checkout: `sim_from_env("../build/sim")`, overridable as `COSIM_SIM=/path/to/sim cargo test`.
pub fn sim_from_env(default: impl AsRef<Path>) -> Result<PathBuf> {
    let (p, from) = match std::env::var_os(SIM_ENV) {
        Some(v) if !v.is_empty() => (PathBuf::from(v), format!("${SIM_ENV}")),
        _ => (default.as_ref().to_path_buf(), format!("the default (${SIM_ENV} is not set)")),
    };
    if p.is_file() {
        Ok(p)
    } else {
        Err(HostError::Sim(format!(
            "simulation {} (from {from}) does not exist: build it (scripts/cosim-build-sim) or set {SIM_ENV}=/path/to/sim",
            p.display()
        )))
    }
}

/// Path of a simulation of THIS checkout, for the project's own tests: top module `top` built by
/// `mk/hdl.mk` or `mk/gemm.mk` at `$COSIM_BUILD/sim/<top>/sim` (`COSIM_BUILD` defaults to
/// `<checkout>/build`). Fails with a message naming `make_target` if it is missing. A design of
/// your own is not there: use [`sim_from_env`] or give [`SimProcess::start`] its path.
pub fn sim_binary(top: &str, make_target: &str) -> Result<PathBuf> {
    let build = std::env::var_os("COSIM_BUILD")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("build"));
    let p = build.join("sim").join(top).join("sim");
    if p.is_file() {
        Ok(p)
    } else {
        Err(HostError::Sim(format!(
            "simulation binary {} is missing: build it with `make {make_target}`",
            p.display()
        )))
    }
}
