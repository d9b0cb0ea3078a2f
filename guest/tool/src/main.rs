//! `accel-tool`: runs in the guest, talks to `/dev/accelN` (driver `guest/driver/`) through ioctls.
//!
//! `info` shows identity and counters; `gemm` runs one job (or `--repeat` jobs) on one device or on
//! all devices at once, checks C against a CPU reference computed here in the guest, and times both
//! paths; `bench` sweeps square sizes; `net` and `wait-nic` are the two ends of the dual-VM
//! network check (frames sent from one VM, the RTL's NIC counters read in the other). `--json` prints one JSON object per line on stdout (the
//! guest's /init prefixes them with `COSIM-RESULT`); otherwise a table. Errors go to stderr.
//! Exit status: 0 all jobs succeeded (and matched, with `--check`), 1 a job failed or mismatched,
//! 2 usage error or no accelerator found.
//!
//! `mmio-bench` times user-space reads and posted writes of BAR0's registers on every accelerator
//! (through sysfs `resource0`; one thread per device with `--concurrent`).
//!
//! `unsafe` lives only in three modules, each call with its `// SAFETY:` line: `ioctl` (the driver's
//! ioctls), `net` (the raw AF_PACKET socket) and `mmio_bench` (the BAR0 mapping); the rest of the
//! tool denies it.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod ioctl;
#[allow(unsafe_code)]
mod mmio_bench;
#[allow(unsafe_code)]
mod net;
mod serve;

use accel_tool::gemm;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};

use cosim_gemm_abi::{field_get, version};
use cosim_guest_results::{Bench, Check, DeviceInfo, Gemm, Info, Net, Record, Reset, ToolError, WaitNic};
use ioctl::{device_error_name, Device};

