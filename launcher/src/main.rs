//! `cosim-launch`: one co-simulation run from the command line.
//!
//! Starts one Verilator simulation per accelerator (`<sim> --endpoint ipc://<private dir>/accelN`), waits
//! for each to print its ready line, boots QEMU with the guest kernel and initramfs and one
//! `-device accelerator-pcie` per simulation, copies the guest console to a log, follows the
//! guest's marker lines (`COSIM-BOOT`, `COSIM-RESULT`, `COSIM-FAIL`, `COSIM-DONE`, written by
//! `guest/initramfs/init`), and prints a results table. Every stage has its own timeout and a
//! failure names the stage. The launcher owns every process it starts: all are stopped when it
//! returns, on error and on Ctrl-C (children run in their own process groups).
//!
//! With `--connect ENDPOINT` (one per device) it starts no simulation: QEMU connects to
//! simulations that already run, on this machine or another one (docs/user-guide.md, "Two hosts").
//!
//! `unsafe` lives only in module `procs` (`kill(2)` on our own children and the `signal(2)`
//! handlers, each with its `// SAFETY:` line); the rest of the crate denies it.
#![deny(unsafe_code)]

mod inject;
mod markers;
#[allow(unsafe_code)]
mod procs;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};

use markers::GuestReport;
use procs::{Line, Proc, Source, INTERRUPTED};

/// Exit codes (also in `--help`).
const EXIT_OK: u8 = 0;
const EXIT_WORKLOAD_FAILED: u8 = 1;
const EXIT_SETUP: u8 = 3;
const EXIT_STAGE: u8 = 4;
const EXIT_INTERRUPTED: u8 = 130;

/// The line a simulation prints on stderr once it listens (see verilator-tb).
const SIM_READY: &str = "cosim-sim: ready endpoint=";

const DEFAULT_RUN: &str = "gemm --m 64 --n 64 --k 64 --seed 1 --check";

fn default_build() -> PathBuf {
    std::env::var_os("COSIM_BUILD")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            root.canonicalize().unwrap_or(root).join("build")
        })
}

#[derive(Parser, Debug)]
#[command(
    name = "cosim-launch",
    version,
    about = "Run the cosim guest in QEMU against accelerator RTL simulated by Verilator",
    long_about = "Starts one simulation per accelerator, waits until each is ready, boots QEMU with the \
guest (kernel + initramfs from `make guest`) and one `-device accelerator-pcie` per simulation, runs the \
workload given with --run inside the guest, and prints a results table (or JSON with --json).\n\n\
Stages, each with its own timeout: sim start (until every simulation prints its ready line), QEMU start \
(until the first console line), boot (until the guest's COSIM-BOOT line), workload (until COSIM-DONE), \
shutdown (until QEMU exits after the guest powers off).\n\n\
Default paths come from $COSIM_BUILD (default: <repo>/build): sim/gemm_top/sim, qemu/qemu-system-x86_64, \
guest/bzImage, guest/initramfs.cpio.gz.\n\n\
Simulations on another machine: --connect ENDPOINT (once per device) starts no simulation and skips the sim \
start stage; each -device accelerator-pcie gets endpoint=ENDPOINT. The simulation must already run with the \
matching endpoint: for two machines, the simulation on S runs with --endpoint 'tcp://S:PORT?peer=Q' and this \
launcher on Q gets --connect 'tcp://Q:PORT?peer=S' (S listens on PORT, Q on PORT+1; both ports must be open \
between the machines). A tcp link beyond loopback needs a shared key: set COSIM_KEY_FILE to the same key file \
(mode 600) for the simulation and for this launcher (QEMU inherits it); the launcher refuses to start without \
it. If the link drops, QEMU declares the device lost after 1 s (MMIO reads return all ones, the guest's job \
fails with an error) and resumes the session when the link is back. See docs/user-guide.md, \"Two hosts\".\n\n\
Exit status: 0 every workload item passed; 1 the workload ran but an item failed; 2 usage error; \
3 setup error (missing artifact, cannot start a process); 4 a stage timed out or a process died early; \
130 interrupted (Ctrl-C, SIGTERM).",
    after_help = "Examples:\n  cosim-launch --devices 2 --run 'gemm --m 64 --n 64 --k 64 --check --device all' --run info\n  \
COSIM_KEY_FILE=~/cosim.key cosim-launch --connect 'tcp://10.0.0.1:7000?peer=10.0.0.2' --run 'gemm --m 64 --n 64 --k 64 --check'"
)]
struct Cli {
    /// Number of accelerator-pcie devices, each backed by its own simulation (0: no accelerator).
    #[arg(long, default_value_t = 1)]
    devices: usize,

