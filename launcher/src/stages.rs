//! The stages of one launcher run and the wait for each: sim start (until every simulation
//! printed its ready line), QEMU start (until the first console line), boot (until `COSIM-BOOT`),
//! workload (until `COSIM-DONE`), shutdown (until QEMU exits). [`Stages`] owns the simulations and
//! QEMU it starts (their output goes to the log directory and, line by line, through one channel
//! to [`Stages::wait`]), follows the guest's marker lines into a [`GuestReport`], and turns a
//! timeout, a process that ended early or an interrupt into a [`StageError`] that names the stage
//! and carries the last lines of QEMU, the console or the simulations (docs/guest.md, "The
//! launcher").

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::markers::{self, GuestReport};
use crate::procs::{self, Line, Output, Proc};
use crate::{exit, Error};

/// The line a simulation prints on stderr once it listens (see verilator-tb).
pub const SIM_READY: &str = "cosim-sim: ready endpoint=";

/// How many lines of each stream are kept for error messages.
const TAIL: usize = 20;

/// A stage of the run, with its own timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    SimStart,
    QemuStart,
    Boot,
    Workload,
    Shutdown,
}

impl Stage {
    /// The name in messages and in `failed_stage` (`stage_seconds` keys: spaces as `_`).
    pub fn name(self) -> &'static str {
        match self {
            Stage::SimStart => "sim start",
            Stage::QemuStart => "QEMU start",
            Stage::Boot => "boot",
            Stage::Workload => "workload",
            Stage::Shutdown => "shutdown",
        }
    }
}

/// Which output stream of which process a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Sim(usize),
    Console,
    QemuStderr,
}

/// A stage that failed, with the exit code it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageError {
    pub code: u8,
    pub stage: Stage,
    pub message: String,
}

fn log(msg: impl AsRef<str>) {
    tracing::info!(target: "cosim_launch", "{}", msg.as_ref());
}

fn push_tail(v: &mut Vec<String>, line: String) {
    v.push(line);
    if v.len() > TAIL {
        v.remove(0);
    }
}

/// The processes of one run and what they said so far.
pub struct Stages {
    log_dir: PathBuf,
    verbose: bool,
    tx: mpsc::Sender<Line<Source>>,
    rx: mpsc::Receiver<Line<Source>>,
    sims: Vec<Proc>,
    qemu: Option<Proc>,
    /// What the guest reported in its marker lines.
    pub report: GuestReport,
    stage_seconds: serde_json::Map<String, Value>,
    console_tail: Vec<String>,
    qemu_stderr_tail: Vec<String>,
    sim_tails: Vec<Vec<String>>,
    sim_exit_logged: Vec<bool>,
    sim_ready: Vec<bool>,
}

impl Stages {
    /// A run with its logs in `log_dir`; `verbose` copies the console and the simulations' output
    /// to the log (`tracing`) as it arrives.
    pub fn new(log_dir: &Path, verbose: bool) -> Self {
        let (tx, rx) = mpsc::channel();
        Stages {
            log_dir: log_dir.to_path_buf(),
            verbose,
            tx,
            rx,
            sims: Vec::new(),
            qemu: None,
            report: GuestReport::default(),
            stage_seconds: serde_json::Map::new(),
            console_tail: Vec::new(),
            qemu_stderr_tail: Vec::new(),
            sim_tails: Vec::new(),
            sim_exit_logged: Vec::new(),
            sim_ready: Vec::new(),
        }
    }

    /// Where simulation `i`'s stdout and stderr go.
    pub fn sim_log(&self, i: usize) -> PathBuf {
        self.log_dir.join(format!("sim{i}.log"))
    }

    /// Where the guest console goes.
    pub fn console_log(&self) -> PathBuf {
        self.log_dir.join("console.log")
    }

    /// Starts the next simulation (index: the number started so far); returns its pid.
    pub fn spawn_sim(&mut self, cmd: Command) -> Result<u32, Error> {
        let i = self.sims.len();
        let logp = self.sim_log(i);
        let out = Output::Log(&logp, Source::Sim(i));
        let p = Proc::spawn(&format!("simulation {i}"), cmd, out, out, &self.tx)?;
        let pid = p.pid();
        self.sims.push(p);
        self.sim_tails.push(Vec::new());
        self.sim_exit_logged.push(false);
        self.sim_ready.push(false);
        Ok(pid)
    }

    /// Starts QEMU (stdout is the guest console); returns its pid.
    pub fn spawn_qemu(&mut self, cmd: Command) -> Result<u32, Error> {
        let console = self.console_log();
        let stderr = self.log_dir.join("qemu-stderr.log");
        let q = Proc::spawn(
            "QEMU",
            cmd,
            Output::Log(&console, Source::Console),
            Output::Log(&stderr, Source::QemuStderr),
            &self.tx,
        )?;
        let pid = q.pid();
        self.qemu = Some(q);
        Ok(pid)
    }

    /// Every simulation printed its ready line.
    pub fn sims_ready(&self) -> bool {
        self.sim_ready.iter().all(|&x| x)
    }

    /// The guest console printed its first line.
    pub fn console_started(&self) -> bool {
        !self.console_tail.is_empty()
    }

    /// QEMU ran and has exited (as last seen by [`Stages::wait`]).
    pub fn qemu_exited(&self) -> bool {
        self.qemu.as_ref().is_some_and(|q| q.exited())
    }

