//! DMA copy engine in the RTL against its bus (issue 15, item 3), printed as markdown for
//! docs/benchmarks.md. Needs `make sim-test`; run with `cargo bench -p cosim-host-model --bench
//! dma_copy` (part of `make bench-hdl`).
//!
//! The bridge's test design (hdl/test/cosim_test_dev.sv) copies DMA_LEN bytes of host memory
//! through its 64-bit AXI master, in two modes: store and forward (it reads the whole source, up
//! to 4 bursts in flight, then writes the destination) and streaming (DMA_CTRL bit 2: up to 16
//! read bursts in flight, and each write beat goes as soon as its bytes have arrived). Each copy
//! is started by the host model (one MMIO write) and ends with its MSI-X interrupt; the design
//! counts the clocks from START to completion (DMA_CYCLES).
//!
//! Per copy: throughput = bytes / wall time (START written -> interrupt received); the bus
//! carries 8 bytes x cycles/s of the simulation during the copy = 8 x DMA_CYCLES / the same wall
//! time, so the ratio of the two is bytes / (8 x DMA_CYCLES), whatever the wall time.
//!
//! Variants, one simulation each, alternating in BENCH_ROUNDS rounds within this one run: the
//! shared-memory link and ZeroMQ (`COSIM_SHM=0` for the simulation, `shm: false` for the host),
//! each free-running (`+cosim_dma_latency=0`: read data arrives whenever the host answers) and
//! with the default modelled read latency (100 clocks: the clock waits for the host); and, as the
//! RTL's own ceiling, a 1-clock modelled latency (host memory answering in one clock), on both
//! links; and the shared-memory link free-running with `COSIM_SHM_SPIN_US=20` on both sides (a
//! waiting side spins 20 us before it sleeps; the default is no spin). In each variant's
//! simulation both engine modes, each with two burst limits (DMA_LEN[47:32]): 16 beats (the
//! engine's default) and 256 (its longest).
//!
//! Environment: BENCH_ROUNDS (default 3), BENCH_COPIES (copies per round and variant, default
//! 100), BENCH_LEN (bytes per copy, 8..4096, default 4096).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use cosim_host_model::{sim_binary, temp_endpoint, HostModel, HostOptions, SimOptions, SimProcess};
use cosim_transport::shm::{DEFAULT_SPIN, SPIN_ENV};
use cosim_transport::ZmqOptions;

const DMA_SRC: u64 = 0x100;
const DMA_DST: u64 = 0x108;
const DMA_LEN: u64 = 0x110;
const DMA_CTRL: u64 = 0x118;
const DMA_STATUS: u64 = 0x120;
const DMA_CYCLES: u64 = 0x178;
/// DMA_CTRL bit 2: streaming instead of store and forward.
const STREAM: u64 = 1 << 2;
/// The blocks each variant's simulation runs: (DMA_CTRL mode bits, engine, max beats per burst).
const MODES: [(u64, &str, u64); 4] = [
    (0, "store and forward", 16),
    (0, "store and forward", 256),
    (STREAM, "streaming", 16),
    (STREAM, "streaming", 256),
];
const VECTOR: u64 = 1;
const SRC: u64 = 0x10_0000;
const DST: u64 = 0x80_0000;
const T: Duration = Duration::from_secs(20);

fn env_num(name: &str, dflt: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(dflt)
}

/// The spin of the spinning variant, in microseconds (what the default was before the DMA tail).
const SPIN_US: u32 = 20;

#[derive(Clone, Copy)]
struct Variant {
    shm: bool,
    latency: u32,
    /// `COSIM_SHM_SPIN_US=20` on both sides: a waiting side looks at the ring for 20 us before it
    /// sleeps on its doorbell (the default is no spin: `DEFAULT_SPIN`).
    spin: bool,
}

impl Variant {
    fn name(&self) -> String {
        let link = match (self.shm, self.spin) {
            (true, false) => "shared memory",
            (true, true) => "shared memory, 20 us spin",
            _ => "ZeroMQ",
        };
        match self.latency {
            0 => format!("{link}, free-running (latency 0)"),
            1 => format!("{link}, latency 1 (the RTL's ceiling)"),
            n => format!("{link}, latency {n} (default)"),
        }
    }
}

/// Totals of one variant and burst limit over every round.
#[derive(Default)]
struct Acc {
    bytes: u64,
    cycles: u64,
    wall_s: f64,
    per_copy_us: Vec<f64>,
    per_copy_cycles: Vec<u64>,
}

/// Runs `copies` copies of `len` bytes with bursts of at most `beats` beats (`mode`: DMA_CTRL's
/// mode bits); checks the last one's data.
fn block(h: &mut HostModel, len: u64, beats: u64, mode: u64, copies: u64, seed: u8, acc: &mut Acc) -> Result<()> {
    let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    h.mem().write_bytes(SRC, &data);
    h.mem().fill(DST, len as usize, 0);
    h.write(0, DMA_SRC, 8, SRC)?;
    h.write(0, DMA_DST, 8, DST)?;
    h.write(0, DMA_LEN, 8, len | (beats << 32))?;
    for _ in 0..copies {
        let t0 = Instant::now();
        h.write(0, DMA_CTRL, 4, 0b11 | mode | (VECTOR << 16))?;
        h.wait_irq(VECTOR as u16, T).context("copy completion interrupt")?;
        let wall = t0.elapsed().as_secs_f64();
        let st = h.read(0, DMA_STATUS, 8)?;
        ensure!(st & 0b111 == 0b010, "status {st:#x} after a copy");
        let c = h.read(0, DMA_CYCLES, 8)?;
        // At least one clock per beat each way, one after the other unless streaming.
        let floor = if mode & STREAM != 0 { len / 8 } else { 2 * len / 8 };
        ensure!(c >= floor, "{c} clocks for {len} bytes: DMA_CYCLES is not what this bench expects");
        acc.bytes += len;
        acc.cycles += c;
        acc.wall_s += wall;
        acc.per_copy_us.push(wall * 1e6);
        acc.per_copy_cycles.push(c);
    }
    ensure!(h.mem().read_bytes(DST, len as usize) == data, "the destination differs from the source");
    Ok(())
}

