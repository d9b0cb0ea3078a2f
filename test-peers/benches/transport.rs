//! `make bench-transport` (`cargo bench -p cosim-test-peers --bench transport`): our transport
//! against raw ZeroMQ, two processes (this one and `cosim-zmq-peer`), one run.
//!
//! 1. Round trip of a 4-byte MMIO read (host session engine, encode, send, the peer's device
//!    session engine decodes and answers, decode) against a raw ping-pong of 4 bytes over the
//!    same two PUSH/PULL channels, without codec or protocol.
//! 2. Throughput of posted DMA writes of 4 KiB and 64 KiB from the device side to the host side.
//!
//! Prints a Markdown table for docs/benchmarks.md.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cosim_protocol::session::HostEvent;
use cosim_protocol::*;
use cosim_transport::{Endpoint, HostLoop, Side, Transport, ZmqOptions, ZmqTransport};

const ROUND_TRIPS: usize = 20_000;
const WARMUP: usize = 1_000;
const TIMEOUT: Duration = Duration::from_secs(10);

fn spawn_peer(endpoint: &str, raw: bool) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cosim-zmq-peer"));
    cmd.args(["--endpoint", endpoint]).stderr(Stdio::piped());
    if raw {
        cmd.arg("--raw-echo");
    }
    let mut child = cmd.spawn().expect("spawn cosim-zmq-peer");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).expect("peer ready line");
    assert!(line.contains("ready"), "peer said {line:?}");
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    child
}

fn host(endpoint: &str) -> ZmqTransport {
    ZmqTransport::open(&Endpoint::parse(endpoint).unwrap(), Side::Host, &ZmqOptions::default()).unwrap()
}

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (us(v[v.len() / 2]), us(v[v.len() * 99 / 100]))
}

fn raw_round_trip(endpoint: &str) -> (f64, f64) {
    let mut peer = spawn_peer(endpoint, true);
    let mut t = host(endpoint);
    let mut v = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..WARMUP + ROUND_TRIPS {
        let start = Instant::now();
        t.send_frame(&(i as u32).to_le_bytes()).unwrap();
        let back = t.recv_frame(TIMEOUT).unwrap().expect("raw echo timed out");
        if i >= WARMUP {
            v.push(start.elapsed());
        }
        assert_eq!(back.len(), 4);
    }
    t.send_frame(&[0]).unwrap();
    let _ = peer.wait();
    stats(v)
}

/// The host side: the protocol's `HostSession` over ZeroMQ, as QEMU runs it; waits for CONFIG.
fn host_session(endpoint: &str) -> HostLoop<ZmqTransport> {
    let mut h = HostLoop::host(host(endpoint), "bench host", Caps::all(), TIMEOUT);
    loop {
        match h.poll(TIMEOUT).unwrap() {
            Some(HostEvent::Up(_)) => return h,
            Some(HostEvent::Failed(e)) => panic!("handshake with the peer failed: {e}"),
            Some(_) => {}
            None => panic!("no CONFIG from the peer within {TIMEOUT:?}"),
        }
    }
}

fn mmio_round_trip(h: &mut HostLoop<ZmqTransport>) -> (f64, f64) {
    let bar = BarIndex::new(0).unwrap();
    let mut v = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..WARMUP + ROUND_TRIPS {
        let start = Instant::now();
        let tag = h.act(|s| s.mmio_read(bar, 0x40, AccessSize::B4)).unwrap().expect("session down");
        loop {
            match h.poll(TIMEOUT).unwrap().expect("MMIO read timed out") {
                HostEvent::ReadDone(r) if r.tag == tag => break,
                HostEvent::ReadAborted { .. } | HostEvent::Down(_) => panic!("session lost during the benchmark"),
                _ => {}
            }
        }
        if i >= WARMUP {
            v.push(start.elapsed());
        }
    }
    stats(v)
}

fn dma_throughput(h: &mut HostLoop<ZmqTransport>, len: u64, count: u64) -> f64 {
    let bar = BarIndex::new(2).unwrap();
    let start = Instant::now();
    assert!(h.send(Message::MmioWrite(MmioWrite { bar, size: AccessSize::B8, offset: len, data: count })).unwrap());
    let mut bytes = 0u64;
    loop {
        match h.poll(TIMEOUT).unwrap().expect("DMA stream timed out") {
            HostEvent::Deliver(Message::DmaWrite(w)) => bytes += w.data.len() as u64,
            HostEvent::Deliver(Message::Msix(_)) => break,
            HostEvent::Down(why) => panic!("session lost during the benchmark: {why:?}"),
            _ => {}
        }
    }
    assert_eq!(bytes, len * count);
    bytes as f64 / start.elapsed().as_secs_f64() / 1e6
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let dir = std::env::temp_dir().join(format!("cosim-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A free base port whose neighbour (the d2h channel) is free too.
    let port = (0..100)
        .find_map(|_| {
            let p = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
            (p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()).then_some(p)
        })
        .expect("no free pair of TCP ports on 127.0.0.1");
    let eps = [
        ("ipc", format!("ipc://{}/bench", dir.display())),
        ("tcp", format!("tcp://127.0.0.1:{port}")),
    ];
    println!("| transport | raw ZeroMQ 4 B ping-pong median / p99 (us) | cosim 4 B MMIO read median / p99 (us) | ratio (median) | DMA write 4 KiB (MB/s) | DMA write 64 KiB (MB/s) |");
    println!("|---|---|---|---|---|---|");
    for (name, ep) in eps {
        let (raw_med, raw_p99) = raw_round_trip(&ep);
        let mut peer = spawn_peer(&ep, false);
        let mut h = host_session(&ep);
        let (med, p99) = mmio_round_trip(&mut h);
        let small = dma_throughput(&mut h, 4096, 20_000);
        let big = dma_throughput(&mut h, 65536, 5_000);
        h.close().unwrap();
        let _ = peer.wait();
        println!(
            "| {name} | {raw_med:.1} / {raw_p99:.1} | {med:.1} / {p99:.1} | {:.2}x | {small:.0} | {big:.0} |",
            med / raw_med
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
