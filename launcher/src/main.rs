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
//! With `--mode vfio-user` an unpatched QEMU (10.1 or later) drives the simulations: each is a
//! vfio-user server on a Unix socket in the run's private directory, QEMU gets one
//! `-device vfio-user-pci` per simulation and shares the guest RAM with them (docs/user-guide.md,
//! "vfio-user mode").
//!
//! With `--serve` the guest runs `accel-tool serve` instead of a workload, reachable from the host
//! on 127.0.0.1 through QEMU user networking; once it answers an INFO the launcher prints one line
//! `COSIM-SERVE {"host":"127.0.0.1","port":P,"devices":N}` on stdout and keeps everything up until
//! SIGINT or SIGTERM (docs/guest.md, "Serve mode").
//!
//! This file is the command line and the order of the run; process supervision, the stages, QEMU's
//! command line, the marker lines and the stray injector are the library's (`cosim_launch`, which
//! holds the crate's only `unsafe`).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};

use cosim_launch::guest_add::{self, GuestAdd};
use cosim_launch::procs::{Output, Proc};
use cosim_launch::qemu::{self, Accelerator, QemuSpec};
use cosim_launch::stages::{Stage, StageError, Stages};
use cosim_launch::{default_build, devstats, exit, inject, markers};

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
guest/bzImage, guest/initramfs.cpio.gz. Logs go to ~/.cache/cosim/logs/run-<time>-<pid> unless --log-dir, \
$COSIM_LOGS or $COSIM_CACHE say otherwise; the directory is printed at the start and on the last line.\n\n\
Statistics: QEMU gets a QMP socket in the run's private directory (its path is logged), so each device's \
statistics can be read while the run goes on (qom-get of /machine/peripheral/accelN, property stats); at the \
end the launcher prints them per device next to each simulation's statistics (and puts both in the results as \
device_stats).\n\n\
Your own design and program (docs/user-guide.md, sections 3 and 4): --sim YOUR_SIM --iommu --guest-add PROGRAM \
--run sh:PROGRAM. --guest-add puts files into the guest without rebuilding its image (a cpio archive appended to \
a copy of the initramfs); --iommu gives the guest QEMU's virtual IOMMU and binds every accelerator function no \
guest driver claims to vfio-pci, so the program drives it from user space with DMA and MSI-X (crate cosim-vfio, \
guest/vfio). Accelerator N sits at PCI address 0000:00:(10+N).0 (hex); the guest's COSIM-BOOT line counts every \
accelerator function whatever its IDs. What sh: items print appears in the table as [ITEM] LINE.\n\n\
Simulations on another machine: --connect ENDPOINT (once per device) starts no simulation and skips the sim \
start stage; each -device accelerator-pcie gets endpoint=ENDPOINT. The simulation must already run with the \
matching endpoint: for two machines, the simulation on S runs with --endpoint 'tcp://S:PORT?peer=Q' and this \
launcher on Q gets --connect 'tcp://Q:PORT?peer=S' (S listens on PORT, Q on PORT+1; both ports must be open \
between the machines). A tcp link beyond loopback needs a shared key: set COSIM_KEY_FILE to the same key file \
(mode 600) for the simulation and for this launcher (QEMU inherits it); the launcher refuses to start without \
it. If the link drops, QEMU declares the device lost after 1 s (MMIO reads return all ones, the guest's job \
fails with an error) and resumes the session when the link is back. See docs/user-guide.md, \"Two hosts\".\n\n\
Serve mode (--serve): instead of a workload the guest runs `accel-tool serve` (docs/serve-protocol.md), \
reachable on 127.0.0.1:PORT through QEMU user networking (--serve-channel tcp, the default; a host forward, \
the guest reaches nothing else; PORT is --serve-port or a free port) or through a virtio-serial port on a Unix \
socket (--serve-channel serial; in the run's private directory unless --serve-socket). Stages: sim start, \
QEMU start, boot, then serve start (until the server answers an INFO from the host, --timeout-serve-start); \
the launcher then prints exactly one line on stdout, COSIM-SERVE {\"host\":\"127.0.0.1\",\"port\":PORT,\"devices\":N} \
(serial: {\"path\":SOCKET,\"devices\":N}), and keeps the simulations and QEMU up \
(no timeout) until SIGINT or SIGTERM, then stops them and exits 0. The performance models in each reply \
use the simulations' modelled DMA read latency: the shell's default (100 clocks, so cycle counts are \
reproducible) unless a --sim-arg=+cosim_dma_latency=N sets it.\n\n\
vfio-user mode (--mode vfio-user): an unpatched QEMU 10.1 or later drives the RTL, no cosim code in it. Each \
simulation is a vfio-user server on a Unix socket in the run's private directory \
(--endpoint vfio-user://DIR/accelN.sock); QEMU gets one -device vfio-user-pci per simulation at the same PCI \
slot as the patched device, and the guest RAM as a shared memfd backend that the simulations map for DMA. QEMU: \
--qemu, else $COSIM_QEMU_STOCK, else $COSIM_BUILD/qemu-stock/qemu-system-x86_64 (make qemu-stock); it must list \
vfio-user-pci in `-device help`. The same guest, driver and workloads run. What needs the patched device or its \
link is a usage error: --accel-netdev (the NIC channel), --connect, --transport tcp, --inject-stray, \
--iommu (not supported yet). --serve works (the guest's server is reached through QEMU's own devices). The RTL's UART bytes are dropped (no accelN-uart.log), and the statistics at exit \
are the simulations' only (stock QEMU has no accelerator-pcie statistics). --device-opt KEY=VALUE goes to \
vfio-user-pci as a JSON member (VALUE a number or true/false, else a string), e.g. x-msg-timeout=10000.\n\n\
Exit status: 0 every workload item passed (serve mode: stopped by SIGINT or SIGTERM after serving); 1 the \
workload ran but an item failed; 2 usage error; 3 setup error (missing artifact, cannot start a process); \
4 a stage timed out or a process died early (serve mode: also QEMU or a simulation ending while serving); \
130 interrupted (Ctrl-C, SIGTERM) before the end.",
    after_help = "Examples:\n  cosim-launch --sim ~/mydev/build/sim --iommu --guest-add ~/mydev/sw/mydev-sw --run sh:mydev-sw\n  \
cosim-launch --devices 2 --run 'gemm --m 64 --n 64 --k 64 --check --device all' --run info\n  \
COSIM_KEY_FILE=~/cosim.key cosim-launch --connect 'tcp://10.0.0.1:7000?peer=10.0.0.2' --run 'gemm --m 64 --n 64 --k 64 --check'\n  \
cosim-launch --serve --devices 2 --serve-port 7070   # then connect a client (python/cosim) to 127.0.0.1:7070\n  \
cosim-launch --mode vfio-user --qemu /usr/bin/qemu-system-x86_64 --run 'gemm --m 64 --n 64 --k 64 --check'"
)]
struct Cli {
    /// Which QEMU device stands for each simulation: "patched" (accelerator-pcie in cosim's QEMU,
    /// over the cosim link) or "vfio-user" (vfio-user-pci in any QEMU 10.1 or later; the
    /// simulation is a vfio-user server; see "vfio-user mode" above).
    #[arg(long, value_enum, default_value_t = Mode::Patched)]
    mode: Mode,