#[derive(Parser, Debug)]
#[command(name = "accel-tool", version, about = "Use the cosim GEMM accelerator from the guest")]
struct Cli {
    /// Print one JSON object per line instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Identity, configuration and counters of the accelerator(s).
    Info {
        /// /dev/accelN, or "all" (default: all).
        #[arg(long, default_value = "all")]
        device: String,
    },
    /// C = A x B on the accelerator with seeded random int8 operands; times the device and the CPU.
    Gemm(GemmArgs),
    /// Square GEMMs of several sizes, each repeated; min and median times.
    Bench {
        /// /dev/accelN (default: the first accelerator).
        #[arg(long)]
        device: Option<String>,
        /// Comma-separated square sizes.
        #[arg(long, default_value = "8,16,32,64", value_delimiter = ',')]
        sizes: Vec<u32>,
        /// Runs per size.
        #[arg(long, default_value_t = 3)]
        repeat: u32,
        /// Seed of the operands.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Per-job timeout in ms (0: the driver's default).
        #[arg(long, default_value_t = 0)]
        timeout_ms: u32,
    },
    /// Raw Ethernet ping-pong through a NIC (the RTL's Ethernet port answers with MACs swapped).
    Net {
        /// Network interface (default: the first one other than lo).
        #[arg(long)]
        iface: Option<String>,
        /// Frames to send, one at a time.
        #[arg(long, default_value_t = 10)]
        count: u32,
        /// Frame size in bytes (at least 60).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// How long to wait for each answer, in ms.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Wait until the accelerator's Ethernet port has received and answered FRAMES frames
    /// (NIC_RX_FRAMES and NIC_TX_FRAMES both at least FRAMES), polling every 50 ms; fails after
    /// the timeout. Keeps the accelerator VM up while another VM sends frames (dual-VM run).
    WaitNic {
        /// /dev/accelN (default: the first accelerator).
        #[arg(long)]
        device: Option<String>,
        /// Frames to wait for.
        #[arg(long)]
        frames: u32,
        /// Give up after this many ms.
        #[arg(long, default_value_t = 120_000)]
        timeout_ms: u64,
    },
    /// Serve GEMM and LINEAR jobs to a client on the host (docs/serve-protocol.md) over a
    /// virtio-serial port or TCP: runs until killed, jobs spread over every /dev/accelN.
    Serve {
        /// Listen on this TCP port (every guest address) instead of a virtio-serial port.
        #[arg(long, conflicts_with = "serial")]
        port: Option<u16>,
        /// The virtio-serial port: a path (/dev/vportNpM) or the port's name (QEMU's
        /// virtserialport name=..., found in /sys/class/virtio-ports).
        #[arg(long, default_value = "cosim.serve")]
        serial: String,
        /// The simulation's modelled DMA read latency in cycles (+cosim_dma_latency), for the
        /// performance models in each reply (0: free-running). Default: the simulation's default.
        #[arg(long, default_value_t = cosim_protocol::DEFAULT_DMA_READ_LATENCY as u32)]
        read_latency: u32,
        /// Per-job timeout in ms (0: the driver's default).
        #[arg(long, default_value_t = 0)]
        timeout_ms: u32,
    },
    /// User-space MMIO through BAR0 (sysfs resource0): latency percentiles of 32-bit reads of ID,
    /// reads/s, and posted 32-bit writes/s to SCRATCH, per device. Unbinds the driver of a device
    /// for the run if it holds BAR0, and binds it again after.
    MmioBench {
        /// "all", or the first N accelerators by PCI address.
        #[arg(long, default_value = "all", value_parser = mmio_bench::parse_devices)]
        devices: mmio_bench::DeviceCount,
        /// Timed reads per device.
        #[arg(long, default_value_t = 10_000)]
        reads: u32,
        /// Timed writes per device.
        #[arg(long, default_value_t = 10_000)]
        writes: u32,
        /// Probe all selected devices at the same time, one thread each (default: one after the other).
        #[arg(long)]
        concurrent: bool,
    },
    /// Clear the device's status and try a PCI function reset.
    Reset {
        /// /dev/accelN (default: the first accelerator), or "all".
        #[arg(long)]
        device: Option<String>,
    },
}

#[derive(Args, Debug)]
struct GemmArgs {
    /// Rows of A and C.
    #[arg(long)]
    m: u32,
    /// Columns of B and C.
    #[arg(long)]
    n: u32,
    /// Columns of A, rows of B.
    #[arg(long)]
    k: u32,
    /// Seed of the random operands.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Compare C with the CPU reference (pass/fail); without it the CPU path is only timed.
    #[arg(long)]
    check: bool,
    /// /dev/accelN, or "all" to run on every accelerator at the same time (default: the first).
    #[arg(long)]
    device: Option<String>,
    /// Jobs to run back to back on each device.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Per-job timeout in ms (0: the driver's default).
    #[arg(long, default_value_t = 0)]
    timeout_ms: u32,
    /// Skip the CPU path (no timing, no check).
    #[arg(long, conflicts_with = "check")]
    no_cpu: bool,
    /// Only the CPU path, no accelerator needed (the baseline VM of a comparative run).
    #[arg(long, conflicts_with_all = ["no_cpu", "device", "check"])]
    cpu_only: bool,
}

/// Accelerator nodes in /dev, ordered by index.
fn list_devices() -> Vec<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/dev")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let idx: u32 = name.strip_prefix("accel")?.parse().ok()?;
                    Some((idx, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

const NO_DEVICE: &str = "no accelerator found (no /dev/accelN: is an accelerator-pcie device present and the cosim_accel module loaded?)";

/// Resolves --device: None -> the first device, "all" -> every device, else that path.
fn select(device: Option<&str>, default_all: bool) -> Result<Vec<PathBuf>, String> {
    match device {
        Some("all") => {}
        Some(p) => return Ok(vec![PathBuf::from(p)]),
        None if !default_all => {
            return list_devices().into_iter().next().map(|p| vec![p]).ok_or_else(|| NO_DEVICE.into())
        }
        None => {}
    }
    let all = list_devices();
    if all.is_empty() {
        Err(NO_DEVICE.into())
    } else {
        Ok(all)
    }
}

fn open(path: &Path) -> Result<Device, String> {
    Device::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))
}

/// Output sink: JSON lines (`cosim_guest_results::Record`) or a table printed at the end.
struct Out {
    json: bool,
    rows: Vec<Record>,
}

impl Out {
    fn push(&mut self, r: Record) {
        if self.json {
            println!("{}", r.to_line());
        }
        self.rows.push(r);
    }
}

fn error_record(command: &str, msg: &str) -> Record {
    Record::Error(ToolError { command: command.into(), ok: false, error: msg.into() })
}

fn cmd_info(out: &mut Out, device: &str) -> Result<bool, String> {
    let devs = select(Some(device), true)?;
    let mut ok = true;
    for path in devs {
        let rec = match open(&path).and_then(|d| d.info().map_err(|e| format!("{}: info: {e}", path.display()))) {
            Ok(i) => {
                if i.abi_version != ioctl::ABI_VERSION {
                    eprintln!(
                        "accel-tool: warning: driver ABI version {} (this tool follows {})",
                        i.abi_version,
                        ioctl::ABI_VERSION
                    );
                }
                Info {
                    ok: true,
                    device: path.display().to_string(),
                    error: None,
                    info: Some(DeviceInfo {
                        index: i.index,
                        pci: i.pci_name().into(),
                        vendor: format!("{:#06x}", i.vendor),
                        device_id: format!("{:#06x}", i.device),
                        revision: i.revision,
                        id: format!("{:#010x}", i.id),
                        version: format!(
                            "{}.{}",
                            field_get(i.version, version::MAJOR),
                            field_get(i.version, version::MINOR)
                        ),
                        array_rows: i.array_rows,
                        array_cols: i.array_cols,
                        max_dim: i.max_dim,
                        msix_vectors: i.msix_vectors,
                        timeout_ms: i.timeout_ms,
                        jobs: i.jobs,
                        errors: i.errors,
                        timeouts: i.timeouts,
                        irqs: i.irqs,
                        jobs_done_reg: i.jobs_done_reg,
                        abi_version: i.abi_version,
                        nic_rx_frames: i.nic_rx_frames,
                        nic_tx_frames: i.nic_tx_frames,
                        uart_rx_bytes: i.uart_rx_bytes,
                    }),
                }
            }
            Err(e) => {
                ok = false;
                eprintln!("accel-tool: {e}");
                Info { ok: false, device: path.display().to_string(), error: Some(e), info: None }
            }
        };
        out.push(Record::Info(rec));
    }
    Ok(ok)
}

struct DeviceRun {
    path: PathBuf,
    /// Per run: outcome or error text, user-measured ioctl time, C.
    runs: Vec<RunResult>,
    array: (u32, u32),
}

struct RunResult {
    accel_ns: u64,
    result: Result<ioctl::GemmOutcome, (String, Option<i32>, ioctl::GemmOutcome)>,
    c: Vec<i32>,
}

fn run_on_device(path: &Path, g: &GemmArgs, ops: &gemm::Operands) -> Result<DeviceRun, String> {
    let dev = open(path)?;
    let info = dev.info().map_err(|e| format!("{}: info: {e}", path.display()))?;
    let mut runs = Vec::new();
    for _ in 0..g.repeat.max(1) {
        let mut c = vec![0i32; g.m as usize * g.n as usize];
        let t0 = Instant::now();
        let r = dev.gemm((g.m, g.n, g.k), &ops.a, &ops.b, &mut c, g.timeout_ms);
        let accel_ns = t0.elapsed().as_nanos() as u64;
        let result = r.map_err(|e| {
            let mut msg = format!("{}: gemm: {}", dev.path().display(), e.err);
            if e.outcome.dev_error != 0 {
                msg.push_str(&format!(
                    " (device error {} {})",
                    e.outcome.dev_error,
                    device_error_name(e.outcome.dev_error)
                ));
            }
            (msg, e.err.raw_os_error(), e.outcome)
        });
        runs.push(RunResult { accel_ns, result, c });
    }
    Ok(DeviceRun { path: path.to_path_buf(), runs, array: (info.array_rows, info.array_cols) })
}

/// FNV-style hash of C, so results of two VMs can be compared without printing C.
fn c_hash(c: &[i32]) -> String {
    let h = c.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &v| (h ^ v as u32 as u64).wrapping_mul(0x100_0000_01b3));
    format!("{h:#018x}")
}

