//! Two-host benchmark (`make bench-two-hosts`, = `cargo run --release -p cosim-host-model
//! --example two_hosts`): the host model against the test design's
//! simulation (`cosim_test_top`) across a veth pair between two network namespaces, next to the
//! same over loopback, in one run, printed as markdown for docs/benchmarks.md.
//!
//! Set-up (`launcher/tests/netns/mod.rs`): namespaces A and B joined by a veth; one simulation
//! in A on `tcp://<A>:7000?peer=<B>`, one in B on `tcp://127.0.0.1:7100`, both with one key
//! (COSIM_KEY_FILE), so the two paths differ only in the link. The measuring code runs in B: this
//! binary re-invoked under `ip netns exec B` with `COSIM_TWO_HOSTS_MEASURE` set. It holds a host
//! model on each link and alternates between them in short blocks (and alternates which link
//! goes first), so the machine's load hits both alike. The simulation not being measured sleeps
//! (the idle sleep, the default: docs/hdl-endpoint.md) instead of taking a core from the
//! measurement; each block starts with a few untimed reads that wake its simulation up.
//!
//! - MMIO read round trip: `read(BAR0, SCRATCH0, 8)`, BENCH_READS reads per link (default 10000)
//!   in blocks of 25 (each block after 5 untimed reads), after 100 warm-up reads.
//! - DMA: the copy engine copies BENCH_DMA_MIB MiB per link (default 4) in 4 KiB copies (bursts
//!   of up to 256 beats, up to 4 in flight), 64 copies per block, each started with four posted
//!   writes and ended by its MSI-X; every byte crosses the link twice (DMA read, DMA write). The
//!   copies are checked bit-exactly at the end.
//!
//! Needs root, iproute2 and `make sim-test`.

#[path = "../../launcher/tests/netns/mod.rs"]
mod netns;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use cosim_host_model::{sim_binary, HostModel};
use netns::{NetnsPair, A, B};

const MEASURE_ENV: &str = "COSIM_TWO_HOSTS_MEASURE";

// cosim_test_dev registers (hdl/test/cosim_test_dev.sv).
const SCRATCH0: u64 = 0x008;
const DMA_SRC: u64 = 0x100;
const DMA_DST: u64 = 0x108;
const DMA_LEN: u64 = 0x110;
const DMA_CTRL: u64 = 0x118;
const DMA_STATUS: u64 = 0x120;

const COPY: u64 = 4096;
const COPIES_PER_BLOCK: u64 = 64;
const READS_PER_BLOCK: usize = 25;
const SRC: u64 = 0x1000_0000;
const DST: u64 = 0x4000_0000;

fn env_num(name: &str, dflt: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(dflt)
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((s.len() as f64 - 1.0) * p).round() as usize]
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// One 4 KiB copy `index` of the engine, waited for through its interrupt.
fn copy(h: &mut HostModel, index: u64) -> Result<()> {
    h.write(0, DMA_SRC, 8, SRC + index * COPY)?;
    h.write(0, DMA_DST, 8, DST + index * COPY)?;
    h.write(0, DMA_LEN, 8, COPY | (256 << 32))?;
    h.write(0, DMA_CTRL, 4, 0b11)?;
    h.wait_irq(0, Duration::from_secs(10)).context("copy completion interrupt")?;
    Ok(())
}

