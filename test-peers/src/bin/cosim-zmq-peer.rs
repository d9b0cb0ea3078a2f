//! `cosim-zmq-peer`: a scripted device-side peer over real ZeroMQ, used by the two-process
//! transport tests and the transport benchmark of this crate (test-peers/tests, test-peers/benches).
//! The session rules of docs/protocol.md (discard until INIT, answer every INIT, refuse other
//! versions, heartbeats, liveness, GOODBYE, drop malformed frames and keep going) are
//! `DeviceSession`'s, driven by [`DeviceLoop`]; this file is only the scripted device logic. Its
//! log lines (the engine's, filtered by `COSIM_LOG`, default `info`) go to stderr. No `unsafe`.
//!
//! Behaviour, so tests can observe what arrived:
//! - MMIO write to BAR0: counted, and folded into an order-sensitive hash.
//! - MMIO read of BAR0: offset 0x0 -> writes counted this session, 0x8 -> the hash,
//!   0x10 -> malformed frames and frames of another version dropped, 0x18 -> frames discarded
//!   before INIT (both from `DeviceSession::stats`), else `offset ^ tag`.
//! - MMIO write to BAR2 at offset `len` with data `count`: send `count` DMA writes of `len` bytes
//!   (byte i of write n is `(n + i) as u8`), then MSI-X vector 0 (the ordering probe).
//! - NIC frames and serial bytes are echoed back. A GOODBYE that ends our session ends the
//!   process; at `--max-seconds` it says GOODBYE (if in a session) and exits.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use cosim_protocol::session::DeviceEvent;
use cosim_protocol::*;
use cosim_transport::{DeviceLoop, Endpoint, Side, Transport, TransportError, ZmqOptions, ZmqTransport};

const HELP: &str = "\
cosim-zmq-peer: scripted cosim device-side peer over ZeroMQ (test double for the HDL side)

usage: cosim-zmq-peer --endpoint <ipc:///path/name | tcp://host:port> [--max-seconds N] [--raw-echo]

  --endpoint E      base endpoint; binds E.h2d (or port), connects E.d2h (or port+1)
  --max-seconds N   exit after N seconds even if no GOODBYE arrives (default 120)
  --raw-echo        benchmark baseline: no protocol, echo every raw ZeroMQ message back on the
                    same two channels (exits on a 1-byte message)

Prints `cosim-zmq-peer: ready endpoint=E` on stderr once bound. Log filter: COSIM_LOG (default info).";

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
    let filter = tracing_subscriber::EnvFilter::try_from_env("COSIM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).without_time().try_init();
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
    let t = ZmqTransport::open(&ep, Side::Device, &ZmqOptions::default())?;
    eprintln!("cosim-zmq-peer: ready endpoint={ep}");
    let mut dev = DeviceLoop::device(t, format!("cosim-zmq-peer {ep}"), Caps::all(), sample_config());
    let start = Instant::now();
    let mut session = Session::default();
    while let Some(left) = max.checked_sub(start.elapsed()) {
        match dev.poll(left)? {
            Some(DeviceEvent::SessionStarted { .. }) => session = Session::default(),
            Some(DeviceEvent::Deliver(m)) => serve(&mut dev, &mut session, m)?,
            Some(DeviceEvent::SessionEnded(_)) => return Ok(()),
            // Host lost or back: the engine logs it; a new INIT starts a new session.
            Some(_) | None => {}
        }
    }
    eprintln!("cosim-zmq-peer: --max-seconds reached, exiting");
    dev.close()
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

fn serve(dev: &mut DeviceLoop<ZmqTransport>, s: &mut Session, msg: Message) -> Result<(), TransportError> {
    let stats = dev.engine().stats();
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
                dev.send(Message::DmaWrite(DmaWrite { addr: GuestAddr(n * len as u64), data }))?;
            }
            dev.send(Message::Msix(Msix { vector: 0 }))?;
        }
        Message::MmioRead(r) => {
            let data = if r.bar.get() != 0 {
                r.offset ^ u64::from(r.tag)
            } else {
                match r.offset {
                    0x0 => s.writes,
                    0x8 => s.hash,
                    0x10 => stats.drops.malformed + stats.drops.version,
                    0x18 => stats.discarded_before_init,
                    o => o ^ u64::from(r.tag),
                }
            };
            let data = data & r.size.mask();
            dev.send(Message::MmioReadResp(MmioReadResp { tag: r.tag, status: Status::Ok, data }))?;
        }
        Message::NicFrame(f) => {
            dev.send(Message::NicFrame(f))?;
        }
        Message::Serial(b) => {
            dev.send(Message::Serial(b))?;
        }
        _ => {}
    }
    Ok(())
}
