//! The crate's only `unsafe`: the VFIO ioctls with their `#[repr(C)]` argument structs
//! (include/uapi/linux/vfio.h), `mmap`/`munmap`, volatile accesses to mapped memory, `eventfd`
//! and `poll`. Everything here returns `io::Result`; the safe layer in `lib.rs` names the step.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::time::Duration;

// ioctl numbers: _IO(VFIO_TYPE, VFIO_BASE + n) = (';' << 8) | (100 + n); no size or direction bits.
const fn vfio_io(n: u64) -> u64 {
    ((b';' as u64) << 8) | (100 + n)
}
pub const VFIO_GET_API_VERSION: u64 = vfio_io(0);
pub const VFIO_CHECK_EXTENSION: u64 = vfio_io(1);
pub const VFIO_SET_IOMMU: u64 = vfio_io(2);
pub const VFIO_GROUP_GET_STATUS: u64 = vfio_io(3);
pub const VFIO_GROUP_SET_CONTAINER: u64 = vfio_io(4);
pub const VFIO_GROUP_GET_DEVICE_FD: u64 = vfio_io(6);
pub const VFIO_DEVICE_GET_INFO: u64 = vfio_io(7);
pub const VFIO_DEVICE_GET_REGION_INFO: u64 = vfio_io(8);
pub const VFIO_DEVICE_GET_IRQ_INFO: u64 = vfio_io(9);
pub const VFIO_DEVICE_SET_IRQS: u64 = vfio_io(10);
pub const VFIO_DEVICE_RESET: u64 = vfio_io(11);
pub const VFIO_IOMMU_MAP_DMA: u64 = vfio_io(13);
pub const VFIO_IOMMU_UNMAP_DMA: u64 = vfio_io(14);

pub const VFIO_API_VERSION: i32 = 0;
pub const VFIO_TYPE1V2_IOMMU: u64 = 3;
pub const VFIO_GROUP_FLAGS_VIABLE: u32 = 1;
pub const VFIO_DEVICE_FLAGS_RESET: u32 = 1;
pub const VFIO_REGION_INFO_FLAG_MMAP: u32 = 4;
pub const VFIO_DMA_MAP_FLAG_READ_WRITE: u32 = 3;
pub const VFIO_IRQ_SET_DATA_NONE: u32 = 1;
pub const VFIO_IRQ_SET_DATA_EVENTFD: u32 = 4;
pub const VFIO_IRQ_SET_ACTION_TRIGGER: u32 = 32;
pub const VFIO_PCI_MSIX_IRQ_INDEX: u32 = 2;
pub const VFIO_PCI_CONFIG_REGION_INDEX: u32 = 7;

#[repr(C)]
#[derive(Debug, Default)]
pub struct GroupStatus {
    pub argsz: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Debug, Default)]
pub struct DeviceInfo {
    pub argsz: u32,
    pub flags: u32,
    pub num_regions: u32,
    pub num_irqs: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct RegionInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub cap_offset: u32,
    pub size: u64,
    pub offset: u64,
}

#[repr(C)]
#[derive(Debug, Default)]
pub struct IrqInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub count: u32,
}

#[repr(C)]
#[derive(Debug, Default)]
pub struct DmaMap {
    pub argsz: u32,
    pub flags: u32,
    pub vaddr: u64,
    pub iova: u64,
    pub size: u64,
}

#[repr(C)]
#[derive(Debug, Default)]
pub struct DmaUnmap {
    pub argsz: u32,
    pub flags: u32,
    pub iova: u64,
    pub size: u64,
}

/// `struct vfio_irq_set` with room for up to [`IRQ_SET_MAX`] eventfds after its header.
#[repr(C)]
#[derive(Debug, Default)]
pub struct IrqSet {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub start: u32,
    pub count: u32,
    pub fds: [i32; IRQ_SET_MAX],
}
pub const IRQ_SET_MAX: usize = 32;
/// Size of `struct vfio_irq_set` without its data.
pub const IRQ_SET_HEADER: u32 = 20;

/// The argument structs above: plain `#[repr(C)]` data the kernel reads and writes in place.
pub trait IoctlArg {}
impl IoctlArg for GroupStatus {}
impl IoctlArg for DeviceInfo {}
impl IoctlArg for RegionInfo {}
impl IoctlArg for IrqInfo {}
impl IoctlArg for DmaMap {}
impl IoctlArg for DmaUnmap {}
impl IoctlArg for IrqSet {}
impl IoctlArg for i32 {}