    /// Number of simulations started.
    pub fn sim_count(&self) -> usize {
        self.sims.len()
    }

    /// SIGKILLs simulation `i` now (fault injection).
    pub fn kill_sim(&mut self, i: usize) {
        if let Some(s) = self.sims.get_mut(i) {
            s.kill_now();
        }
    }

    /// Seconds each completed stage took, by stage name with spaces as `_`.
    pub fn stage_seconds(&self) -> &serde_json::Map<String, Value> {
        &self.stage_seconds
    }

    /// Stops QEMU, then every simulation (SIGTERM, then SIGKILL after a grace period), then reads
    /// what they wrote before they ended.
    pub fn stop_all(&mut self) {
        if let Some(q) = self.qemu.as_mut() {
            q.stop(Duration::from_secs(5));
        }
        // Simulations get time to close their waveform files and print statistics.
        for s in self.sims.iter_mut() {
            s.stop(Duration::from_secs(10));
        }
    }

    /// Handles the lines that arrive within a moment (the pump threads deliver what a process
    /// wrote before it ended).
    pub fn drain(&mut self) {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(300) {
            match self.rx.recv_timeout(Duration::from_millis(50)) {
                Ok(l) => self.handle_line(l),
                Err(_) => break,
            }
        }
    }

    fn handle_line(&mut self, line: Line<Source>) {
        match line.source {
            Source::Console => {
                if self.verbose {
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
                if self.verbose {
                    tracing::info!(target: "sim", "sim{i}: {}", line.text);
                }
                push_tail(&mut self.sim_tails[i], line.text);
            }
        }
    }

    /// Waits until `done(self)` holds, handling lines, checking the children, interrupts and the
    /// deadline; `on_tick` runs after each round with the time spent in the stage.
    pub fn wait(
        &mut self,
        stage: Stage,
        timeout: Duration,
        mut done: impl FnMut(&Stages) -> bool,
        mut on_tick: impl FnMut(&mut Stages, Duration),
    ) -> Result<(), StageError> {
        let name = stage.name();
        let fail = |code, message| StageError { code, stage, message };
        let t0 = Instant::now();
        log(format!("stage {name}: waiting (timeout {} s)", timeout.as_secs()));
        loop {
            if done(self) {
                let secs = t0.elapsed().as_secs_f64();
                self.stage_seconds.insert(name.replace(' ', "_"), json!((secs * 1000.0).round() / 1000.0));
                log(format!("stage {name}: done in {secs:.1} s"));
                return Ok(());
            }
            if procs::interrupted() {
                return Err(fail(exit::INTERRUPTED, format!("interrupted during stage {name}")));
            }
            if t0.elapsed() > timeout {
                return Err(fail(
                    exit::STAGE,
                    format!("stage {name} timed out after {} s{}", timeout.as_secs(), self.context_for(stage)),
                ));
            }
            if let Ok(l) = self.rx.recv_timeout(Duration::from_millis(50)) {
                self.handle_line(l);
                while let Ok(l) = self.rx.try_recv() {
                    self.handle_line(l);
                }
            }
            on_tick(self, t0.elapsed());
            // A process that ended early ends the stage (after its last output was read).
            for i in 0..self.sims.len() {
                if let Some(st) = self.sims[i].poll() {
                    if !self.sim_exit_logged[i] {
                        self.sim_exit_logged[i] = true;
                        // A simulation ends by itself when QEMU says goodbye at shutdown: expected.
                        if stage == Stage::Shutdown && st.success() {
                            tracing::info!(target: "cosim_launch", "simulation {i} exited ({st}) at shutdown");
                        } else {
                            tracing::warn!(
                                target: "cosim_launch",
                                "simulation {i} exited ({st}) during stage {name}; see {}",
                                self.sim_log(i).display()
                            );
                        }
                    }
                    if stage == Stage::SimStart {
                        self.drain();
                        return Err(fail(
                            exit::STAGE,
                            format!(
                                "simulation {i} exited ({st}) before it was ready; last lines:\n  {}",
                                self.sim_tails[i].join("\n  ")
                            ),
                        ));
                    }
                }
            }
            if let Some(st) = self.qemu.as_mut().and_then(|q| q.poll()) {
                self.drain();
                if done(self) {
                    continue;
                }
                return Err(fail(
                    exit::STAGE,
                    format!("QEMU exited ({st}) during stage {name}{}", self.context_for(stage)),
                ));
            }
        }
    }

    /// What to show with a failed stage: the lines of whatever was not ready, QEMU's stderr, the
    /// last console lines and the log directory.
    fn context_for(&self, stage: Stage) -> String {
        let mut s = String::new();
        if stage == Stage::SimStart {
            for (i, t) in self.sim_tails.iter().enumerate() {
                if !self.sim_ready[i] {
                    s.push_str(&format!("; simulation {i} is not ready; its last lines:\n  {}", t.join("\n  ")));
                }
            }
        }
        if !self.qemu_stderr_tail.is_empty() {
            s.push_str(&format!("; QEMU stderr:\n  {}", self.qemu_stderr_tail.join("\n  ")));
        }
        if !matches!(stage, Stage::SimStart | Stage::QemuStart) && !self.console_tail.is_empty() {
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
