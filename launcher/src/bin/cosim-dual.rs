//! `cosim-dual`: the dual-VM comparative run.
//!
//! Starts two `cosim-launch --json` processes at the same time and owns them (each in its own
//! process group; stopped on exit, on failure of the other VM, on the overall timeout and on
//! Ctrl-C):
//! - the accelerator VM: our QEMU with one `accelerator-pcie` backed by the GEMM RTL, its NIC
//!   channel (the RTL's Ethernet port) on a QEMU `stream` netdev that listens on 127.0.0.1:P;
//! - the baseline VM: Debian's stock QEMU, no accelerator, an e1000 on a `stream` netdev that
//!   connects to 127.0.0.1:P (with reconnect, so the start order does not matter).
//!
//! Both run the same GEMMs (same sizes and seeds): the accelerator VM on the RTL with `--check`,
//! the baseline with `--cpu-only`. The baseline also sends raw Ethernet frames (`accel-tool net`)
//! that the RTL answers; the accelerator VM stays up until its NIC counters reached that count
//! (`accel-tool wait-nic`), which makes the frame exchange the start barrier of both GEMM
//! workloads; after its GEMMs it reads the counters (`info`). The launchers enforce their own stage
//! timeouts; this program adds an overall one. The result compares C hashes per size and the
//! frame counts on both ends (baseline sent/answered, NIC_RX/TX_FRAMES, the simulation's
//! `frames_rx`/`frames_tx` exit statistics).
//!
//! Process supervision, signals, exit codes and log directories come from the library
//! (`cosim_launch`); this binary holds no `unsafe`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};

use cosim_guest_results::{Check, Gemm, Record};
use cosim_launch::child::{self, results};
use cosim_launch::exit;
use cosim_launch::procs::{self, Line, Proc};

#[derive(Parser, Debug)]
#[command(
    name = "cosim-dual",
    version,
    about = "Dual-VM comparative run: an accelerator VM (our QEMU + GEMM RTL) and a baseline VM (stock QEMU, CPU only) side by side, sharing a network",
    long_about = "Starts two `cosim-launch --json` runs at the same time:\n\
- accel VM: our QEMU, one accelerator-pcie backed by the GEMM RTL simulation, its NIC channel on \
`-netdev stream,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port=P` (P free, picked at run time); \
workload: `wait-nic --frames F`, then `gemm --m M --n N --k K --seed S --check` per size, then `info`.\n\
- baseline VM: `--qemu /usr/bin/qemu-system-x86_64 --devices 0`, an e1000 on \
`-netdev stream,server=off,...,addr.port=P,reconnect-ms=200`; \
workload: `net --count F`, then `gemm --m M --n N --k K --seed S --cpu-only` per size.\n\n\
The frame exchange is the start barrier: the accelerator VM begins its GEMMs once the RTL has \
answered all F frames, the baseline VM right after its last answer, so both GEMM workloads run at the \
same time whichever VM boots first.\n\n\
Prints per size: accel VM check, RTL cycles, guest-measured accelerator time (accel_us: the ioctl as the \
tool sees it; device_us: START to interrupt), the accel VM's own CPU reference time (acc cpu_us), the baseline VM's CPU time, and whether C is identical \
(c_hash); then the frame counts on both ends: the baseline's sent/answered, the RTL's NIC_RX_FRAMES / \
NIC_TX_FRAMES (accel VM `info`), the simulation's frames_rx / frames_tx (its exit statistics line in \
<log-dir>/accel/sim0.log).\n\n\
Each launcher enforces its own stage timeouts; --timeout bounds the whole run. If one VM's launcher \
fails (exit status other than 0 or 1: a stage timed out, a process died, setup), the other is stopped at once. Ctrl-C / SIGTERM stop both (each launcher stops its QEMU and simulation).\n\n\
Logs: <log-dir>/accel/ and <log-dir>/baseline/ (the launchers' log directories), accel-launch.log and \
baseline-launch.log (the launchers' stderr), results.json (same as --json).\n\n\
Exit status: 0 everything passed (every GEMM checked and C identical in both VMs, every frame answered \
and counted by the RTL); 1 both VMs ran but a result or comparison failed; 2 usage; 3 setup (missing \
artifact or launcher); 4 a VM's stage timed out or a process died, or the overall timeout; \
130 interrupted.",
    after_help = "Example: cosim-dual --sizes 16x16x16,64x64x64,128x128x128 --frames 20"
)]
struct Cli {
    /// GEMM sizes, MxNxK, comma-separated; size i uses seed --seed + i.
    #[arg(long, default_value = "16x16x16,17x33x9,64x64x64,128x128x128,256x256x256", value_delimiter = ',')]
    sizes: Vec<String>,