/// An ioctl whose argument is an integer (or none); returns the ioctl's non-negative result.
pub fn ioctl_val(fd: &impl AsRawFd, req: u64, arg: u64) -> io::Result<i32> {
    // SAFETY: the request takes an integer argument (VFIO's _IO requests that are not given a
    // struct), so the kernel dereferences no pointer of ours.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg as libc::c_ulong) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// An ioctl whose argument is a pointer to `arg`, one of VFIO's structs ([`IoctlArg`]).
pub fn ioctl_ptr<T: IoctlArg>(fd: &impl AsRawFd, req: u64, arg: &mut T) -> io::Result<i32> {
    // SAFETY: `arg` is a live, exclusively borrowed `#[repr(C)]` struct laid out as the request
    // expects; its `argsz` (set by the caller) bounds what the kernel reads and writes.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg as *mut T) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `VFIO_GROUP_GET_DEVICE_FD` takes the device's name as a C string and returns a new fd.
pub fn group_get_device_fd(group: &impl AsRawFd, name: &str) -> io::Result<OwnedFd> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call; the kernel only reads it.
    let r = unsafe { libc::ioctl(group.as_raw_fd(), VFIO_GROUP_GET_DEVICE_FD as _, c.as_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success the ioctl returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// A memory mapping, unmapped on drop. Accesses are volatile and bounds-checked.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory (device registers or RAM) owned by this value; nothing in
// it is tied to the thread that made it.
unsafe impl Send for Mapping {}

impl Mapping {
    /// `mmap(MAP_SHARED)` of `len` bytes of `fd` at `offset` (a VFIO region).
    pub fn shared(fd: &impl AsRawFd, offset: u64, len: usize) -> io::Result<Mapping> {
        Self::map(fd.as_raw_fd(), offset, len, libc::MAP_SHARED)
    }

    /// Anonymous, private, zero-filled memory of `len` bytes (a DMA buffer), locked by VFIO
    /// when it is mapped for DMA.
    pub fn anonymous(len: usize) -> io::Result<Mapping> {
        Self::map(-1, 0, len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS)
    }

    fn map(fd: i32, offset: u64, len: usize, flags: i32) -> io::Result<Mapping> {
        // SAFETY: a new mapping at an address the kernel picks; it aliases no Rust object.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, fd, offset as libc::off_t)
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: NonNull::new(p.cast()).ok_or(io::ErrorKind::Other)?, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    fn at<T>(&self, off: usize) -> *mut T {
        let size = std::mem::size_of::<T>();
        assert!(
            off.is_multiple_of(size) && off + size <= self.len,
            "access of {size} bytes at {off:#x} outside 0..{:#x}",
            self.len
        );
        // SAFETY: `off + size <= len` (checked above), so the result stays inside the mapping.
        unsafe { self.ptr.as_ptr().add(off).cast() }
    }

    pub fn read32(&self, off: usize) -> u32 {
        // SAFETY: in bounds and aligned (`at` checks); the mapping lives as long as `self`.
        unsafe { self.at::<u32>(off).read_volatile() }
    }

    pub fn write32(&self, off: usize, v: u32) {
        // SAFETY: as in `read32`.
        unsafe { self.at::<u32>(off).write_volatile(v) }
    }

    pub fn read64(&self, off: usize) -> u64 {
        // SAFETY: as in `read32`.
        unsafe { self.at::<u64>(off).read_volatile() }
    }

    pub fn write64(&self, off: usize, v: u64) {
        // SAFETY: as in `read32`.
        unsafe { self.at::<u64>(off).write_volatile(v) }
    }

    pub fn read8(&self, off: usize) -> u8 {
        // SAFETY: as in `read32`.
        unsafe { self.at::<u8>(off).read_volatile() }
    }

    pub fn write8(&self, off: usize, v: u8) {
        // SAFETY: as in `read32`.
        unsafe { self.at::<u8>(off).write_volatile(v) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and no reference into the mapping
        // outlives `self` (accesses go through the methods above).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A new eventfd (counter 0, close-on-exec).
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers.
    let r = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// Waits until `fd` is readable or `timeout` passes; true if readable. EINTR is retried.
pub fn poll_in(fd: &impl AsRawFd, timeout: Duration) -> io::Result<bool> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, for the duration of the call.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        match r {
            0 => return Ok(false),
            r if r > 0 => return Ok(true),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}