fn cmd_gemm(out: &mut Out, g: &GemmArgs) -> Result<bool, String> {
    let (m, n, k) = (g.m as usize, g.n as usize, g.k as usize);
    if g.cpu_only {
        let ops = gemm::operands(m, n, k, g.seed);
        for run in 0..g.repeat.max(1) {
            let t0 = Instant::now();
            let c = gemm::reference(m, n, k, &ops.a, &ops.b);
            let cpu_us = t0.elapsed().as_nanos() as f64 / 1e3;
            out.push(Record::Gemm(Gemm {
                ok: true,
                run: Some(run),
                check: Some(Check::Skipped),
                cpu_us: Some(Some(cpu_us)),
                c_hash: Some(c_hash(&c)),
                ..Gemm::new("cpu".into(), (g.m, g.n, g.k), g.seed)
            }));
        }
        return Ok(true);
    }
    let devs = select(g.device.as_deref(), false)?;
    let ops = gemm::operands(m, n, k, g.seed);

    // Device path first (all devices at the same time), then the CPU path alone, so neither
    // timing is disturbed by the other.
    let results: Vec<Result<DeviceRun, (PathBuf, String)>> = std::thread::scope(|s| {
        let handles: Vec<_> = devs
            .iter()
            .map(|p| {
                let ops = &ops;
                s.spawn(move || run_on_device(p, g, ops).map_err(|e| (p.clone(), e)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err((PathBuf::new(), "worker panicked".into()))))
            .collect()
    });

    let (reference, cpu_ns) = if g.no_cpu {
        (None, None)
    } else {
        let t0 = Instant::now();
        let c = gemm::reference(m, n, k, &ops.a, &ops.b);
        (Some(c), Some(t0.elapsed().as_nanos() as u64))
    };

    let mut all_ok = true;
    for r in results {
        let dr = match r {
            Ok(dr) => dr,
            Err((path, e)) => {
                all_ok = false;
                eprintln!("accel-tool: {e}");
                out.push(Record::Gemm(Gemm::unusable(path.display().to_string(), (g.m, g.n, g.k), g.seed, e)));
                continue;
            }
        };
        let macs = (dr.array.0 as u64 * dr.array.1 as u64).max(1);
        let ideal = (m as u64 * n as u64 * k as u64).div_ceil(macs);
        for (run, rr) in dr.runs.iter().enumerate() {
            let mut rec = Gemm {
                run: Some(run as u32),
                accel_us: Some(rr.accel_ns as f64 / 1e3),
                cpu_us: Some(cpu_ns.map(|c| c as f64 / 1e3)),
                ideal_cycles: Some(ideal),
                array: Some(format!("{}x{}", dr.array.0, dr.array.1)),
                ..Gemm::new(dr.path.display().to_string(), (g.m, g.n, g.k), g.seed)
            };
            let ok = match &rr.result {
                Ok(o) => {
                    rec.c_hash = Some(c_hash(&rr.c));
                    rec.rtl_cycles = Some(o.cycles);
                    rec.dma_wait_cycles = Some(o.dma_wait_cycles);
                    rec.device_us = Some(o.device_ns as f64 / 1e3);
                    rec.dev_error = Some(0);
                    match (&reference, g.check) {
                        (Some(refc), true) => match gemm::compare(n, refc, &rr.c) {
                            None => {
                                rec.check = Some(Check::Pass);
                                rec.mismatches = Some(0);
                                true
                            }
                            Some(mm) => {
                                rec.check = Some(Check::Fail);
                                rec.mismatches = Some(mm.count as u64);
                                let msg = format!(
                                    "{}: {} of {} elements differ; first at C[{}][{}]: expected {}, got {}",
                                    dr.path.display(), mm.count, m * n, mm.row, mm.col, mm.expected, mm.got
                                );
                                eprintln!("accel-tool: {msg}");
                                rec.error = Some(msg);
                                false
                            }
                        },
                        _ => {
                            rec.check = Some(Check::Skipped);
                            true
                        }
                    }
                }
                Err((msg, errno, o)) => {
                    eprintln!("accel-tool: {msg}");
                    rec.error = Some(msg.clone());
                    rec.errno = Some(*errno);
                    rec.dev_error = Some(o.dev_error);
                    rec.dev_error_name = Some(device_error_name(o.dev_error).into());
                    rec.check = Some(if g.check { Check::Fail } else { Check::Skipped });
                    false
                }
            };
            rec.ok = ok;
            all_ok &= ok;
            out.push(Record::Gemm(rec));
        }
    }
    Ok(all_ok)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

#[allow(clippy::too_many_arguments)]
fn cmd_bench(
    out: &mut Out,
    device: Option<&str>,
    sizes: &[u32],
    repeat: u32,
    seed: u64,
    timeout_ms: u32,
) -> Result<bool, String> {
    let path = select(device, false)?.remove(0);
    let dev = open(&path)?;
    let info = dev.info().map_err(|e| format!("{}: info: {e}", path.display()))?;
    let macs = (info.array_rows as u64 * info.array_cols as u64).max(1);
    let mut all_ok = true;
    for &s in sizes {
        let su = s as usize;
        let ops = gemm::operands(su, su, su, seed);
        let mut accel = Vec::new();
        let mut device_us = Vec::new();
        let mut cpu = Vec::new();
        let mut cycles = 0;
        let mut dma_wait = 0;
        let mut err = None;
        let mut pass = true;
        for _ in 0..repeat.max(1) {
            let mut c = vec![0i32; su * su];
            let t0 = Instant::now();
            let r = dev.gemm((s, s, s), &ops.a, &ops.b, &mut c, timeout_ms);
            let a_us = t0.elapsed().as_nanos() as f64 / 1e3;
            let t1 = Instant::now();
            let refc = gemm::reference(su, su, su, &ops.a, &ops.b);
            cpu.push(t1.elapsed().as_nanos() as f64 / 1e3);
            match r {
                Ok(o) => {
                    accel.push(a_us);
                    device_us.push(o.device_ns as f64 / 1e3);
                    cycles = o.cycles;
                    dma_wait = o.dma_wait_cycles;
                    if gemm::compare(su, &refc, &c).is_some() {
                        pass = false;
                    }
                }
                Err(e) => {
                    err = Some(format!("{}: gemm {s}x{s}x{s}: {}", path.display(), e.err));
                    break;
                }
            }
        }
        let ok = err.is_none() && pass;
        all_ok &= ok;
        if let Some(e) = &err {
            eprintln!("accel-tool: {e}");
        }
        let ideal = (s as u64).pow(3).div_ceil(macs);
        // Minimum of the runs; None (null) when there were none.
        let min = |v: &[f64]| v.iter().cloned().reduce(f64::min);
        out.push(Record::Bench(Bench {
            ok,
            device: path.display().to_string(),
            m: s,
            n: s,
            k: s,
            runs: accel.len() as u32,
            check: if pass { Check::Pass } else { Check::Fail },
            rtl_cycles: cycles,
            dma_wait_cycles: dma_wait,
            ideal_cycles: ideal,
            accel_us_min: min(&accel),
            accel_us_median: median(&mut accel.clone()),
            device_us_median: median(&mut device_us),
            cpu_us_min: min(&cpu),
            cpu_us_median: median(&mut cpu),
            error: err,
        }));
    }
    Ok(all_ok)
}

fn cmd_reset(out: &mut Out, device: Option<&str>) -> Result<bool, String> {
    let mut ok = true;
    for path in select(device, false)? {
        let r = open(&path).and_then(|d| d.reset().map_err(|e| format!("{}: reset: {e}", path.display())));
        let rec = match r {
            Ok(()) => Reset { ok: true, device: path.display().to_string(), error: None },
            Err(e) => {
                ok = false;
                eprintln!("accel-tool: {e}");
                Reset { ok: false, device: path.display().to_string(), error: Some(e) }
            }
        };
        out.push(Record::Reset(rec));
    }
    Ok(ok)
}

fn cmd_net(out: &mut Out, iface: Option<&str>, count: u32, size: usize, timeout_ms: u64) -> Result<bool, String> {
    let iface = match iface {
        Some(i) => i.to_string(),
        None => net::default_iface().ok_or("no network interface (boot with cosim.net=1 and a NIC)")?,
    };
    let st = net::ping(&iface, count, size, std::time::Duration::from_millis(timeout_ms))
        .map_err(|e| format!("net {iface}: {e}"))?;
    let ok = st.received == st.sent && st.sent > 0;
    let mut rtts = st.rtts_us.clone();
    if !ok {
        eprintln!("accel-tool: net {iface}: {} of {} frames answered", st.received, st.sent);
    }
    out.push(Record::Net(Net {
        ok,
        mac: net::mac_str(&st.mac),
        peer_mac: net::mac_str(&net::PEER_MAC),
        sent: st.sent,
        received: st.received,
        lost: st.sent - st.received,
        size: size.max(60) as u64,
        rtt_us_median: if rtts.is_empty() { None } else { Some(median(&mut rtts)) },
        rtt_us_max: rtts.iter().cloned().reduce(f64::max),
        if_tx_packets: st.tx_packets,
        if_rx_packets: st.rx_packets,
        iface: st.iface,
    }));
    Ok(ok)
}

fn cmd_wait_nic(out: &mut Out, device: Option<&str>, frames: u32, timeout_ms: u64) -> Result<bool, String> {
    let path = select(device, false)?.remove(0);
    let dev = open(&path)?;
    let t0 = Instant::now();
    let limit = std::time::Duration::from_millis(timeout_ms);
    loop {
        let i = dev.info().map_err(|e| format!("{}: info: {e}", path.display()))?;
        let done = i.nic_rx_frames >= frames && i.nic_tx_frames >= frames;
        let waited = t0.elapsed();
        if done || waited >= limit {
            let mut rec = WaitNic {
                ok: done,
                device: path.display().to_string(),
                frames,
                nic_rx_frames: i.nic_rx_frames,
                nic_tx_frames: i.nic_tx_frames,
                waited_ms: waited.as_millis() as u64,
                error: None,
            };
            if !done {
                let msg = format!(
                    "{}: NIC_RX_FRAMES={} NIC_TX_FRAMES={} after {} ms, waited for {frames}",
                    path.display(), i.nic_rx_frames, i.nic_tx_frames, waited.as_millis()
                );
                eprintln!("accel-tool: {msg}");
                rec.error = Some(msg);
            }
            out.push(Record::WaitNic(rec));
            return Ok(done);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A table cell: "-" for None.
fn cell<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// A time in µs with `prec` decimals, "-" for None.
fn us(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.prec$}"))
}

fn print_table(rows: &[Record]) {
    let Some(first) = rows.first() else { return };
    match first {
        Record::Gemm(_) => {
            println!(
                "{:<12} {:>5} {:>5} {:>5} {:>4} {:>7} {:>12} {:>12} {:>12} {:>12} {:>12}",
                "device", "m", "n", "k", "run", "check", "rtl_cycles", "dma_wait", "device_us", "accel_us", "cpu_us"
            );
            for r in rows {
                let Record::Gemm(g) = r else { continue };
                println!(
                    "{:<12} {:>5} {:>5} {:>5} {:>4} {:>7} {:>12} {:>12} {:>12} {:>12} {:>12}",
                    g.device, g.m, g.n, g.k, cell(g.run), cell(g.check.map(Check::as_str)), cell(g.rtl_cycles),
                    cell(g.dma_wait_cycles), us(g.device_us, 1), us(g.accel_us, 1), us(g.cpu_us.flatten(), 1)
                );
                if let Some(e) = &g.error {
                    println!("  error: {e}");
                }
            }
        }
        Record::Bench(_) => {
            println!(
                "{:>5} {:>5} {:>12} {:>12} {:>14} {:>14} {:>12} {:>7}",
                "size", "runs", "rtl_cycles", "ideal", "accel_us_med", "device_us_med", "cpu_us_med", "check"
            );
            for r in rows {
                let Record::Bench(b) = r else { continue };
                println!(
                    "{:>5} {:>5} {:>12} {:>12} {:>14.1} {:>14.1} {:>12.1} {:>7}",
                    b.m, b.runs, b.rtl_cycles, b.ideal_cycles, b.accel_us_median, b.device_us_median,
                    b.cpu_us_median, b.check.as_str()
                );
                if let Some(e) = &b.error {
                    println!("  error: {e}");
                }
            }
        }
        Record::MmioBench(_) => {
            mmio_bench::print_table(&rows.iter().filter_map(|r| match r {
                Record::MmioBench(m) => Some(m),
                _ => None,
            }).collect::<Vec<_>>());
        }
        _ => {
            // Every field of the record, one per line, under its device.
            for r in rows {
                if let Ok(serde_json::Value::Object(obj)) = serde_json::to_value(r) {
                    println!("{}", r.device().unwrap_or("-"));
                    for (k, v) in obj {
                        if k != "device" && k != "kind" {
                            println!("  {k:<14} {}", v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()));
                        }
                    }
                }
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = Out { json: cli.json, rows: Vec::new() };
    let (name, r) = match &cli.cmd {
        Cmd::Info { device } => ("info", cmd_info(&mut out, device)),
        Cmd::Gemm(g) => ("gemm", cmd_gemm(&mut out, g)),
        Cmd::Bench { device, sizes, repeat, seed, timeout_ms } => {
            ("bench", cmd_bench(&mut out, device.as_deref(), sizes, *repeat, *seed, *timeout_ms))
        }
        Cmd::WaitNic { device, frames, timeout_ms } => {
            ("wait-nic", cmd_wait_nic(&mut out, device.as_deref(), *frames, *timeout_ms))
        }
        Cmd::Reset { device } => ("reset", cmd_reset(&mut out, device.as_deref())),
        Cmd::MmioBench { devices, reads, writes, concurrent } => {
            let o = mmio_bench::Options { devices: devices.0, reads: *reads, writes: *writes, concurrent: *concurrent };
            let r = mmio_bench::run(&o).map(|recs| {
                let ok = recs.iter().all(|r| r.ok);
                recs.into_iter().for_each(|r| out.push(Record::MmioBench(r)));
                ok
            });
            ("mmio-bench", r)
        }
        Cmd::Serve { port, serial, read_latency, timeout_ms } => {
            let listen = match port {
                Some(p) => Ok(serve::Listen::Tcp(*p)),
                None => serve::serial_port(serial).map(serve::Listen::Serial),
            };
            let r = listen.and_then(|listen| {
                let opts = serve::ServeOptions { listen, read_latency: *read_latency, timeout_ms: *timeout_ms };
                serve::serve(&opts, &list_devices()).map(|()| true)
            });
            ("serve", r)
        }
        Cmd::Net { iface, count, size, timeout_ms } => {
            ("net", cmd_net(&mut out, iface.as_deref(), *count, *size, *timeout_ms))
        }
    };
    match r {
        Ok(ok) => {
            if !cli.json {
                print_table(&out.rows);
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("accel-tool: {e}");
            if cli.json {
                println!("{}", error_record(name, &e).to_line());
            }
            ExitCode::from(2)
        }
    }
}
