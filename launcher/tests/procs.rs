//! Process supervision of the library (`cosim_launch::procs`) with real child processes (`sh`):
//! output to a log and as tagged lines, output kept in memory, SIGTERM then SIGKILL for a child
//! that ignores SIGTERM, and the pids `signal_pid` refuses. Needs nothing built.

mod common;

use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cosim_launch::procs::{signal_pid, Line, Output, Proc};

fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", script]);
    c
}

/// Waits up to 10 s for the process to end.
fn wait_end(p: &mut Proc) {
    let t0 = Instant::now();
    while p.poll().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(10), "{} did not end", p.name);
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn output_goes_to_the_log_as_tagged_lines_or_is_kept_whole() {
    let dir = common::fresh_dir("procs-output");
    let log = dir.join("both.log");
    let (tx, rx) = mpsc::channel();
    let mut p = Proc::spawn(
        "both",
        sh("echo out1; echo err1 >&2; printf 'out2\\r\\n'"),
        Output::Log(&log, 'o'),
        Output::Log(&log, 'e'),
        &tx,
    )
    .unwrap();
    wait_end(&mut p);
    assert_eq!(p.status().and_then(|s| s.code()), Some(0));
    let mut lines: Vec<(char, String)> = Vec::new();
    while lines.len() < 3 {
        let Line { source, text } = rx.recv_timeout(Duration::from_secs(10)).expect("three lines");
        lines.push((source, text));
    }
    lines.sort();
    assert_eq!(lines, [('e', "err1".into()), ('o', "out1".into()), ('o', "out2".into())]);
    let logged = std::fs::read_to_string(&log).unwrap();
    for l in ["out1\n", "err1\n", "out2\r\n"] {
        assert!(logged.contains(l), "{logged:?}");
    }

    let err_log = dir.join("err.log");
    let mut p = Proc::spawn(
        "capture",
        sh("echo '{\"ok\":true}'; echo progress >&2; exit 3"),
        Output::Capture,
        Output::Log(&err_log, 'e'),
        &tx,
    )
    .unwrap();
    wait_end(&mut p);
    assert_eq!(p.status().and_then(|s| s.code()), Some(3));
    assert_eq!(String::from_utf8(p.take_stdout()).unwrap(), "{\"ok\":true}\n");
    let l = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((l.source, l.text.as_str()), ('e', "progress"));
}

#[test]
fn stop_sends_sigterm_then_sigkill_after_the_grace_period() {
    let (tx, _rx) = mpsc::channel::<Line<()>>();
    // Exits on SIGTERM.
    let mut p = Proc::spawn("polite", sh("exec sleep 30"), Output::Capture, Output::Capture, &tx).unwrap();
    let t0 = Instant::now();
    let st = p.stop(Duration::from_secs(10)).expect("reaped");
    assert!(t0.elapsed() < Duration::from_secs(5), "SIGTERM should have ended it: {:?}", t0.elapsed());
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(libc::SIGTERM));
    // Ignores SIGTERM: killed after the grace period.
    let mut p = Proc::spawn(
        "stubborn",
        sh("trap '' TERM; echo up; while :; do sleep 0.05; done"),
        Output::Capture,
        Output::Capture,
        &tx,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = p.pid();
    let t0 = Instant::now();
    let st = p.stop(Duration::from_millis(500)).expect("reaped");
    assert!(t0.elapsed() >= Duration::from_millis(500), "{:?}", t0.elapsed());
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(libc::SIGKILL));
    assert!(!common::pid_alive(pid.into()), "pid {pid} still there after stop");
}

#[test]
fn signal_pid_refuses_process_groups_and_every_process() {
    // kill(2) would take 0 as our process group and -1 (u32::MAX as pid_t) as every process.
    assert!(!signal_pid(0, 0));
    assert!(!signal_pid(u32::MAX, 0));
    assert!(!signal_pid(1 << 31, 0));
    assert!(signal_pid(std::process::id(), 0), "signal 0 to ourselves checks existence");
}
