//! `cargo bench -p cosim-transport --bench shm`: the shared-memory link against ZeroMQ on the
//! same ipc endpoint kind, in one run (docs/benchmarks.md, "Shared-memory link").
//!
//! Two links, each a host-side `ZmqTransport` and a device thread: one with the shared-memory
//! link negotiated (INIT/CONFIG with SHM), one with `shm: false` (ZeroMQ only). Blocks of MMIO
//! read round trips (MMIO_READ -> MMIO_READ_RESP, 24-byte frames) and of 64 KiB DMA writes
//! (device -> host, the encoded DMA_WRITE frames, received as frames without decoding)
//! alternate between the two links, so both see the same machine load.
//! BENCH_BLOCKS sets the number of blocks (default 10).

use std::time::{Duration, Instant};

use cosim_protocol::*;
use cosim_transport::{Endpoint, PrivateDir, Side, Transport, ZmqOptions, ZmqTransport};

const ROUND_TRIPS: usize = 2_000;
const BULK: usize = 512;
const TIMEOUT: Duration = Duration::from_secs(10);
const SESSION: u64 = 0x5e55_1011;

fn config_msg() -> Message {
    let mut device =
        DeviceConfig { vendor_id: 0x1ded, device_id: 0x7e57, class_code: 0x12_00_00, ..Default::default() };
    device.bars[0] = BarDesc::mem32(0x1000);
    Message::Config(Config {
        major: VERSION_MAJOR,
        minor: VERSION_MINOR,
        caps: Caps::empty(),
        session: SESSION,
        device,
    })
}

/// A host-side transport and its device thread: INIT/CONFIG by hand, then the device answers
/// MMIO reads; a read at offset N > 0 first sends N DMA writes of 64 KiB.
fn link(dir: &PrivateDir, name: &str, shm: bool) -> (ZmqTransport, std::thread::JoinHandle<()>) {
    let ep = Endpoint::parse(&dir.endpoint(name)).unwrap();
    let opts = ZmqOptions { shm, ..ZmqOptions::default() };
    let mut dev = ZmqTransport::open(&ep, Side::Device, &opts).unwrap();
    let mut host = ZmqTransport::open(&ep, Side::Host, &opts).unwrap();
    let init =
        Init { major: VERSION_MAJOR, minor: VERSION_MINOR, caps: Caps::empty(), session: SESSION, prev_session: 0 };
    host.send(&Message::Init(init)).unwrap();
    let dma =
        Message::DmaWrite(DmaWrite { addr: GuestAddr(0x1000_0000), data: vec![0xa5; MAX_DMA_LEN] }).encode_to_vec();
    let echo = std::thread::spawn(move || {
        assert!(matches!(dev.recv(TIMEOUT).unwrap(), Some(Message::Init(_))));
        dev.send(&config_msg()).unwrap();
        loop {
            match dev.recv(TIMEOUT).unwrap() {
                Some(Message::MmioRead(r)) => {
                    for _ in 0..r.offset {
                        dev.send_frame(&dma).unwrap();
                    }
                    dev.send(&Message::MmioReadResp(MmioReadResp { tag: r.tag, status: Status::Ok, data: r.offset }))
                        .unwrap();
                }
                Some(Message::Reset) => return,
                other => panic!("device: unexpected {other:?}"),
            }
        }
    });
    assert!(matches!(host.recv(TIMEOUT).unwrap(), Some(Message::Config(_))));
    assert_eq!(host.shm_active(), shm, "shared memory negotiated as asked");
    (host, echo)
}

fn read(t: &mut ZmqTransport, tag: u32, offset: u64) -> usize {
    let r = MmioRead { tag, bar: BarIndex::new(0).unwrap(), size: AccessSize::B4, offset };
    t.send(&Message::MmioRead(r)).unwrap();
    let mut frames = 0;
    loop {
        let f = t.recv_frame(TIMEOUT).unwrap().expect("no answer within the timeout");
        if f[3] == 0x12 {
            return frames;
        }
        frames += 1;
    }
}

fn pct(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6
}

fn main() {
    let blocks: usize = std::env::var("BENCH_BLOCKS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let dir = PrivateDir::new("bench-shm").unwrap();
    let mut links = [("zeromq", link(&dir, "zmq", false)), ("shared memory", link(&dir, "shm", true))];
    let mut rtt: [Vec<Duration>; 2] = Default::default();
    let mut gbs: [Vec<f64>; 2] = Default::default();
    let mut tag = 0;
    for _ in 0..blocks {
        for (i, (_, (t, _))) in links.iter_mut().enumerate() {
            for _ in 0..ROUND_TRIPS / blocks.max(1) {
                tag += 1;
                let t0 = Instant::now();
                read(t, tag, 0);
                rtt[i].push(t0.elapsed());
            }
            tag += 1;
            let t0 = Instant::now();
            assert_eq!(read(t, tag, BULK as u64), BULK);
            gbs[i].push((BULK * MAX_DMA_LEN) as f64 / t0.elapsed().as_secs_f64() / 1e9);
        }
    }
    println!("{:<14} {:>10} {:>10} {:>22}", "link", "rtt p50", "rtt p99", "64 KiB DMA writes");
    for (i, (name, _)) in links.iter().enumerate() {
        let mut g = gbs[i].clone();
        g.sort_by(f64::total_cmp);
        println!(
            "{name:<14} {:>7.1} us {:>7.1} us {:>12.2} GB/s (median of {} blocks of {BULK})",
            pct(&mut rtt[i], 0.5),
            pct(&mut rtt[i], 0.99),
            g[g.len() / 2],
            g.len()
        );
    }
    for (_, (t, echo)) in links.iter_mut() {
        t.send(&Message::Reset).unwrap();
        std::mem::replace(echo, std::thread::spawn(|| {})).join().unwrap();
    }
}