    /// Seed of the first size.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Ethernet frames the baseline VM sends to the RTL's Ethernet port.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    frames: u32,

    /// Frame size in bytes (at least 60).
    #[arg(long, default_value_t = 64)]
    frame_size: usize,

    /// How long the accelerator VM waits (after its GEMMs) for the RTL to have received and
    /// answered all frames, in seconds.
    #[arg(long, default_value_t = 180)]
    nic_wait: u64,

    /// Overall limit for the whole run in seconds (both VMs are stopped when it expires).
    #[arg(long, default_value_t = 900)]
    timeout: u64,

    /// The launcher [default: cosim-launch next to this binary].
    #[arg(long)]
    launch: Option<PathBuf>,

    /// QEMU of the baseline VM (Debian's stock QEMU).
    #[arg(long, default_value = "/usr/bin/qemu-system-x86_64")]
    baseline_qemu: PathBuf,

    /// Extra argument for the accelerator VM's cosim-launch (repeatable; --accel-arg=--sim-arg=X).
    #[arg(long = "accel-arg", value_name = "ARG", allow_hyphen_values = true)]
    accel_args: Vec<String>,

    /// Extra argument for the baseline VM's cosim-launch (repeatable).
    #[arg(long = "baseline-arg", value_name = "ARG", allow_hyphen_values = true)]
    baseline_args: Vec<String>,

    /// Directory for the logs [default: ~/.cache/cosim/logs/dual-<unix time>-<pid>; $COSIM_LOGS or
    /// $COSIM_CACHE/logs replace ~/.cache/cosim/logs].
    #[arg(long)]
    log_dir: Option<PathBuf>,

    /// Print one JSON object with the whole comparison on stdout instead of the table.
    #[arg(long)]
    json: bool,

    /// Also copy the launchers' stderr (stage progress) to stderr as it arrives, prefixed with the VM.
    #[arg(long, short)]
    verbose: bool,
}

/// One GEMM size of the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Size {
    m: u32,
    n: u32,
    k: u32,
    seed: u64,
}

fn parse_sizes(list: &[String], seed: u64) -> Result<Vec<Size>> {
    let mut v = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let dims: Vec<u32> = s
            .trim()
            .split('x')
            .map(|d| d.parse::<u32>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("size {s:?}: expected MxNxK, e.g. 64x64x64"))?;
        let [m, n, k] = dims[..] else { bail!("size {s:?}: expected MxNxK, e.g. 64x64x64") };
        if [m, n, k].iter().any(|&d| d == 0 || d > 1024) {
            bail!("size {s:?}: each dimension must be 1..1024");
        }
        v.push(Size { m, n, k, seed: seed + i as u64 });
    }
    if v.is_empty() {
        bail!("--sizes is empty");
    }
    Ok(v)
}

/// The accelerator VM first waits until the baseline's frames were received and answered by the
/// RTL, so the two VMs start their GEMMs at (nearly) the same moment: the frame exchange is the
/// barrier, whichever VM boots first.
fn accel_items(sizes: &[Size], frames: u32, nic_wait_s: u64) -> Vec<String> {
    let mut v = vec![format!("wait-nic --frames {frames} --timeout-ms {}", nic_wait_s * 1000)];
    v.extend(sizes.iter().map(|s| format!("gemm --m {} --n {} --k {} --seed {} --check", s.m, s.n, s.k, s.seed)));
    v.push("info".into());
    v
}

