//! `cosim-mediator`: the process around [`cosim_mediator::Mediator`]. It owns one ZeroMQ link to
//! the simulation (as its host) and one per VM (as its device), the clock, the signals and the
//! output files, and never waits on one peer: every wait is a poll over all links of at most
//! 50 ms, and a send to a VM whose queue is full fails at once (that VM's job is cancelled).
//! Its only `unsafe` is the signal handler (module `signals`).
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod signals;

use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::json;

use cosim_mediator::core::LOG_TARGET;
use cosim_mediator::{JobModel, Mediator, MediatorConfig, Peer, Settings};
use cosim_protocol::session::Timing;
use cosim_protocol::Message;
use cosim_transport::{wait_any, Endpoint, Side, Transport, ZmqOptions, ZmqTransport};

/// Longest wait in the main loop (also how soon a signal is noticed).
const MAX_WAIT: Duration = Duration::from_millis(50);
/// Frames taken from one link per round, so one busy link cannot starve the others.
const BATCH: usize = 256;
/// Messages queued for one VM before it counts as unreachable.
const VM_QUEUE: i32 = 4096;

#[derive(Parser, Debug)]
#[command(
    name = "cosim-mediator",
    version,
    about = "Share one RTL simulation between several QEMU accelerator-pcie devices (VMs), with a priority scheduler",
    long_about = "Sits between N QEMU accelerator-pcie devices (each with its own endpoint) and one simulation. \
To each QEMU it is the device: it answers INIT with the simulation's CONFIG, and each VM sees a whole accelerator \
of its own. To the simulation it is the host. Jobs are mediated as the design's job model says (a TOML file \
shipped with the RTL, e.g. hdl/gemm_accel/job-model.toml): context registers are kept per VM and written to the \
RTL just before that VM's job starts; one queue over all pools, strict priority high > medium > low, first come \
first served within a priority, no pre-emption; while a job runs, its DMA and interrupts reach only its VM.\n\n\
Configuration (TOML): job_model = PATH (relative to the configuration file), simulation = ENDPOINT (the \
simulation's --endpoint), optional job_timeout_ms (default 120000) and handshake_timeout_ms (default 60000), and \
one [[vm]] table per VM with name, endpoint (its QEMU's endpoint=), pool (default \"default\"), priority (low | \
medium | high, default low: for jobs that ask for none) and max_priority (the highest a job may ask for through \
the design's priority register; default: priority). See docs/mediator.md.\n\n\
Prints 'cosim-mediator: ready: simulation ENDPOINT, N VMs' on stdout once the simulation answered; runs until \
SIGINT or SIGTERM, then prints per-VM statistics on stdout. NIC and UART channels are not shared: the VMs see a \
device without them.\n\n\
Exit status: 0 stopped by a signal; 1 error (configuration, job model, endpoints, no simulation within \
handshake_timeout_ms).",
    after_help = "Example:\n  cosim-mediator --config share.toml --job-log jobs.jsonl --stats-json stats.json"
)]
struct Cli {
    /// The mediator's configuration (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Write one JSON line per finished job here (docs/mediator.md, "Job log").
    #[arg(long, value_name = "FILE")]
    job_log: Option<PathBuf>,
    /// Write the statistics as JSON here at exit.
    #[arg(long, value_name = "FILE")]
    stats_json: Option<PathBuf>,
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("COSIM_LOG").unwrap_or_else(|_| EnvFilter::new("warn,cosim::mediator=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    signals::install();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cosim-mediator: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Links {
    sim: ZmqTransport,
    vms: Vec<ZmqTransport>,
}

fn open_links(cfg: &MediatorConfig) -> Result<Links> {
    let ep = Endpoint::parse(&cfg.simulation).context("simulation endpoint")?;
    let sim =
        ZmqTransport::open(&ep, Side::Host, &ZmqOptions { send_timeout: Duration::from_secs(1), ..Default::default() })
            .with_context(|| format!("link to the simulation at {ep}"))?;
    let mut vms = Vec::new();
    for v in &cfg.vm {
        let ep = Endpoint::parse(&v.endpoint).with_context(|| format!("endpoint of VM {}", v.name))?;
        let opts = ZmqOptions { send_timeout: Duration::ZERO, hwm: VM_QUEUE, ..Default::default() };
        vms.push(
            ZmqTransport::open(&ep, Side::Device, &opts).with_context(|| format!("link to VM {} at {ep}", v.name))?,
        );
    }
    Ok(Links { sim, vms })
}

fn run(cli: &Cli) -> Result<()> {
    let cfg = MediatorConfig::load(&cli.config)?;
    let model = JobModel::load(&cfg.job_model)?;
    let mut links = open_links(&cfg)?;
    let mut job_log = match &cli.job_log {
        Some(p) => Some(BufWriter::new(File::create(p).with_context(|| format!("job log {}", p.display()))?)),
        None => None,
    };
    let start = Instant::now();
    let mut med = Mediator::new(
        Settings {
            model,
            vms: cfg.vm.clone(),
            sim_name: format!("simulation ({})", cfg.simulation),
            handshake_timeout: Duration::from_millis(cfg.handshake_timeout_ms),
            job_timeout: cfg.job_timeout(),
            instance: random_u64(),
            seed: random_u64(),
            timing: Timing::default(),
        },
        start,
    );
    tracing::info!(target: LOG_TARGET, "waiting for the simulation at {} (up to {} ms)", cfg.simulation, cfg.handshake_timeout_ms);
    let mut announced = false;
    let mut next_tick = start;
    while !signals::stop_requested() {
        let now = Instant::now();
        for _ in 0..BATCH {
            match links.sim.recv_frame(Duration::ZERO)? {
                Some(f) => med.handle_sim(now, Message::decode_vec(f)),
                None => break,
            }
        }
        for (i, t) in links.vms.iter_mut().enumerate() {
            for _ in 0..BATCH {
                match t.recv_frame(Duration::ZERO)? {
                    Some(f) => med.handle_vm(i, now, Message::decode_vec(f)),
                    None => break,
                }
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            med.handle_timeout(now);
            next_tick = med.next_timeout(now);
        }
        flush(&mut med, &mut links, now);
        write_records(&mut med, job_log.as_mut())?;
        if let Some(f) = med.fatal() {
            bail!("{f}");
        }
        if !announced && med.sim_up() {
            println!("cosim-mediator: ready: simulation {}, {} VMs", cfg.simulation, cfg.vm.len());
            let _ = std::io::stdout().flush();
            announced = true;
        }
        let wait = next_tick.saturating_duration_since(Instant::now()).min(MAX_WAIT);
        let all: Vec<&ZmqTransport> = std::iter::once(&links.sim).chain(links.vms.iter()).collect();
        wait_any(&all, wait)?;
    }
    tracing::info!(target: LOG_TARGET, "stopping (signal)");
    med.close(Instant::now());
    flush(&mut med, &mut links, Instant::now());
    write_records(&mut med, job_log.as_mut())?;
    print_stats(&med);
    if let Some(p) = &cli.stats_json {
        std::fs::write(p, serde_json::to_vec_pretty(&stats_json(&med))?)
            .with_context(|| format!("stats {}", p.display()))?;
    }
    Ok(())
}

fn flush(med: &mut Mediator, links: &mut Links, now: Instant) {
    while let Some((peer, msg)) = med.poll_output() {
        match peer {
            Peer::Sim => {
                if let Err(e) = links.sim.send(&msg) {
                    tracing::error!(target: LOG_TARGET, "cannot send {:?} to the simulation: {e}", msg.opcode());
                }
            }
            Peer::Vm(i) => {
                if let Err(e) = links.vms[i].send(&msg) {
                    med.vm_unreachable(i, now, &e.to_string());
                }
            }
        }
    }
}

fn write_records(med: &mut Mediator, log: Option<&mut BufWriter<File>>) -> Result<()> {
    let mut log = log;
    let mut wrote = false;
    while let Some(r) = med.poll_record() {
        if let Some(w) = log.as_deref_mut() {
            serde_json::to_writer(&mut *w, &r)?;
            w.write_all(b"\n")?;
            wrote = true;
        }
    }
    if wrote {
        if let Some(w) = log {
            w.flush()?;
        }
    }
    Ok(())
}

fn stats_json(med: &Mediator) -> serde_json::Value {
    let vms: Vec<_> = (0..med.vm_count())
        .map(|i| {
            let (c, s) = med.vm_stats(i);
            let mut v = serde_json::to_value(s).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("name".into(), json!(c.name));
                o.insert("pool".into(), json!(c.pool));
                o.insert("priority".into(), json!(c.priority));
                o.insert("max_priority".into(), json!(c.max()));
            }
            v
        })
        .collect();
    json!({ "vms": vms, "rtl": med.rtl_counters(), "mediator": med.stats() })
}

fn print_stats(med: &Mediator) {
    println!("cosim-mediator: per-VM statistics");
    println!(
        "{:<10} {:<8} {:<6} {:<6} {:>5} {:>5} {:>6} {:>9} {:>7} {:>12} {:>10} {:>10} {:>9} {:>9} {:>5}",
        "vm",
        "pool",
        "prio",
        "max",
        "jobs",
        "done",
        "failed",
        "cancelled",
        "refused",
        "rtl_cycles",
        "queued_ms",
        "queue_max",
        "dma_rd_KiB",
        "dma_wr_KiB",
        "irqs"
    );
    for i in 0..med.vm_count() {
        let (c, s) = med.vm_stats(i);
        println!(
            "{:<10} {:<8} {:<6} {:<6} {:>5} {:>5} {:>6} {:>9} {:>7} {:>12} {:>10.1} {:>10.1} {:>9} {:>9} {:>5}",
            c.name,
            c.pool,
            c.priority.name(),
            c.max().name(),
            s.jobs,
            s.done,
            s.failed,
            s.cancelled,
            s.refused,
            s.cycles,
            s.queued_us_total as f64 / 1000.0,
            s.queued_us_max as f64 / 1000.0,
            s.dma_read_bytes / 1024,
            s.dma_write_bytes / 1024,
            s.interrupts
        );
    }
    let r = med.rtl_counters();
    println!(
        "RTL busy {:.1}% between the first and the last job completion ({} busy, {} idle cycles)",
        100.0 * r.busy_fraction,
        r.busy_cycles,
        r.idle_cycles
    );
    let m = med.stats();
    println!(
        "dropped: {} DMA reads and {} DMA writes of no live job, {} stray interrupts, {} NIC/UART messages; {} job timeouts",
        m.dma_reads_refused, m.dma_writes_dropped, m.stray_interrupts, m.nic_serial_dropped, m.job_timeouts
    );
}
