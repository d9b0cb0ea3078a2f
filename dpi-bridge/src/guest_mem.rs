//! Guest memory that a vfio-user client shares with the simulation (`DMA_MAP` with a file
//! descriptor): the mappings, bounds-checked reads and writes for the design's DMA, and unmap.
//!
//! Every `unsafe` block of the vfio-user server is here: `mmap(2)`/`munmap(2)` and the copies to
//! and from a live mapping. A mapping is only unmapped under the write lock of [`GuestMemory`],
//! so no copy runs on a mapping that goes away. The guest (another process) may write the same
//! memory at the same time, as a device and a CPU race on real hardware; the copies are plain
//! byte copies and never form Rust references into the shared pages.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use cosim_protocol::{DmaRead, DmaReadResp, DmaWrite, Status};

/// Makes `f` non-blocking: an interrupt descriptor a client hands over must never block the
/// simulation thread that writes it (QEMU's eventfds never do; a pipe whose reader stalls would).
pub(crate) fn set_nonblocking(f: &File) -> std::io::Result<()> {
    // SAFETY: fcntl(2) on a descriptor `f` owns, with integer arguments only; results checked.
    let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One `DMA_MAP` range: guest (bus) addresses `iova..iova + size`.
#[derive(Debug)]
struct Mapping {
    iova: u64,
    size: u64,
    /// The mapped pages (null when the client gave no file descriptor).
    ptr: *mut u8,
    writable: bool,
}

// SAFETY: the pointer is only dereferenced through `GuestMemory`'s lock; the pages are shared
// memory that any thread may touch.
unsafe impl Send for Mapping {}
// SAFETY: as above (copies take the read lock; unmapping takes the write lock).
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: `ptr`/`size` are exactly what mmap returned for this mapping, and no copy is
            // running (drop happens under the write lock or when the last owner goes away).
            unsafe { libc::munmap(self.ptr.cast(), self.size as usize) };
        }
    }
}

/// Why a DMA access failed; the design sees an error response, the log says which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DmaFault {
    /// No `DMA_MAP` covers the address.
    #[error("address 0x{0:x} is outside every range the client mapped")]
    Unmapped(u64),
    /// The range is mapped but the client gave no file descriptor for it.
    #[error(
        "address 0x{0:x} is in a range the client mapped without a file descriptor: the guest's RAM is \
         not shared memory (start QEMU with -object memory-backend-memfd,id=ram,size=..,share=on \
         -machine memory-backend=ram)"
    )]
    NotShared(u64),
    /// The range was mapped read-only.
    #[error("address 0x{0:x} is mapped read-only")]
    ReadOnly(u64),
}

/// Why a `DMA_MAP` was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MapError {
    #[error("DMA_MAP of an empty range at 0x{0:x}")]
    Empty(u64),
    #[error("DMA_MAP 0x{iova:x}+0x{size:x} overlaps a range already mapped")]
    Overlap { iova: u64, size: u64 },
    #[error("DMA_MAP 0x{iova:x}+0x{size:x}: mmap failed: {err}")]
    Mmap { iova: u64, size: u64, err: std::io::Error },
    #[error("DMA_MAP 0x{iova:x}+0x{size:x}: the file is {file_len} bytes, the map needs {need} (a DMA there would crash the simulation with SIGBUS)")]
    PastEnd { iova: u64, size: u64, file_len: u64, need: u64 },
    #[error("DMA_UNMAP 0x{iova:x}+0x{size:x} covers only part of a mapping; mappings are not split")]
    Partial { iova: u64, size: u64 },
}

/// The client's guest memory as the server sees it.
#[derive(Debug, Default)]
pub(crate) struct GuestMemory {
    maps: RwLock<Vec<Mapping>>,
}

