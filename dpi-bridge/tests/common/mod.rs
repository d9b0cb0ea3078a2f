//! Helpers shared by the bridge's integration tests: an endpoint on a private ipc path, the
//! test thread playing the simulation, a raw host-side ZeroMQ transport playing the host.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use cosim_dpi_bridge::{Ep, EpBuilder};
use cosim_protocol::*;
use cosim_transport::{Endpoint, Side, Transport, ZmqOptions, ZmqTransport};

pub fn endpoint() -> Result<(tempfile::TempDir, String)> {
    let dir = tempfile::Builder::new().prefix("cosim-dpi-").tempdir_in("/tmp")?;
    let ep = format!("ipc://{}/dev", dir.path().display());
    Ok((dir, ep))
}

pub fn start(ep: &str) -> Result<Ep> {
    let mut b = EpBuilder::new("test", ep);
    b.ids(0x1ded, 0x1234, 0x1ded, 1, 0x12_0000, 1);
    b.bar(0, 0x1000, false, false, 0)?;
    b.bar(2, 0x4000, true, false, 0)?;
    b.msix(MsixConfig { vectors: 2, table_bar: 2, table_offset: 0, pba_bar: 2, pba_offset: 0x2000 });
    Ok(b.start()?)
}

pub fn host(ep: &str) -> Result<ZmqTransport> {
    Ok(ZmqTransport::open(&Endpoint::parse(ep)?, Side::Host, &ZmqOptions::default())?)
}

pub fn init(session: u64) -> Message {
    init_after(session, 0)
}

/// An INIT from the host whose previous session was `prev` (docs/protocol.md, rule 1).
pub fn init_after(session: u64, prev: u64) -> Message {
    Message::Init(Init { major: VERSION_MAJOR, minor: VERSION_MINOR, caps: Caps::empty(), session, prev_session: prev })
}

/// Receives until `pred` matches (other messages, e.g. heartbeats, are skipped), ticking the sim.
pub fn expect(
    h: &mut ZmqTransport,
    ep: &mut Ep,
    what: &str,
    mut pred: impl FnMut(&Message) -> bool,
) -> Result<Message> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        ep.core.tick();
        if let Some(m) = h.recv(Duration::from_millis(5))? {
            if pred(&m) {
                return Ok(m);
            }
        }
    }
    bail!("no {what} within 5 s")
}

pub fn tick_until(ep: &mut Ep, mask: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ep.core.tick() & mask != 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}
