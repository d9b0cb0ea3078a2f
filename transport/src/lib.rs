//! Transports that carry cosim protocol frames between the host side (QEMU or the host model)
//! and the device side (the HDL simulation).
//!
//! One trait, [`Transport`], with two implementations: [`MemTransport`] (an in-memory pair for
//! unit tests; no sockets) and [`ZmqTransport`] (ZeroMQ over `ipc://` or `tcp://` for real runs).
//!
//! Channel map (docs/protocol.md, "Channels"): two one-way ZeroMQ PUSH -> PULL channels.
//! `h2d` carries everything the host sends, `d2h` everything the device sends. Each side *binds*
//! the channel it receives on and *connects* the one it sends on, so either side may start first,
//! and ZeroMQ reconnects by itself when a peer restarts. Because all device-to-host traffic shares
//! one ordered channel, an MSI-X or a completion can never overtake a DMA write sent before it.
//!
//! Access control (module `access`, docs/protocol.md "Access control"): ipc sockets live in a
//! private directory and are 0600; tcp stays on loopback unless both sides share a key.
//!
//! On `ipc://` endpoints [`ZmqTransport`] also carries the session over shared memory when both
//! sides agree at INIT (module [`shm`]; docs/protocol.md, "Shared-memory link"): same frames,
//! SPSC rings instead of sockets, ZeroMQ kept for the handshake and as the fallback.
//! `COSIM_SHM=0` turns it off.
//!
//! [`SessionLoop`] drives a session engine of `cosim_protocol::session` over a transport (the
//! test doubles and the tests' host side use it; the session rules stay in the engine).
//!
//! The caller owns the thread: every call returns within its timeout.
//!
//! `unsafe` lives only in module `access` (three libc calls: `geteuid`, `getrandom`) and in
//! module [`shm`] (the shared-memory rings: mapping, atomics and copies on it, FIFOs, poll, and
//! `kill(pid, 0)` to tell a dead host's offer),
//! each block with its `// SAFETY:` line; the rest of the crate denies it.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod access;
mod endpoint;
mod mem;
pub mod session_loop;
#[allow(unsafe_code)]
pub mod shm;
mod shm_path;
mod zmq_transport;

use std::time::Duration;

use cosim_protocol::{DecodeError, Message};

pub use access::{generate_key_file, private_base, LinkKey, PrivateDir, KEY_FILE_ENV, MIN_KEY_LEN};
pub use endpoint::{free_port_pair, Endpoint, DEFAULT_TCP_HOST, PORT_ENV};
pub use mem::{mem_pair, MemTransport};
pub use session_loop::{DeviceLoop, HostLoop, SessionEngine, SessionLoop};
pub use shm_path::{shm_enabled_by_env, SHM_DEFAULT, SHM_ENV};
pub use zmq_transport::{wait_any, ZmqOptions, ZmqTransport};

/// Which end of the link a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// QEMU's device (or the host model): sends on `h2d`, receives on `d2h`.
    Host,
    /// The HDL simulation: sends on `d2h`, receives on `h2d`.
    Device,
}

/// Transport failures. A [`TransportError::Decode`] consumed one malformed frame; the transport
/// stays usable.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The endpoint string cannot be used.
    #[error("bad endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// What was given.
        endpoint: String,
        /// Why it is unusable.
        reason: String,
    },
    /// Binding the receive channel failed (address in use, directory missing, ...).
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// ZeroMQ address.
        addr: String,
        /// Cause.
        source: zmq::Error,
    },
    /// Connecting the send channel failed.
    #[error("cannot connect {addr}: {source}")]
    Connect {
        /// ZeroMQ address.
        addr: String,
        /// Cause.
        source: zmq::Error,
    },
    /// A socket operation failed.
    #[error("ZeroMQ {op} failed: {source}")]
    Zmq {
        /// The operation.
        op: &'static str,
        /// Cause.
        source: zmq::Error,
    },
    /// Access control refused the configuration (docs/protocol.md, "Access control").
    #[error("access control: {0}")]
    Access(String),
    /// The peer did not take a message within the send timeout (it is absent or stuck).
    #[error(
        "send timed out after {0:?}: the peer is not receiving (not started, stopped, stuck, or it refuses our key: \
         both sides need the same COSIM_KEY_FILE)"
    )]
    SendTimeout(Duration),
    /// The shared-memory link failed (the session continues over ZeroMQ, if the peer does).
    #[error("shared-memory link: {0}")]
    Shm(#[from] shm::ShmError),
    /// The other end of an in-memory pair is gone.
    #[error("the peer endpoint was dropped")]
    Disconnected,
    /// A frame arrived that is not a valid message; it was dropped.
    #[error("malformed frame dropped: {0}")]
    Decode(#[from] DecodeError),
}

/// A bidirectional, message-oriented, ordered link to the peer.
pub trait Transport: Send {
    /// Sends one encoded frame (used directly by tests that send malformed bytes).
    fn send_frame(&mut self, frame: &[u8]) -> Result<(), TransportError>;

    /// Waits up to `timeout` for one frame; `Ok(None)` on timeout. `Duration::ZERO` polls.
    fn recv_frame(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, TransportError>;

    /// Encodes and sends one message.
    fn send(&mut self, msg: &Message) -> Result<(), TransportError> {
        self.send_frame(&msg.encode_to_vec())
    }

    /// Waits up to `timeout` for one message. A malformed frame gives
    /// `Err(TransportError::Decode)` and is dropped; the next call continues with the next frame.
    fn recv(&mut self, timeout: Duration) -> Result<Option<Message>, TransportError> {
        match self.recv_frame(timeout)? {
            Some(frame) => Ok(Some(Message::decode_vec(frame)?)),
            None => Ok(None),
        }
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn send_frame(&mut self, frame: &[u8]) -> Result<(), TransportError> {
        (**self).send_frame(frame)
    }
    fn recv_frame(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, TransportError> {
        (**self).recv_frame(timeout)
    }
}
