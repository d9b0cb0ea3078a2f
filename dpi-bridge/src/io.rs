//! The I/O thread of one endpoint: owns the ZeroMQ transport (device side) and follows the
//! session rules (docs/protocol.md): discard until INIT, answer every INIT with CONFIG, refuse
//! another major version, heartbeats and liveness, drop malformed frames with a warning.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cosim_protocol::liveness::{Liveness, PeerEvent};
use cosim_protocol::*;
use cosim_transport::{Endpoint, Side, Transport, TransportError, ZmqOptions, ZmqTransport};

use crate::link::{IoLink, SharedStats, ToIo, ToSim};

/// What the device announces in CONFIG.
#[derive(Debug, Clone)]
pub(crate) struct IoConfig {
    pub(crate) name: String,
    pub(crate) device: DeviceConfig,
    pub(crate) caps: Caps,
}

/// Opens the transport on the caller's thread (so bind errors are reported at once) and
/// starts the I/O thread.
pub(crate) fn spawn(
    endpoint: &Endpoint,
    cfg: IoConfig,
    link: IoLink,
    stats: Arc<SharedStats>,
) -> Result<JoinHandle<()>, crate::BridgeError> {
    let opts = ZmqOptions { send_timeout: Duration::from_millis(500), ..ZmqOptions::default() };
    let transport = ZmqTransport::open(endpoint, Side::Device, &opts)?;
    let name = format!("cosim-io-{}", cfg.name);
    let h = std::thread::Builder::new()
        .name(name.chars().take(15).collect())
        .spawn(move || Io::new(transport, cfg, link, stats).run())
        .map_err(|e| crate::BridgeError::Thread(e.to_string()))?;
    Ok(h)
}

struct Io {
    t: ZmqTransport,
    cfg: IoConfig,
    link: IoLink,
    stats: Arc<SharedStats>,
    liveness: Liveness,
    instance: u64,
    session: Option<u64>,
    host_lost: bool,
    discarded: u64,
    send_failures: u64,
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}

impl Io {
    fn new(t: ZmqTransport, cfg: IoConfig, link: IoLink, stats: Arc<SharedStats>) -> Self {
        Self {
            t,
            cfg,
            link,
            stats,
            liveness: Liveness::new(),
            instance: random_u64(),
            session: None,
            host_lost: false,
            discarded: 0,
            send_failures: 0,
        }
    }

