//! A `cosim-launch --json` run started by another supervisor (`cosim-dual`, `cosim-share`): its
//! command line, its stop (SIGTERM, so it stops its QEMU and simulations itself; SIGKILL for it
//! and every process in its `pids.json` if it does not), its JSON summary and the guest's records
//! in it. The supervisor owns the [`Proc`]; these functions only act on it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::Sender;
use std::time::Duration;

use cosim_guest_results::Record;
use serde::Deserialize;
use serde_json::Value;

use crate::procs::{self, Line, Output, Proc};
use crate::Error;

/// SIGTERM to a launcher, then this long for it to stop its QEMU and simulations (it needs up to
/// 5 s + 10 s itself), then SIGKILL for it and every pid in its `pids.json`.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// A program installed next to the running binary (`cosim-launch`, `cosim-mediator`), unless
/// `given`.
pub fn sibling(given: Option<&Path>, name: &str) -> std::io::Result<PathBuf> {
    match given {
        Some(p) => Ok(p.to_path_buf()),
        None => {
            let exe = std::env::current_exe()?;
            Ok(exe.parent().unwrap_or(Path::new(".")).join(name))
        }
    }
}

/// Starts `launch ARGS --json --log-dir LOG_DIR` as `name`: its stdout (the JSON summary) is
/// kept for [`summary`], its stderr goes to `stderr_log` and, line by line tagged `tag`, to `tx`.
pub fn spawn<S: Copy + Send + 'static>(
    name: &str,
    launch: &Path,
    args: &[String],
    log_dir: &Path,
    stderr_log: &Path,
    tag: S,
    tx: &Sender<Line<S>>,
) -> Result<Proc, Error> {
    let mut cmd = Command::new(launch);
    cmd.args(args).arg("--json").arg("--log-dir").arg(log_dir).env("NO_COLOR", "1");
    tracing::info!("starting {name}: {} {}", launch.display(), shell_words(args));
    Proc::spawn(&format!("{name}'s launcher"), cmd, Output::Capture, Output::Log(stderr_log, tag), tx)
}

/// Stops a launcher that still runs (`why` goes to the log): SIGTERM, then up to [`STOP_GRACE`]
/// for it to stop its children, then SIGKILL for it and for every pid in `log_dir/pids.json`.
/// Returns false if it had already exited (nothing was done).
pub fn stop(p: &mut Proc, log_dir: &Path, name: &str, why: &str) -> bool {
    if p.poll().is_some() {
        return false;
    }
    tracing::warn!("stopping {name} ({why})");
    if p.terminate(STOP_GRACE).is_some() {
        return true;
    }
    tracing::warn!("{name}'s launcher did not stop within {STOP_GRACE:?}; killing it and its children");
    p.kill_now();
    if let Ok(s) = std::fs::read_to_string(log_dir.join("pids.json")) {
        if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&s) {
            for pid in m.values().filter_map(|v| v.as_u64()).filter_map(|p| u32::try_from(p).ok()) {
                procs::signal_pid(pid, libc::SIGKILL);
            }
        }
    }
    p.wait();
    true
}

/// The launcher's JSON summary (call it after the launcher exited); `null` if it printed none.
pub fn summary(p: &mut Proc) -> Value {
    let out = String::from_utf8_lossy(&p.take_stdout()).into_owned();
    serde_json::from_str(out.trim()).unwrap_or(Value::Null)
}

/// The guest's records in a launcher's summary (`guest.results`); an entry that is not one is
/// left out (the launcher only puts records there).
pub fn results(summary: &Value) -> Vec<Record> {
    summary["guest"]["results"].as_array().into_iter().flatten().filter_map(|v| Record::deserialize(v).ok()).collect()
}

/// Arguments as one line for the log (quoted where they hold a space or are empty).
pub fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| if a.contains(' ') || a.is_empty() { format!("'{a}'") } else { a.clone() })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quotes_words_with_spaces() {
        let a = ["--run".to_string(), "gemm --m 4".into(), String::new()];
        assert_eq!(shell_words(&a), "--run 'gemm --m 4' ''");
    }

    #[test]
    fn results_skips_what_is_not_a_record() {
        let s = json!({"guest": {"results": [
            {"kind": "reset", "ok": true, "device": "/dev/accel0"},
            {"kind": "nonsense"},
        ]}});
        let r = results(&s);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].kind(), "reset");
        assert!(results(&Value::Null).is_empty());
    }
}