fn baseline_items(sizes: &[Size], frames: u32, frame_size: usize) -> Vec<String> {
    let mut v = vec![format!("net --count {frames} --size {frame_size}")];
    v.extend(sizes.iter().map(|s| format!("gemm --m {} --n {} --k {} --seed {} --cpu-only", s.m, s.n, s.k, s.seed)));
    v
}

/// A free TCP port on 127.0.0.1 (free when asked; QEMU binds it moments later).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A running `cosim-launch`.
struct Vm {
    name: &'static str,
    proc: Proc,
    log_dir: PathBuf,
    stopped_by_us: bool,
}

impl Vm {
    /// Starts `launch ARGS --json --log-dir LOG_DIR`; its stderr goes to `stderr_log` and, line
    /// by line tagged with the VM's name, to `tx`; its stdout (the JSON summary) is kept.
    fn spawn(
        name: &'static str,
        launch: &Path,
        args: &[String],
        log_dir: PathBuf,
        stderr_log: &Path,
        tx: &mpsc::Sender<Line<&'static str>>,
    ) -> Result<Vm> {
        let proc = child::spawn(&format!("the {name} VM"), launch, args, &log_dir, stderr_log, name, tx)?;
        Ok(Vm { name, proc, log_dir, stopped_by_us: false })
    }

    fn poll(&mut self) -> Option<ExitStatus> {
        self.proc.poll()
    }

    /// SIGTERM (the launcher then stops its QEMU and simulation), SIGKILL after
    /// [`child::STOP_GRACE`] for the launcher and the processes it recorded in pids.json.
    fn stop(&mut self, why: &str) {
        if child::stop(&mut self.proc, &self.log_dir, &format!("the {} VM", self.name), why) {
            self.stopped_by_us = true;
        }
    }

    /// The launcher's JSON summary (after it exited).
    fn summary(&mut self) -> Value {
        child::summary(&mut self.proc)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop("cosim-dual is exiting");
    }
}

/// Frames received / sent by the device, from `cosim-sim: stats ... frames_tx=N frames_rx=N`
/// (the last such line; tx = device to host).
fn sim_frame_stats(log: &str) -> Option<(u64, u64)> {
    let line = log.lines().rev().find(|l| l.contains("cosim-sim: stats "))?;
    let get = |key: &str| -> Option<u64> {
        line.split_whitespace().find_map(|w| w.strip_prefix(key)).and_then(|v| v.parse().ok())
    };
    Some((get("frames_rx=")?, get("frames_tx=")?))
}

fn find_gemm<'a>(res: &'a [Record], s: &Size) -> Option<&'a Gemm> {
    res.iter()
        .filter_map(Record::as_gemm)
        .find(|g| (g.m, g.n, g.k, g.seed) == (s.m, s.n, s.k, s.seed))
}