    /// Number of accelerator-pcie devices, each backed by its own simulation (0: no accelerator;
    /// at most 15). Accelerator N sits at PCI address 0000:00:1N.0 hex (0x10 + N) in the guest.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(0..=qemu::ACCEL_MAX as i64))]
    devices: u16,

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

    /// QEMU binary [default: $COSIM_BUILD/qemu/qemu-system-x86_64; vfio-user mode:
    /// $COSIM_QEMU_STOCK, else $COSIM_BUILD/qemu-stock/qemu-system-x86_64].
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

    /// Extra option for every -device accelerator-pcie (repeatable), e.g. timeout-ms=5000. In
    /// vfio-user mode a member of every vfio-user-pci's JSON, e.g. x-msg-timeout=10000.
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

    /// Add a file or a directory tree to the guest (repeatable), without rebuilding the image:
    /// FILE[:DEST] (DEST default: /usr/local/bin/NAME for an executable, else /root/NAME) or
    /// DIR[:DEST] (DIR's contents under DEST, default /: an overlay). DEST is absolute. The
    /// launcher appends a second cpio archive to a copy of the initramfs (docs/guest.md).
    #[arg(long = "guest-add", value_name = "PATH[:DEST]", value_parser = parse_guest_add)]
    guest_adds: Vec<GuestAdd>,

    /// QEMU's virtual IOMMU (-device intel-iommu,intremap=on; the kernel gets intel_iommu=on) and
    /// every accelerator function no guest driver claims bound to vfio-pci, so a user-space
    /// program drives it with DMA and MSI-X through VFIO (/dev/vfio/N; crate cosim-vfio).
    #[arg(long)]
    iommu: bool,

    /// Directory for the logs (console, QEMU stderr, simulations, UARTs, results.json)
    /// [default: ~/.cache/cosim/logs/run-<unix time>-<pid>; $COSIM_LOGS or $COSIM_CACHE/logs
    /// replace ~/.cache/cosim/logs].
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

    /// Serve mode: run `accel-tool serve` in the guest instead of a workload and keep it up until
    /// SIGINT/SIGTERM; prints `COSIM-SERVE {"host":"127.0.0.1","port":P,"devices":N}` (or
    /// `{"path":SOCKET,"devices":N}` over serial) on stdout once the server answers
    /// (docs/guest.md, "Serve mode").
    #[arg(long, conflicts_with_all = ["runs", "kill_sim_after", "inject_stray", "nic", "json"])]
    serve: bool,

    /// Serve mode's channel: "tcp" (QEMU user networking, a forward from 127.0.0.1) or "serial"
    /// (virtio-serial on a Unix socket: faster, but see docs/guest.md for its limit).
    #[arg(long, default_value = "tcp", value_parser = ["tcp", "serial"], requires = "serve")]
    serve_channel: String,

    /// Serve mode over tcp: the port on 127.0.0.1 forwarded to the server [default: a free port
    /// picked at run time].
    #[arg(long, value_name = "PORT", requires = "serve")]
    serve_port: Option<u16>,

    /// Serve mode over serial: the Unix socket to create [default: serve.sock in the run's
    /// private directory (mode 0700)].
    #[arg(long, value_name = "PATH", requires = "serve", conflicts_with = "serve_port")]
    serve_socket: Option<PathBuf>,

    /// Serve mode: seconds from COSIM-BOOT until the server answers an INFO from the host.
    #[arg(long, default_value_t = 60)]
    timeout_serve_start: u64,

    /// Print the guest console on stderr as it arrives.
    #[arg(long, short)]
    verbose: bool,

    /// Print one JSON object with the whole run's results on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

/// The QEMU device of each accelerator (`--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// `accelerator-pcie` in cosim's QEMU, over the cosim link.
    Patched,
    /// `vfio-user-pci` in any QEMU 10.1 or later; the simulation serves vfio-user.
    VfioUser,
}

/// The stock QEMU for vfio-user mode when --qemu is not given.
const QEMU_STOCK_ENV: &str = "COSIM_QEMU_STOCK";

/// How long `qemu -device help` and `qemu -version` may take.
const QEMU_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest Unix socket path (`sun_path` minus the NUL).
const UNIX_PATH_MAX: usize = 107;

