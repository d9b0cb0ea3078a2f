//! MSI-X table and PBA, emulated on the host side as QEMU's `hw/pci/msix.c` does: accesses to
//! them never reach the device; a vector that is masked (per vector or by the function mask)
//! sets its pending bit, and fires when unmasked.
//!
//! The host model has no guest driver, so it starts as a driver leaves the function after
//! `pci_alloc_irq_vectors`: MSI-X enabled, function unmasked, every vector unmasked. Tests mask
//! vectors by writing the table's vector-control words through [`crate::HostModel::write`], just
//! as a guest does.

use cosim_protocol::{DeviceConfig, MsixConfig};

/// Bytes per table entry: address low, address high, data, vector control.
const ENTRY: u64 = 16;
/// Vector control bit 0: masked.
const MASKED: u32 = 1;

/// The emulated MSI-X structures of one function.
#[derive(Debug, Clone, Default)]
pub struct MsixEmu {
    cfg: MsixConfig,
    table: Vec<u8>,
    pending: Vec<bool>,
    function_masked: bool,
}

impl MsixEmu {
    /// For the configuration the device announced (no vectors: nothing is emulated).
    pub fn new(device: &DeviceConfig) -> Self {
        let n = usize::from(device.msix.vectors);
        Self { cfg: device.msix, table: vec![0; n * ENTRY as usize], pending: vec![false; n], function_masked: false }
    }

    fn table_range(&self) -> (u8, u64, u64) {
        (self.cfg.table_bar, u64::from(self.cfg.table_offset), u64::from(self.cfg.vectors) * ENTRY)
    }

    fn pba_range(&self) -> (u8, u64, u64) {
        (self.cfg.pba_bar, u64::from(self.cfg.pba_offset), u64::from(self.cfg.vectors).div_ceil(64) * 8)
    }

    fn hit(r: (u8, u64, u64), bar: u8, offset: u64) -> Option<u64> {
        (r.2 > 0 && bar == r.0 && offset >= r.1 && offset < r.1 + r.2).then(|| offset - r.1)
    }

    /// True if an access at `offset` of `bar` falls into the table or the PBA.
    pub fn covers(&self, bar: u8, offset: u64) -> bool {
        Self::hit(self.table_range(), bar, offset).is_some() || Self::hit(self.pba_range(), bar, offset).is_some()
    }

    /// A read of `size` bytes in the table or the PBA (beyond their end reads as zero).
    pub fn read(&self, bar: u8, offset: u64, size: u8) -> u64 {
        let bytes: Vec<u8> = if let Some(o) = Self::hit(self.table_range(), bar, offset) {
            (0..u64::from(size)).map(|i| self.table.get((o + i) as usize).copied().unwrap_or(0)).collect()
        } else if let Some(o) = Self::hit(self.pba_range(), bar, offset) {
            (0..u64::from(size))
                .map(|i| {
                    let byte = o + i;
                    (0..8).fold(0u8, |acc, bit| {
                        let v = (byte * 8 + bit) as usize;
                        acc | (u8::from(self.pending.get(v).copied().unwrap_or(false)) << bit)
                    })
                })
                .collect()
        } else {
            return 0;
        };
        bytes.iter().rev().fold(0u64, |acc, b| acc << 8 | u64::from(*b))
    }

    /// A write in the table (the PBA is read-only). Returns the vectors that fire because the
    /// write unmasked them while pending.
    pub fn write(&mut self, bar: u8, offset: u64, size: u8, data: u64) -> Vec<u16> {
        let Some(o) = Self::hit(self.table_range(), bar, offset) else {
            return Vec::new();
        };
        for i in 0..u64::from(size) {
            if let Some(b) = self.table.get_mut((o + i) as usize) {
                *b = (data >> (8 * i)) as u8;
            }
        }
        self.fire_unmasked()
    }

    /// Sets the function mask (the MSI-X capability's bit 14). Returns vectors that fire.
    pub fn set_function_mask(&mut self, masked: bool) -> Vec<u16> {
        self.function_masked = masked;
        self.fire_unmasked()
    }

    /// True if `vector` is masked now.
    pub fn masked(&self, vector: u16) -> bool {
        let at = usize::from(vector) * ENTRY as usize + 12;
        let ctrl = self.table.get(at..at + 4).map_or(MASKED, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        self.function_masked || ctrl & MASKED != 0
    }

    /// The device signals `vector`: true if it fires now, false if it was left pending.
    pub fn notify(&mut self, vector: u16) -> bool {
        if usize::from(vector) >= self.pending.len() {
            return false;
        }
        if self.masked(vector) {
            self.pending[usize::from(vector)] = true;
            return false;
        }
        true
    }

    fn fire_unmasked(&mut self) -> Vec<u16> {
        let mut fired = Vec::new();
        for v in 0..self.pending.len() {
            if self.pending[v] && !self.masked(v as u16) {
                self.pending[v] = false;
                fired.push(v as u16);
            }
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cosim_protocol::BarDesc;

    fn emu() -> MsixEmu {
        let mut d = DeviceConfig::default();
        d.bars[2] = BarDesc::mem64(0x4000, false);
        d.msix = MsixConfig { vectors: 4, table_bar: 2, table_offset: 0x3000, pba_bar: 2, pba_offset: 0x3800 };
        MsixEmu::new(&d)
    }

    #[test]
    fn masked_vectors_pend_and_fire_on_unmask() {
        let mut m = emu();
        assert!(m.covers(2, 0x3000) && m.covers(2, 0x303c) && m.covers(2, 0x3800));
        assert!(!m.covers(2, 0x3040) && !m.covers(0, 0x3000));
        assert!(m.notify(1), "unmasked by default");
        m.write(2, 0x3000 + 16 + 12, 4, 1); // mask vector 1
        assert!(m.masked(1));
        assert!(!m.notify(1));
        assert_eq!(m.read(2, 0x3800, 8), 0b10, "pending bit of vector 1");
        assert_eq!(m.write(2, 0x3000 + 16 + 12, 4, 0), vec![1]);
        assert_eq!(m.read(2, 0x3800, 8), 0);
        // Function mask: everything pends, then fires together.
        m.set_function_mask(true);
        assert!(!m.notify(0) && !m.notify(3));
        assert_eq!(m.set_function_mask(false), vec![0, 3]);
        // The table reads back what was written.
        m.write(2, 0x3020, 8, 0x1234_5678_9abc_def0);
        assert_eq!(m.read(2, 0x3020, 8), 0x1234_5678_9abc_def0);
        assert_eq!(m.read(2, 0x3024, 4), 0x1234_5678);
    }
}
