//! Sparse fake guest memory: 4 KiB pages allocated on first write; unwritten bytes read as zero.

use std::collections::HashMap;
use std::ops::Range;

const PAGE: u64 = 4096;

/// Guest physical memory as the device sees it through DMA.
///
/// Any 64-bit address is valid. Ranges marked with [`GuestMemory::add_fault`] make DMA reads
/// that touch them complete with `UnsupportedRequest` and DMA writes to them be dropped (and
/// counted), so tests can exercise the device's error paths.
#[derive(Debug, Default, Clone)]
pub struct GuestMemory {
    pages: HashMap<u64, Box<[u8; PAGE as usize]>>,
    faults: Vec<Range<u64>>,
    dropped_writes: u64,
}

impl GuestMemory {
    /// Empty memory (all zeros).
    pub fn new() -> Self {
        Self::default()
    }

    /// Copies `data` to guest address `addr` (wrapping at 2^64).
    pub fn write_bytes(&mut self, addr: u64, data: &[u8]) {
        let mut done = 0usize;
        while done < data.len() {
            let a = addr.wrapping_add(done as u64);
            let (page, off) = (a / PAGE, (a % PAGE) as usize);
            let n = (PAGE as usize - off).min(data.len() - done);
            let p = self.pages.entry(page).or_insert_with(|| Box::new([0u8; PAGE as usize]));
            p[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
    }

    /// Reads `len` bytes at guest address `addr`.
    pub fn read_bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        let mut done = 0usize;
        while done < len {
            let a = addr.wrapping_add(done as u64);
            let (page, off) = (a / PAGE, (a % PAGE) as usize);
            let n = (PAGE as usize - off).min(len - done);
            if let Some(p) = self.pages.get(&page) {
                out[done..done + n].copy_from_slice(&p[off..off + n]);
            }
            done += n;
        }
        out
    }

    /// Fills `len` bytes at `addr` with `byte`.
    pub fn fill(&mut self, addr: u64, len: usize, byte: u8) {
        self.write_bytes(addr, &vec![byte; len]);
    }

    /// Reads a little-endian `u32`.
    pub fn read_u32(&self, addr: u64) -> u32 {
        let b = self.read_bytes(addr, 4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Writes a little-endian `u32`.
    pub fn write_u32(&mut self, addr: u64, v: u32) {
        self.write_bytes(addr, &v.to_le_bytes());
    }

    /// Marks `range` as faulting: DMA there fails (see the type's documentation).
    pub fn add_fault(&mut self, range: Range<u64>) {
        self.faults.push(range);
    }

    /// Removes every fault range.
    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// True if `[addr, addr + len)` touches a fault range.
    pub fn faults(&self, addr: u64, len: u64) -> bool {
        let end = addr.saturating_add(len);
        self.faults.iter().any(|r| addr < r.end && r.start < end)
    }

    /// DMA writes dropped because they touched a fault range.
    pub fn dropped_writes(&self) -> u64 {
        self.dropped_writes
    }

    /// A DMA write from the device: applied unless it touches a fault range.
    pub(crate) fn dma_write(&mut self, addr: u64, data: &[u8]) -> bool {
        if self.faults(addr, data.len() as u64) {
            self.dropped_writes += 1;
            return false;
        }
        self.write_bytes(addr, data);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_reads_and_writes_across_pages() {
        let mut m = GuestMemory::new();
        assert_eq!(m.read_bytes(0x1234_5678, 4), vec![0; 4]);
        let data: Vec<u8> = (0..10000u32).map(|i| (i * 7) as u8).collect();
        m.write_bytes(0xfff, &data);
        assert_eq!(m.read_bytes(0xfff, data.len()), data);
        assert_eq!(m.read_bytes(0xffe, 2), vec![0, data[0]]);
        m.write_u32(0x10, 0xdead_beef);
        assert_eq!(m.read_u32(0x10), 0xdead_beef);
        m.add_fault(0x2000..0x3000);
        assert!(m.faults(0x1fff, 2));
        assert!(!m.faults(0x3000, 16));
        assert!(!m.dma_write(0x2ff0, &[1; 32]));
        assert_eq!(m.dropped_writes(), 1);
    }
}