impl Mode {
    /// The name `--mode` takes, also the results' `mode`.
    fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value().map_or_else(String::new, |v| v.get_name().to_string())
    }
}

fn log(msg: impl AsRef<str>) {
    tracing::info!("{}", msg.as_ref());
}

/// `--guest-add` values: the source exists, DEST is absolute (else a usage error, exit 2).
fn parse_guest_add(s: &str) -> Result<GuestAdd, String> {
    GuestAdd::parse(s).map_err(|e| e.to_string())
}

/// `--connect` values: an endpoint the transport accepts (docs/protocol.md, "Channels").
fn parse_connect(s: &str) -> Result<String, String> {
    cosim_transport::Endpoint::parse(s).map(|_| s.to_string()).map_err(|e| e.to_string())
}

impl Cli {
    /// Number of accelerators: one per `--connect` endpoint, else `--devices`.
    fn device_count(&self) -> usize {
        if self.connect.is_empty() {
            self.devices as usize
        } else {
            self.connect.len()
        }
    }
}

/// The QEMU binary: `--qemu`, else (patched) `<build>/qemu/qemu-system-x86_64`, else (vfio-user)
/// `$COSIM_QEMU_STOCK` if set and not empty, else `<build>/qemu-stock/qemu-system-x86_64`.
fn qemu_binary(mode: Mode, given: Option<&Path>, stock_env: Option<std::ffi::OsString>, build: &Path) -> PathBuf {
    match (given, mode) {
        (Some(q), _) => q.to_path_buf(),
        (None, Mode::Patched) => build.join("qemu/qemu-system-x86_64"),
        (None, Mode::VfioUser) => stock_env
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| build.join("qemu-stock/qemu-system-x86_64")),
    }
}

/// Runs `qemu ARGS` to its end (at most [`QEMU_PROBE_TIMEOUT`]); its stdout, or why not.
fn qemu_probe(qemu: &Path, args: &[&str]) -> Result<String> {
    let (tx, _rx) = std::sync::mpsc::channel::<cosim_launch::procs::Line<()>>();
    let mut cmd = Command::new(qemu);
    cmd.args(args);
    let what = format!("{} {}", qemu.display(), args.join(" "));
    let mut p = Proc::spawn(&what, cmd, Output::Capture, Output::Capture, &tx)?;
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = p.poll() {
            break st;
        }
        if t0.elapsed() > QEMU_PROBE_TIMEOUT {
            p.kill_now();
            p.wait();
            bail!("`{what}` did not finish within {} s", QEMU_PROBE_TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = String::from_utf8_lossy(&p.take_stdout()).into_owned();
    if !status.success() {
        let err = String::from_utf8_lossy(&p.take_stderr()).into_owned();
        bail!("`{what}` failed ({status}): {}", err.trim());
    }
    Ok(out)
}

/// vfio-user mode needs a QEMU with the vfio-user client (10.1 or later): its `-device help`
/// must list `vfio-user-pci`.
fn check_vfio_user_client(qemu: &Path) -> Result<()> {
    let help = qemu_probe(qemu, &["-device", "help"])?;
    if qemu::device_help_lists(&help, qemu::VFIO_USER_DEVICE) {
        return Ok(());
    }
    let version = qemu_probe(qemu, &["-version"]).unwrap_or_default();
    let version = version.lines().next().unwrap_or("version unknown").trim();
    bail!(
        "{} ({version}) has no {} device (not in its `-device help`): vfio-user mode needs QEMU 10.1 or later \
         (build one with `make qemu-stock`, or give --qemu)",
        qemu.display(),
        qemu::VFIO_USER_DEVICE
    )
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

/// The modelled DMA read latency of a simulation without `+cosim_dma_latency=N`: the shell's
/// default, which is the bridge's (serve mode's models assume it).
const DEFAULT_DMA_LATENCY: u32 = cosim_dpi_bridge::DEFAULT_DMA_LATENCY as u32;

/// The modelled read latency `+cosim_dma_latency=N` among the simulation arguments, if any.
fn sim_dma_latency(sim_args: &[String]) -> Option<u32> {
    sim_args.iter().rev().find_map(|a| a.strip_prefix("+cosim_dma_latency=")?.parse().ok())
}

/// A free TCP port on 127.0.0.1 (bound, then released for QEMU to take).
fn free_loopback_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0 to pick a port")?;
    Ok(l.local_addr()?.port())
}

/// Sends an INFO to the server over `channel`; the number of devices it reports, or why not.
/// Each step has a short timeout (QEMU accepts the host side before the guest's server runs).
fn serve_probe(channel: &qemu::ServeChannel) -> std::result::Result<u32, String> {
    use accel_tool::serve_codec::{self as codec, Reply};
    use std::io::{Read, Write};
    fn info<S: Read + Write>(mut s: S) -> std::result::Result<u32, String> {
        s.write_all(&codec::encode_info(1)).map_err(|e| format!("send INFO: {e}"))?;
        let mut h = [0u8; codec::HEADER_LEN];
        s.read_exact(&mut h).map_err(|e| format!("INFO reply header: {e}"))?;
        let h = codec::decode_header(&h).map_err(|e| e.error.to_string())?;
        let mut p = vec![0u8; h.length as usize];
        s.read_exact(&mut p).map_err(|e| format!("INFO reply payload: {e}"))?;
        match codec::decode_reply(&h, &p) {
            Some(Reply::Info(devs)) if h.id == 1 => Ok(devs.len() as u32),
            other => Err(format!("unexpected reply to INFO: kind {:#x}, {other:?}", h.kind)),
        }
    }
    let limit = Duration::from_secs(2);
    let t = Some(limit);
    match channel {
        qemu::ServeChannel::Tcp { host_port } => {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], *host_port));
            let s = std::net::TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(t).and_then(|()| s.set_write_timeout(t)).map_err(|e| e.to_string())?;
            info(s)
        }
        qemu::ServeChannel::Serial { socket } => {
            let s = std::os::unix::net::UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(t).and_then(|()| s.set_write_timeout(t)).map_err(|e| e.to_string())?;
            info(s)
        }
    }
}

