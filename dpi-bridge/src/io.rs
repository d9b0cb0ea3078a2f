//! The I/O thread of one endpoint: owns the ZeroMQ transport (device side) and the clock of the
//! session, and drives the shared device-side session engine
//! ([`cosim_protocol::session::DeviceSession`]): it feeds the engine every frame and timer tick,
//! sends what the engine sends, and hands the session's traffic to the simulation thread.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cosim_protocol::liveness::random_id;
use cosim_protocol::session::{DeviceEvent, DeviceSession, DeviceSessionConfig, Timing};
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
    session: DeviceSession,
    send_failures: u64,
}

impl Io {
    fn new(t: ZmqTransport, cfg: IoConfig, link: IoLink, stats: Arc<SharedStats>) -> Self {
        let session = DeviceSession::new(DeviceSessionConfig {
            name: format!("endpoint {}", cfg.name),
            caps: cfg.caps,
            device: cfg.device.clone(),
            instance: random_id(),
            timing: Timing::default(),
        });
        Self { t, cfg, link, stats, session, send_failures: 0 }
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

    /// Carries out what the session engine asked for, in order, and publishes its counters.
    fn run_events(&mut self) {
        while let Some(ev) = self.session.poll_event() {
            match ev {
                DeviceEvent::Send(m) => self.send(&m),
                DeviceEvent::SessionStarted { .. } => self.link.to_sim(ToSim::NewSession),
                DeviceEvent::Deliver(m) => self.link.to_sim(ToSim::Msg(m)),
                DeviceEvent::HostLost => self.link.to_sim(ToSim::HostLost),
                DeviceEvent::HostBack => self.link.to_sim(ToSim::HostBack),
                DeviceEvent::SessionEnded(_) => self.link.to_sim(ToSim::Goodbye),
            }
        }
        let s = self.session.stats();
        let set = |c: &std::sync::atomic::AtomicU64, v: u64| c.store(v, std::sync::atomic::Ordering::Relaxed);
        set(&self.stats.malformed, s.drops.malformed + s.drops.version);
        set(&self.stats.dropped, s.drops.total());
        set(&self.stats.sessions, s.sessions);
    }

    /// Over the shared-memory link, looks for work for up to the link's spin time (yielding the
    /// CPU between looks) before the loop sleeps: a frame in the ring or a message from the
    /// simulation. Saves two wake-ups per MMIO read when the two sides answer each other
    /// quickly. True if there is work.
    fn spin_on_ring(&self) -> bool {
        let Some((spin, _)) = self.t.ring_spin_hint() else { return false };
        let t0 = Instant::now();
        loop {
            if !self.link.rx.is_empty() || self.t.ring_spin_hint().is_none_or(|(_, ready)| ready) {
                return true;
            }
            if t0.elapsed() >= spin {
                return false;
            }
            std::thread::yield_now();
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
                        self.session.send(m);
                    }
                    Ok(ToIo::Shutdown) | Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        self.session.close();
                        self.run_events();
                        let s = self.session.stats();
                        if s.drops.total() > 0 {
                            tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, "frames dropped on the link: {}", s.drops);
                        }
                        tracing::debug!(target: "cosim::dpi", ep = %self.cfg.name, stats = ?s, "I/O thread stops");
                        return;
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                }
            }
            self.run_events();
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
                    Ok(Some(m)) => self.session.handle_message(Instant::now(), m),
                    Ok(None) => break,
                    Err(TransportError::Decode(e)) => self.session.handle_decode_error(Instant::now(), e),
                    Err(e) => {
                        tracing::error!(target: "cosim::dpi", ep = %self.cfg.name, error = %e, "receive failed");
                        break;
                    }
                }
                self.run_events();
            }
            // 3. Timers.
            self.session.handle_timeout(Instant::now());
            self.run_events();
            if self.spin_on_ring() {
                continue;
            }
            // 4. Sleep until a frame arrives, the simulation queues something, or a timer is due.
            self.link.waker.set_sleeping(true);
            if !self.link.rx.is_empty() {
                self.link.waker.set_sleeping(false);
                continue;
            }
            let now = Instant::now();
            let wait_ms = self.session.next_timeout(now).saturating_duration_since(now).as_millis().clamp(1, 1000) as i32;
            let mut fds = [
                libc::pollfd { fd, events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.link.waker.raw_fd(), events: libc::POLLIN, revents: 0 },
            ];
            // SAFETY: `fds` is a live array of two pollfd structs and its length is passed.
            let _ = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
            self.link.waker.set_sleeping(false);
            if fds[1].revents != 0 {
                self.link.waker.drain();
            }
        }
    }
}
