//! Child processes started by the launcher: each in its own process group (so a terminal's
//! Ctrl-C reaches only the launcher, which then stops them in order), output copied to a log file
//! and forwarded line by line as events, stopped with SIGTERM then SIGKILL on drop.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Which output stream of which process a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Sim(usize),
    Console,
    QemuStderr,
}

#[derive(Debug)]
pub struct Line {
    pub source: Source,
    pub text: String,
}

/// Copies a stream to `log` and sends each complete line (without CR/LF) to `tx`.
fn pump(mut input: impl Read + Send + 'static, log: Arc<Mutex<File>>, source: Source, tx: Sender<Line>) {
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
                    if tx.send(Line { source, text }).is_err() {
                        // Receiver gone: keep copying to the log so the child never blocks.
                    }
                }
            }
        }
    });
}

/// A started child process.
pub struct Proc {
    pub name: String,
    child: Child,
    exit: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` in a new process group, stdin from /dev/null, stdout and stderr each sent
    /// to a log file (created, or appended if both name the same file) and as lines to `tx`.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        stdout: (&Path, Source),
        stderr: (&Path, Source),
        tx: &Sender<Line>,
    ) -> Result<Proc> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let mut child = cmd.spawn().with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
        let out_log = Arc::new(Mutex::new(
            File::create(stdout.0).with_context(|| format!("cannot create {}", stdout.0.display()))?,
        ));
        let err_log = if stderr.0 == stdout.0 {
            out_log.clone()
        } else {
            Arc::new(Mutex::new(
                File::create(stderr.0).with_context(|| format!("cannot create {}", stderr.0.display()))?,
            ))
        };
        if let Some(o) = child.stdout.take() {
            pump(o, out_log, stdout.1, tx.clone());
        }
        if let Some(e) = child.stderr.take() {
            pump(e, err_log, stderr.1, tx.clone());
        }
        Ok(Proc { name: name.to_string(), child, exit: None })
    }

    /// True once [`Proc::poll`] has seen the process end.
    pub fn exited(&self) -> bool {
        self.exit.is_some()
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

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) with the pid of our own child (not yet reaped, so the pid cannot have
        // been reused); no memory is involved.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// Sends SIGKILL now (used to inject a simulation failure).
    pub fn kill_now(&mut self) {
        if self.poll().is_none() {
            self.signal(libc::SIGKILL);
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; always reaps the child.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.poll().is_some() {
            return self.exit;
        }
        self.signal(libc::SIGTERM);
        let t0 = Instant::now();
        while t0.elapsed() < grace {
            if self.poll().is_some() {
                return self.exit;
            }
            thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!("{} did not exit within {:?} of SIGTERM; killing it", self.name, grace);
        self.signal(libc::SIGKILL);
        self.exit = self.child.wait().ok();
        self.exit
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// Set by SIGINT/SIGTERM/SIGHUP.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the handler that sets [`INTERRUPTED`] (the main loop polls it and shuts down).
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the handler
        // has the C ABI signature signal(2) expects.
        unsafe {
            libc::signal(sig, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
        }
    }
}
