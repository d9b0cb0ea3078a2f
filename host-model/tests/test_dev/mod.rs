//! BAR0 registers of the bridge's test design (hdl/test/cosim_test_dev.sv, whose header is the
//! reference), shared by the test files that drive it. Not every file uses every register.
#![allow(dead_code)]

pub const ID: u64 = 0x000;
pub const SCRATCH0: u64 = 0x008;
pub const DMA_SRC: u64 = 0x100;
pub const DMA_DST: u64 = 0x108;
pub const DMA_LEN: u64 = 0x110;
pub const DMA_CTRL: u64 = 0x118;
/// DMA_CTRL bit 2: the copy streams (reads and writes overlap) instead of store and forward.
pub const DMA_CTRL_STREAM: u64 = 1 << 2;
pub const DMA_STATUS: u64 = 0x120;
pub const IRQ_TRIGGER: u64 = 0x128;
pub const COUNTERS: u64 = 0x130;
pub const STALL: u64 = 0x140;
pub const SLOW: u64 = 0x148;
pub const DMA_CYCLES: u64 = 0x178;
pub const SLVERR: u64 = 0xfe0;