/// The COSIM-SERVE line's JSON, keys in this order: `{"host":"127.0.0.1","port":P,"devices":N}`
/// or `{"path":SOCKET,"devices":N}` (`devices` None: without it, for the log).
fn serve_line(channel: &qemu::ServeChannel, devices: Option<u32>) -> String {
    let place = match channel {
        qemu::ServeChannel::Tcp { host_port } => format!("\"host\":\"127.0.0.1\",\"port\":{host_port}"),
        qemu::ServeChannel::Serial { socket } => format!("\"path\":{}", json!(socket.display().to_string())),
    };
    match devices {
        Some(n) => format!("{{{place},\"devices\":{n}}}"),
        None => format!("{{{place}}}"),
    }
}

/// Failure of the run, with the exit code it maps to.
struct RunError {
    code: u8,
    stage: &'static str,
    message: String,
}

impl From<StageError> for RunError {
    fn from(e: StageError) -> Self {
        RunError { code: e.code, stage: e.stage.name(), message: e.message }
    }
}

impl From<anyhow::Error> for RunError {
    fn from(e: anyhow::Error) -> Self {
        RunError { code: exit::SETUP, stage: "setup", message: format!("{e:#}") }
    }
}

impl From<cosim_launch::Error> for RunError {
    fn from(e: cosim_launch::Error) -> Self {
        anyhow::Error::from(e).into()
    }
}

fn require_file(p: &Path, what: &str, make: &str) -> Result<()> {
    if !p.is_file() {
        bail!("{what} {} is missing: build it with `{make}`", p.display());
    }
    Ok(())
}


/// The run: its processes and stages, and what it set up around them.
struct Run {
    stages: Stages,
    /// The private directory of the ipc sockets and the tcp key; removed after the processes stop.
    tmp_dir: Option<cosim_transport::PrivateDir>,
    endpoints: Vec<String>,
    injected: Option<u64>,
}

impl Run {
    /// The run's private directory (mode 0700), made on first use.
    fn private_dir(&mut self) -> Result<&Path> {
        if self.tmp_dir.is_none() {
            self.tmp_dir =
                Some(cosim_transport::PrivateDir::new("launch").context("cannot create the run's private directory")?);
        }
        Ok(self.tmp_dir.as_ref().expect("just made").path())
    }
}