    /// Workload item run in the guest: accel-tool arguments, or "sh:COMMAND". Repeatable; items
    /// run in order. Must not contain double quotes or ';'.
    #[arg(long = "run", value_name = "ITEM")]
    runs: Vec<String>,

    /// Simulation binary [default: $COSIM_BUILD/sim/gemm_top/sim].
    #[arg(long)]
    sim: Option<PathBuf>,

    /// Extra argument for every simulation (repeatable), e.g. --sim-arg=--stats.
    #[arg(long = "sim-arg", value_name = "ARG", allow_hyphen_values = true)]
    sim_args: Vec<String>,

    /// Pass --max-cycles N to the simulations.
    #[arg(long)]
    max_cycles: Option<u64>,

    /// Record waveforms: each simulation gets --waves <log-dir>/simN.fst.
    #[arg(long)]
    waves: bool,

    /// Pass --stats to the simulations (printed into their logs at exit).
    #[arg(long)]
    sim_stats: bool,

    /// QEMU binary [default: $COSIM_BUILD/qemu/qemu-system-x86_64].
    #[arg(long)]
    qemu: Option<PathBuf>,

    /// Guest kernel [default: $COSIM_BUILD/guest/bzImage].
    #[arg(long)]
    kernel: Option<PathBuf>,

    /// Guest initramfs [default: $COSIM_BUILD/guest/initramfs.cpio.gz].
    #[arg(long)]
    initrd: Option<PathBuf>,

    /// Guest memory in MiB.
    #[arg(long, default_value_t = 512)]
    memory: u32,

    /// Guest CPUs.
    #[arg(long, default_value_t = 1)]
    smp: u32,

    /// Extra kernel command-line text (e.g. "cosim.net=1 cosim.klog=0").
    #[arg(long, default_value = "")]
    append: String,

    /// Extra option for every -device accelerator-pcie (repeatable), e.g. timeout-ms=5000.
    #[arg(long = "device-opt", value_name = "KEY=VALUE")]
    device_opts: Vec<String>,

    /// Connect accelerator 0's NIC channel to this QEMU netdev (the text after "-netdev ", without
    /// id=), e.g. "stream,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port=5555".
    #[arg(long, value_name = "NETDEV")]
    accel_netdev: Option<String>,

    /// Give the guest an e1000 NIC on this QEMU netdev (the text after "-netdev ", without id=),
    /// and boot it with cosim.net=1 (modules loaded, link up; `accel-tool net` sends raw frames).
    #[arg(long, value_name = "NETDEV")]
    nic: Option<String>,

    /// Extra QEMU argument (repeatable; use --qemu-arg=-foo for values starting with '-').
    #[arg(long = "qemu-arg", value_name = "ARG", allow_hyphen_values = true)]
    qemu_args: Vec<String>,

    /// Transport between QEMU and the simulations: "ipc" (sockets in a fresh private directory,
    /// mode 0700, under $XDG_RUNTIME_DIR or the temp dir) or "tcp" (127.0.0.1, free ports picked
    /// at run time, with a fresh key so other local users cannot inject: COSIM_KEY_FILE if set,
    /// else generated in the private directory). See docs/protocol.md, "Access control".
    #[arg(long, default_value = "ipc", value_parser = ["ipc", "tcp"])]
    transport: String,

