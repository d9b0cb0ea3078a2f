//! The template device as the host model sees it: its BAR0 registers (the map is in ../README.md)
//! and a [`Device`] that starts the simulation and connects to it. The tests are in `tests/`.

use std::time::{Duration, Instant};

pub use cosim_host_model::{HostError, HostModel, SimProcess, Status};

/// BAR0 register offsets (../README.md, "Registers").
pub mod reg {
    pub const ID: u64 = 0x00;
    pub const SCRATCH: u64 = 0x04;
    pub const CTRL: u64 = 0x08;
    pub const STATUS: u64 = 0x0C;
    pub const SRC_LO: u64 = 0x10;
    pub const SRC_HI: u64 = 0x14;
    pub const DST_LO: u64 = 0x18;
    pub const DST_HI: u64 = 0x1C;
    pub const LEN: u64 = 0x20;
    pub const SUM: u64 = 0x24;
    pub const CYCLES: u64 = 0x28;
    pub const COUNT: u64 = 0x2C;
}
pub const CTRL_START: u32 = 1 << 0;
pub const CTRL_IRQ_EN: u32 = 1 << 1;
pub const STATUS_BUSY: u32 = 1 << 0;
pub const STATUS_DONE: u32 = 1 << 1;
pub const STATUS_ERR: u32 = 1 << 2;

/// The simulation and a host model connected to it.
pub struct Device {
    pub host: HostModel,
    pub sim: SimProcess,
}

impl Device {
    /// Starts the simulation (`$COSIM_SIM`, else ../build/sim/sim as `make sim` builds it: cargo
    /// runs tests in the crate's directory) on a private endpoint and connects the host model.
    pub fn open() -> anyhow::Result<Device> {
        let sim = SimProcess::start(&cosim_host_model::sim_from_env("../build/sim/sim")?)?;
        let host = HostModel::connect(sim.endpoint(), Duration::from_secs(10))?;
        Ok(Device { host, sim })
    }

    pub fn read(&mut self, off: u64) -> anyhow::Result<u32> {
        Ok(self.host.read(0, off, 4)? as u32)
    }

    pub fn write(&mut self, off: u64, v: u32) -> anyhow::Result<()> {
        Ok(self.host.write(0, off, 4, u64::from(v))?)
    }

    /// Programs one transfer and starts it; returns at once.
    pub fn start(&mut self, src: u64, dst: u64, len: u32, irq: bool) -> anyhow::Result<()> {
        self.host.write(0, reg::SRC_LO, 8, src)?; // one 8-byte write: the adapter splits it
        self.host.write(0, reg::DST_LO, 8, dst)?;
        self.write(reg::LEN, len)?;
        self.write(reg::CTRL, CTRL_START | if irq { CTRL_IRQ_EN } else { 0 })
    }

    /// Polls STATUS until BUSY is clear; returns STATUS.
    pub fn wait_idle(&mut self, timeout: Duration) -> anyhow::Result<u32> {
        let end = Instant::now() + timeout;
        loop {
            let s = self.read(reg::STATUS)?;
            if s & STATUS_BUSY == 0 {
                return Ok(s);
            }
            anyhow::ensure!(Instant::now() < end, "transfer still BUSY after {timeout:?} (STATUS {s:#x})");
            self.host.poll(Duration::from_millis(1))?;
        }
    }
}