fn execute(cli: &Cli, log_dir: &Path, run: &mut Run) -> Result<(), RunError> {
    let build = default_build();
    let sim_bin = cli.sim.clone().unwrap_or_else(|| build.join("sim/gemm_top/sim"));
    let qemu_bin = qemu_binary(cli.mode, cli.qemu.as_deref(), std::env::var_os(QEMU_STOCK_ENV), &build);
    let kernel = cli.kernel.clone().unwrap_or_else(|| build.join("guest/bzImage"));
    let initrd = cli.initrd.clone().unwrap_or_else(|| build.join("guest/initramfs.cpio.gz"));
    if cli.devices > 0 && cli.connect.is_empty() {
        let how = if cli.sim.is_some() { "scripts/cosim-build-sim --top TOP --out DIR SOURCES" } else { "make sim-gemm" };
        require_file(&sim_bin, "simulation binary", how)?;
        if cli.sim.is_some() && cli.runs.is_empty() && !cli.serve {
            let d = qemu::DEFAULT_RUN;
            log(format!("no --run: the default item is the GEMM example's ({d}); a design of your own needs --run"));
        }
    }
    if cli.mode == Mode::VfioUser {
        require_file(&qemu_bin, "QEMU binary (10.1 or later, for vfio-user mode)", "make qemu-stock")?;
        check_vfio_user_client(&qemu_bin)?;
        log(format!("vfio-user mode: {} lists {}", qemu_bin.display(), qemu::VFIO_USER_DEVICE));
    } else {
        require_file(&qemu_bin, "QEMU binary", "make qemu")?;
    }
    require_file(&kernel, "guest kernel", "make guest")?;
    require_file(&initrd, "guest initramfs", "make guest")?;
    let workload = if cli.serve { String::new() } else { qemu::workload(&cli.runs)? };
    // Serve mode: the read latency the models assume (the simulations' when we start them;
    // unknown, so 0, with --connect). The channel is set up with the private directory below.
    let serve_latency = match (cli.connect.is_empty(), sim_dma_latency(&cli.sim_args)) {
        (_, Some(l)) => l,
        (true, None) => DEFAULT_DMA_LATENCY,
        (false, None) => 0,
    };

    // Endpoints, private to this user (docs/protocol.md, "Access control").
    let mut key_file = None;
    if !cli.connect.is_empty() {
        // Simulations started elsewhere: QEMU gets their endpoints and our COSIM_KEY_FILE.
        check_connect_key(&cli.connect)?;
        for (i, ep) in cli.connect.iter().enumerate() {
            log(format!("accelerator {i}: connecting to the running simulation at {ep} (no simulation started)"));
        }
        run.endpoints = cli.connect.clone();
    } else if cli.devices > 0 {
        let dir = cosim_transport::PrivateDir::new("launch").context("cannot create the run's private directory")?;
        if cli.mode == Mode::VfioUser {
            // One vfio-user server socket per simulation, in the private directory.
            for i in 0..cli.device_count() {
                let socket = dir.path().join(format!("accel{i}.sock"));
                if socket.as_os_str().len() > UNIX_PATH_MAX {
                    return Err(anyhow::anyhow!(
                        "the vfio-user socket path {} is longer than {UNIX_PATH_MAX} bytes (the Unix socket limit): \
                         set TMPDIR or XDG_RUNTIME_DIR to a shorter directory",
                        socket.display()
                    )
                    .into());
                }
                run.endpoints.push(format!("{}{}", cosim_dpi_bridge::vfio_user::SCHEME, socket.display()));
            }
        } else if cli.transport == "ipc" {
            run.endpoints = (0..cli.device_count()).map(|i| dir.endpoint(&format!("accel{i}"))).collect();
        } else {
            for _ in 0..cli.device_count() {
                run.endpoints.push(format!("tcp://127.0.0.1:{}", cosim_transport::free_port_pair("127.0.0.1").context("cannot pick tcp ports")?));
            }
            // Loopback tcp is open to every local user: give both sides a key.
            if std::env::var_os(cosim_transport::KEY_FILE_ENV).filter(|v| !v.is_empty()).is_none() {
                let k = dir.path().join("link.key");
                cosim_transport::generate_key_file(&k).context("cannot create the link key")?;
                key_file = Some(k);
            }
        }
        run.tmp_dir = Some(dir);
    }

    // Serve mode's channel: a Unix socket in the private directory (made here if no simulation
    // needed one), or a loopback port.
    let serve = if !cli.serve {
        None
    } else if cli.serve_channel == "tcp" {
        Some(qemu::ServeChannel::Tcp {
            host_port: match cli.serve_port {
                Some(p) => p,
                None => free_loopback_port()?,
            },
        })
    } else {
        let socket = match &cli.serve_socket {
            Some(p) => p.clone(),
            None => run.private_dir()?.join("serve.sock"),
        };
        Some(qemu::ServeChannel::Serial { socket })
    };

    // --guest-add: the image's initramfs with a second archive appended, in the private
    // directory (QEMU reads it at start).
    let initrd = if cli.guest_adds.is_empty() {
        initrd
    } else {
        let out = run.private_dir()?.join("initramfs-added.cpio");
        let n = guest_add::append_to_initrd(&initrd, &cli.guest_adds, &out).map_err(anyhow::Error::from)?;
        for a in &cli.guest_adds {
            log(format!("guest-add: {} -> {}", a.source.display(), a.dest.display()));
        }
        log(format!("guest-add: {n} bytes appended to the initramfs ({})", out.display()));
        out
    };

    // Stage: sim start (none with --connect).
    let mut pids = serde_json::Map::new();
    let start_sims = if cli.connect.is_empty() { run.endpoints.as_slice() } else { &[] };
    for (i, ep) in start_sims.iter().enumerate() {
        let mut cmd = Command::new(&sim_bin);
        cosim_dpi_bridge::sim_process::keep_bridge_beside(&mut cmd, &sim_bin);
        cmd.arg("--endpoint").arg(ep);
        if let Some(k) = &key_file {
            cmd.env(cosim_transport::KEY_FILE_ENV, k);
        }
        if let Some(n) = cli.max_cycles {
            cmd.arg("--max-cycles").arg(n.to_string());
        }
        if cli.waves {
            cmd.arg("--waves").arg(log_dir.join(format!("sim{i}.fst")));
        }
        if cli.sim_stats {
            cmd.arg("--stats");
        }
        cmd.args(&cli.sim_args);
        let logp = run.stages.sim_log(i);
        log(format!("starting simulation {i}: {} endpoint {ep} (log {})", sim_bin.display(), logp.display()));
        pids.insert(format!("sim{i}"), json!(run.stages.spawn_sim(cmd)?));
    }
    if cli.connect.is_empty() {
        let t = Duration::from_secs(cli.timeout_sim_start);
        run.stages.wait(Stage::SimStart, t, |s| s.sims_ready(), |_, _| {})?;
    }

    // Stage: QEMU start. A QMP socket in the private directory: the devices' statistics can be
    // read while the run goes on (docs/qemu-device.md, "Statistics").
    let qmp = run.private_dir()?.join("qmp.sock");
    match cli.mode {
        Mode::Patched => log(format!(
            "QMP socket {} (e.g. qom-get of /machine/peripheral/accel0, property stats)",
            qmp.display()
        )),
        Mode::VfioUser => log(format!("QMP socket {} (vfio-user-pci has no cosim statistics)", qmp.display())),
    }
    let mut qemu_args = vec!["-qmp".to_string(), format!("unix:{},server=on,wait=off", qmp.display())];
    qemu_args.extend(cli.qemu_args.iter().cloned());
    let spec = QemuSpec {
        memory_mib: cli.memory,
        smp: cli.smp,
        firmware_dirs: qemu::FIRMWARE_DIRS.iter().map(PathBuf::from).collect(),
        kernel,
        initrd,
        append: qemu::kernel_append(&workload, cli.nic.is_some(), &{
            let accel = qemu::accel_param(run.endpoints.len(), cli.iommu);
            let serve = serve.as_ref().map(|ch| qemu::serve_append(ch, serve_latency)).unwrap_or_default();
            [accel.as_str(), serve.as_str(), cli.append.as_str()]
                .iter()
                .filter(|p| !p.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" ")
        })?,
        accel_netdev: cli.accel_netdev.clone(),
        nic: cli.nic.clone(),
        serve: serve.clone(),
        accelerators: (run.endpoints.iter().enumerate())
            .map(|(i, ep)| match cosim_dpi_bridge::vfio_user::socket_path(ep) {
                Some(socket) if cli.mode == Mode::VfioUser => Accelerator::VfioUser { socket: socket.into() },
                _ => Accelerator::Patched {
                    endpoint: ep.clone(),
                    uart_log: log_dir.join(format!("accel{i}-uart.log")),
                },
            })
            .collect(),
        device_opts: cli.device_opts.clone(),
        iommu: cli.iommu,
        extra_args: qemu_args,
    };
    let args = spec.args();
    let mut cmd = Command::new(&qemu_bin);
    if let Some(k) = &key_file {
        cmd.env(cosim_transport::KEY_FILE_ENV, k);
    }
    cmd.args(&args);
    let _ = std::fs::write(log_dir.join("qemu-cmdline.txt"), qemu::shell_line(&qemu_bin, &args) + "\n");
    log(format!("starting QEMU (console log {})", run.stages.console_log().display()));
    pids.insert("qemu".into(), json!(run.stages.spawn_qemu(cmd)?));
    let _ = std::fs::write(log_dir.join("pids.json"), Value::Object(pids).to_string() + "\n");

    let t_qemu = Duration::from_secs(cli.timeout_qemu_start);
    run.stages.wait(Stage::QemuStart, t_qemu, |s| s.console_started(), |_, _| {})?;
    let t_boot = Duration::from_secs(cli.timeout_boot);
    run.stages.wait(Stage::Boot, t_boot, |s| s.report.boot.is_some(), |_, _| {})?;
    if let Some(b) = &run.stages.report.boot {
        log(format!("guest up: {b}"));
        let seen = b["devices"].as_u64().unwrap_or(0) as usize;
        if seen != cli.device_count() {
            tracing::warn!("the guest sees {seen} accelerator(s), {} were configured", cli.device_count());
        }
        // The GEMM driver's count matters only to accel-tool items (the GEMM example); a design
        // of your own is driven by an "sh:" item (through VFIO with --iommu).
        let gemm = b["gemm"].as_u64().unwrap_or(seen as u64) as usize;
        let vfio = b["vfio"].as_array().map_or(0, Vec::len);
        let accel_tool_items = cli.runs.is_empty() || cli.runs.iter().any(|r| !r.starts_with("sh:"));
        if gemm < seen && !cli.serve && accel_tool_items {
            tracing::warn!(
                "the GEMM driver (cosim_accel) drives {gemm} of the {seen} accelerator(s) and the accel-tool items \
                 need it: is --sim a GEMM design? (other designs: --run 'sh:...', with --iommu for VFIO)"
            );
        }
        if cli.iommu && vfio + gemm < seen {
            tracing::warn!("--iommu: {vfio} of the {seen} accelerator(s) are bound to vfio-pci (see the FAILED lines)");
        }
    }

    if let Some(ch) = serve {
        return serve_until_stopped(cli, run, &ch);
    }

    let t_work = Duration::from_secs(cli.timeout_workload);
    let injector = match cli.inject_stray {
        Some(rate) if rate > 0 => {
            log(format!(
                "fault injection: pushing {rate} stray frames/s into each of {} channels",
                2 * run.endpoints.len()
            ));
            Some(inject::start(&run.endpoints, rate)?)
        }
        _ => None,
    };
    let kill_after = cli.kill_sim_after.map(Duration::from_secs_f64);
    let mut killed = false;
    let work = run.stages.wait(
        Stage::Workload,
        t_work,
        |s| s.report.done.is_some(),
        |s, elapsed| {
            if let Some(k) = kill_after {
                if !killed && elapsed >= k && s.sim_count() > 0 {
                    log(format!(
                        "fault injection: killing simulation 0 after {:.1} s of workload",
                        elapsed.as_secs_f64()
                    ));
                    s.kill_sim(0);
                    killed = true;
                }
            }
        },
    );
    if let Some(i) = injector {
        let n = i.stop();
        log(format!("fault injection: {n} stray frames pushed"));
        run.injected = Some(n);
    }
    work?;

    // QEMU's exit is recorded by the poll in the wait's loop.
    let t_shut = Duration::from_secs(cli.timeout_shutdown);
    run.stages.wait(Stage::Shutdown, t_shut, |s| s.qemu_exited(), |_, _| {})?;
    Ok(())
}

