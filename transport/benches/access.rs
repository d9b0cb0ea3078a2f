//! `cargo bench -p cosim-transport --bench access`: what a key costs on a tcp link
//! (docs/protocol.md, "Access control"; docs/benchmarks.md).
//!
//! Two loopback tcp links in one process, one without a key and one keyed (PLAIN + ZAP), each
//! with an echo thread on the device side. Blocks of round trips and of 64 KiB one-way
//! transfers alternate between the two links, so both see the same machine load; the key is
//! checked once per connection, so the two should differ only by noise.

use std::time::{Duration, Instant};

use cosim_transport::{generate_key_file, Endpoint, LinkKey, PrivateDir, Side, Transport, ZmqOptions, ZmqTransport};

const BLOCKS: usize = 20;
const ROUND_TRIPS: usize = 1_000;
const BULK: usize = 200;
const BULK_LEN: usize = 65_536;
const TIMEOUT: Duration = Duration::from_secs(10);


/// A host-side transport whose device side echoes every frame from a thread; a 1-byte frame
/// ends the echo thread.
fn link(key: LinkKey) -> (ZmqTransport, std::thread::JoinHandle<()>) {
    let ep = Endpoint::parse(&format!("tcp://127.0.0.1:{}", cosim_transport::free_port_pair("127.0.0.1").unwrap())).unwrap();
    let opts = ZmqOptions { key, ..ZmqOptions::default() };
    let mut dev = ZmqTransport::open(&ep, Side::Device, &opts).unwrap();
    let echo = std::thread::spawn(move || loop {
        let f = dev.recv_frame(TIMEOUT).unwrap().expect("echo: nothing within the timeout");
        if f.len() == 1 {
            return;
        }
        dev.send_frame(&f[..f.len().min(8)]).unwrap();
    });
    let host = ZmqTransport::open(&ep, Side::Host, &opts).unwrap();
    (host, echo)
}

fn round_trips(t: &mut ZmqTransport, n: usize, out: &mut Vec<Duration>) {
    for i in 0..n {
        let start = Instant::now();
        t.send_frame(&(i as u64).to_le_bytes()).unwrap();
        t.recv_frame(TIMEOUT).unwrap().expect("round trip timed out");
        out.push(start.elapsed());
    }
}

/// MB/s of `BULK` frames of `BULK_LEN` bytes to the echo side (which answers 8 bytes each).
fn bulk(t: &mut ZmqTransport, buf: &[u8]) -> f64 {
    let start = Instant::now();
    for _ in 0..BULK {
        t.send_frame(buf).unwrap();
    }
    for _ in 0..BULK {
        t.recv_frame(TIMEOUT).unwrap().expect("bulk echo timed out");
    }
    (BULK * BULK_LEN) as f64 / start.elapsed().as_secs_f64() / 1e6
}

fn main() {
    let dir = PrivateDir::new("bench-access").unwrap();
    let key = dir.path().join("link.key");
    generate_key_file(&key).unwrap();
    let mut links = [("tcp, no key", link(LinkKey::None)), ("tcp, key", link(LinkKey::File(key)))];
    for (_, (t, _)) in links.iter_mut() {
        round_trips(t, 1_000, &mut Vec::new()); // warm-up
        assert!(t.refused_by_peer() == 0 && t.refused_connections() == 0);
    }
    let buf = vec![0x5a; BULK_LEN];
    let mut rt: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut mbs: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..BLOCKS {
        for (i, (_, (t, _))) in links.iter_mut().enumerate() {
            round_trips(t, ROUND_TRIPS, &mut rt[i]);
            mbs[i].push(bulk(t, &buf));
        }
    }
    println!("| link | 8 B round trip median / p99 (us) | 64 KiB one way, median of {BLOCKS} blocks (MB/s) |");
    println!("|---|---|---|");
    for (i, (name, (t, echo))) in links.into_iter().enumerate() {
        let v = &mut rt[i];
        v.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        mbs[i].sort_by(f64::total_cmp);
        println!("| {name} | {:.1} / {:.1} | {:.0} |", us(v[v.len() / 2]), us(v[v.len() * 99 / 100]), mbs[i][BLOCKS / 2]);
        let mut t = t;
        t.send_frame(&[0]).unwrap();
        echo.join().unwrap();
    }
}
