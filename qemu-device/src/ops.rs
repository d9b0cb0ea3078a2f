//! What the device logic needs from QEMU, as one safe trait. The FFI layer implements it with
//! the C callback table; tests implement it with fake guest memory.

use cosim_protocol::{DmaRead, GuestAddr};

/// A DMA access QEMU refused (bus mastering off, no memory at the address, IOMMU fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("DMA at {addr} ({len} bytes) failed")]
pub struct DmaError {
    /// Start address.
    pub addr: GuestAddr,
    /// Length in bytes.
    pub len: usize,
}

/// Services of QEMU used by [`crate::HostDevice`]. All are called with QEMU's big lock held.
pub trait QemuOps {
    /// Runs `f` (a wait on the link that touches nothing of QEMU's) with QEMU's big lock
    /// released, and takes the lock again before returning, also if `f` panics. While an MMIO
    /// read waits for the simulation, other vCPUs and the main loop go on: reads to other
    /// devices overlap (docs/qemu-device.md, "Threads and the big lock"). The default runs `f`
    /// as it is (test doubles have no lock).
    fn unlocked<R>(&mut self, f: impl FnOnce() -> R) -> R {
        f()
    }
    /// Reads guest memory as the device (`pci_dma_read`: bus mastering and IOMMU honoured).
    fn dma_read(&mut self, addr: GuestAddr, buf: &mut [u8]) -> Result<(), DmaError>;
    /// Writes guest memory as the device (`pci_dma_write`).
    fn dma_write(&mut self, addr: GuestAddr, data: &[u8]) -> Result<(), DmaError>;
    /// Signals an MSI-X vector (`msix_notify`: sets the pending bit when masked).
    fn msix_notify(&mut self, vector: u16);
    /// Hands a frame to the netdev (no-op without one).
    fn nic_send(&mut self, frame: &[u8]);
    /// Writes bytes to the chardev (no-op without one).
    fn serial_write(&mut self, data: &[u8]);
    /// Asks QEMU to call [`crate::HostDevice::poll`] soon from its main loop (used when messages
    /// are waiting but the edge-triggered notification may already have been consumed).
    fn schedule_poll(&mut self);
    /// Returns true to hold a DMA read back instead of answering it at once; the holder
    /// answers it later with [`crate::HostDevice::complete_dma_read`]. QEMU never holds
    /// (the default); the host model's tests do, to complete reads out of order.
    fn defer_dma_read(&mut self, _read: &DmaRead) -> bool {
        false
    }
}
