//! The device's PCI configuration as announced in CONFIG, and its validation.

use crate::BarIndex;

/// Number of BARs of a PCI type-0 function.
pub const NUM_BARS: usize = 6;

bitflags::bitflags! {
    /// Attributes of one BAR (byte 8 of its descriptor).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct BarFlags: u8 {
        /// I/O space instead of memory space.
        const IO = 1 << 0;
        /// 64-bit memory BAR (occupies this slot and the next).
        const MEM64 = 1 << 1;
        /// Prefetchable memory.
        const PREFETCH = 1 << 2;
    }
}

/// One BAR: `size == 0` means absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BarDesc {
    /// Size in bytes; a power of two, or 0 for an absent BAR.
    pub size: u64,
    /// Attributes.
    pub flags: BarFlags,
}

impl BarDesc {
    /// An absent BAR.
    pub const ABSENT: Self = Self { size: 0, flags: BarFlags::empty() };

    /// A 32-bit non-prefetchable memory BAR.
    pub const fn mem32(size: u64) -> Self {
        Self { size, flags: BarFlags::empty() }
    }

    /// A 64-bit memory BAR.
    pub const fn mem64(size: u64, prefetch: bool) -> Self {
        let flags = if prefetch {
            BarFlags::MEM64.union(BarFlags::PREFETCH)
        } else {
            BarFlags::MEM64
        };
        Self { size, flags }
    }

    /// True if the BAR exists.
    pub const fn present(&self) -> bool {
        self.size != 0
    }
}

/// MSI-X capability layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MsixConfig {
    /// Number of vectors, 0 (no MSI-X) to 2048.
    pub vectors: u16,
    /// BAR holding the vector table.
    pub table_bar: u8,
    /// Offset of the table in that BAR (8-byte aligned).
    pub table_offset: u32,
    /// BAR holding the pending-bit array.
    pub pba_bar: u8,
    /// Offset of the PBA in that BAR (8-byte aligned).
    pub pba_offset: u32,
}

/// Everything the host needs to present the device on PCI.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct DeviceConfig {
    /// PCI vendor ID.
    pub vendor_id: u16,
    /// PCI device ID.
    pub device_id: u16,
    /// Subsystem vendor ID.
    pub subsystem_vendor_id: u16,
    /// Subsystem ID.
    pub subsystem_id: u16,
    /// Class code: base class (bits 23:16), subclass (15:8), programming interface (7:0).
    pub class_code: u32,
    /// Revision ID.
    pub revision: u8,
    /// The six BARs.
    pub bars: [BarDesc; NUM_BARS],
    /// MSI-X layout (`vectors == 0`: no MSI-X).
    pub msix: MsixConfig,
    /// The design's clock in Hz as the simulation reports it, 0 when not reported (CONFIG carries
    /// it since protocol 2.1, docs/protocol.md). Not PCI: tools turn RTL cycle counts into time
    /// with it.
    pub clock_hz: u64,
}

/// The simulation's default modelled DMA read latency in clocks: 100, 1 us at the default
/// 100 MHz clock, so the same job gives the same cycle counts in every run. The shell's
/// `DMA_READ_LATENCY` parameter (hdl/ep/cosim_pcie_ep.sv) has the same default (dpi-bridge checks);
/// `+cosim_dma_latency=0` is free-running. Defined here, where every peer and the guest tool can
/// see it: the performance models of `accel-tool serve` need the same number.
pub const DEFAULT_DMA_READ_LATENCY: u64 = 100;

/// The design clock a simulation reports in CONFIG by default: 100 MHz, the default of the
/// shell's `CLOCK_HZ` parameter (dpi-bridge checks).
pub const DEFAULT_CLOCK_HZ: u64 = 100_000_000;

/// Why a [`DeviceConfig`] cannot be presented on PCI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A BAR size is not a power of two or is too small.
    #[error("BAR{bar}: size {size:#x} is not a power of two of at least {min:#x} bytes")]
    BarSize {
        /// BAR number.
        bar: u8,
        /// Offending size.
        size: u64,
        /// Smallest legal size for this kind of BAR.
        min: u64,
    },
    /// A 32-bit or I/O BAR is larger than its address space allows.
    #[error("BAR{bar}: size {size:#x} is too large for a {kind} BAR (max {max:#x})")]
    BarTooLarge {
        /// BAR number.
        bar: u8,
        /// Offending size.
        size: u64,
        /// Kind of BAR.
        kind: &'static str,
        /// Largest size of this kind.
        max: u64,
    },
    /// Flags that cannot go together or a 64-bit BAR that does not fit.
    #[error("BAR{bar}: {reason}")]
    BarLayout {
        /// BAR number.
        bar: u8,
        /// What is wrong.
        reason: &'static str,
    },
    /// The configuration has no BAR at all.
    #[error("no BAR is present; the device needs at least one")]
    NoBars,
    /// The MSI-X layout is impossible.
    #[error("MSI-X: {0}")]
    Msix(String),
    /// Vendor ID 0xffff means "no device" on PCI.
    #[error("vendor ID {0:#06x} is invalid (0xffff means no device)")]
    VendorId(u16),
    /// Class code wider than 24 bits.
    #[error("class code {0:#x} does not fit in 24 bits")]
    ClassCode(u32),
}