impl GuestMemory {
    /// `DMA_MAP`: maps `size` bytes of `fd` at `offset` for guest addresses `iova..`; with no
    /// descriptor the range is recorded, and DMA to it fails with [`DmaFault::NotShared`].
    pub(crate) fn map(
        &self,
        iova: u64,
        size: u64,
        fd: Option<&File>,
        offset: u64,
        writable: bool,
    ) -> Result<(), MapError> {
        if size == 0 || iova.checked_add(size).is_none() {
            return Err(MapError::Empty(iova));
        }
        let mut maps = self.maps.write().unwrap_or_else(|p| p.into_inner());
        if maps.iter().any(|m| iova < m.iova + m.size && m.iova < iova + size) {
            return Err(MapError::Overlap { iova, size });
        }
        let ptr = match fd {
            None => std::ptr::null_mut(),
            Some(f) => {
                // Pages past the end of a regular file or memfd fault with SIGBUS when touched.
                let meta = f.metadata().map_err(|err| MapError::Mmap { iova, size, err })?;
                let need = offset.saturating_add(size);
                if meta.file_type().is_file() && meta.len() < need {
                    return Err(MapError::PastEnd { iova, size, file_len: meta.len(), need });
                }
                let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
                // SAFETY: a fresh shared mapping of the client's descriptor, no fixed address; the
                // result is checked before use.
                let p = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        size as usize,
                        prot,
                        libc::MAP_SHARED,
                        f.as_raw_fd(),
                        offset as libc::off_t,
                    )
                };
                if p == libc::MAP_FAILED {
                    return Err(MapError::Mmap { iova, size, err: std::io::Error::last_os_error() });
                }
                p.cast::<u8>()
            }
        };
        maps.push(Mapping { iova, size, ptr, writable });
        Ok(())
    }

    /// `DMA_UNMAP`: removes the mappings inside `iova..iova + size`; returns how many. A range
    /// that covers only part of a mapping is refused (nothing removed), as the kernel's VFIO
    /// type1 IOMMU refuses it.
    pub(crate) fn unmap(&self, iova: u64, size: u64) -> Result<usize, MapError> {
        let end = iova.saturating_add(size);
        let mut maps = self.maps.write().unwrap_or_else(|p| p.into_inner());
        let inside = |m: &Mapping| m.iova >= iova && m.iova + m.size <= end;
        if maps.iter().any(|m| !inside(m) && m.iova < end && iova < m.iova + m.size) {
            return Err(MapError::Partial { iova, size });
        }
        let before = maps.len();
        maps.retain(|m| !inside(m));
        Ok(before - maps.len())
    }

    /// Drops every mapping (the client went away).
    pub(crate) fn clear(&self) {
        self.maps.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Number of mappings, and how many of them have no descriptor.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let maps = self.maps.read().unwrap_or_else(|p| p.into_inner());
        (maps.len(), maps.iter().filter(|m| m.ptr.is_null()).count())
    }

    /// Calls `f(mapping, offset into it, bytes)` for each piece of `addr..addr + len`, which may
    /// span adjacent mappings; fails (before any copy) if a byte is not covered.
    fn walk(
        &self,
        addr: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(*mut u8, usize, usize),
    ) -> Result<(), DmaFault> {
        let maps = self.maps.read().unwrap_or_else(|p| p.into_inner());
        let mut pieces = Vec::with_capacity(1);
        let mut a = addr;
        let end = addr.checked_add(len as u64).ok_or(DmaFault::Unmapped(addr))?;
        while a < end {
            let m = maps.iter().find(|m| a >= m.iova && a - m.iova < m.size).ok_or(DmaFault::Unmapped(a))?;
            if m.ptr.is_null() {
                return Err(DmaFault::NotShared(a));
            }
            if write && !m.writable {
                return Err(DmaFault::ReadOnly(a));
            }
            let off = (a - m.iova) as usize;
            let n = ((m.size - (a - m.iova)).min(end - a)) as usize;
            pieces.push((m.ptr, off, n));
            a += n as u64;
        }
        for (p, off, n) in pieces {
            f(p, off, n);
        }
        Ok(())
    }

    /// Reads `len` guest bytes at `addr`.
    pub(crate) fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, DmaFault> {
        let mut out = vec![0u8; len];
        let mut done = 0;
        self.walk(addr, len, false, |p, off, n| {
            // SAFETY: `walk` checked that `off..off + n` lies inside this live mapping (held by
            // the read lock for the duration), and `out` has room for `done + n` bytes.
            unsafe { std::ptr::copy_nonoverlapping(p.add(off), out.as_mut_ptr().add(done), n) };
            done += n;
        })?;
        Ok(out)
    }

    /// Writes `data` to guest memory at `addr`.
    pub(crate) fn write(&self, addr: u64, data: &[u8]) -> Result<(), DmaFault> {
        let mut done = 0;
        self.walk(addr, data.len(), true, |p, off, n| {
            // SAFETY: `walk` checked that `off..off + n` lies inside this live, writable mapping
            // (held by the read lock for the duration), and `data` has `done + n` bytes.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr().add(done), p.add(off), n) };
            done += n;
        })
    }
}

