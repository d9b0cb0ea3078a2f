//! What the launcher binaries are made of: `cosim-launch` (one co-simulation run: simulations,
//! QEMU with the guest, stages with timeouts, results), `cosim-dual` (two `cosim-launch` runs
//! side by side) and `cosim-share` (one simulation, the mediator and N `cosim-launch` runs sharing
//! it) are thin command-line shells over this library.
//!
//! Who owns what: a supervising program owns every process it starts ([`procs::Proc`]: each in
//! its own process group, stopped with SIGTERM then SIGKILL on every way out, on Ctrl-C and
//! SIGTERM through [`procs::interrupted`]) and its log directory; the guest owns the workload and
//! reports it in marker lines on its console ([`markers`]); [`stages::Stages`] owns the wait for
//! each stage and its timeout, and names the stage that failed. QEMU's command line is built by a
//! pure function from a typed description ([`qemu::QemuSpec`]). [`inject`] pushes stray frames for
//! fault-injection tests. [`child`] starts, stops and reads a `cosim-launch --json` run for the
//! binaries that supervise several. Every binary exits with the codes in [`exit`].
//!
//! `unsafe` lives only in [`procs`] (`kill(2)` and the `signal(2)` handlers, each with its
//! `// SAFETY:` line); the rest of the crate denies it.
#![deny(unsafe_code)]

pub mod child;
pub mod devstats;
pub mod guest_add;
pub mod inject;
pub mod markers;
pub mod procs;
pub mod qemu;
pub mod stages;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Exit codes of `cosim-launch`, `cosim-dual` and `cosim-share` (each lists them in `--help`;
/// docs/guest.md).
pub mod exit {
    /// Everything passed.
    pub const OK: u8 = 0;
    /// The workload ran but an item (`cosim-dual`: a result or a comparison) failed.
    pub const FAILED: u8 = 1;
    /// Usage error (clap exits with it by itself).
    pub const USAGE: u8 = 2;
    /// Setup error: a missing artifact, a process that cannot start.
    pub const SETUP: u8 = 3;
    /// A stage timed out or a process died early (`cosim-dual`: also the overall timeout).
    pub const STAGE: u8 = 4;
    /// Interrupted (SIGINT, SIGTERM, SIGHUP).
    pub const INTERRUPTED: u8 = 130;
}

/// What failed in the library; each maps to the setup exit code.
#[derive(Debug)]
pub enum Error {
    /// A log file could not be created.
    CreateLog { path: PathBuf, source: std::io::Error },
    /// A child process could not be started.
    Spawn { name: String, program: OsString, source: std::io::Error },
    /// A `--run` item holds a character the kernel command line cannot carry.
    RunItem { item: String },
    /// The kernel command line is longer than the kernel takes.
    AppendTooLong { len: usize },
    /// The stray-frame injector could not be set up.
    Inject { what: String, source: Box<dyn std::error::Error + Send + Sync> },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::CreateLog { path, .. } => write!(f, "cannot create {}", path.display()),
            Error::Spawn { name, program, .. } => write!(f, "cannot start {name} ({program:?})"),
            Error::RunItem { item } => {
                write!(f, "--run item {item:?} contains '\"' or ';', which the kernel command line cannot carry")
            }
            Error::AppendTooLong { len } => write!(
                f,
                "kernel command line is {len} bytes, the limit is {}: shorten the --run items",
                qemu::APPEND_MAX
            ),
            Error::Inject { what, .. } => write!(f, "injector: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::CreateLog { source, .. } | Error::Spawn { source, .. } => Some(source),
            Error::Inject { source, .. } => Some(source.as_ref()),
            Error::RunItem { .. } | Error::AppendTooLong { .. } => None,
        }
    }
}

/// The build directory: `$COSIM_BUILD`, else `<repo>/build`.
pub fn default_build() -> PathBuf {
    std::env::var_os("COSIM_BUILD").map(PathBuf::from).unwrap_or_else(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        root.canonicalize().unwrap_or(root).join("build")
    })
}

/// The start of a supervising binary: `tracing` on stderr (filter from `COSIM_LOG`, default
/// `info`), the signal handlers ([`procs::install_signal_handlers`]) and the log directory:
/// `log_dir`, else [`default_log_root`]`/<prefix>-<unix time>-<pid>`, created and logged. `None`
/// (after logging why) if it cannot be created: exit with [`exit::SETUP`].
pub fn start_supervisor(log_dir: Option<PathBuf>, prefix: &str) -> Option<PathBuf> {
    init_tracing();
    procs::install_signal_handlers();
    create_log_dir(log_dir, prefix)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("COSIM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Where runs keep their logs unless told otherwise, outside the source tree: `$COSIM_LOGS`, else
/// `$COSIM_CACHE/logs`, else `$XDG_CACHE_HOME/cosim/logs`, else `~/.cache/cosim/logs` (the cache
/// directory that also holds the guest kernel and QEMU), else `<temp dir>/cosim-logs`.
pub fn default_log_root() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("COSIM_LOGS")
        .or_else(|| env("COSIM_CACHE").map(|c| c.join("logs")))
        .or_else(|| env("XDG_CACHE_HOME").map(|c| c.join("cosim/logs")))
        .or_else(|| env("HOME").map(|h| h.join(".cache/cosim/logs")))
        .unwrap_or_else(|| std::env::temp_dir().join("cosim-logs"))
}

fn create_log_dir(given: Option<PathBuf>, prefix: &str) -> Option<PathBuf> {
    let dir = given.unwrap_or_else(|| {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        default_log_root().join(format!("{prefix}-{secs}-{}", std::process::id()))
    });
    match std::fs::create_dir_all(&dir) {
        Ok(()) => {
            tracing::info!("logs in {}", dir.display());
            Some(dir)
        }
        Err(e) => {
            tracing::error!("cannot create log dir {}: {e}", dir.display());
            None
        }
    }
}