    /// Use a simulation that already runs at ENDPOINT instead of starting one (repeatable: one
    /// per device, in order; replaces --devices). The sim start stage is skipped and QEMU gets
    /// -device accelerator-pcie,endpoint=ENDPOINT. The simulation must already run with the
    /// matching endpoint (two machines: simulation `--endpoint 'tcp://SIM:P?peer=QEMU'`, here
    /// `--connect 'tcp://QEMU:P?peer=SIM'`) and, for tcp beyond loopback, with the same key file
    /// as this launcher (COSIM_KEY_FILE, mode 600; required here). Cannot be combined with the
    /// options that start or steer simulations.
    #[arg(
        long = "connect",
        value_name = "ENDPOINT",
        value_parser = parse_connect,
        conflicts_with_all = ["devices", "sim", "sim_args", "max_cycles", "waves", "sim_stats", "transport",
                              "timeout_sim_start", "kill_sim_after"],
    )]
    connect: Vec<String>,

    /// Directory for the logs (console, QEMU stderr, simulations, UARTs, results.json)
    /// [default: $COSIM_BUILD/logs/run-<unix time>-<pid>].
    #[arg(long)]
    log_dir: Option<PathBuf>,

    /// Seconds until every simulation is ready.
    #[arg(long, default_value_t = 60)]
    timeout_sim_start: u64,
    /// Seconds from starting QEMU to the first guest console line.
    #[arg(long, default_value_t = 60)]
    timeout_qemu_start: u64,
    /// Seconds from the first console line to the guest's COSIM-BOOT line.
    #[arg(long, default_value_t = 180)]
    timeout_boot: u64,
    /// Seconds from COSIM-BOOT to COSIM-DONE.
    #[arg(long, default_value_t = 600)]
    timeout_workload: u64,
    /// Seconds from COSIM-DONE until QEMU has exited.
    #[arg(long, default_value_t = 30)]
    timeout_shutdown: u64,

    /// Fault injection for tests: kill simulation 0 (SIGKILL) this many seconds after the
    /// workload stage starts.
    #[arg(long, value_name = "SECS")]
    kill_sim_after: Option<f64>,

    /// Fault injection for tests: while the workload runs, a separate socket pushes RATE stray
    /// frames per second (malformed, other protocol versions, other sessions' INIT, CONFIG,
    /// GOODBYE and HEARTBEAT, stale completions) into every simulation's h2d channel and QEMU's
    /// d2h channel. The session rules drop them; the jobs must not notice. ipc transport only.
    #[arg(long, value_name = "RATE")]
    inject_stray: Option<u32>,

    /// Print the guest console on stderr as it arrives.
    #[arg(long, short)]
    verbose: bool,

    /// Print one JSON object with the whole run's results on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

fn log(msg: impl AsRef<str>) {
    tracing::info!("{}", msg.as_ref());
}

/// `--connect` values: an endpoint the transport accepts (docs/protocol.md, "Channels").
fn parse_connect(s: &str) -> Result<String, String> {
    cosim_transport::Endpoint::parse(s).map(|_| s.to_string()).map_err(|e| e.to_string())
}

impl Cli {
    /// Number of accelerators: one per `--connect` endpoint, else `--devices`.
    fn device_count(&self) -> usize {
        if self.connect.is_empty() {
            self.devices
        } else {
            self.connect.len()
        }
    }
}