/// The client's memory as the design's DMA uses it, straight from the simulation thread (no
/// message, no other thread): reads complete at once, writes land at once. A miss is an error
/// completion (a read) or a dropped write, with a warning at powers of two of the fault count.
#[derive(Debug)]
pub(crate) struct DmaMemory {
    name: String,
    /// The mappings (`DMA_MAP`/`DMA_UNMAP` of the vfio-user server thread).
    pub(crate) mem: GuestMemory,
    faults: AtomicU64,
}

impl DmaMemory {
    pub(crate) fn new(name: &str) -> Self {
        Self { name: name.to_string(), mem: GuestMemory::default(), faults: AtomicU64::new(0) }
    }

    /// Completes a DMA read from the mapped memory.
    pub(crate) fn read(&self, r: &DmaRead) -> DmaReadResp {
        match self.mem.read(r.addr.0, r.len as usize) {
            Ok(data) => DmaReadResp { tag: r.tag, status: Status::Ok, data },
            Err(e) => {
                self.fault("read", r.addr.0, r.len as usize, &e);
                DmaReadResp { tag: r.tag, status: Status::UnsupportedRequest, data: Vec::new() }
            }
        }
    }

    /// Performs a posted DMA write into the mapped memory.
    pub(crate) fn write(&self, w: &DmaWrite) {
        if let Err(e) = self.mem.write(w.addr.0, &w.data) {
            self.fault("write", w.addr.0, w.data.len(), &e);
        }
    }

    /// DMA accesses that missed the client's memory so far.
    pub(crate) fn faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }

    fn fault(&self, what: &str, addr: u64, len: usize, e: &DmaFault) {
        let n = self.faults.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(target: "cosim::dpi", ep = %self.name, addr = format_args!("{addr:#x}"), len, faults = n,
                "DMA {what} failed: {e}; the design gets an error response (this warning repeats at powers of two)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    fn file(len: usize) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![0u8; len]).unwrap();
        f
    }

    #[test]
    fn reads_and_writes_land_in_the_file_and_span_adjacent_maps() {
        let page = 4096;
        let mut f = file(3 * page);
        let m = GuestMemory::default();
        m.map(0x10000, page as u64, Some(&f), 0, true).unwrap();
        m.map(0x11000, 2 * page as u64, Some(&f), page as u64, true).unwrap();
        let data: Vec<u8> = (0..200u32).map(|i| i as u8).collect();
        m.write(0x10f9c, &data).unwrap(); // 100 bytes in the first map, 100 in the second
        assert_eq!(m.read(0x10f9c, 200).unwrap(), data);
        let mut back = vec![0u8; 200];
        f.seek(SeekFrom::Start(0xf9c)).unwrap();
        f.read_exact(&mut back).unwrap();
        assert_eq!(back, data, "the bytes are in the client's file at the mapped offset");
    }

    #[test]
    fn out_of_range_not_shared_and_read_only_are_faults_not_crashes() {
        let f = file(4096);
        let m = GuestMemory::default();
        m.map(0x1000, 4096, Some(&f), 0, false).unwrap();
        m.map(0x8000, 4096, None, 0, true).unwrap();
        assert_eq!(m.read(0x1ff0, 32), Err(DmaFault::Unmapped(0x2000)), "runs past the end");
        assert_eq!(m.read(0x0, 4), Err(DmaFault::Unmapped(0)));
        assert_eq!(m.read(u64::MAX - 2, 8), Err(DmaFault::Unmapped(u64::MAX - 2)), "wraps");
        assert_eq!(m.write(0x1000, &[1]), Err(DmaFault::ReadOnly(0x1000)));
        assert_eq!(m.read(0x8004, 4), Err(DmaFault::NotShared(0x8004)));
        assert!(matches!(m.map(0x1800, 4096, Some(&f), 0, true), Err(MapError::Overlap { .. })));
        assert!(
            matches!(m.map(0x20000, 8192, Some(&f), 0, true), Err(MapError::PastEnd { .. })),
            "past the file's end"
        );
        assert_eq!(m.counts(), (2, 1));
        assert!(matches!(m.unmap(0x1000, 2048), Err(MapError::Partial { .. })), "half a mapping");
        assert_eq!(m.unmap(0x1000, 4096).unwrap(), 1);
        assert_eq!(m.read(0x1000, 4), Err(DmaFault::Unmapped(0x1000)), "gone after DMA_UNMAP");
        m.clear();
        assert_eq!(m.counts(), (0, 0));
    }
}
