//! When a [`crate::ZmqTransport`] on an `ipc://` endpoint carries frames through the shared
//! rings of [`crate::shm`] instead of ZeroMQ (docs/protocol.md, "Shared-memory link").
//!
//! The session engines do not know: this module watches the session frames that pass (INIT,
//! CONFIG, HEARTBEAT, GOODBYE, through [`SessionFrame::peek`]) and switches per session.
//!
//! - Host: each INIT with a new session number gets a fresh mapping for that session; INIT
//!   says [`Caps::SHM`] only if the mapping exists. INIT always goes over ZeroMQ. A CONFIG of
//!   that session with SHM (received over ZeroMQ) switches both directions to the rings: every
//!   later frame of the device comes through the ring, so the host reads the ring only from there.
//! - Device: a CONFIG answering an INIT that offered SHM attaches to the host's mapping; if that
//!   works the CONFIG says SHM and is the last frame of the session sent over ZeroMQ; if not,
//!   it says nothing and both sides stay on ZeroMQ (with a log line).
//! - Either side: a HEARTBEAT or GOODBYE of another session number (a side between sessions,
//!   a refusal) goes over ZeroMQ, as does everything while no ring is active. ZeroMQ is always
//!   read too: a restarted peer or another host speaks there.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use cosim_protocol::{Caps, Opcode, SessionFrame};

use crate::shm::{Epoll, ShmError, ShmLink, DEFAULT_CAPACITY};
use crate::Side;

/// Environment variable that turns the shared-memory link on (`1`, `on`, `yes`, `true`) or off
/// (`0`, `off`, `no`, `false`); unset or anything else: [`SHM_DEFAULT`].
pub const SHM_ENV: &str = "COSIM_SHM";

/// Whether ipc endpoints use the shared-memory link when `COSIM_SHM` does not say.
pub const SHM_DEFAULT: bool = true;

/// Log target of the link's switches and fallbacks.
const LOG: &str = "cosim::shm";

/// What `COSIM_SHM` says, else [`SHM_DEFAULT`].
pub fn shm_enabled_by_env() -> bool {
    match std::env::var(SHM_ENV).map(|v| v.trim().to_ascii_lowercase()) {
        Ok(v) if matches!(v.as_str(), "1" | "on" | "yes" | "true") => true,
        Ok(v) if matches!(v.as_str(), "0" | "off" | "no" | "false") => false,
        _ => SHM_DEFAULT,
    }
}

/// Where a frame to send goes.
pub(crate) enum Route {
    /// Over ZeroMQ, as given (or changed: INIT and CONFIG get their SHM bit set or cleared).
    Zmq(Option<Vec<u8>>),
    /// Already sent through the ring.
    Sent,
}

/// The shared-memory state of one transport.
pub(crate) struct ShmPath {
    side: Side,
    base: PathBuf,
    name: String,
    /// The ring this side's session runs over (frames go through it while it is set).
    link: Option<ShmLink>,
    /// Host: the mapping offered with the latest INIT, until its CONFIG says yes or no. The
    /// ring in use stays until then (a stray INIT must not take a live session's ring away).
    offer: Option<ShmLink>,
    /// Device: sessions whose INIT offered SHM (the last few).
    offered: VecDeque<u64>,
    epoll: Option<Epoll>,
    send_timeout: Duration,
    /// How long a wait on the ring spins before sleeping ([`ShmLink::set_spin`]).
    spin: Duration,
    fallbacks: u64,
}

impl ShmPath {
    pub(crate) fn new(side: Side, base: PathBuf, send_timeout: Duration, spin: Duration) -> Self {
        let name = base.display().to_string();
        Self {
            side,
            base,
            name,
            link: None,
            offer: None,
            offered: VecDeque::new(),
            epoll: None,
            send_timeout,
            spin,
            fallbacks: 0,
        }
    }

    /// True while frames of this side go through a ring.
    pub(crate) fn active(&self) -> bool {
        self.link.is_some()
    }

    /// Creates the epoll descriptor that [`ShmPath::notify_fd`] returns, covering ZeroMQ's
    /// `zmq_fd` and (later) the active ring's doorbell.
    pub(crate) fn watch_zmq(&mut self, zmq_fd: std::os::fd::RawFd) -> Result<(), ShmError> {
        let e = Epoll::new()?;
        e.watch(zmq_fd, true)?;
        self.epoll = Some(e);
        Ok(())
    }

    /// See [`ShmPath::watch_zmq`].
    pub(crate) fn notify_fd(&self) -> Option<std::os::fd::RawFd> {
        self.epoll.as_ref().map(Epoll::raw_fd)
    }

    /// Makes `l` the ring of this side's session (replacing any other).
    fn activate(&mut self, mut l: ShmLink) {
        self.drop_link();
        l.set_spin(self.spin);
        if let Some(e) = &self.epoll {
            if let Err(err) = e.watch(l.bell_fd(), true) {
                tracing::warn!(target: LOG, "{}: {err}", self.name);
            }
        }
        tracing::info!(target: LOG, "{}: session {:#x} runs over shared memory ({:?} side)", self.name, l.session(), self.side);
        self.link = Some(l);
    }

