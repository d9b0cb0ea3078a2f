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
//! # Testing your own design
//!
//! The crate works from any crate of yours, outside this checkout: add a path dependency on this
//! checkout's `host-model/` (`cosim-host-model = { path = "/path/to/cosim/host-model" }`, in
//! `[dev-dependencies]` for tests), build your simulation with `scripts/cosim-build-sim` (any
//! binary built by `verilator-tb` will do), and give the test its path. The entry points:
//!
//! - [`SimProcess::start`]`(path)` starts the simulation on a fresh private endpoint and waits for
//!   its ready line; it is killed (and the endpoint's directory removed) on drop.
//!   [`SimProcess::spawn_with`] takes an endpoint, arguments (`--waves`, plusargs), environment
//!   and a log path.
//! - [`sim_from_env`]`(default)` is the path to use: `$COSIM_SIM` if set, else `default`.
//! - [`HostModel::connect`]`(endpoint, timeout)` is QEMU's side: [`HostModel::read`] and
//!   [`HostModel::write`] (BAR, offset, size 1/2/4/8), [`HostModel::mem`] (the fake guest memory
//!   your DMA reads and writes), [`HostModel::wait_irq`] (returns as soon as the MSI-X message
//!   arrives), [`HostModel::poll`] (serve DMA while you wait for something else), frames and
//!   serial bytes.
//!
//! (The register offsets are an imagined design's; docs/user-guide.md has the same example.)
//!
//! ```no_run
//! use std::time::Duration;
//! use cosim_host_model::{sim_from_env, HostModel, SimProcess};
//!
//! # fn main() -> Result<(), cosim_host_model::HostError> {
//! // $COSIM_SIM if set, else ../build/sim (cargo test runs in the crate's directory).
//! let sim = SimProcess::start(&sim_from_env("../build/sim")?)?;
//! let mut host = HostModel::connect(sim.endpoint(), Duration::from_secs(10))?;
//! println!("device {:04x}:{:04x}", host.config().vendor_id, host.config().device_id);
//!
//! // Registers: BAR, offset, access size in bytes (1, 2, 4 or 8).
//! host.write(0, 0x04, 4, 0xdead_beef)?;
//! assert_eq!(host.read(0, 0x04, 4)?, 0xdead_beef);
//!
//! // DMA: the device reads and writes the fake guest memory while the model waits.
//! host.mem().write_bytes(0x10_0000, &[1, 2, 3, 4, 5, 6, 7, 8]);
//! host.write(0, 0x10, 4, 0x10_0000)?; // your source address register
//! host.write(0, 0x08, 4, 1)?; // your START bit
//! host.wait_irq(0, Duration::from_secs(5))?; // MSI-X vector 0
//! assert_eq!(host.mem().read_bytes(0x20_0000, 8), [1, 2, 3, 4, 5, 6, 7, 8]);
//! # Ok(()) }
//! ```
//!
//! The project's own tests use [`sim_binary`], which finds the simulations this checkout's
//! `make sim-test` and `make sim-gemm` build under `build/sim/`; the same test with a private
//! endpoint of its own:
//!
//! ```no_run
//! use std::time::Duration;
//! use cosim_host_model::{sim_binary, temp_endpoint, HostModel, SimProcess};
//! # fn main() -> Result<(), cosim_host_model::HostError> {
//! let (_dir, ep) = temp_endpoint("dev0")?;
//! let _sim = SimProcess::spawn(&sim_binary("cosim_test_top", "sim-test")?, &ep, &[], Duration::from_secs(30))?;
//! let mut host = HostModel::connect(&ep, Duration::from_secs(10))?;
//! host.write(0, 0x008, 8, 0x1234)?; // SCRATCH0 of hdl/test/cosim_test_dev.sv
//! assert_eq!(host.read(0, 0x008, 8)?, 0x1234);
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
pub use process::{
    free_tcp_endpoint, sim_binary, sim_from_env, temp_endpoint, SimOptions, SimProcess, READY_PREFIX, SIM_ENV,
};

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
