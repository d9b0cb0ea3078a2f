//! ZeroMQ transport: two PUSH -> PULL channels derived from one [`Endpoint`].

use std::os::unix::io::RawFd;
use std::time::{Duration, Instant};

use crate::access::{self, AccessThread, LinkKey};
use crate::shm::ShmLink;
use crate::shm_path::{shm_enabled_by_env, Route, ShmPath};
use crate::{Endpoint, Side, Transport, TransportError};

/// Socket options. The defaults suit both QEMU and the simulation.
#[derive(Debug, Clone)]
pub struct ZmqOptions {
    /// How long a send may wait while the peer's queue is full before failing.
    pub send_timeout: Duration,
    /// High-water mark (messages) of each direction's queue.
    pub hwm: i32,
    /// Shared key for tcp links (default: the file named by `COSIM_KEY_FILE`, if set). Required
    /// to leave loopback; both sides must have the same (docs/protocol.md, "Access control").
    pub key: LinkKey,
    /// Offer (host) or accept (device) the shared-memory link on `ipc://` endpoints (default:
    /// from `COSIM_SHM`, see [`crate::shm_enabled_by_env`]; docs/protocol.md, "Shared-memory
    /// link"). Ignored for tcp.
    pub shm: bool,
    /// How long this side, waiting for a frame on the shared-memory link, spins before it
    /// sleeps on its doorbell (default: from `COSIM_SHM_SPIN_US`, see
    /// [`crate::shm::spin_from_env`]).
    pub shm_spin: Duration,
}

impl Default for ZmqOptions {
    fn default() -> Self {
        Self { send_timeout: Duration::from_secs(5), hwm: 16 * 1024, key: LinkKey::FromEnv, shm: shm_enabled_by_env(), shm_spin: crate::shm::spin_from_env() }
    }
}

/// The real transport. Not `Sync`: one thread owns it.
pub struct ZmqTransport {
    // Field order matters: sockets must close before the context terminates.
    tx: zmq::Socket,
    rx: zmq::Socket,
    access: Option<AccessThread>,
    _ctx: zmq::Context,
    endpoint: Endpoint,
    connect_addr: String,
    send_timeout: Duration,
    next_redial: Instant,
    shm: Option<ShmPath>,
}

impl std::fmt::Debug for ZmqTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZmqTransport").field("endpoint", &self.endpoint).finish()
    }
}

fn zerr(op: &'static str) -> impl FnOnce(zmq::Error) -> TransportError {
    move |source| TransportError::Zmq { op, source }
}

