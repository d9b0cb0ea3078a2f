//! `cosim-zmq-peer`: a scripted device-side peer over real ZeroMQ, used by the transport's
//! integration tests and by `cosim-bench`. It follows the device rules of docs/protocol.md
//! (discard until INIT, answer every INIT, heartbeats, drop malformed frames and keep going).
//!
//! Behaviour, so tests can observe what arrived:
//! - MMIO write to BAR0: counted, and folded into an order-sensitive hash.
//! - MMIO read of BAR0: offset 0x0 -> writes counted this session, 0x8 -> the hash,
//!   0x10 -> malformed frames seen, 0x18 -> frames discarded before INIT, else `offset ^ tag`.
//! - MMIO write to BAR2 at offset `len` with data `count`: send `count` DMA writes of `len` bytes
//!   (byte i of write n is `(n + i) as u8`), then MSI-X vector 0 (the ordering probe).
//! - NIC frames and serial bytes are echoed back. GOODBYE ends the process.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use cosim_protocol::liveness::Liveness;
use cosim_protocol::*;
use cosim_transport::{Endpoint, Side, Transport, TransportError, ZmqOptions, ZmqTransport};

const HELP: &str = "\
cosim-zmq-peer: scripted cosim device-side peer over ZeroMQ (test double for the HDL side)

usage: cosim-zmq-peer --endpoint <ipc:///path/name | tcp://host:port> [--max-seconds N] [--raw-echo]

  --endpoint E      base endpoint; binds E.h2d (or port), connects E.d2h (or port+1)
  --max-seconds N   exit after N seconds even if no GOODBYE arrives (default 120)
  --raw-echo        benchmark baseline: no protocol, echo every raw ZeroMQ message back on the
                    same two channels (exits on a 1-byte message)

Prints `cosim-zmq-peer: ready endpoint=E` on stderr once bound.";

fn sample_config() -> DeviceConfig {
    let mut d = DeviceConfig {
        vendor_id: 0x1ded,
        device_id: 0x7e57,
        subsystem_vendor_id: 0x1ded,
        subsystem_id: 1,
        class_code: 0x12_00_00,
        revision: 1,
        ..Default::default()
    };
    d.bars[0] = BarDesc::mem32(0x1000);
    d.bars[2] = BarDesc::mem64(0x4000, false);
    d.msix = MsixConfig { vectors: 4, table_bar: 2, table_offset: 0x3000, pba_bar: 2, pba_offset: 0x3800 };
    d
}