/// Serve mode after boot: wait (bounded) until the server answers an INFO through the forward,
/// print the COSIM-SERVE line, then keep everything up until SIGINT or SIGTERM (a clean stop).
fn serve_until_stopped(cli: &Cli, run: &mut Run, channel: &qemu::ServeChannel) -> Result<(), RunError> {
    let t_serve = Duration::from_secs(cli.timeout_serve_start);
    let devices = std::cell::Cell::new(None);
    let mut last_error = String::new();
    let mut next_probe = Duration::ZERO;
    log(format!("serve start: waiting for the server's INFO reply ({})", serve_line(channel, None)));
    let started = run.stages.wait(
        Stage::Workload,
        t_serve,
        |_| devices.get().is_some(),
        |_, elapsed| {
            if elapsed >= next_probe {
                next_probe = elapsed + Duration::from_millis(500);
                match serve_probe(channel) {
                    Ok(n) => devices.set(Some(n)),
                    Err(e) => last_error = e,
                }
            }
        },
    );
    if let Err(mut e) = started {
        if e.code == exit::STAGE {
            e.message = format!("serve start: the server did not answer an INFO (last: {last_error}); {}", e.message);
        }
        return Err(e.into());
    }
    let n = devices.get().unwrap_or(0);
    if n as usize != cli.device_count() {
        tracing::warn!("the server reports {n} device(s), {} were configured", cli.device_count());
    }
    println!("COSIM-SERVE {}", serve_line(channel, Some(n)));
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    log(format!("serving with {n} device(s); stop with Ctrl-C or SIGTERM"));
    // No timeout: only a signal (a clean stop) or a process that ends (an error) ends it.
    let forever = Duration::from_secs(100 * 365 * 24 * 3600);
    match run.stages.wait(Stage::Workload, forever, |_| false, |_, _| {}) {
        Err(e) if e.code == exit::INTERRUPTED => {
            log("serve: stopping (signal)");
            Ok(())
        }
        Err(e) => Err(e.into()),
        Ok(()) => Ok(()),
    }
}