/// Compares the two VMs' results. Pure (no I/O), so it is unit-tested.
fn compare(sizes: &[Size], frames: u32, accel: &Value, base: &Value, sim_frames: Option<(u64, u64)>) -> Value {
    let ares = results(accel);
    let bres = results(base);
    let mut rows = Vec::new();
    for s in sizes {
        let a = find_gemm(&ares, s);
        let b = find_gemm(&bres, s);
        let a_hash = a.and_then(|r| r.c_hash.as_deref());
        let b_hash = b.and_then(|r| r.c_hash.as_deref());
        let same_c = matches!((a_hash, b_hash), (Some(x), Some(y)) if x == y);
        let a_ok = a.is_some_and(|r| r.ok && r.check == Some(Check::Pass));
        let b_ok = b.is_some_and(|r| r.ok);
        rows.push(json!({
            "m": s.m, "n": s.n, "k": s.k, "seed": s.seed,
            "accel": {
                "ok": a_ok, "found": a.is_some(), "check": a.and_then(|r| r.check),
                "rtl_cycles": a.and_then(|r| r.rtl_cycles), "ideal_cycles": a.and_then(|r| r.ideal_cycles),
                "accel_us": a.and_then(|r| r.accel_us), "device_us": a.and_then(|r| r.device_us),
                "cpu_us": a.and_then(|r| r.cpu_us.flatten()), "c_hash": a_hash, "error": a.and_then(|r| r.error.as_deref()),
            },
            "baseline": { "ok": b_ok, "found": b.is_some(), "cpu_us": b.and_then(|r| r.cpu_us.flatten()),
                "c_hash": b_hash, "error": b.and_then(|r| r.error.as_deref()) },
            "same_c": same_c,
            "ok": a_ok && b_ok && same_c,
        }));
    }
    let net = bres.iter().find_map(Record::as_net);
    let wait = ares.iter().find_map(Record::as_wait_nic);
    let info = ares
        .iter()
        .filter_map(Record::as_info)
        .find(|i| i.device == "/dev/accel0")
        .and_then(|i| i.info.as_ref());
    let sent = net.map(|r| u64::from(r.sent));
    let answered = net.map(|r| u64::from(r.received));
    let rtl_rx = info.map(|i| u64::from(i.nic_rx_frames));
    let rtl_tx = info.map(|i| u64::from(i.nic_tx_frames));
    let want = Some(frames as u64);
    let mut net_ok = sent == want && answered == want && rtl_rx == want && rtl_tx == want;
    if let Some((rx, tx)) = sim_frames {
        net_ok &= Some(rx) == want && Some(tx) == want;
    }
    let net_json = json!({
        "frames": frames, "sent": sent, "answered": answered, "lost": net.map(|r| r.lost),
        "rtt_us_median": net.and_then(|r| r.rtt_us_median),
        "baseline_iface": net.map(|r| &r.iface),
        "wait_nic_ok": wait.map(|r| r.ok), "wait_nic_ms": wait.map(|r| r.waited_ms),
        "rtl_nic_rx_frames": rtl_rx, "rtl_nic_tx_frames": rtl_tx,
        "sim_frames_rx": sim_frames.map(|f| f.0), "sim_frames_tx": sim_frames.map(|f| f.1),
        "ok": net_ok,
    });
    let all = rows.iter().all(|r| r["ok"] == true) && net_ok;
    json!({ "sizes": rows, "net": net_json, "ok": all })
}

fn fmt(v: &Value, prec: usize) -> String {
    match v {
        Value::Null => "-".into(),
        Value::Number(x) if x.is_f64() => format!("{:.*}", prec, x.as_f64().unwrap_or(0.0)),
        Value::Number(x) => x.to_string(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => {
            if *b {
                "yes".into()
            } else {
                "no".into()
            }
        }
        other => other.to_string(),
    }
}

fn table(cmp: &Value) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<13} {:>4} | {:>7} {:>11} {:>12} {:>12} {:>12} | {:>12} | {:>6}",
        "MxNxK", "seed", "accel", "rtl_cycles", "accel_us", "device_us", "acc cpu_us", "base cpu_us", "same C"
    );
    let _ = writeln!(s, "{}", "-".repeat(105));
    for r in cmp["sizes"].as_array().into_iter().flatten() {
        let a = &r["accel"];
        let b = &r["baseline"];
        let acc = if a["found"] != true {
            "missing".to_string()
        } else if a["ok"] == true {
            "pass".into()
        } else {
            "FAIL".into()
        };
        let base_cpu = if b["found"] != true { "missing".to_string() } else { fmt(&b["cpu_us"], 1) };
        let _ = writeln!(
            s,
            "{:<13} {:>4} | {:>7} {:>11} {:>12} {:>12} {:>12} | {:>12} | {:>6}",
            format!("{}x{}x{}", r["m"], r["n"], r["k"]),
            r["seed"].to_string(),
            acc,
            fmt(&a["rtl_cycles"], 0),
            fmt(&a["accel_us"], 1),
            fmt(&a["device_us"], 1),
            fmt(&a["cpu_us"], 1),
            base_cpu,
            if r["same_c"] == true { "yes" } else { "NO" }
        );
        for (vm, e) in [("accel", &a["error"]), ("baseline", &b["error"])] {
            if let Some(e) = e.as_str() {
                let _ = writeln!(s, "  {vm} error: {e}");
            }
        }
    }
    let n = &cmp["net"];
    let _ = writeln!(
        s,
        "network ({} frames): baseline VM sent {} answered {} lost {} (rtt median {} us) | RTL NIC_RX_FRAMES {} NIC_TX_FRAMES {} | sim frames_rx {} frames_tx {} | {}",
        n["frames"],
        fmt(&n["sent"], 0),
        fmt(&n["answered"], 0),
        fmt(&n["lost"], 0),
        fmt(&n["rtt_us_median"], 0),
        fmt(&n["rtl_nic_rx_frames"], 0),
        fmt(&n["rtl_nic_tx_frames"], 0),
        fmt(&n["sim_frames_rx"], 0),
        fmt(&n["sim_frames_tx"], 0),
        if n["ok"] == true { "ok" } else { "MISMATCH" }
    );
    s
}