#[derive(Default)]
struct Session {
    writes: u64,
    hash: u64,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut endpoint = None;
    let mut max_secs = 120u64;
    let mut raw = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--endpoint" => endpoint = it.next().cloned(),
            "--max-seconds" => max_secs = it.next().and_then(|s| s.parse().ok()).unwrap_or(max_secs),
            "--raw-echo" => raw = true,
            "-h" | "--help" => {
                println!("{HELP}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("cosim-zmq-peer: unknown argument {other:?}\n\n{HELP}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(endpoint) = endpoint else {
        eprintln!("cosim-zmq-peer: --endpoint is required\n\n{HELP}");
        return ExitCode::from(2);
    };
    let result = if raw { raw_echo(&endpoint) } else { run(&endpoint, Duration::from_secs(max_secs)) };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cosim-zmq-peer: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(endpoint: &str, max: Duration) -> Result<(), TransportError> {
    let ep = Endpoint::parse(endpoint)?;
    let mut t = ZmqTransport::open(&ep, Side::Device, &ZmqOptions::default())?;
    eprintln!("cosim-zmq-peer: ready endpoint={ep}");
    let instance = liveness::random_id();
    let start = Instant::now();
    let mut live = Liveness::new();
    let mut session: Option<Session> = None;
    let (mut malformed, mut discarded) = (0u64, 0u64);
    while start.elapsed() < max {
        let now = Instant::now();
        if live.heartbeat_due(now) {
            t.send(&Message::Heartbeat(Heartbeat { instance }))?;
        }
        if live.poll(now) == liveness::PeerEvent::Lost {
            eprintln!("cosim-zmq-peer: host lost (nothing for {LIVENESS_TIMEOUT_MS} ms); waiting for INIT");
            session = None;
        }
        let msg = match t.recv(Duration::from_millis(20)) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(TransportError::Decode(e)) => {
                malformed += 1;
                eprintln!("cosim-zmq-peer: warning: {e}");
                continue;
            }
            Err(e) => return Err(e),
        };
        let hb = if let Message::Heartbeat(h) = &msg { Some(h.instance) } else { None };
        live.on_receive(now, hb);
        match msg {
            Message::Init(init) => {
                if init.major != VERSION_MAJOR {
                    eprintln!(
                        "cosim-zmq-peer: error: host speaks protocol {}.{}, we speak {VERSION_MAJOR}.{VERSION_MINOR}; refusing",
                        init.major, init.minor
                    );
                    t.send(&Message::Goodbye(GoodbyeReason::Refused))?;
                    continue;
                }
                session = Some(Session::default());
                t.send(&Message::Config(Config {
                    major: VERSION_MAJOR,
                    minor: VERSION_MINOR,
                    caps: Caps::all(),
                    session: init.session,
                    device: sample_config(),
                }))?;
            }
            Message::Goodbye(_) => return Ok(()),
            Message::Heartbeat(_) => {}
            other => {
                let Some(s) = session.as_mut() else {
                    discarded += 1;
                    continue;
                };
                serve(&mut t, s, other, malformed, discarded)?;
            }
        }
    }
    eprintln!("cosim-zmq-peer: --max-seconds reached, exiting");
    t.send(&Message::Goodbye(GoodbyeReason::Shutdown))
}

/// The baseline for benchmarks: the same two PUSH/PULL channels, no codec, no protocol.
fn raw_echo(endpoint: &str) -> Result<(), TransportError> {
    let mut t = ZmqTransport::open(&Endpoint::parse(endpoint)?, Side::Device, &ZmqOptions::default())?;
    eprintln!("cosim-zmq-peer: ready endpoint={endpoint} (raw echo)");
    loop {
        match t.recv_frame(Duration::from_secs(30))? {
            Some(f) if f.len() == 1 => return Ok(()),
            Some(f) => t.send_frame(&f)?,
            None => {
                eprintln!("cosim-zmq-peer: raw echo idle for 30 s, exiting");
                return Ok(());
            }
        }
    }
}

fn serve(
    t: &mut ZmqTransport,
    s: &mut Session,
    msg: Message,
    malformed: u64,
    discarded: u64,
) -> Result<(), TransportError> {
    match msg {
        Message::MmioWrite(w) if w.bar.get() == 0 => {
            s.writes += 1;
            s.hash = s.hash.wrapping_mul(0x100_0000_01b3).wrapping_add(w.data ^ w.offset);
        }
        Message::MmioWrite(w) if w.bar.get() == 2 => {
            let len = (w.offset as usize).clamp(1, MAX_DMA_LEN);
            let pattern: Vec<u8> = (0..len + 256).map(|i| i as u8).collect();
            for n in 0..w.data {
                let start = n as usize % 256;
                let data = pattern[start..start + len].to_vec();
                t.send(&Message::DmaWrite(DmaWrite { addr: GuestAddr(n * len as u64), data }))?;
            }
            t.send(&Message::Msix(Msix { vector: 0 }))?;
        }
        Message::MmioRead(r) => {
            let data = if r.bar.get() != 0 {
                r.offset ^ u64::from(r.tag)
            } else {
                match r.offset {
                    0x0 => s.writes,
                    0x8 => s.hash,
                    0x10 => malformed,
                    0x18 => discarded,
                    o => o ^ u64::from(r.tag),
                }
            };
            let data = data & r.size.mask();
            t.send(&Message::MmioReadResp(MmioReadResp { tag: r.tag, status: Status::Ok, data }))?;
        }
        Message::NicFrame(f) => t.send(&Message::NicFrame(f))?,
        Message::Serial(b) => t.send(&Message::Serial(b))?,
        _ => {}
    }
    Ok(())
}