/// A `--connect` tcp endpoint beyond loopback needs the key the simulation was started with;
/// fail here with a clear message rather than in QEMU's realize.
fn check_connect_key(endpoints: &[String]) -> Result<()> {
    for ep in endpoints {
        let parsed = cosim_transport::Endpoint::parse(ep)?;
        if parsed.is_local() {
            continue;
        }
        match std::env::var_os(cosim_transport::KEY_FILE_ENV).filter(|v| !v.is_empty()) {
            None => bail!(
                "--connect {ep} leaves this machine's loopback, so the link needs a shared key: set {}=<file> \
                 to the key file the simulation was started with (64 hex digits, mode 600; docs/protocol.md, \
                 \"Access control\")",
                cosim_transport::KEY_FILE_ENV
            ),
            Some(k) if !Path::new(&k).is_file() => bail!(
                "{}={} (for --connect {ep}) is not a file: copy the simulation's key file here",
                cosim_transport::KEY_FILE_ENV,
                Path::new(&k).display()
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

/// `tracing` on stderr, filter from `COSIM_LOG` (default `info`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("COSIM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Failure of the run, with the exit code it maps to.
struct RunError {
    code: u8,
    stage: &'static str,
    message: String,
}

fn stage_err(code: u8, stage: &'static str, message: impl Into<String>) -> RunError {
    RunError { code, stage, message: message.into() }
}

impl From<anyhow::Error> for RunError {
    fn from(e: anyhow::Error) -> Self {
        stage_err(EXIT_SETUP, "setup", format!("{e:#}"))
    }
}

fn require_file(p: &Path, what: &str, make: &str) -> Result<()> {
    if !p.is_file() {
        bail!("{what} {} is missing: build it with `{make}`", p.display());
    }
    Ok(())
}

/// Two consecutive free TCP ports on 127.0.0.1 (the transport uses port and port+1).
fn free_tcp_base() -> Result<u16> {
    for _ in 0..50 {
        let a = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = a.local_addr()?.port();
        if port < u16::MAX - 1 && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no two consecutive free TCP ports on 127.0.0.1")
}

struct Run {
    cli: Cli,
    log_dir: PathBuf,
    sims: Vec<Proc>,
    qemu: Option<Proc>,
    report: GuestReport,
    stage_times: serde_json::Map<String, Value>,
    tmp_dir: Option<cosim_transport::PrivateDir>,
    console_tail: Vec<String>,
    qemu_stderr_tail: Vec<String>,
    sim_tails: Vec<Vec<String>>,
    sim_exit_logged: Vec<bool>,
    sim_ready: Vec<bool>,
    endpoints: Vec<String>,
    report_injected: Option<u64>,
}

fn push_tail(v: &mut Vec<String>, line: String) {
    v.push(line);
    if v.len() > 20 {
        v.remove(0);
    }
}

impl Run {
    fn stop_all(&mut self) {
        if let Some(q) = self.qemu.as_mut() {
            q.stop(Duration::from_secs(5));
        }
        // Simulations get time to close their waveform files and print statistics.
        for s in self.sims.iter_mut() {
            s.stop(Duration::from_secs(10));
        }
        // Dropping the private directory removes it with the sockets and the key.
        drop(self.tmp_dir.take());
    }

    fn handle_line(&mut self, line: Line) {
        match line.source {
            Source::Console => {
                if self.cli.verbose {
                    tracing::info!(target: "guest", "{}", line.text);
                }
                if let Some(m) = markers::parse_line(&line.text) {
                    self.report.add(m);
                }
                push_tail(&mut self.console_tail, line.text);
            }
            Source::QemuStderr => {
                tracing::info!(target: "qemu", "{}", line.text);
                push_tail(&mut self.qemu_stderr_tail, line.text);
            }
            Source::Sim(i) => {
                if !self.sim_ready[i] && line.text.contains(SIM_READY) {
                    self.sim_ready[i] = true;
                    log(format!("simulation {i} ready: {}", line.text));
                }
                if self.cli.verbose {
                    tracing::info!(target: "sim", "sim{i}: {}", line.text);
                }
                push_tail(&mut self.sim_tails[i], line.text);
            }
        }
    }

    /// Waits until `done(self)` holds, handling lines, checking children and the deadline.
    fn wait_stage(
        &mut self,
        rx: &mpsc::Receiver<Line>,
        stage: &'static str,
        timeout: Duration,
        mut done: impl FnMut(&Run) -> bool,
        mut on_tick: impl FnMut(&mut Run, Duration),
    ) -> Result<(), RunError> {
        let t0 = Instant::now();
        log(format!("stage {stage}: waiting (timeout {} s)", timeout.as_secs()));
        loop {
            if done(self) {
                let secs = t0.elapsed().as_secs_f64();
                self.stage_times.insert(stage.replace(' ', "_"), json!((secs * 1000.0).round() / 1000.0));
                log(format!("stage {stage}: done in {secs:.1} s"));
                return Ok(());
            }
            if INTERRUPTED.load(Ordering::SeqCst) {
                return Err(stage_err(EXIT_INTERRUPTED, stage, format!("interrupted during stage {stage}")));
            }
            if t0.elapsed() > timeout {
                return Err(stage_err(
                    EXIT_STAGE,
                    stage,
                    format!("stage {stage} timed out after {} s{}", timeout.as_secs(), self.context_for(stage)),
                ));
            }
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(l) => {
                    self.handle_line(l);
                    while let Ok(l) = rx.try_recv() {
                        self.handle_line(l);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {}
            }
            on_tick(self, t0.elapsed());
            // A process that ended early ends the stage (after its last output was read).
            for i in 0..self.sims.len() {
                if let Some(st) = self.sims[i].poll() {
                    if !self.sim_exit_logged[i] {
                        self.sim_exit_logged[i] = true;
                        tracing::warn!(
                            "simulation {i} exited ({st}) during stage {stage}; see {}",
                            self.log_dir.join(format!("sim{i}.log")).display()
                        );
                    }
                    if stage == "sim start" {
                        drain(rx, self);
                        return Err(stage_err(
                            EXIT_STAGE,
                            stage,
                            format!(
                                "simulation {i} exited ({st}) before it was ready; last lines:\n  {}",
                                self.sim_tails[i].join("\n  ")
                            ),
                        ));
                    }
                }
            }
            if let Some(st) = self.qemu.as_mut().and_then(|q| q.poll()) {
                drain(rx, self);
                if done(self) {
                    continue;
                }
                return Err(stage_err(
                    EXIT_STAGE,
                    stage,
                    format!("QEMU exited ({st}) during stage {stage}{}", self.context_for(stage)),
                ));
            }
        }
    }

    fn context_for(&self, stage: &str) -> String {
        let mut s = String::new();
        if stage == "sim start" {
            for (i, t) in self.sim_tails.iter().enumerate() {
                if !self.sim_ready[i] {
                    s.push_str(&format!("; simulation {i} is not ready; its last lines:\n  {}", t.join("\n  ")));
                }
            }
        }
        if !self.qemu_stderr_tail.is_empty() {
            s.push_str(&format!("; QEMU stderr:\n  {}", self.qemu_stderr_tail.join("\n  ")));
        }
        if stage != "sim start" && stage != "QEMU start" && !self.console_tail.is_empty() {
            let tail: Vec<&String> = self.console_tail.iter().rev().take(8).rev().collect();
            s.push_str(&format!(
                "\n  last console lines:\n  {}",
                tail.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\n  ")
            ));
        }
        s.push_str(&format!("\n  logs: {}", self.log_dir.display()));
        s
    }
}

fn drain(rx: &mpsc::Receiver<Line>, run: &mut Run) {
    // Give the pump threads a moment to deliver what the process wrote before it ended.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(300) {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(l) => run.handle_line(l),
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(_) => break,
        }
    }
}

fn workload_string(runs: &[String]) -> Result<String> {
    let items: Vec<&str> = if runs.is_empty() { vec![DEFAULT_RUN] } else { runs.iter().map(|s| s.as_str()).collect() };
    for it in &items {
        if it.contains('"') || it.contains(';') {
            bail!("--run item {it:?} contains '\"' or ';', which the kernel command line cannot carry");
        }
    }
    Ok(items.join(";"))
}

fn execute(run: &mut Run, rx: &mpsc::Receiver<Line>, tx: &mpsc::Sender<Line>) -> Result<(), RunError> {
    let build = default_build();
    let cli = &run.cli;
    let sim_bin = cli.sim.clone().unwrap_or_else(|| build.join("sim/gemm_top/sim"));
    let qemu_bin = cli.qemu.clone().unwrap_or_else(|| build.join("qemu/qemu-system-x86_64"));
    let kernel = cli.kernel.clone().unwrap_or_else(|| build.join("guest/bzImage"));
    let initrd = cli.initrd.clone().unwrap_or_else(|| build.join("guest/initramfs.cpio.gz"));
    if cli.devices > 0 && cli.connect.is_empty() {
        require_file(&sim_bin, "simulation binary", "make sim-gemm")?;
    }
    require_file(&qemu_bin, "QEMU binary", "make qemu")?;
    require_file(&kernel, "guest kernel", "make guest")?;
    require_file(&initrd, "guest initramfs", "make guest")?;
    let workload = workload_string(&cli.runs)?;

    // Endpoints.
    // Endpoints, private to this user (docs/protocol.md, "Access control").
    let mut endpoints = Vec::new();
    let mut key_file = None;
    if !cli.connect.is_empty() {
        // Simulations started elsewhere: QEMU gets their endpoints and our COSIM_KEY_FILE.
        check_connect_key(&cli.connect)?;
        for (i, ep) in cli.connect.iter().enumerate() {
            log(format!("accelerator {i}: connecting to the running simulation at {ep} (no simulation started)"));
        }
        endpoints = cli.connect.clone();
        run.endpoints = endpoints.clone();
    } else if cli.devices > 0 {
        let dir = cosim_transport::PrivateDir::new("launch").context("cannot create the run's private directory")?;
        if cli.transport == "ipc" {
            for i in 0..cli.devices {
                endpoints.push(dir.endpoint(&format!("accel{i}")));
            }
        } else {
            for _ in 0..cli.devices {
                endpoints.push(format!("tcp://127.0.0.1:{}", free_tcp_base()?));
            }
            // Loopback tcp is open to every local user: give both sides a key.
            if std::env::var_os(cosim_transport::KEY_FILE_ENV).filter(|v| !v.is_empty()).is_none() {
                let k = dir.path().join("link.key");
                cosim_transport::generate_key_file(&k).context("cannot create the link key")?;
                key_file = Some(k);
            }
        }
        run.tmp_dir = Some(dir);
        run.endpoints = endpoints.clone();
    }

    // Stage: sim start (none with --connect).
    let mut pids = serde_json::Map::new();
    let start_sims = if cli.connect.is_empty() { endpoints.as_slice() } else { &[] };
    for (i, ep) in start_sims.iter().enumerate() {
        let mut cmd = Command::new(&sim_bin);
        cmd.arg("--endpoint").arg(ep);
        if let Some(k) = &key_file {
            cmd.env(cosim_transport::KEY_FILE_ENV, k);
        }
        if let Some(n) = cli.max_cycles {
            cmd.arg("--max-cycles").arg(n.to_string());
        }
        if cli.waves {
            cmd.arg("--waves").arg(run.log_dir.join(format!("sim{i}.fst")));
        }
        if cli.sim_stats {
            cmd.arg("--stats");
        }
        cmd.args(&cli.sim_args);
        let logp = run.log_dir.join(format!("sim{i}.log"));
        log(format!("starting simulation {i}: {} --endpoint {ep} (log {})", sim_bin.display(), logp.display()));
        let p = Proc::spawn(&format!("simulation {i}"), cmd, (&logp, Source::Sim(i)), (&logp, Source::Sim(i)), tx)?;
        pids.insert(format!("sim{i}"), json!(p.pid()));
        run.sims.push(p);
    }
    if cli.connect.is_empty() {
        run.wait_stage(
            rx,
            "sim start",
            Duration::from_secs(cli.timeout_sim_start),
            |r| r.sim_ready.iter().all(|&x| x),
            |_, _| {},
        )?;
    }

    // Stage: QEMU start.
    let cli = &run.cli;
    let mut append = format!("console=ttyS0 panic=-1 cosim.run=\"{workload}\"");
    if cli.nic.is_some() {
        append.push_str(" cosim.net=1");
    }
    if !cli.append.is_empty() {
        append.push(' ');
        append.push_str(&cli.append);
    }
    // x86 COMMAND_LINE_SIZE is 2048 bytes including the NUL.
    if append.len() > 2047 {
        return Err(stage_err(
            EXIT_SETUP,
            "setup",
            format!("kernel command line is {} bytes, the limit is 2047: shorten the --run items", append.len()),
        ));
    }
    let mut cmd = Command::new(&qemu_bin);
    if let Some(k) = &key_file {
        cmd.env(cosim_transport::KEY_FILE_ENV, k);
    }
    cmd.args(["-M", "q35", "-accel", "tcg", "-m"])
        .arg(cli.memory.to_string())
        .arg("-smp")
        .arg(cli.smp.to_string())
        .args(["-nographic", "-no-reboot", "-bios", "qboot.rom", "-vga", "none"])
        .args(["-L", "/usr/share/seabios", "-L", "/usr/share/qemu", "-L", "/usr/lib/ipxe/qemu"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-append")
        .arg(&append);
    if let Some(nd) = &cli.accel_netdev {
        cmd.arg("-netdev").arg(format!("{nd},id=accnet0"));
    }
    if let Some(nd) = &cli.nic {
        cmd.arg("-netdev").arg(format!("{nd},id=guestnet0"));
        cmd.arg("-device").arg("e1000,netdev=guestnet0");
    }
    for (i, ep) in endpoints.iter().enumerate() {
        let uart = run.log_dir.join(format!("accel{i}-uart.log"));
        cmd.arg("-chardev").arg(format!("file,id=accuart{i},path={}", uart.display()));
        let mut dev = format!("accelerator-pcie,id=accel{i},endpoint={ep},chardev=accuart{i}");
        if i == 0 && cli.accel_netdev.is_some() {
            dev.push_str(",netdev=accnet0");
        }
        for o in &cli.device_opts {
            dev.push(',');
            dev.push_str(o);
        }
        cmd.arg("-device").arg(dev);
    }
    cmd.args(&cli.qemu_args);
    let argv: Vec<String> = std::iter::once(qemu_bin.display().to_string())
        .chain(cmd.get_args().map(|a| {
            let s = a.to_string_lossy().to_string();
            if s.contains(' ') || s.contains('"') { format!("'{s}'") } else { s }
        }))
        .collect();
    let _ = std::fs::write(run.log_dir.join("qemu-cmdline.txt"), argv.join(" ") + "\n");
    let console = run.log_dir.join("console.log");
    log(format!("starting QEMU (console log {})", console.display()));
    let q = Proc::spawn(
        "QEMU",
        cmd,
        (&console, Source::Console),
        (&run.log_dir.join("qemu-stderr.log"), Source::QemuStderr),
        tx,
    )?;
    pids.insert("qemu".into(), json!(q.pid()));
    run.qemu = Some(q);
    let _ = std::fs::write(run.log_dir.join("pids.json"), Value::Object(pids).to_string() + "\n");

    let t_qemu = Duration::from_secs(run.cli.timeout_qemu_start);
    run.wait_stage(rx, "QEMU start", t_qemu, |r| !r.console_tail.is_empty(), |_, _| {})?;
    let t_boot = Duration::from_secs(run.cli.timeout_boot);
    run.wait_stage(rx, "boot", t_boot, |r| r.report.boot.is_some(), |_, _| {})?;
    if let Some(b) = &run.report.boot {
        log(format!("guest up: {b}"));
        let seen = b["devices"].as_u64().unwrap_or(0) as usize;
        if seen != run.cli.device_count() {
            tracing::warn!("the guest sees {seen} accelerator(s), {} were configured", run.cli.device_count());
        }
    }

    let t_work = Duration::from_secs(run.cli.timeout_workload);
    let injector = match run.cli.inject_stray {
        Some(rate) if rate > 0 => {
            log(format!("fault injection: pushing {rate} stray frames/s into each of {} channels", 2 * run.endpoints.len()));
            Some(inject::start(&run.endpoints, rate)?)
        }
        _ => None,
    };
    let kill_after = run.cli.kill_sim_after.map(Duration::from_secs_f64);
    let mut killed = false;
    let work = run.wait_stage(
        rx,
        "workload",
        t_work,
        |r| r.report.done.is_some(),
        |r, elapsed| {
            if let Some(k) = kill_after {
                if !killed && elapsed >= k && !r.sims.is_empty() {
                    log(format!("fault injection: killing simulation 0 after {:.1} s of workload", elapsed.as_secs_f64()));
                    r.sims[0].kill_now();
                    killed = true;
                }
            }
        },
    );
    if let Some(i) = injector {
        let n = i.stop();
        log(format!("fault injection: {n} stray frames pushed"));
        run.report_injected = Some(n);
    }
    work?;

    let t_shut = Duration::from_secs(run.cli.timeout_shutdown);
    // QEMU's exit is recorded by the poll in wait_stage's loop.
    run.wait_stage(rx, "shutdown", t_shut, |r| r.qemu.as_ref().is_some_and(|q| q.exited()), |_, _| {})?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    procs::install_signal_handlers();
    let log_dir = cli.log_dir.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        default_build().join("logs").join(format!("run-{secs}-{}", std::process::id()))
    });
    if let Err(e) = std::fs::create_dir_all(&log_dir) {
        tracing::error!("cannot create log dir {}: {e}", log_dir.display());
        return ExitCode::from(EXIT_SETUP);
    }
    let devices = cli.device_count();
    let json_out = cli.json;
    let mut run = Run {
        cli,
        log_dir: log_dir.clone(),
        sims: Vec::new(),
        qemu: None,
        report: GuestReport::default(),
        stage_times: serde_json::Map::new(),
        tmp_dir: None,
        console_tail: Vec::new(),
        qemu_stderr_tail: Vec::new(),
        sim_tails: vec![Vec::new(); devices],
        sim_exit_logged: vec![false; devices],
        sim_ready: vec![false; devices],
        endpoints: Vec::new(),
        report_injected: None,
    };
    let (tx, rx) = mpsc::channel();
    let t0 = Instant::now();
    let outcome = execute(&mut run, &rx, &tx);
    run.stop_all();
    drain(&rx, &mut run);

    let (code, stage, error) = match &outcome {
        Ok(()) => {
            let code = if run.report.all_ok() { EXIT_OK } else { EXIT_WORKLOAD_FAILED };
            (code, None, None)
        }
        Err(e) => (e.code, Some(e.stage), Some(e.message.clone())),
    };
    let summary = json!({
        "ok": code == EXIT_OK,
        "exit_code": code,
        "failed_stage": stage,
        "error": error,
        "devices": devices,
        "log_dir": log_dir.display().to_string(),
        "stage_seconds": Value::Object(run.stage_times.clone()),
        "wall_seconds": (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "guest": run.report.to_json(),
        "stray_frames_injected": run.report_injected,
        "connect": run.cli.connect,
    });
    let _ = std::fs::write(log_dir.join("results.json"), format!("{summary:#}\n"));

    if let Some(e) = &error {
        tracing::error!("{e}");
    }
    if json_out {
        println!("{summary}");
    } else {
        print!("{}", markers::table(&run.report));
        match code {
            EXIT_OK => println!("result: PASS (logs in {})", log_dir.display()),
            EXIT_WORKLOAD_FAILED => println!("result: FAIL: a workload item failed (logs in {})", log_dir.display()),
            _ => println!(
                "result: ERROR in stage {}: see above (logs in {})",
                stage.unwrap_or("?"),
                log_dir.display()
            ),
        }
    }
    ExitCode::from(code)
}