fn run_variant(bin: &std::path::Path, v: Variant, len: u64, copies: u64, round: u8, accs: &mut [Acc]) -> Result<()> {
    let (dir, ep) = temp_endpoint("dmacopy")?;
    let shm_env = if v.shm { "1" } else { "0" };
    let spin_env = if v.spin { SPIN_US.to_string() } else { DEFAULT_SPIN.as_micros().to_string() };
    let mut sim = SimProcess::spawn_with(
        bin,
        &ep,
        SimOptions {
            args: vec![format!("+cosim_dma_latency={}", v.latency)],
            log: Some(dir.path().join("sim.log")),
            ready_timeout: Duration::from_secs(30),
            env: vec![
                (cosim_transport::SHM_ENV.to_string(), shm_env.to_string()),
                (SPIN_ENV.to_string(), spin_env.clone()),
            ],
        },
    )?;
    // The host's ring reads the spin time from the environment when it is created (at connect).
    std::env::set_var(SPIN_ENV, &spin_env);
    let opts = HostOptions { zmq: ZmqOptions { shm: v.shm, ..HostOptions::default().zmq }, ..HostOptions::default() };
    let mut h = HostModel::connect_with(&ep, Duration::from_secs(10), opts)?;
    // Warm-up (and the link settles: the ring is attached after CONFIG).
    let mut warm = Acc::default();
    block(&mut h, len, 256, 0, 5, round, &mut warm)?;
    for (k, (acc, (mode, _, beats))) in accs.iter_mut().zip(MODES).enumerate() {
        block(&mut h, len, beats, mode, copies, round.wrapping_add(k as u8 * 16 + 1), acc)?;
    }
    h.goodbye()?;
    sim.wait_exit(Duration::from_secs(30))?;
    let log = sim.log();
    let on_shm = log.contains("runs over shared memory");
    ensure!(on_shm == v.shm, "{}: the simulation's log says shared memory {on_shm}:\n{log}", v.name());
    Ok(())
}

fn main() -> Result<()> {
    let bin = sim_binary("cosim_test_top", "sim-test")?;
    let rounds = env_num("BENCH_ROUNDS", 3);
    let copies = env_num("BENCH_COPIES", 100);
    let len = env_num("BENCH_LEN", 4096);
    ensure!((8..=4096).contains(&len), "BENCH_LEN must be 8..4096 (the engine's limit)");
    let variants = [
        Variant { shm: true, latency: 0, spin: false },
        Variant { shm: false, latency: 0, spin: false },
        Variant { shm: true, latency: 0, spin: true },
        Variant { shm: true, latency: 100, spin: false },
        Variant { shm: false, latency: 100, spin: false },
        Variant { shm: true, latency: 1, spin: false },
        Variant { shm: false, latency: 1, spin: false },
    ];
    let mut accs: Vec<[Acc; 4]> = variants.iter().map(|_| Default::default()).collect();
    for round in 0..rounds {
        for (v, acc) in variants.iter().zip(accs.iter_mut()) {
            run_variant(&bin, *v, len, copies, round as u8, acc).with_context(|| v.name())?;
        }
    }
    println!(
        "DMA copies of {len} bytes by the test design's engine, {} per variant, mode and burst limit ({rounds} \
         rounds of {copies}, variants alternating); ratio = bytes / (8 x DMA_CYCLES) = throughput / (8 B x cycles/s \
         during the copy)",
        rounds * copies
    );
    println!();
    println!(
        "| link, modelled DMA read latency | engine | max beats | copy MB/s | copy p50 / p90 / max (us) | cycles/s during the copy | \
         bus 8 B x cycles/s (MB/s) | clocks per copy min / p50 / max | ratio | ratio of the median copy |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (v, pair) in variants.iter().zip(&accs) {
        for (a, (_, engine, beats)) in pair.iter().zip(MODES) {
            let mut t = a.per_copy_us.clone();
            t.sort_by(|x, y| x.total_cmp(y));
            let mut c = a.per_copy_cycles.clone();
            c.sort_unstable();
            let cps = a.cycles as f64 / a.wall_s;
            println!(
                "| {} | {engine} | {beats} | {:.1} | {:.0} / {:.0} / {:.0} | {:.2} M | {:.1} | {} / {} / {} | {:.1} % | {:.1} % |",
                v.name(),
                a.bytes as f64 / a.wall_s / 1e6,
                t[t.len() / 2],
                t[t.len() * 9 / 10],
                t[t.len() - 1],
                cps / 1e6,
                8.0 * cps / 1e6,
                c[0],
                c[c.len() / 2],
                c[c.len() - 1],
                100.0 * a.bytes as f64 / (8.0 * a.cycles as f64),
                100.0 * len as f64 / (8.0 * c[c.len() / 2] as f64)
            );
        }
    }
    println!();
    println!(
        "Store and forward reads the whole source before it writes, so a copy needs at least 2 x len / 8 \
         clocks: its ceiling is 50 % of one direction of the bus. Streaming overlaps the two: at least \
         len / 8 clocks plus the read latency and the shell's turn-around between write bursts."
    );
    Ok(())
}