impl DeviceConfig {
    /// Whether `other` presents the same PCI function (identity, BARs, MSI-X): everything but the
    /// design clock, which tools read and the guest never sees. A host keeps a device's
    /// configuration for its lifetime (PCI cannot change under a running guest) and accepts a
    /// restarted simulation only when this holds.
    pub fn same_pci_function(&self, other: &DeviceConfig) -> bool {
        DeviceConfig { clock_hz: 0, ..self.clone() } == DeviceConfig { clock_hz: 0, ..other.clone() }
    }

    /// Checks that the configuration can be presented as a PCI function.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vendor_id == 0xffff {
            return Err(ConfigError::VendorId(self.vendor_id));
        }
        if self.class_code > 0xff_ffff {
            return Err(ConfigError::ClassCode(self.class_code));
        }
        let mut i = 0;
        let mut any = false;
        while i < NUM_BARS {
            let bar = self.bars[i];
            let n = i as u8;
            if !bar.present() {
                if !bar.flags.is_empty() {
                    return Err(ConfigError::BarLayout { bar: n, reason: "absent BAR with flags set" });
                }
                i += 1;
                continue;
            }
            any = true;
            let io = bar.flags.contains(BarFlags::IO);
            let mem64 = bar.flags.contains(BarFlags::MEM64);
            if io && (mem64 || bar.flags.contains(BarFlags::PREFETCH)) {
                return Err(ConfigError::BarLayout {
                    bar: n,
                    reason: "an I/O BAR cannot be 64-bit or prefetchable",
                });
            }
            let min = if io { 4 } else { 16 };
            if !bar.size.is_power_of_two() || bar.size < min {
                return Err(ConfigError::BarSize { bar: n, size: bar.size, min });
            }
            if io && bar.size > 256 {
                return Err(ConfigError::BarTooLarge { bar: n, size: bar.size, kind: "I/O", max: 256 });
            }
            if !io && !mem64 && bar.size > 1 << 31 {
                return Err(ConfigError::BarTooLarge {
                    bar: n,
                    size: bar.size,
                    kind: "32-bit memory",
                    max: 1 << 31,
                });
            }
            if mem64 {
                if i + 1 >= NUM_BARS {
                    return Err(ConfigError::BarLayout {
                        bar: n,
                        reason: "a 64-bit BAR needs the next slot, and BAR5 has none",
                    });
                }
                if self.bars[i + 1] != BarDesc::ABSENT {
                    return Err(ConfigError::BarLayout {
                        bar: n + 1,
                        reason: "this slot holds the upper half of the 64-bit BAR before it and must be absent",
                    });
                }
                i += 2;
            } else {
                i += 1;
            }
        }
        if !any {
            return Err(ConfigError::NoBars);
        }
        self.validate_msix()
    }

    fn validate_msix(&self) -> Result<(), ConfigError> {
        let m = &self.msix;
        if m.vectors == 0 {
            return Ok(());
        }
        if m.vectors > 2048 {
            return Err(ConfigError::Msix(format!("{} vectors, at most 2048", m.vectors)));
        }
        let check = |what: &str, bar: u8, offset: u32, len: u64| -> Result<(), ConfigError> {
            let Some(b) = BarIndex::new(bar) else {
                return Err(ConfigError::Msix(format!("{what} BAR{bar} does not exist")));
            };
            let desc = self.bars[b.get() as usize];
            if !desc.present() || desc.flags.contains(BarFlags::IO) {
                return Err(ConfigError::Msix(format!("{what} BAR{bar} is not a present memory BAR")));
            }
            if !offset.is_multiple_of(8) {
                return Err(ConfigError::Msix(format!("{what} offset {offset:#x} is not 8-byte aligned")));
            }
            if u64::from(offset) + len > desc.size {
                return Err(ConfigError::Msix(format!(
                    "{what} at {offset:#x}..{:#x} does not fit in BAR{bar} of {:#x} bytes",
                    u64::from(offset) + len,
                    desc.size
                )));
            }
            Ok(())
        };
        let table_len = u64::from(m.vectors) * 16;
        let pba_len = u64::from(m.vectors).div_ceil(64) * 8;
        check("table", m.table_bar, m.table_offset, table_len)?;
        check("PBA", m.pba_bar, m.pba_offset, pba_len)?;
        if m.table_bar == m.pba_bar {
            let (t0, t1) = (u64::from(m.table_offset), u64::from(m.table_offset) + table_len);
            let (p0, p1) = (u64::from(m.pba_offset), u64::from(m.pba_offset) + pba_len);
            if t0 < p1 && p0 < t1 {
                return Err(ConfigError::Msix("table and PBA overlap".into()));
            }
        }
        Ok(())
    }

    /// The MSI-X table and PBA as byte ranges `(bar, start, end)`: accesses there are handled by
    /// the host's MSI-X emulation and never reach the device.
    pub fn msix_ranges(&self) -> Vec<(u8, u64, u64)> {
        let m = &self.msix;
        if m.vectors == 0 {
            return Vec::new();
        }
        let t = u64::from(m.table_offset);
        let p = u64::from(m.pba_offset);
        vec![
            (m.table_bar, t, t + u64::from(m.vectors) * 16),
            (m.pba_bar, p, p + u64::from(m.vectors).div_ceil(64) * 8),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_design_clock_is_not_part_of_the_pci_function() {
        let a = good();
        let b = DeviceConfig { clock_hz: a.clock_hz + 1_000_000, ..a.clone() };
        assert!(a.same_pci_function(&b), "a restarted simulation with another clock is the same function");
        let c = DeviceConfig { device_id: a.device_id ^ 1, ..a.clone() };
        assert!(!a.same_pci_function(&c));
        let mut d = a.clone();
        d.msix.vectors += 1;
        assert!(!a.same_pci_function(&d));
    }

    fn good() -> DeviceConfig {
        let mut c = DeviceConfig {
            vendor_id: 0x1234,
            device_id: 0xacc1,
            class_code: 0x12_00_00,
            ..Default::default()
        };
        c.bars[0] = BarDesc::mem32(0x1000);
        c.bars[2] = BarDesc::mem64(0x10000, true);
        c.msix = MsixConfig { vectors: 4, table_bar: 2, table_offset: 0, pba_bar: 2, pba_offset: 0x800 };
        c
    }

    #[test]
    fn good_config_validates() {
        good().validate().unwrap();
    }

    #[test]
    fn impossible_layouts_are_rejected() {
        let mut c = good();
        c.bars[0].size = 0x1800;
        assert!(matches!(c.validate(), Err(ConfigError::BarSize { bar: 0, .. })));

        let mut c = good();
        c.bars[3] = BarDesc::mem32(0x1000);
        assert!(matches!(c.validate(), Err(ConfigError::BarLayout { bar: 3, .. })));

        let mut c = good();
        c.bars[5] = BarDesc::mem64(0x1000, false);
        assert!(matches!(c.validate(), Err(ConfigError::BarLayout { bar: 5, .. })));

        let mut c = good();
        c.bars[0] = BarDesc { size: 0x100, flags: BarFlags::IO | BarFlags::MEM64 };
        assert!(matches!(c.validate(), Err(ConfigError::BarLayout { bar: 0, .. })));

        let mut c = good();
        c.bars[0] = BarDesc::mem32(1 << 32);
        assert!(matches!(c.validate(), Err(ConfigError::BarTooLarge { bar: 0, .. })));

        let mut c = good();
        c.bars = [BarDesc::ABSENT; 6];
        c.msix.vectors = 0;
        assert_eq!(c.validate(), Err(ConfigError::NoBars));

        let mut c = good();
        c.msix.pba_offset = 0x20;
        assert!(matches!(c.validate(), Err(ConfigError::Msix(_))));

        let mut c = good();
        c.msix.table_bar = 1;
        assert!(matches!(c.validate(), Err(ConfigError::Msix(_))));

        let mut c = good();
        c.msix.table_offset = 0x10000 - 16;
        assert!(matches!(c.validate(), Err(ConfigError::Msix(_))));

        let mut c = good();
        c.vendor_id = 0xffff;
        assert!(matches!(c.validate(), Err(ConfigError::VendorId(_))));
    }
}