    fn send(&mut self, m: &Message) {
        if let Err(e) = self.t.send(m) {
            self.send_failures += 1;
            if self.send_failures.is_power_of_two() {
                tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, error = %e, opcode = ?m.opcode(),
                    failures = self.send_failures, "send to the host failed; message dropped");
            }
        }
    }

    fn run(mut self) {
        let fd = match self.t.notify_fd() {
            Ok(fd) => fd,
            Err(e) => {
                tracing::error!(target: "cosim::dpi", ep = %self.cfg.name, error = %e, "no ZeroMQ notification fd; I/O thread stops");
                return;
            }
        };
        loop {
            // 1. Outbound, in the order the simulation produced it.
            loop {
                match self.link.rx.try_recv() {
                    Ok(ToIo::Send(m)) => {
                        if self.session.is_some() {
                            self.send(&m);
                        }
                    }
                    Ok(ToIo::Shutdown) | Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        self.send(&Message::Goodbye(GoodbyeReason::Shutdown));
                        tracing::debug!(target: "cosim::dpi", ep = %self.cfg.name, discarded = self.discarded, "I/O thread stops");
                        return;
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                }
            }
            // 2. Inbound until ZMQ_EVENTS says empty (this also re-arms the edge-triggered fd).
            loop {
                match self.t.readable() {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        tracing::error!(target: "cosim::dpi", ep = %self.cfg.name, error = %e, "ZeroMQ events failed");
                        std::thread::sleep(Duration::from_millis(10));
                        break;
                    }
                }
                match self.t.recv(Duration::ZERO) {
                    Ok(Some(m)) => self.on_message(m),
                    Ok(None) => break,
                    Err(TransportError::Decode(e)) => self.on_malformed(e),
                    Err(e) => {
                        tracing::error!(target: "cosim::dpi", ep = %self.cfg.name, error = %e, "receive failed");
                        break;
                    }
                }
            }
            // 3. Timers.
            let now = Instant::now();
            if self.liveness.heartbeat_due(now) {
                self.send(&Message::Heartbeat(Heartbeat { instance: self.instance }));
            }
            if self.liveness.poll(now) == PeerEvent::Lost && self.session.is_some() {
                self.host_lost = true;
                tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name,
                    "host lost: nothing received for {LIVENESS_TIMEOUT_MS} ms; simulation continues, waiting for the host");
                self.link.to_sim(ToSim::HostLost);
            }
            // 4. Sleep until a frame arrives, the simulation queues something, or a heartbeat is due.
            self.link.waker.set_sleeping(true);
            if !self.link.rx.is_empty() {
                self.link.waker.set_sleeping(false);
                continue;
            }
            let mut fds = [
                libc::pollfd { fd, events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.link.waker.raw_fd(), events: libc::POLLIN, revents: 0 },
            ];
            // SAFETY: `fds` is a live array of two pollfd structs and its length is passed.
            let _ = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, (HEARTBEAT_INTERVAL_MS / 2) as i32) };
            self.link.waker.set_sleeping(false);
            if fds[1].revents != 0 {
                self.link.waker.drain();
            }
        }
    }

    fn on_malformed(&mut self, e: DecodeError) {
        SharedStats::add(&self.stats.malformed, 1);
        if let DecodeError::VersionMismatch { ours, theirs } = e {
            tracing::error!(target: "cosim::dpi", ep = %self.cfg.name,
                "host speaks protocol {theirs}.x, this simulation speaks {ours}.x: refusing (GOODBYE Refused)");
            self.send(&Message::Goodbye(GoodbyeReason::Refused));
            return;
        }
        tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, error = %e, "malformed message from the host dropped");
    }

    fn on_message(&mut self, m: Message) {
        let hb = if let Message::Heartbeat(h) = &m { Some(h.instance) } else { None };
        let ev = self.liveness.on_receive(Instant::now(), hb);
        if self.host_lost && ev != PeerEvent::None {
            self.host_lost = false;
            tracing::info!(target: "cosim::dpi", ep = %self.cfg.name, "host is back");
            self.link.to_sim(ToSim::HostBack);
        }
        match m {
            Message::Init(i) => {
                if i.major != VERSION_MAJOR {
                    tracing::error!(target: "cosim::dpi", ep = %self.cfg.name,
                        "host INIT has protocol {}.{}, this simulation speaks {VERSION_MAJOR}.{VERSION_MINOR}: refusing", i.major, i.minor);
                    self.send(&Message::Goodbye(GoodbyeReason::Refused));
                    return;
                }
                self.send(&Message::Config(Config {
                    major: VERSION_MAJOR,
                    minor: VERSION_MINOR,
                    caps: self.cfg.caps,
                    session: i.session,
                    device: self.cfg.device.clone(),
                }));
                if self.session != Some(i.session) {
                    tracing::info!(target: "cosim::dpi", ep = %self.cfg.name, session = format_args!("{:#x}", i.session), "host session started");
                    self.session = Some(i.session);
                    self.link.to_sim(ToSim::NewSession);
                }
            }
            _ if self.session.is_none() => {
                self.discarded += 1;
                tracing::debug!(target: "cosim::dpi", ep = %self.cfg.name, "message before INIT discarded");
            }
            Message::Heartbeat(_) => {}
            Message::Goodbye(r) => {
                tracing::info!(target: "cosim::dpi", ep = %self.cfg.name, reason = ?r, "host said goodbye");
                self.liveness.on_goodbye();
                self.session = None;
                self.link.to_sim(ToSim::Goodbye);
            }
            m @ (Message::MmioRead(_)
            | Message::MmioWrite(_)
            | Message::DmaReadResp(_)
            | Message::NicFrame(_)
            | Message::Serial(_)
            | Message::Reset) => self.link.to_sim(ToSim::Msg(m)),
            other => {
                SharedStats::add(&self.stats.malformed, 1);
                tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, opcode = ?other.opcode(),
                    "message a host never sends (device-to-host opcode) dropped");
            }
        }
    }
}