/// The measuring side, in namespace B: `eps` = "<veth endpoint> <loopback endpoint>".
fn measure(eps: &str) -> Result<()> {
    let reads = env_num("BENCH_READS", 10000) as usize;
    let mib = env_num("BENCH_DMA_MIB", 4);
    let copies = mib * 1024 * 1024 / COPY;
    let names = ["veth", "loopback"];
    let mut hosts = Vec::new();
    for ep in eps.split_whitespace() {
        hosts.push(HostModel::connect(ep, Duration::from_secs(30)).with_context(|| format!("connect {ep}"))?);
    }
    ensure!(hosts.len() == 2, "{MEASURE_ENV} must name two endpoints");
    let src = pattern(7, (copies * COPY) as usize);
    for h in hosts.iter_mut() {
        h.mem().write_bytes(SRC, &src);
        h.write(0, SCRATCH0, 8, 0x1122_3344_5566_7788)?;
        for _ in 0..100 {
            ensure!(h.read(0, SCRATCH0, 8)? == 0x1122_3344_5566_7788, "scratch register read back wrong");
        }
    }
    // Before a block on link p: serve the other link (heartbeats), so neither session idles
    // long, and wake p's simulation from its idle throttle with a few untimed reads.
    let serve = |hosts: &mut Vec<HostModel>, p: usize| -> Result<()> {
        hosts[1 - p].poll(Duration::ZERO)?;
        for _ in 0..5 {
            hosts[p].read(0, SCRATCH0, 8)?;
        }
        Ok(())
    };

    let mut us: [Vec<f64>; 2] = [Vec::with_capacity(reads), Vec::with_capacity(reads)];
    for round in 0..reads.div_ceil(READS_PER_BLOCK) {
        // The order alternates too, so neither link always follows the other.
        for p in [round % 2, 1 - round % 2] {
            serve(&mut hosts, p)?;
            for _ in 0..READS_PER_BLOCK {
                let t0 = Instant::now();
                let v = hosts[p].read(0, SCRATCH0, 8)?;
                us[p].push(t0.elapsed().as_secs_f64() * 1e6);
                ensure!(v == 0x1122_3344_5566_7788, "{}: read back {v:#x}", names[p]);
            }
        }
    }

    let mut dma_s = [0f64; 2];
    let mut next = 0;
    while next < copies {
        let n = COPIES_PER_BLOCK.min(copies - next);
        let round = (next / COPIES_PER_BLOCK) as usize;
        for p in [round % 2, 1 - round % 2] {
            serve(&mut hosts, p)?;
            let t0 = Instant::now();
            for i in next..next + n {
                copy(&mut hosts[p], i)?;
            }
            dma_s[p] += t0.elapsed().as_secs_f64();
            let st = hosts[p].read(0, DMA_STATUS, 8)?;
            ensure!(st & 0b111 == 0b010 && st >> 32 == next + n, "{}: DMA_STATUS {st:#x} after {} copies", names[p], next + n);
        }
        next += n;
    }
    for (p, h) in hosts.iter_mut().enumerate() {
        let got = h.mem().read_bytes(DST, src.len());
        ensure!(got == src, "{}: the copied data differs from the source", names[p]);
        let _ = h.goodbye();
    }
    for p in 0..2 {
        let v = &us[p];
        let bytes = copies * COPY;
        println!(
            "RESULT path={} reads={} median_us={} p90_us={} p99_us={} max_us={} dma_bytes={bytes} dma_s={} dma_mb_s={}",
            names[p],
            v.len(),
            pct(v, 0.5),
            pct(v, 0.9),
            pct(v, 0.99),
            pct(v, 1.0),
            dma_s[p],
            bytes as f64 / dma_s[p] / 1e6
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    if let Ok(eps) = std::env::var(MEASURE_ENV) {
        return measure(&eps);
    }
    let bin = sim_binary("cosim_test_top", "sim-test")?;
    let key_dir = cosim_transport::PrivateDir::new("two-hosts-bench")?;
    let key = key_dir.path().join("link.key");
    cosim_transport::generate_key_file(&key)?;
    let logs = std::env::temp_dir().join(format!("cosim-two-hosts-bench-{}", std::process::id()));
    std::fs::create_dir_all(&logs)?;

    let mut net = NetnsPair::create("bench");
    let (a, b) = (net.addr[A].clone(), net.addr[B].clone());
    let args: [&str; 0] = [];
    net.start_sim(A, &bin, &format!("tcp://{a}:7000?peer={b}"), &args, &key, &logs.join("sim-veth.log"));
    net.start_sim(B, &bin, "tcp://127.0.0.1:7100", &args, &key, &logs.join("sim-loopback.log"));

    let out_path = logs.join("measure.out");
    let mut cmd = net.command(B, std::env::current_exe()?);
    cmd.env(MEASURE_ENV, format!("tcp://{b}:7000?peer={a} tcp://127.0.0.1:7100"))
        .env(cosim_transport::KEY_FILE_ENV, &key)
        .stdout(std::fs::File::create(&out_path)?);
    let pid = net.adopt("measuring process", cmd.spawn().context("start the measuring process in namespace B")?);
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = net.try_wait(pid) {
            break st;
        }
        if t0.elapsed() > Duration::from_secs(900) {
            bail!("the measuring process did not finish within 900 s (logs in {})", logs.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(&out_path)?;
    ensure!(status.success(), "the measuring process failed ({status}); logs in {}:\n{out}", logs.display());
    // "RESULT key=value ..." per link.
    let res: Vec<Vec<(&str, &str)>> = out
        .lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .map(|l| l.split_whitespace().filter_map(|kv| kv.split_once('=')).collect())
        .collect();
    ensure!(res.len() == 2, "expected two results:\n{out}");
    drop(net);

    let get = |r: &[(&str, &str)], k: &str| r.iter().find(|(n, _)| *n == k).map_or("?", |(_, v)| *v).to_string();
    let f = |r: &[(&str, &str)], k: &str| get(r, k).parse::<f64>().unwrap_or(f64::NAN);
    let (veth, lo) = (&res[0][..], &res[1][..]);
    println!("Host model in namespace B (10.77.x.2) against `cosim_test_top` in namespace A (10.77.x.1) across");
    println!("a veth pair (host side `tcp://{b}:7000?peer={a}`), and against the same design in B on loopback");
    println!("(`tcp://127.0.0.1:7100`); both links keyed. Blocks alternate between the links in one run.\n");
    println!("| link | MMIO read median (us) | p90 | p99 | max | DMA copy (MB/s) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in [lo, veth] {
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
            get(r, "path"),
            f(r, "median_us"),
            f(r, "p90_us"),
            f(r, "p99_us"),
            f(r, "max_us"),
            f(r, "dma_mb_s")
        );
    }
    println!(
        "| veth / loopback | {:.2}x | {:.2}x | {:.2}x | | {:.2}x |",
        f(veth, "median_us") / f(lo, "median_us"),
        f(veth, "p90_us") / f(lo, "p90_us"),
        f(veth, "p99_us") / f(lo, "p99_us"),
        f(veth, "dma_mb_s") / f(lo, "dma_mb_s")
    );
    println!(
        "\n{} MMIO reads per link; DMA: {} MiB per link in 4 KiB copies ({:.2} s veth, {:.2} s loopback), \
         checked bit-exactly.",
        get(veth, "reads"),
        get(veth, "dma_bytes").parse::<u64>().unwrap_or(0) >> 20,
        f(veth, "dma_s"),
        f(lo, "dma_s")
    );
    Ok(())
}