/// The first option given that vfio-user mode cannot serve (it needs the patched device or the
/// cosim link), with the reason.
fn vfio_user_conflict(cli: &Cli) -> Option<String> {
    let refused = [
        (cli.accel_netdev.is_some(), "--accel-netdev", "the accelerator's NIC channel needs the patched device"),
        (!cli.connect.is_empty(), "--connect", "it joins a simulation over the cosim link, which vfio-user replaces"),
        (cli.transport == "tcp", "--transport tcp", "vfio-user runs on Unix sockets"),
        (cli.inject_stray.is_some(), "--inject-stray", "it injects frames of the cosim link"),
        (cli.iommu, "--iommu", "vfio-user-pci behind QEMU's virtual IOMMU is not supported yet"),
    ];
    let (_, opt, why) = refused.into_iter().find(|(given, _, _)| *given)?;
    Some(format!("{opt} is not available in vfio-user mode: {why} (it works with --mode patched)"))
}

/// Option combinations clap cannot express (they depend on a value): usage errors, exit 2.
fn usage_errors(cli: &Cli) -> Result<(), clap::Error> {
    use clap::CommandFactory;
    let clash = if cli.serve_channel == "serial" && cli.serve_port.is_some() {
        Some("--serve-port is for --serve-channel tcp (serial uses --serve-socket)".to_string())
    } else if cli.serve_channel == "tcp" && cli.serve_socket.is_some() {
        Some("--serve-socket is for --serve-channel serial".to_string())
    } else if cli.mode == Mode::VfioUser {
        vfio_user_conflict(cli)
    } else {
        None
    };
    match clash {
        Some(m) => Err(Cli::command().error(clap::error::ErrorKind::ArgumentConflict, m)),
        None => Ok(()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = usage_errors(&cli) {
        e.exit();
    }
    let Some(log_dir) = cosim_launch::start_supervisor(cli.log_dir.clone(), "run") else {
        return ExitCode::from(exit::SETUP);
    };
    let mut run =
        Run { stages: Stages::new(&log_dir, cli.verbose), tmp_dir: None, endpoints: Vec::new(), injected: None };
    let t0 = Instant::now();
    let outcome = execute(&cli, &log_dir, &mut run);
    run.stages.stop_all();
    // Dropping the private directory removes it with the sockets and the key.
    drop(run.tmp_dir.take());
    run.stages.drain();
    // QEMU's per-device statistics (printed at its exit) next to each simulation's.
    let device_stats = devstats::collect(&log_dir, cli.device_count());

    let (code, stage, error) = match &outcome {
        Ok(()) => {
            // Serve mode has no workload results: reaching Ok means it served and was stopped.
            let code = if cli.serve || run.stages.report.all_ok() { exit::OK } else { exit::FAILED };
            (code, None, None)
        }
        Err(e) => (e.code, Some(e.stage), Some(e.message.clone())),
    };
    let summary = json!({
        "ok": code == exit::OK,
        "exit_code": code,
        "failed_stage": stage,
        "error": error,
        "devices": cli.device_count(),
        "log_dir": log_dir.display().to_string(),
        "stage_seconds": Value::Object(run.stages.stage_seconds().clone()),
        "wall_seconds": (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "guest": run.stages.report.to_json(),
        "stray_frames_injected": run.injected,
        "connect": cli.connect,
        "mode": cli.mode.name(),
        "device_stats": device_stats,
    });
    let _ = std::fs::write(log_dir.join("results.json"), format!("{summary:#}\n"));

    if let Some(e) = &error {
        tracing::error!("{e}");
    }
    if cli.serve {
        // stdout carries only the COSIM-SERVE line; the outcome goes to the log.
        match code {
            exit::OK => log(format!("serve: stopped cleanly (logs in {})", log_dir.display())),
            _ => tracing::error!("serve: ended in stage {} (logs in {})", stage.unwrap_or("?"), log_dir.display()),
        }
    } else if cli.json {
        println!("{summary}");
    } else {
        print!("{}", markers::table_at_clock(&run.stages.report, devstats::clock_hz(&device_stats)));
        let stats = devstats::table(&device_stats);
        print!("{stats}");
        if cli.mode == Mode::VfioUser && !stats.is_empty() {
            println!("(vfio-user mode: the statistics are the simulations' only; stock QEMU keeps none per device)");
        }
        match code {
            exit::OK => println!("result: PASS (logs in {})", log_dir.display()),
            exit::FAILED => println!("result: FAIL: a workload item failed (logs in {})", log_dir.display()),
            _ => println!("result: ERROR in stage {}: see above (logs in {})", stage.unwrap_or("?"), log_dir.display()),
        }
    }
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cosim_serve_line_keeps_its_keys_in_order() {
        let tcp = qemu::ServeChannel::Tcp { host_port: 7070 };
        assert_eq!(serve_line(&tcp, Some(2)), r#"{"host":"127.0.0.1","port":7070,"devices":2}"#);
        let unix = qemu::ServeChannel::Serial { socket: "/run/a \"b\"/serve.sock".into() };
        assert_eq!(serve_line(&unix, Some(1)), r#"{"path":"/run/a \"b\"/serve.sock","devices":1}"#);
        assert_eq!(serve_line(&tcp, None), r#"{"host":"127.0.0.1","port":7070}"#);
        let v: Value = serde_json::from_str(&serve_line(&unix, Some(1))).unwrap();
        assert_eq!(v["path"], "/run/a \"b\"/serve.sock");
    }

    #[test]
    fn the_modelled_latency_comes_from_the_last_sim_argument_that_sets_it() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(sim_dma_latency(&args(&["--stats"])), None);
        assert_eq!(sim_dma_latency(&args(&["+cosim_dma_latency=100", "--stats", "+cosim_dma_latency=7"])), Some(7));
        assert_eq!(sim_dma_latency(&args(&["+cosim_dma_latency=x"])), None);
    }

    #[test]
    fn serve_options_of_the_other_channel_are_usage_errors() {
        let parse = |args: &[&str]| Cli::try_parse_from(["cosim-launch", "--serve"].iter().chain(args)).unwrap();
        for args in [&["--serve-channel", "serial", "--serve-port", "7070"][..], &["--serve-socket", "/tmp/s"][..]] {
            let e = usage_errors(&parse(args)).unwrap_err();
            assert_eq!(e.exit_code(), i32::from(exit::USAGE), "{args:?}");
        }
        assert!(usage_errors(&parse(&["--serve-port", "7070"])).is_ok());
        assert!(usage_errors(&parse(&["--serve-channel", "serial", "--serve-socket", "/tmp/s"])).is_ok());
    }

    #[test]
    fn guest_add_iommu_and_the_device_limit_are_parsed_and_checked() {
        let exe = std::env::current_exe().unwrap();
        let spec = format!("{}:/opt/t/test-bin", exe.display());
        let cli = Cli::try_parse_from(["cosim-launch", "--guest-add", &spec, "--iommu", "--devices", "15"]).unwrap();
        assert!(cli.iommu);
        assert_eq!(cli.guest_adds[0].dest, Path::new("/opt/t/test-bin"));
        assert_eq!(cli.device_count(), 15);
        let e = Cli::try_parse_from(["cosim-launch", "--devices", "16"]).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        let e = Cli::try_parse_from(["cosim-launch", "--guest-add", "/nonexistent/x"]).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(e.to_string().contains("/nonexistent/x does not exist"), "{e}");
    }

    #[test]
    fn the_help_names_the_default_latency_the_bridge_has() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        let want = format!("the shell's default ({DEFAULT_DMA_LATENCY} clocks");
        assert!(help.replace('\n', " ").contains(&want), "--help does not say {want:?}");
    }

    #[test]
    fn the_mode_is_patched_unless_asked_and_vfio_user_refuses_what_needs_the_patched_device() {
        let parse = |args: &[&str]| Cli::try_parse_from(["cosim-launch"].iter().chain(args)).unwrap();
        assert_eq!(parse(&[]).mode, Mode::Patched);
        assert!(Cli::try_parse_from(["cosim-launch", "--mode", "stock"]).is_err());
        let vu = ["--mode", "vfio-user"];
        assert_eq!(parse(&vu).mode, Mode::VfioUser);
        assert_eq!((Mode::Patched.name(), Mode::VfioUser.name()), ("patched".into(), "vfio-user".into()));
        let refused: [(&[&str], &str); 5] = [
            (&["--accel-netdev", "user"], "--accel-netdev"),
            (&["--connect", "ipc:///tmp/x/accel0"], "--connect"),
            (&["--transport", "tcp"], "--transport tcp"),
            (&["--inject-stray", "10"], "--inject-stray"),
            (&["--iommu"], "--iommu"),
        ];
        for (args, opt) in refused {
            let cli = parse(&[&vu[..], args].concat());
            let e = usage_errors(&cli).unwrap_err();
            assert_eq!(e.exit_code(), i32::from(exit::USAGE), "{args:?}");
            let msg = e.to_string();
            assert!(msg.contains(&format!("{opt} is not available in vfio-user mode")), "{args:?}: {msg}");
            // The same options are fine with the patched device.
            assert!(usage_errors(&parse(args)).is_ok(), "{args:?}");
        }
        // What a stock QEMU can do is accepted.
        let ok = parse(&[
            &vu[..],
            &["--devices", "2", "--nic", "user", "--transport", "ipc", "--device-opt", "x-msg-timeout=9000"],
            &["--sim-stats", "--waves", "--kill-sim-after", "3", "--guest-add", "/bin/sh:/bin/x"],
        ]
        .concat());
        assert!(usage_errors(&ok).is_ok());
        // Serve mode reaches the guest through QEMU's own devices: fine with a stock QEMU.
        assert!(usage_errors(&parse(&[&vu[..], &["--serve", "--serve-channel", "serial"]].concat())).is_ok());
    }

    #[test]
    fn the_qemu_binary_is_the_given_one_else_the_mode_s_build() {
        let b = Path::new("/b");
        let q = Path::new("/my/qemu");
        assert_eq!(qemu_binary(Mode::Patched, None, None, b), Path::new("/b/qemu/qemu-system-x86_64"));
        assert_eq!(qemu_binary(Mode::Patched, None, Some("/s/q".into()), b), Path::new("/b/qemu/qemu-system-x86_64"));
        assert_eq!(qemu_binary(Mode::VfioUser, None, None, b), Path::new("/b/qemu-stock/qemu-system-x86_64"));
        assert_eq!(qemu_binary(Mode::VfioUser, None, Some("".into()), b), Path::new("/b/qemu-stock/qemu-system-x86_64"));
        assert_eq!(qemu_binary(Mode::VfioUser, None, Some("/s/q".into()), b), Path::new("/s/q"));
        assert_eq!(qemu_binary(Mode::VfioUser, Some(q), Some("/s/q".into()), b), q);
        assert_eq!(qemu_binary(Mode::Patched, Some(q), None, b), q);
    }

    #[test]
    fn the_help_describes_vfio_user_mode() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string().replace('\n', " ");
        for want in ["vfio-user mode (--mode vfio-user)", "make qemu-stock", "COSIM_QEMU_STOCK", "--iommu (not supported"] {
            assert!(help.contains(want), "--help does not say {want:?}");
        }
    }
}
