//! `cosim-host-model`: a test double for QEMU's `accelerator-pcie` device.
//!
//! It runs QEMU's own device logic (`HostDevice` of `cosim-qemu-device`, the code behind
//! `-device accelerator-pcie`) over real ZeroMQ against a device-side peer (the Verilator
//! simulation with the DPI bridge), with fake guest memory and the MSI-X table and PBA emulated
//! as QEMU does ([`msix`]), so this test double cannot drift from what QEMU does. Ownership: the host model owns the fake guest
//! memory ([`GuestMemory`], sparse, zero-filled) and starts MMIO reads and writes, resets and the
//! INIT handshake; the device owns simulated time and starts DMA, MSI-X, frames and serial bytes,
//! which the model serves while any of its methods waits. It runs on the caller's thread; no
//! threads of its own.
//!
//! [`SimProcess`] starts a simulation binary (`<sim> --endpoint E`), waits for its ready line
//! and kills it on drop. Typical test:
//!
//! ```no_run
//! use std::time::Duration;
//! use cosim_host_model::{sim_binary, temp_endpoint, HostModel, SimProcess};
//! # fn main() -> Result<(), cosim_host_model::HostError> {
//! let (_dir, ep) = temp_endpoint("dev0")?;
//! let _sim = SimProcess::spawn(&sim_binary("cosim_test_top", "sim-test")?, &ep, &[], Duration::from_secs(30))?;
//! let mut host = HostModel::connect(&ep, Duration::from_secs(10))?;
//! host.write(0, 0x10, 4, 0x1234)?;
//! assert_eq!(host.read(0, 0x10, 4)?, 0x1234);
//! # Ok(()) }
//! ```
//!
//! `unsafe` lives only in module `process` (one `kill(2)` to stop the simulation, with its
//! `// SAFETY:` line); the rest of the crate denies it.
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod memory;
mod model;
pub mod msix;
#[allow(unsafe_code)]
mod process;

use std::time::Duration;

pub use cosim_protocol::{DeviceConfig, GoodbyeReason, Status};
pub use memory::GuestMemory;
pub use cosim_qemu_device::DeviceStats;
pub use model::{HostModel, HostOptions, HostStats};
pub use process::{free_tcp_endpoint, sim_binary, temp_endpoint, SimOptions, SimProcess, READY_PREFIX};

/// What went wrong in the host model.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The transport failed (bind, connect, send timeout, ...).
    #[error("transport: {0}")]
    Transport(#[from] cosim_transport::TransportError),
    /// Nothing arrived in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
    },
    /// The device sent nothing for the liveness timeout (killed, stopped or stuck).
    #[error("device at {endpoint} lost: nothing received for 1000 ms (simulation killed, stopped or stuck)")]
    PeerLost {
        /// Its endpoint.
        endpoint: String,
    },
    /// The device said goodbye.
    #[error("device said goodbye ({0:?})")]
    Goodbye(GoodbyeReason),
    /// The device speaks another protocol major version.
    #[error("protocol version mismatch: host speaks {ours}.x, device {theirs}.x")]
    Version {
        /// Ours.
        ours: u8,
        /// Theirs.
        theirs: u8,
    },
    /// The device's configuration is invalid.
    #[error("device configuration invalid: {0}")]
    Config(#[from] cosim_protocol::ConfigError),
    /// The access cannot be sent (no such BAR, bad size, beyond the BAR).
    #[error("bad MMIO access BAR{bar} offset {offset:#x} size {size}: {reason}")]
    BadAccess {
        /// BAR.
        bar: u8,
        /// Offset.
        offset: u64,
        /// Size.
        size: u8,
        /// Why.
        reason: &'static str,
    },
    /// An MMIO read completed with an error status.
    #[error("MMIO read BAR{bar} offset {offset:#x} completed with {status:?}")]
    Completion {
        /// BAR.
        bar: u8,
        /// Offset.
        offset: u64,
        /// Status.
        status: Status,
    },
    /// Starting or watching the simulation process failed.
    #[error("simulation: {0}")]
    Sim(String),
}

/// Result with [`HostError`].
pub type Result<T, E = HostError> = std::result::Result<T, E>;

/// Installs a `tracing` subscriber filtered by `COSIM_LOG` (default `warn`), writing to stderr.
/// Idempotent; does nothing if the process already has one.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("COSIM_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