impl ZmqTransport {
    /// Binds this side's receive channel and connects its send channel. Returns at once: the
    /// peer need not exist yet (messages queue until it connects, up to the high-water mark).
    /// Applies the access rules of `access.rs`: fails if a tcp endpoint leaves loopback without
    /// a key.
    pub fn open(endpoint: &Endpoint, side: Side, opts: &ZmqOptions) -> Result<Self, TransportError> {
        let key = access::key_for(endpoint, &opts.key)?;
        let ctx = zmq::Context::new();
        let (bind_addr, connect_addr) = endpoint.addrs_for(side);
        if let Endpoint::Ipc(p) = endpoint {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.is_dir() {
                    return Err(TransportError::Endpoint {
                        endpoint: endpoint.to_string(),
                        reason: format!("directory {} does not exist", dir.display()),
                    });
                }
            }
        }
        let shm = match endpoint {
            Endpoint::Ipc(base) if opts.shm => Some(ShmPath::new(side, base.clone(), opts.send_timeout, opts.shm_spin)),
            _ => None,
        };
        let rx = ctx.socket(zmq::PULL).map_err(zerr("socket"))?;
        let tx = ctx.socket(zmq::PUSH).map_err(zerr("socket"))?;
        // The ZAP handler must be bound before the receive socket accepts anyone.
        let access = match &key {
            Some(k) => {
                access::apply_key(&rx, &tx, k)?;
                Some(AccessThread::start(&ctx, &tx, k.clone(), format!("{endpoint} ({side:?})"))?)
            }
            None => None,
        };
        if bind_addr.contains('[') || connect_addr.contains('[') {
            rx.set_ipv6(true).map_err(zerr("setsockopt"))?;
            tx.set_ipv6(true).map_err(zerr("setsockopt"))?;
        }
        rx.set_linger(0).map_err(zerr("setsockopt"))?;
        rx.set_rcvhwm(opts.hwm).map_err(zerr("setsockopt"))?;
        rx.bind(&bind_addr).map_err(|source| TransportError::Bind { addr: bind_addr.clone(), source })?;
        access::protect_ipc_socket(&bind_addr)?;
        // A short linger lets a GOODBYE sent just before close reach the peer.
        tx.set_linger(200).map_err(zerr("setsockopt"))?;
        tx.set_sndhwm(opts.hwm).map_err(zerr("setsockopt"))?;
        tx.set_sndtimeo(opts.send_timeout.as_millis().min(i32::MAX as u128) as i32).map_err(zerr("setsockopt"))?;
        tx.set_reconnect_ivl(20).map_err(zerr("setsockopt"))?;
        tx.set_reconnect_ivl_max(200).map_err(zerr("setsockopt"))?;
        tx.connect(&connect_addr).map_err(|source| TransportError::Connect { addr: connect_addr.clone(), source })?;
        let mut shm = shm;
        if let Some(p) = &mut shm {
            p.watch_zmq(rx.get_fd().map_err(zerr("getsockopt ZMQ_FD"))?)?;
        }
        tracing::debug!(%endpoint, ?side, bind = %bind_addr, connect = %connect_addr, keyed = key.is_some(), "zmq transport open");
        Ok(Self {
            tx,
            rx,
            access,
            _ctx: ctx,
            endpoint: endpoint.clone(),
            connect_addr,
            send_timeout: opts.send_timeout,
            next_redial: Instant::now(),
            shm,
        })
    }

    /// The address the receive channel is bound to, as ZeroMQ reports it (`ZMQ_LAST_ENDPOINT`).
    pub fn bound_addr(&self) -> Result<String, TransportError> {
        match self.rx.get_last_endpoint().map_err(zerr("getsockopt ZMQ_LAST_ENDPOINT"))? {
            Ok(s) => Ok(s),
            Err(raw) => Ok(String::from_utf8_lossy(&raw).into_owned()),
        }
    }

    /// True if this transport uses a key (a keyed tcp link).
    pub fn keyed(&self) -> bool {
        self.access.is_some()
    }

    /// Incoming connections the access control refused so far (wrong key; keyed tcp only). A
    /// peer with no key at all fails the handshake before it is counted here.
    pub fn refused_connections(&self) -> u64 {
        self.access.as_ref().map_or(0, AccessThread::rejected)
    }

    /// Times the peer refused our outgoing connection (keyed tcp only).
    pub fn refused_by_peer(&self) -> u64 {
        self.access.as_ref().map_or(0, AccessThread::refused_by_peer)
    }

    /// libzmq gives up for good on a connection whose handshake failed (the peer refused our
    /// key, or has none). A keyed transport dials again, at most every 200 ms, so the link
    /// comes up once the peer is fixed or restarted.
    fn redial_if_refused(&mut self) {
        let Some(a) = &self.access else { return };
        if !a.redial_pending() || Instant::now() < self.next_redial {
            return;
        }
        a.clear_redial();
        self.next_redial = Instant::now() + Duration::from_millis(200);
        let _ = self.tx.disconnect(&self.connect_addr);
        if let Err(e) = self.tx.connect(&self.connect_addr) {
            tracing::warn!(target: "cosim::access", addr = %self.connect_addr, error = %e, "cannot reconnect");
        }
    }

    /// The endpoint this transport was opened on.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The descriptor to poll for incoming frames: ZeroMQ's notification descriptor of the
    /// receive channel (`ZMQ_FD`), or, with the shared-memory link enabled, an epoll descriptor
    /// that also covers the ring's doorbell. Treat it as edge-triggered: when it becomes
    /// readable, drain with `recv(Duration::ZERO)` until `None` and [`Self::readable`] is false.
    pub fn notify_fd(&self) -> Result<RawFd, TransportError> {
        match self.shm.as_ref().and_then(ShmPath::notify_fd) {
            Some(fd) => Ok(fd),
            None => self.rx.get_fd().map_err(zerr("getsockopt ZMQ_FD")),
        }
    }

    /// True if a frame is waiting (checks `ZMQ_EVENTS` and the ring; also re-arms the edge of
    /// [`Self::notify_fd`]: call it before sleeping on that descriptor).
    pub fn readable(&self) -> Result<bool, TransportError> {
        if let Some(ring) = self.shm.as_ref().and_then(ShmPath::ring_ref) {
            // A broken ring counts as readable: the next receive reports it and falls back.
            if ring.arm().unwrap_or(true) {
                return Ok(true);
            }
        }
        let ev = self.rx.get_events().map_err(zerr("getsockopt ZMQ_EVENTS"))?;
        Ok(ev.contains(zmq::POLLIN))
    }

    /// With the shared-memory link active: how long a waiting side spins and whether a frame is
    /// in the ring now (without arming the doorbell), for an event loop that spins briefly
    /// before it sleeps on [`Self::notify_fd`]. `None` without an active ring.
    pub fn ring_spin_hint(&self) -> Option<(Duration, bool)> {
        self.shm.as_ref().and_then(ShmPath::ring_ref).map(|r| (r.spin(), r.has_frames()))
    }

    /// True while this side's session runs over the shared-memory link.
    pub fn shm_active(&self) -> bool {
        self.shm.as_ref().is_some_and(ShmPath::active)
    }

    fn recv_zmq(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        match self.rx.recv_bytes(zmq::DONTWAIT) {
            Ok(b) => {
                if let Some(p) = &mut self.shm {
                    p.saw_zmq_frame(&b);
                }
                Ok(Some(b))
            }
            Err(zmq::Error::EAGAIN) => Ok(None),
            Err(e) => Err(TransportError::Zmq { op: "recv", source: e }),
        }
    }

    /// Waits on ZeroMQ alone until `deadline` (returns early, with nothing, on a signal).
    fn recv_zmq_until(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>, TransportError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().clamp(1, i64::MAX as u128) as i64;
        let mut items = [self.rx.as_poll_item(zmq::POLLIN)];
        let n = match zmq::poll(&mut items, ms) {
            Ok(n) => n,
            Err(zmq::Error::EINTR) => 0,
            Err(e) => return Err(TransportError::Zmq { op: "poll", source: e }),
        };
        if n == 0 {
            return Ok(None);
        }
        self.recv_zmq()
    }

    /// One frame from the ring without waiting (a failed ring falls back to ZeroMQ).
    fn recv_ring(&mut self) -> Option<Vec<u8>> {
        let ring = self.shm.as_mut()?.ring()?;
        match ring.try_recv() {
            Ok(f) => f,
            Err(e) => {
                self.shm.as_mut().expect("ring").failed(&e);
                None
            }
        }
    }

    /// Waits up to `deadline` for a frame on the ring or on ZeroMQ (ring active): spins on the
    /// ring briefly, then sleeps on the ring's doorbell and ZeroMQ's descriptor together.
    fn recv_both(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>, TransportError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // The ring failed (or went) meanwhile: ZeroMQ for the rest of the wait.
            let Some(ring) = self.shm.as_mut().and_then(ShmPath::ring) else {
                return match self.recv_zmq()? {
                    Some(f) => Ok(Some(f)),
                    None => self.recv_zmq_until(deadline),
                };
            };
            match ring.spin_recv(left) {
                Ok(Some(f)) => return Ok(Some(f)),
                Ok(None) => {}
                Err(e) => {
                    self.shm.as_mut().expect("ring").failed(&e);
                    continue;
                }
            }
            if let Some(f) = self.recv_zmq()? {
                return Ok(Some(f));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            // `readable` arms the doorbell and re-arms ZeroMQ's descriptor: then sleep on both.
            if self.readable()? {
                continue;
            }
            let zfd = self.rx.get_fd().map_err(zerr("getsockopt ZMQ_FD"))?;
            let Some(bell) = self.shm.as_ref().and_then(ShmPath::ring_ref).map(ShmLink::bell_fd) else { continue };
            crate::shm::poll_readable(&[bell, zfd], left);
        }
    }
}