    /// Back to ZeroMQ (a new session, or the ring failed).
    fn drop_link(&mut self) {
        if let Some(l) = self.link.take() {
            if let Some(e) = &self.epoll {
                let _ = e.watch(l.bell_fd(), false);
            }
        }
    }

    fn fallback(&mut self, what: &str, e: &dyn std::fmt::Display) {
        self.fallbacks += 1;
        if self.fallbacks <= 3 || self.fallbacks.is_power_of_two() {
            tracing::warn!(target: LOG, "{}: {what}: {e}; continuing over ZeroMQ", self.name);
        }
    }

    /// A ring that failed: back to ZeroMQ; the session's liveness decides what happens next.
    pub(crate) fn failed(&mut self, e: &ShmError) {
        self.fallback("shared-memory link failed", e);
        self.drop_link();
    }

    fn ring_session(&self) -> Option<u64> {
        self.link.as_ref().map(ShmLink::session)
    }

    /// Decides where `frame` goes; sends it through the ring when that is the answer.
    pub(crate) fn route_send(&mut self, frame: &[u8]) -> Result<Route, ShmError> {
        let peek = SessionFrame::peek(frame);
        match (self.side, peek) {
            (Side::Host, Some(SessionFrame { opcode: Opcode::Init, session, .. })) => {
                let offered = self.offer.as_ref().map(ShmLink::session) == Some(session);
                if !offered && self.ring_session() != Some(session) {
                    self.offer = None;
                    match ShmLink::create(&self.base, session, DEFAULT_CAPACITY) {
                        Ok(l) => self.offer = Some(l),
                        Err(e) => self.fallback("cannot create the shared mapping", &e),
                    }
                }
                let shm =
                    self.offer.as_ref().map(ShmLink::session) == Some(session) || self.ring_session() == Some(session);
                let mut f = frame.to_vec();
                SessionFrame::set_cap(&mut f, Caps::SHM, shm);
                return Ok(Route::Zmq(Some(f)));
            }
            (Side::Device, Some(SessionFrame { opcode: Opcode::Config, session, .. }))
                if self.ring_session() != Some(session) =>
            {
                // The device starts another session: the old ring goes whatever happens next.
                self.drop_link();
                if self.offered.contains(&session) {
                    match ShmLink::attach(&self.base, session) {
                        Ok(l) => self.activate(l),
                        Err(e) => self.fallback("cannot attach the host's shared mapping", &e),
                    }
                }
                let mut f = frame.to_vec();
                SessionFrame::set_cap(&mut f, Caps::SHM, self.link.is_some());
                return Ok(Route::Zmq(Some(f)));
            }
            (_, Some(SessionFrame { opcode: Opcode::Heartbeat | Opcode::Goodbye, session, .. }))
                if self.ring_session() != Some(session) =>
            {
                return Ok(Route::Zmq(None));
            }
            _ => {}
        }
        let Some(link) = self.link.as_mut() else { return Ok(Route::Zmq(None)) };
        if let Some(SessionFrame { opcode: Opcode::Config, .. }) = peek {
            // A CONFIG repeated for a repeated INIT, on the ring of its session.
            let mut f = frame.to_vec();
            SessionFrame::set_cap(&mut f, Caps::SHM, true);
            link.send(&f, self.send_timeout)?;
        } else {
            link.send(frame, self.send_timeout)?;
        }
        Ok(Route::Sent)
    }

    /// Looks at a frame received over ZeroMQ: the host switches on the CONFIG that answers its
    /// offer; the device remembers which INITs offered a mapping.
    pub(crate) fn saw_zmq_frame(&mut self, frame: &[u8]) {
        let Some(p) = SessionFrame::peek(frame) else { return };
        match (self.side, p.opcode) {
            (Side::Host, Opcode::Config) if self.offer.as_ref().map(ShmLink::session) == Some(p.session) => {
                let mut offer = self.offer.take().expect("checked");
                if p.caps.contains(Caps::SHM) {
                    // The device has opened the names: they can go.
                    offer.unlink();
                    self.activate(offer);
                } else {
                    tracing::info!(target: LOG, "{}: the device does not use shared memory; session {:#x} runs over ZeroMQ",
                        self.name, p.session);
                    self.drop_link();
                }
            }
            (Side::Device, Opcode::Init) if p.caps.contains(Caps::SHM) && !self.offered.contains(&p.session) => {
                if self.offered.len() >= 8 {
                    self.offered.pop_front();
                }
                self.offered.push_back(p.session);
            }
            _ => {}
        }
    }

    /// The active ring, if any, to look at (arm its doorbell).
    pub(crate) fn ring_ref(&self) -> Option<&ShmLink> {
        self.link.as_ref()
    }

    /// The active ring, if any.
    pub(crate) fn ring(&mut self) -> Option<&mut ShmLink> {
        self.link.as_mut()
    }
}
