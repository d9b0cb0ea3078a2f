//! ZeroMQ transport: two PUSH -> PULL channels derived from one [`Endpoint`].

use std::os::unix::io::RawFd;
use std::time::Duration;

use crate::{Endpoint, Side, Transport, TransportError};

/// Socket options. The defaults suit both QEMU and the simulation.
#[derive(Debug, Clone)]
pub struct ZmqOptions {
    /// How long a send may wait while the peer's queue is full before failing.
    pub send_timeout: Duration,
    /// High-water mark (messages) of each direction's queue.
    pub hwm: i32,
}

impl Default for ZmqOptions {
    fn default() -> Self {
        Self { send_timeout: Duration::from_secs(5), hwm: 16 * 1024 }
    }
}

/// The real transport. Not `Sync`: one thread owns it.
pub struct ZmqTransport {
    // Field order matters: sockets must close before the context terminates.
    tx: zmq::Socket,
    rx: zmq::Socket,
    _ctx: zmq::Context,
    endpoint: Endpoint,
    send_timeout: Duration,
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
    pub fn open(endpoint: &Endpoint, side: Side, opts: &ZmqOptions) -> Result<Self, TransportError> {
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
        let rx = ctx.socket(zmq::PULL).map_err(zerr("socket"))?;
        rx.set_linger(0).map_err(zerr("setsockopt"))?;
        rx.set_rcvhwm(opts.hwm).map_err(zerr("setsockopt"))?;
        rx.bind(&bind_addr).map_err(|source| TransportError::Bind { addr: bind_addr.clone(), source })?;
        let tx = ctx.socket(zmq::PUSH).map_err(zerr("socket"))?;
        // A short linger lets a GOODBYE sent just before close reach the peer.
        tx.set_linger(200).map_err(zerr("setsockopt"))?;
        tx.set_sndhwm(opts.hwm).map_err(zerr("setsockopt"))?;
        tx.set_sndtimeo(opts.send_timeout.as_millis().min(i32::MAX as u128) as i32).map_err(zerr("setsockopt"))?;
        tx.set_reconnect_ivl(20).map_err(zerr("setsockopt"))?;
        tx.set_reconnect_ivl_max(200).map_err(zerr("setsockopt"))?;
        tx.connect(&connect_addr).map_err(|source| TransportError::Connect { addr: connect_addr.clone(), source })?;
        tracing::debug!(%endpoint, ?side, bind = %bind_addr, connect = %connect_addr, "zmq transport open");
        Ok(Self { tx, rx, _ctx: ctx, endpoint: endpoint.clone(), send_timeout: opts.send_timeout })
    }

    /// The endpoint this transport was opened on.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// ZeroMQ's notification descriptor of the receive channel (`ZMQ_FD`). It is
    /// edge-triggered: when it becomes readable, drain with `recv(Duration::ZERO)` until `None`.
    pub fn notify_fd(&self) -> Result<RawFd, TransportError> {
        self.rx.get_fd().map_err(zerr("getsockopt ZMQ_FD"))
    }

    /// True if a frame is waiting (checks `ZMQ_EVENTS`; also re-arms the edge of [`Self::notify_fd`]).
    pub fn readable(&self) -> Result<bool, TransportError> {
        let ev = self.rx.get_events().map_err(zerr("getsockopt ZMQ_EVENTS"))?;
        Ok(ev.contains(zmq::POLLIN))
    }
}

impl Transport for ZmqTransport {
    fn send_frame(&mut self, frame: &[u8]) -> Result<(), TransportError> {
        match self.tx.send(frame, 0) {
            Ok(()) => Ok(()),
            Err(zmq::Error::EAGAIN) => Err(TransportError::SendTimeout(self.send_timeout)),
            Err(e) => Err(TransportError::Zmq { op: "send", source: e }),
        }
    }

    fn recv_frame(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, TransportError> {
        match self.rx.recv_bytes(zmq::DONTWAIT) {
            Ok(b) => return Ok(Some(b)),
            Err(zmq::Error::EAGAIN) => {}
            Err(e) => return Err(TransportError::Zmq { op: "recv", source: e }),
        }
        if timeout.is_zero() {
            return Ok(None);
        }
        let ms = timeout.as_millis().clamp(1, i64::MAX as u128) as i64;
        let mut items = [self.rx.as_poll_item(zmq::POLLIN)];
        let n = match zmq::poll(&mut items, ms) {
            Ok(n) => n,
            Err(zmq::Error::EINTR) => 0,
            Err(e) => return Err(TransportError::Zmq { op: "poll", source: e }),
        };
        if n == 0 {
            return Ok(None);
        }
        match self.rx.recv_bytes(zmq::DONTWAIT) {
            Ok(b) => Ok(Some(b)),
            Err(zmq::Error::EAGAIN) => Ok(None),
            Err(e) => Err(TransportError::Zmq { op: "recv", source: e }),
        }
    }
}