fn vm_json(v: &Value, code: Option<i32>, stopped_by_us: bool) -> Value {
    json!({
        "launcher_exit": code, "ok": v["ok"].clone(), "failed_stage": v["failed_stage"].clone(),
        "error": v["error"].clone(), "log_dir": v["log_dir"].clone(), "stage_seconds": v["stage_seconds"].clone(),
        "wall_seconds": v["wall_seconds"].clone(), "stopped_by_cosim_dual": stopped_by_us,
        "guest_failures": v["guest"]["failures"].clone(),
    })
}

struct Outcome {
    code: u8,
    error: Option<String>,
    summary: Value,
}

fn run(cli: &Cli, log_dir: &Path) -> Result<Outcome> {
    let t0 = Instant::now();
    let sizes = parse_sizes(&cli.sizes, cli.seed)?;
    let launch = child::sibling(cli.launch.as_deref(), "cosim-launch")?;
    if !launch.is_file() {
        bail!("launcher {} is missing: build it with `make launcher`", launch.display());
    }
    if !cli.baseline_qemu.is_file() {
        bail!(
            "baseline QEMU {} is missing: install Debian's qemu-system-x86 with `make deps`",
            cli.baseline_qemu.display()
        );
    }
    let port = free_port()?;
    let accel_netdev = format!("stream,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port={port}");
    let base_netdev = format!("stream,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port={port},reconnect-ms=200");
    let mut accel_args = vec!["--accel-netdev".to_string(), accel_netdev];
    for it in accel_items(&sizes, cli.frames, cli.nic_wait) {
        accel_args.push("--run".into());
        accel_args.push(it);
    }
    accel_args.extend(cli.accel_args.iter().cloned());
    let mut base_args: Vec<String> = vec![
        "--devices".into(),
        "0".into(),
        "--qemu".into(),
        cli.baseline_qemu.display().to_string(),
        "--nic".into(),
        base_netdev,
    ];
    for it in baseline_items(&sizes, cli.frames, cli.frame_size) {
        base_args.push("--run".into());
        base_args.push(it);
    }
    base_args.extend(cli.baseline_args.iter().cloned());

    let (tx, rx) = mpsc::channel();
    let mut vms = [
        Vm::spawn("accel", &launch, &accel_args, log_dir.join("accel"), &log_dir.join("accel-launch.log"), &tx)?,
        Vm::spawn(
            "baseline",
            &launch,
            &base_args,
            log_dir.join("baseline"),
            &log_dir.join("baseline-launch.log"),
            &tx,
        )?,
    ];
    drop(tx);
    let limit = Duration::from_secs(cli.timeout);
    tracing::info!("both VMs started (network on 127.0.0.1:{port}); overall timeout {} s", cli.timeout);
    let mut error: Option<String> = None;
    let mut code_override: Option<u8> = None;
    loop {
        while let Ok(Line { source, text }) = rx.try_recv() {
            if cli.verbose {
                eprintln!("[{source}] {text}");
            }
        }
        let states: Vec<Option<ExitStatus>> = vms.iter_mut().map(|v| v.poll()).collect();
        if states.iter().all(|s| s.is_some()) {
            break;
        }
        if procs::interrupted() {
            error = Some("interrupted; stopping both VMs".into());
            code_override = Some(exit::INTERRUPTED);
            tracing::error!("interrupted; stopping both VMs");
            for v in vms.iter_mut() {
                v.stop("interrupted");
            }
            break;
        }
        if t0.elapsed() > limit {
            let running: Vec<&str> = vms.iter().filter(|v| !v.proc.exited()).map(|v| v.name).collect();
            let msg = format!(
                "overall timeout of {} s reached with the {} VM(s) still running; stopping them (logs in {})",
                cli.timeout,
                running.join(" and "),
                log_dir.display()
            );
            tracing::error!("{msg}");
            error = Some(msg);
            code_override = Some(exit::STAGE);
            for v in vms.iter_mut() {
                v.stop("overall timeout");
            }
            break;
        }
        // One VM's launcher failed (stage timeout, crash, setup): the other cannot complete the
        // exchange of frames, so stop it instead of letting it wait for its own timeouts.
        for i in 0..2 {
            let failed = states[i].is_some_and(|s| !matches!(s.code(), Some(0) | Some(1)));
            if failed && states[1 - i].is_none() {
                let msg = format!(
                    "the {} VM's launcher failed ({}); see {}",
                    vms[i].name,
                    states[i].unwrap(),
                    log_dir.join(format!("{}-launch.log", vms[i].name)).display()
                );
                tracing::error!("{msg}");
                error.get_or_insert(msg);
                let why = format!("the {} VM failed", vms[i].name);
                vms[1 - i].stop(&why);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    while let Ok(Line { source, text }) = rx.try_recv() {
        if cli.verbose {
            eprintln!("[{source}] {text}");
        }
    }

    let accel_sum = vms[0].summary();
    let base_sum = vms[1].summary();
    let codes: Vec<Option<i32>> = vms.iter().map(|v| v.proc.status().and_then(|s| s.code())).collect();
    let sim_log = std::fs::read_to_string(log_dir.join("accel/sim0.log")).unwrap_or_default();
    let sim_frames = sim_frame_stats(&sim_log);
    let cmp = compare(&sizes, cli.frames, &accel_sum, &base_sum, sim_frames);

    let code = if let Some(c) = code_override {
        c
    } else if let Some(c) = vms
        .iter()
        .zip(&codes)
        .filter(|(v, _)| !v.stopped_by_us)
        .map(|(_, c)| c.unwrap_or(exit::STAGE as i32))
        .find(|&c| c != 0 && c != 1)
    {
        // A launcher's own error (setup 3, stage 4, ...) takes precedence; a launcher we stopped
        // because of it reports 130, which is not the cause.
        c.clamp(0, 255) as u8
    } else if vms.iter().any(|v| v.stopped_by_us) {
        exit::STAGE
    } else if cmp["ok"] == true && codes.iter().all(|&c| c == Some(0)) {
        exit::OK
    } else {
        exit::FAILED
    };
    // Name each failed launcher's own error (its stage and message) next to ours.
    for (v, sum) in vms.iter().zip([&accel_sum, &base_sum]) {
        if !v.stopped_by_us {
            if let Some(e) = sum["error"].as_str() {
                let line = format!("{} VM: {e}", v.name);
                error = Some(match error.take() {
                    Some(prev) => format!("{prev}\n  {line}"),
                    None => line,
                });
            }
        }
    }
    if code == exit::FAILED && error.is_none() {
        error = Some("a GEMM, a comparison or the frame count failed (see the table)".into());
    }
    let summary = json!({
        "ok": code == exit::OK,
        "exit_code": code,
        "error": error,
        "log_dir": log_dir.display().to_string(),
        "port": port,
        "wall_seconds": (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "sizes": cmp["sizes"].clone(),
        "net": cmp["net"].clone(),
        "vms": {
            "accel": vm_json(&accel_sum, codes[0], vms[0].stopped_by_us),
            "baseline": vm_json(&base_sum, codes[1], vms[1].stopped_by_us),
        },
    });
    Ok(Outcome { code, error, summary })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(log_dir) = cosim_launch::start_supervisor(cli.log_dir.clone(), "dual") else {
        return ExitCode::from(exit::SETUP);
    };
    let out = match run(&cli, &log_dir) {
        Ok(o) => o,
        Err(e) => {
            let msg = format!("{e:#}");
            tracing::error!("{msg}");
            Outcome {
                code: exit::SETUP,
                error: Some(msg.clone()),
                summary: json!({"ok": false, "exit_code": exit::SETUP, "error": msg,
                    "log_dir": log_dir.display().to_string()}),
            }
        }
    };
    let _ = std::fs::write(log_dir.join("results.json"), format!("{:#}\n", out.summary));
    if cli.json {
        println!("{}", out.summary);
    } else {
        if out.summary.get("sizes").is_some() {
            println!("accelerator VM: our QEMU + GEMM RTL (Verilator)  |  baseline VM: stock QEMU, CPU only");
            print!("{}", table(&out.summary));
            for vm in ["accel", "baseline"] {
                let v = &out.summary["vms"][vm];
                println!(
                    "{vm:<8} VM: launcher exit {}, wall {} s, stages {}, logs {}",
                    fmt(&v["launcher_exit"], 0),
                    fmt(&v["wall_seconds"], 1),
                    v["stage_seconds"],
                    fmt(&v["log_dir"], 0)
                );
            }
        }
        match out.code {
            exit::OK => println!("result: PASS (logs in {})", log_dir.display()),
            _ => println!(
                "result: {} (exit {}): {} (logs in {})",
                if out.code == exit::FAILED { "FAIL" } else { "ERROR" },
                out.code,
                out.error.as_deref().unwrap_or("?"),
                log_dir.display()
            ),
        }
    }
    ExitCode::from(out.code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cosim_guest_results::{DeviceInfo, Info, Net, WaitNic};

    fn sizes() -> Vec<Size> {
        parse_sizes(&["4x4x4".into(), "17x33x9".into()], 5).unwrap()
    }

    #[test]
    fn parses_sizes_and_seeds() {
        let s = sizes();
        assert_eq!(s[1], Size { m: 17, n: 33, k: 9, seed: 6 });
        assert!(parse_sizes(&["4x4".into()], 1).is_err());
        assert!(parse_sizes(&["0x4x4".into()], 1).is_err());
        assert!(parse_sizes(&["4x4xz".into()], 1).is_err());
    }

    #[test]
    fn workloads_match() {
        let s = sizes();
        let a = accel_items(&s, 7, 60);
        assert_eq!(a[0], "wait-nic --frames 7 --timeout-ms 60000");
        assert_eq!(a[2], "gemm --m 17 --n 33 --k 9 --seed 6 --check");
        assert_eq!(a[3], "info");
        let b = baseline_items(&s, 7, 64);
        assert_eq!(b[0], "net --count 7 --size 64");
        assert_eq!(b[2], "gemm --m 17 --n 33 --k 9 --seed 6 --cpu-only");
    }

    #[test]
    fn sim_stats_line() {
        let log = "x\ncosim-sim: stopping: terminated (SIGTERM)\ncosim-sim: stats cycles=5 irqs=2 frames_tx=20 frames_rx=21 serial_tx=0\n";
        assert_eq!(sim_frame_stats(log), Some((21, 20)));
        assert_eq!(sim_frame_stats("nothing"), None);
    }

    fn gemm(device: &str, (m, n, k, seed): (u32, u32, u32, u64), c_hash: &str, accel: bool) -> Record {
        Record::Gemm(Gemm {
            ok: true,
            run: Some(0),
            check: Some(if accel { Check::Pass } else { Check::Skipped }),
            cpu_us: Some(Some(1.0)),
            c_hash: Some(c_hash.into()),
            rtl_cycles: accel.then_some(20),
            ideal_cycles: accel.then_some(4),
            ..Gemm::new(device.into(), (m, n, k), seed)
        })
    }

    fn summaries(hash_b: &str, rtl_rx: u32) -> (Value, Value) {
        let info = Info {
            ok: true,
            device: "/dev/accel0".into(),
            error: None,
            info: Some(DeviceInfo {
                index: 0,
                pci: "0000:00:02.0".into(),
                vendor: "0x1ded".into(),
                device_id: "0xacc1".into(),
                revision: 1,
                id: "0x47454d4d".into(),
                version: "1.0".into(),
                array_rows: 4,
                array_cols: 4,
                max_dim: 1024,
                msix_vectors: 4,
                timeout_ms: 120_000,
                jobs: 2,
                errors: 0,
                timeouts: 0,
                irqs: 2,
                jobs_done_reg: 2,
                abi_version: 1,
                nic_rx_frames: rtl_rx,
                nic_tx_frames: 3,
                uart_rx_bytes: 0,
            }),
        };
        let wait = WaitNic {
            ok: true,
            device: "/dev/accel0".into(),
            frames: 3,
            nic_rx_frames: 3,
            nic_tx_frames: 3,
            waited_ms: 10,
            error: None,
        };
        let net = Net {
            ok: true,
            iface: "eth0".into(),
            mac: "52:54:00:12:34:56".into(),
            peer_mac: "02:00:00:00:00:02".into(),
            sent: 3,
            received: 3,
            lost: 0,
            size: 64,
            rtt_us_median: Some(100.0),
            rtt_us_max: Some(200.0),
            if_tx_packets: 3,
            if_rx_packets: 3,
        };
        let a = json!({"guest": {"results": [
            gemm("/dev/accel0", (4, 4, 4, 5), "0x1", true),
            gemm("/dev/accel0", (17, 33, 9, 6), "0x2", true),
            Record::WaitNic(wait),
            Record::Info(info),
        ]}});
        let b = json!({"guest": {"results": [
            Record::Net(net),
            gemm("cpu", (4, 4, 4, 5), "0x1", false),
            gemm("cpu", (17, 33, 9, 6), hash_b, false),
        ]}});
        (a, b)
    }

    #[test]
    fn compare_all_good() {
        let (a, b) = summaries("0x2", 3);
        let c = compare(&sizes(), 3, &a, &b, Some((3, 3)));
        assert_eq!(c["ok"], true, "{c:#}");
        assert_eq!(c["sizes"][1]["same_c"], true);
        assert!(table(&c).contains("17x33x9"));
    }

    #[test]
    fn compare_detects_hash_and_count_mismatch() {
        let (a, b) = summaries("0x3", 3);
        let c = compare(&sizes(), 3, &a, &b, None);
        assert_eq!(c["sizes"][1]["same_c"], false);
        assert_eq!(c["ok"], false);
        let (a, b) = summaries("0x2", 4);
        let c = compare(&sizes(), 3, &a, &b, Some((3, 3)));
        assert_eq!(c["net"]["ok"], false);
        let (a, b) = summaries("0x2", 3);
        let c = compare(&sizes(), 3, &a, &b, Some((2, 3)));
        assert_eq!(c["net"]["ok"], false);
        // A missing VM result fails the size.
        let c = compare(&sizes(), 3, &a, &json!(null), None);
        assert_eq!(c["sizes"][0]["ok"], false);
    }
}
