//! Process supervision: children in their own process groups (so a terminal's Ctrl-C reaches only
//! the supervising program, which then stops them in order), their output copied to log files and
//! forwarded line by line as tagged events (or kept whole in memory), stopped with SIGTERM and,
//! after a grace period, SIGKILL; and the signal handlers that turn SIGINT, SIGTERM and SIGHUP
//! into the flag [`interrupted`] the supervisors poll.
//!
//! The only `unsafe` of the crate: `kill(2)` in [`signal_pid`] and `signal(2)` in
//! [`install_signal_handlers`], each with its `// SAFETY:` line.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::Error;

/// One line of a child's output (without CR/LF), tagged with where it came from.
#[derive(Debug)]
pub struct Line<S> {
    pub source: S,
    pub text: String,
}

/// Where one of a child's output streams goes.
#[derive(Debug, Clone, Copy)]
pub enum Output<'a, S> {
    /// Copied to this log file (created; stdout and stderr naming the same file share it) and sent
    /// line by line, tagged with `S`.
    Log(&'a Path, S),
    /// Kept whole in memory, for [`Proc::take_stdout`] / [`Proc::take_stderr`].
    Capture,
}

/// Copies a stream to `log` and sends each complete line (without CR/LF) to `tx`.
fn pump<S: Copy + Send + 'static>(
    mut input: impl Read + Send + 'static,
    log: Arc<Mutex<File>>,
    source: S,
    tx: Sender<Line<S>>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(&mut input);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if let Ok(mut f) = log.lock() {
                        let _ = f.write_all(&buf);
                        let _ = f.flush();
                    }
                    let text = String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_string();
                    // Receiver gone: keep copying to the log so the child never blocks.
                    let _ = tx.send(Line { source, text });
                }
            }
        }
    });
}

/// Reads a stream to its end, in a thread of its own (so the child never blocks on a full pipe).
fn capture(mut input: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut v = Vec::new();
        let _ = input.read_to_end(&mut v);
        v
    })
}

fn create_log(path: &Path) -> Result<Arc<Mutex<File>>, Error> {
    let f = File::create(path).map_err(|source| Error::CreateLog { path: path.to_path_buf(), source })?;
    Ok(Arc::new(Mutex::new(f)))
}

/// A started child process; stopped (SIGTERM, then SIGKILL after 3 s) when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    exit: Option<ExitStatus>,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Proc {
    /// Starts `cmd` in a new process group, stdin from /dev/null, stdout and stderr each going
    /// where `stdout` and `stderr` say; logged lines are sent to `tx`. The log files are created
    /// before the process starts.
    pub fn spawn<S: Copy + Send + 'static>(
        name: &str,
        mut cmd: Command,
        stdout: Output<S>,
        stderr: Output<S>,
        tx: &Sender<Line<S>>,
    ) -> Result<Proc, Error> {
        let out_log = match stdout {
            Output::Log(p, _) => Some(create_log(p)?),
            Output::Capture => None,
        };
        let err_log = match (stderr, stdout, &out_log) {
            (Output::Log(p, _), Output::Log(q, _), Some(shared)) if p == q => Some(shared.clone()),
            (Output::Log(p, _), _, _) => Some(create_log(p)?),
            (Output::Capture, _, _) => None,
        };
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            name: name.to_string(),
            program: cmd.get_program().to_os_string(),
            source,
        })?;
        let mut p = Proc { name: name.to_string(), child, exit: None, stdout: None, stderr: None };
        if let Some(o) = p.child.stdout.take() {
            match (stdout, out_log) {
                (Output::Log(_, tag), Some(log)) => pump(o, log, tag, tx.clone()),
                _ => p.stdout = Some(capture(o)),
            }
        }
        if let Some(e) = p.child.stderr.take() {
            match (stderr, err_log) {
                (Output::Log(_, tag), Some(log)) => pump(e, log, tag, tx.clone()),
                _ => p.stderr = Some(capture(e)),
            }
        }
        Ok(p)
    }

    /// True once [`Proc::poll`] has seen the process end.
    pub fn exited(&self) -> bool {
        self.exit.is_some()
    }

    /// The exit status [`Proc::poll`] has seen, if any (no system call).
    pub fn status(&self) -> Option<ExitStatus> {
        self.exit
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has ended.
    pub fn poll(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exit = Some(st);
            }
        }
        self.exit
    }

    /// Sends SIGKILL now if the process still runs (also used to inject a simulation failure).
    pub fn kill_now(&mut self) {
        if self.poll().is_none() {
            // Our own child, not yet reaped: its pid cannot have been reused.
            signal_pid(self.child.id(), libc::SIGKILL);
        }
    }

    /// SIGTERM, then up to `grace` for the process to exit. `None`: it still runs.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.poll().is_some() {
            return self.exit;
        }
        signal_pid(self.child.id(), libc::SIGTERM);
        let t0 = Instant::now();
        while t0.elapsed() < grace {
            if self.poll().is_some() {
                return self.exit;
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits for the process to end and reaps it.
    pub fn wait(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.wait().ok();
        }
        self.exit
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; always reaps the child.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.terminate(grace) {
            return Some(st);
        }
        tracing::warn!("{} did not exit within {:?} of SIGTERM; killing it", self.name, grace);
        self.kill_now();
        self.wait()
    }

    /// Everything the process wrote on stdout ([`Output::Capture`]; empty otherwise). Call it after
    /// the process ended: it waits for the end of the stream.
    pub fn take_stdout(&mut self) -> Vec<u8> {
        self.stdout.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }

    /// As [`Proc::take_stdout`], for stderr.
    pub fn take_stderr(&mut self) -> Vec<u8> {
        self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// Sends `sig` to process `pid` (signal 0: only checks that it exists); true if `kill(2)`
/// succeeded. Only for processes this program started, directly or through a child that
/// recorded their pids. A pid of 0 or beyond `pid_t` (which `kill(2)` would take for a process
/// group or for every process) is refused.
pub fn signal_pid(pid: u32, sig: libc::c_int) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) takes no pointers and touches no memory of ours; `pid` is positive, so it
    // names one process, never a group.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid, sig) };
    rc == 0
}

/// Set by SIGINT/SIGTERM/SIGHUP.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP that sets the flag [`interrupted`] reads
/// (the supervising loop polls it and shuts down in order).
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the handler
        // has the C ABI signature signal(2) expects.
        #[allow(unsafe_code)]
        unsafe {
            libc::signal(sig, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
        }
    }
}

/// True once SIGINT, SIGTERM or SIGHUP arrived (after [`install_signal_handlers`]).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