/// Waits up to `timeout` until at least one of `transports` has a frame to receive (returns
/// early, with nothing ready, when a signal interrupts the wait). For a process that serves
/// several links from one thread (the mediator): wait here, then drain each with
/// `recv_frame(Duration::ZERO)`. Covers the shared-memory rings of the transports that use one.
pub fn wait_any(transports: &[&ZmqTransport], timeout: Duration) -> Result<(), TransportError> {
    let mut bells = Vec::new();
    for t in transports {
        if let Some(ring) = t.shm.as_ref().and_then(ShmPath::ring_ref) {
            // A frame already waiting (or a broken ring, which the next receive reports): no sleep.
            if ring.arm().unwrap_or(true) {
                return Ok(());
            }
            bells.push(ring.bell_fd());
        }
    }
    let mut items: Vec<zmq::PollItem<'_>> = transports.iter().map(|t| t.rx.as_poll_item(zmq::POLLIN)).collect();
    items.extend(bells.iter().map(|&fd| zmq::PollItem::from_fd(fd, zmq::POLLIN)));
    let ms = timeout.as_millis().min(i64::MAX as u128) as i64;
    match zmq::poll(&mut items, ms) {
        Ok(_) | Err(zmq::Error::EINTR) => Ok(()),
        Err(e) => Err(TransportError::Zmq { op: "poll", source: e }),
    }
}

impl Transport for ZmqTransport {
    fn send_frame(&mut self, frame: &[u8]) -> Result<(), TransportError> {
        self.redial_if_refused();
        let changed = match self.shm.as_mut().map(|p| p.route_send(frame)) {
            None | Some(Ok(Route::Zmq(None))) => None,
            Some(Ok(Route::Zmq(Some(f)))) => Some(f),
            Some(Ok(Route::Sent)) => return Ok(()),
            Some(Err(crate::shm::ShmError::Full(t))) => return Err(TransportError::SendTimeout(t)),
            Some(Err(e)) => {
                self.shm.as_mut().expect("shm").failed(&e);
                return Err(TransportError::Shm(e));
            }
        };
        let frame = changed.as_deref().unwrap_or(frame);
        match self.tx.send(frame, 0) {
            Ok(()) => Ok(()),
            Err(zmq::Error::EAGAIN) => Err(TransportError::SendTimeout(self.send_timeout)),
            Err(e) => Err(TransportError::Zmq { op: "send", source: e }),
        }
    }

    fn recv_frame(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, TransportError> {
        self.redial_if_refused();
        if let Some(f) = self.recv_ring() {
            return Ok(Some(f));
        }
        if let Some(f) = self.recv_zmq()? {
            return Ok(Some(f));
        }
        if timeout.is_zero() {
            return Ok(None);
        }
        if self.shm_active() {
            return self.recv_both(Instant::now() + timeout);
        }
        self.recv_zmq_until(Instant::now() + timeout)
    }
}
