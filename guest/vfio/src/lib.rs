//! `cosim-vfio`: drive a PCI device from a user-space program through Linux VFIO, the standard
//! API for it: map its BARs, give it a DMA buffer at a bus address (IOVA) of your choice, receive
//! its MSI-X interrupts on eventfds, reset it. No kernel module of your own.
//!
//! In the cosim guest: boot with `cosim-launch --iommu` (QEMU's virtual IOMMU; /init binds every
//! accelerator function no driver claims to `vfio-pci`), then, in your program:
//!
//! ```no_run
//! use std::time::Duration;
//! let bdf = cosim_vfio::find(0x1ded, 0x7e01)?.into_iter().next().expect("no such device");
//! let mut dev = cosim_vfio::Device::open(&bdf)?;
//! let bar0 = dev.bar(0)?;
//! println!("ID {:#x}", bar0.read32(0));
//! let buf = dev.dma_buffer(4096)?; // buf.iova() is the address the device uses
//! buf.write(0, &[1, 2, 3, 4]);
//! let irqs = dev.enable_msix(1)?;
//! // ... program the device with buf.iova(), start it ...
//! irqs[0].wait(Duration::from_secs(10))?;
//! # Ok::<(), cosim_vfio::Error>(())
//! ```
//!
//! Who owns what: a [`Device`] owns the VFIO container, group and device file descriptors; a
//! [`Bar`] and a [`DmaBuffer`] own their mappings (a buffer stays mapped for DMA until dropped);
//! an [`Irq`] owns its eventfd. The device is reached only through them. Errors name the step,
//! the file and the errno, with a hint for the usual causes ([`Error`]).
//!
//! `unsafe` lives only in the `sys` module (ioctls, mmap, volatile accesses, eventfd, poll),
//! each block with its `// SAFETY:` line.
#![deny(unsafe_code)]

mod sys;

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A failed step: what was done, on which file, the OS error and, when the cause is usually
/// known, a hint. Displayed as `STEP on PATH: ERRNO TEXT; HINT`.
#[derive(Debug)]
pub struct Error {
    pub step: &'static str,
    pub path: String,
    pub source: io::Error,
    pub hint: Option<&'static str>,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {}: {}", self.step, self.path, self.source)?;
        if let Some(h) = self.hint {
            write!(f, "; {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// vfio_iommu_type1 refuses a group when MSI cannot be remapped (kernel log: "No interrupt
/// remapping support").
const HINT_IRQ_REMAP: &str =
    "no interrupt remapping: QEMU's intel-iommu needs intremap=on (cosim-launch --iommu sets it)";
const HINT_IOMMU: &str = "is the IOMMU on and the device bound to vfio-pci? boot with cosim-launch --iommu";

fn err(step: &'static str, path: impl std::fmt::Display, source: io::Error) -> Error {
    Error { step, path: path.to_string(), source, hint: None }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

const SYSFS_PCI: &str = "/sys/bus/pci/devices";

fn sysfs_hex(dev: &Path, attr: &str) -> Option<u32> {
    let s = std::fs::read_to_string(dev.join(attr)).ok()?;
    u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
}

/// The PCI addresses (`0000:00:10.0`) of the functions with this vendor and device ID, sorted.
pub fn find(vendor: u16, device: u16) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(SYSFS_PCI).map_err(|e| err("listing PCI functions", SYSFS_PCI, e))?;
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| {
            sysfs_hex(&e.path(), "vendor") == Some(vendor.into())
                && sysfs_hex(&e.path(), "device") == Some(device.into())
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    Ok(out)
}

/// The first IOVA [`Device::dma_buffer`] hands out: above the guest's low memory, so a wrong
/// physical address used by mistake is not also a mapped bus address.
pub const IOVA_BASE: u64 = 0x1_0000_0000;

/// One PCI function opened through VFIO, in a container of its own (type-1 IOMMU).
#[derive(Debug)]
pub struct Device {
    bdf: String,
    device: File,
    container: Arc<File>,
    // Kept open: closing the group would detach the container.
    _group: File,
    next_iova: u64,
    flags: u32,
    num_irqs: u32,
}

impl Device {
    /// Opens `bdf` (e.g. `0000:00:10.0`): its IOMMU group `/dev/vfio/N`, a new container with the
    /// type-1 IOMMU, the device; enables memory decoding and bus mastering in its command register.
    pub fn open(bdf: &str) -> Result<Device> {
        let sys = PathBuf::from(SYSFS_PCI).join(bdf);
        let group_link = sys.join("iommu_group");
        let group_path = std::fs::read_link(&group_link).map_err(|e| Error {
            hint: Some("the function has no IOMMU group: boot with the virtual IOMMU (cosim-launch --iommu)"),
            ..err("reading the IOMMU group", group_link.display(), e)
        })?;
        let group_no = group_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let driver = std::fs::read_link(sys.join("driver")).ok();
        if driver.as_ref().and_then(|d| d.file_name()).is_none_or(|n| n != "vfio-pci") {
            let what = driver.map_or("no driver".to_string(), |d| format!("driver {}", d.display()));
            return Err(Error {
                hint: Some("bind it with driver_override (cosim-launch --iommu does, for functions no driver claims)"),
                ..err("checking the driver", bdf, invalid(format!("{bdf} is not bound to vfio-pci ({what})")))
            });
        }

        let open = |p: &str| OpenOptions::new().read(true).write(true).open(p);
        let container = open("/dev/vfio/vfio").map_err(|e| err("opening the VFIO container", "/dev/vfio/vfio", e))?;
        let v = sys::ioctl_val(&container, sys::VFIO_GET_API_VERSION, 0)
            .map_err(|e| err("VFIO_GET_API_VERSION", "/dev/vfio/vfio", e))?;
        if v != sys::VFIO_API_VERSION {
            let e = invalid(format!("API version {v}, this crate speaks {}", sys::VFIO_API_VERSION));
            return Err(err("VFIO_GET_API_VERSION", "/dev/vfio/vfio", e));
        }
        if sys::ioctl_val(&container, sys::VFIO_CHECK_EXTENSION, sys::VFIO_TYPE1V2_IOMMU).unwrap_or(0) != 1 {
            let e = invalid("no type-1 v2 IOMMU support".into());
            return Err(Error {
                hint: Some("load vfio_iommu_type1"),
                ..err("VFIO_CHECK_EXTENSION", "/dev/vfio/vfio", e)
            });
        }

        let gpath = format!("/dev/vfio/{group_no}");
        let group =
            open(&gpath).map_err(|e| Error { hint: Some(HINT_IOMMU), ..err("opening the group", &gpath, e) })?;
        let mut st = sys::GroupStatus { argsz: std::mem::size_of::<sys::GroupStatus>() as u32, flags: 0 };
        sys::ioctl_ptr(&group, sys::VFIO_GROUP_GET_STATUS, &mut st)
            .map_err(|e| err("VFIO_GROUP_GET_STATUS", &gpath, e))?;
        if st.flags & sys::VFIO_GROUP_FLAGS_VIABLE == 0 {
            let e = invalid("group not viable".into());
            return Err(Error {
                hint: Some("bind every function of the group to vfio-pci"),
                ..err("VFIO_GROUP_GET_STATUS", &gpath, e)
            });
        }
        let mut cfd = container.as_raw_fd_i32();
        sys::ioctl_ptr(&group, sys::VFIO_GROUP_SET_CONTAINER, &mut cfd)
            .map_err(|e| Error { hint: Some(HINT_IOMMU), ..err("VFIO_GROUP_SET_CONTAINER", &gpath, e) })?;
        sys::ioctl_val(&container, sys::VFIO_SET_IOMMU, sys::VFIO_TYPE1V2_IOMMU).map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::EPERM) { HINT_IRQ_REMAP } else { HINT_IOMMU };
            Error { hint: Some(hint), ..err("VFIO_SET_IOMMU (type-1 v2)", "/dev/vfio/vfio", e) }
        })?;
        let device: File = sys::group_get_device_fd(&group, bdf)
            .map_err(|e| err("VFIO_GROUP_GET_DEVICE_FD", format!("{gpath} ({bdf})"), e))?
            .into();
        let mut info = sys::DeviceInfo { argsz: std::mem::size_of::<sys::DeviceInfo>() as u32, ..Default::default() };
        sys::ioctl_ptr(&device, sys::VFIO_DEVICE_GET_INFO, &mut info)
            .map_err(|e| err("VFIO_DEVICE_GET_INFO", bdf, e))?;

        let dev = Device {
            bdf: bdf.to_string(),
            device,
            container: Arc::new(container),
            _group: group,
            next_iova: IOVA_BASE,
            flags: info.flags,
            num_irqs: info.num_irqs,
        };
        // Command register: memory space (bit 1) and bus master (bit 2).
        let cmd = dev.config_read16(0x04)?;
        dev.config_write16(0x04, cmd | 0x6)?;
        Ok(dev)
    }

    /// The PCI address this device was opened with.
    pub fn bdf(&self) -> &str {
        &self.bdf
    }

    fn region(&self, index: u32) -> Result<sys::RegionInfo> {
        let mut r =
            sys::RegionInfo { argsz: std::mem::size_of::<sys::RegionInfo>() as u32, index, ..Default::default() };
        sys::ioctl_ptr(&self.device, sys::VFIO_DEVICE_GET_REGION_INFO, &mut r)
            .map_err(|e| err("VFIO_DEVICE_GET_REGION_INFO", format!("{} region {index}", self.bdf), e))?;
        Ok(r)
    }

    fn config_at(&self) -> Result<u64> {
        Ok(self.region(sys::VFIO_PCI_CONFIG_REGION_INDEX)?.offset)
    }

    /// Reads 2 bytes of config space at `off`.
    pub fn config_read16(&self, off: u64) -> Result<u16> {
        let mut b = [0u8; 2];
        self.device
            .read_exact_at(&mut b, self.config_at()? + off)
            .map_err(|e| err("reading config space", format!("{} at {off:#x}", self.bdf), e))?;
        Ok(u16::from_le_bytes(b))
    }

    /// Writes 2 bytes of config space at `off`.
    pub fn config_write16(&self, off: u64, v: u16) -> Result<()> {
        self.device
            .write_all_at(&v.to_le_bytes(), self.config_at()? + off)
            .map_err(|e| err("writing config space", format!("{} at {off:#x}", self.bdf), e))
    }

    /// Maps BAR `n` (0 to 5) whole.
    pub fn bar(&self, n: u32) -> Result<Bar> {
        let where_ = format!("{} BAR{n}", self.bdf);
        if n > 5 {
            return Err(err("mapping a BAR", where_, invalid(format!("BAR{n} does not exist (0 to 5)"))));
        }
        let r = self.region(n)?;
        if r.size == 0 {
            return Err(err("mapping a BAR", where_, invalid("the device does not implement it".into())));
        }
        if r.flags & sys::VFIO_REGION_INFO_FLAG_MMAP == 0 {
            return Err(err("mapping a BAR", where_, invalid("vfio-pci does not allow mmap of it".into())));
        }
        let m = sys::Mapping::shared(&self.device, r.offset, r.size as usize).map_err(|e| err("mmap", where_, e))?;
        Ok(Bar { map: m })
    }

    /// A zeroed buffer of `len` bytes (rounded up to 4 KiB) mapped for the device's DMA, read and
    /// write, at the next free IOVA from [`IOVA_BASE`] up.
    pub fn dma_buffer(&mut self, len: usize) -> Result<DmaBuffer> {
        let len = len.max(1).next_multiple_of(4096);
        let map = sys::Mapping::anonymous(len).map_err(|e| err("mmap of a DMA buffer", format!("{len} bytes"), e))?;
        let iova = self.next_iova;
        let mut m = sys::DmaMap {
            argsz: std::mem::size_of::<sys::DmaMap>() as u32,
            flags: sys::VFIO_DMA_MAP_FLAG_READ_WRITE,
            vaddr: map.addr(),
            iova,
            size: len as u64,
        };
        sys::ioctl_ptr(&*self.container, sys::VFIO_IOMMU_MAP_DMA, &mut m).map_err(|e| Error {
            hint: Some("ENOMEM: the locked-memory limit (ulimit -l) is too small"),
            ..err("VFIO_IOMMU_MAP_DMA", format!("IOVA {iova:#x}, {len} bytes"), e)
        })?;
        self.next_iova += len as u64;
        Ok(DmaBuffer { map, iova, container: Arc::clone(&self.container) })
    }

    /// Enables MSI-X with `n` vectors, each signalling its own eventfd ([`Irq`], in vector order).
    pub fn enable_msix(&self, n: u32) -> Result<Vec<Irq>> {
        let where_ = format!("{} MSI-X", self.bdf);
        let mut info = sys::IrqInfo {
            argsz: std::mem::size_of::<sys::IrqInfo>() as u32,
            index: sys::VFIO_PCI_MSIX_IRQ_INDEX,
            ..Default::default()
        };
        if self.num_irqs > sys::VFIO_PCI_MSIX_IRQ_INDEX {
            sys::ioctl_ptr(&self.device, sys::VFIO_DEVICE_GET_IRQ_INFO, &mut info)
                .map_err(|e| err("VFIO_DEVICE_GET_IRQ_INFO", &where_, e))?;
        }
        if n == 0 || n > info.count || n as usize > sys::IRQ_SET_MAX {
            let e = invalid(format!("{n} vector(s) asked, the device has {}", info.count));
            return Err(err("enabling MSI-X", where_, e));
        }
        let mut irqs = Vec::new();
        let mut set = sys::IrqSet {
            argsz: sys::IRQ_SET_HEADER + 4 * n,
            flags: sys::VFIO_IRQ_SET_DATA_EVENTFD | sys::VFIO_IRQ_SET_ACTION_TRIGGER,
            index: sys::VFIO_PCI_MSIX_IRQ_INDEX,
            start: 0,
            count: n,
            ..Default::default()
        };
        for v in 0..n {
            let fd = sys::eventfd().map_err(|e| err("eventfd", &where_, e))?;
            set.fds[v as usize] = std::os::fd::AsRawFd::as_raw_fd(&fd);
            irqs.push(Irq { file: File::from(fd), vector: v });
        }
        sys::ioctl_ptr(&self.device, sys::VFIO_DEVICE_SET_IRQS, &mut set)
            .map_err(|e| err("VFIO_DEVICE_SET_IRQS (MSI-X onto eventfds)", where_, e))?;
        Ok(irqs)
    }

    /// Disables MSI-X (the eventfds stop receiving).
    pub fn disable_msix(&self) -> Result<()> {
        let mut set = sys::IrqSet {
            argsz: sys::IRQ_SET_HEADER,
            flags: sys::VFIO_IRQ_SET_DATA_NONE | sys::VFIO_IRQ_SET_ACTION_TRIGGER,
            index: sys::VFIO_PCI_MSIX_IRQ_INDEX,
            ..Default::default()
        };
        sys::ioctl_ptr(&self.device, sys::VFIO_DEVICE_SET_IRQS, &mut set)
            .map(drop)
            .map_err(|e| err("VFIO_DEVICE_SET_IRQS (MSI-X off)", &self.bdf, e))
    }

    /// Resets the function (`VFIO_DEVICE_RESET`: FLR or another method the kernel finds).
    pub fn reset(&self) -> Result<()> {
        if self.flags & sys::VFIO_DEVICE_FLAGS_RESET == 0 {
            let e = invalid("the device offers no reset method".into());
            return Err(err("VFIO_DEVICE_RESET", &self.bdf, e));
        }
        sys::ioctl_val(&self.device, sys::VFIO_DEVICE_RESET, 0)
            .map(drop)
            .map_err(|e| err("VFIO_DEVICE_RESET", &self.bdf, e))
    }
}

/// The raw fd as the `i32` `VFIO_GROUP_SET_CONTAINER` takes.
trait RawFdI32 {
    fn as_raw_fd_i32(&self) -> i32;
}
impl RawFdI32 for File {
    fn as_raw_fd_i32(&self) -> i32 {
        std::os::fd::AsRawFd::as_raw_fd(self)
    }
}

/// A mapped BAR: 8-, 32- and 64-bit volatile accesses at byte offsets (aligned; an access
/// outside the BAR panics).
#[derive(Debug)]
pub struct Bar {
    map: sys::Mapping,
}

impl Bar {
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }
    pub fn read8(&self, off: usize) -> u8 {
        self.map.read8(off)
    }
    pub fn read32(&self, off: usize) -> u32 {
        self.map.read32(off)
    }
    pub fn write32(&self, off: usize, v: u32) {
        self.map.write32(off, v)
    }
    pub fn read64(&self, off: usize) -> u64 {
        self.map.read64(off)
    }
    pub fn write64(&self, off: usize, v: u64) {
        self.map.write64(off, v)
    }
}

/// Memory the device reaches at [`DmaBuffer::iova`]; unmapped from the IOMMU on drop. The device
/// may write it at any time, so it is read and written by copy, never borrowed as a slice.
#[derive(Debug)]
pub struct DmaBuffer {
    map: sys::Mapping,
    iova: u64,
    container: Arc<File>,
}

impl DmaBuffer {
    /// The bus address the device uses for byte 0.
    pub fn iova(&self) -> u64 {
        self.iova
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }
    /// Copies `data` into the buffer at `off` (panics outside the buffer).
    pub fn write(&self, off: usize, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            self.map.write8(off + i, *b);
        }
    }
    /// Copies `out.len()` bytes from `off` (panics outside the buffer).
    pub fn read(&self, off: usize, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.map.read8(off + i);
        }
    }
    pub fn read64(&self, off: usize) -> u64 {
        self.map.read64(off)
    }
    pub fn write64(&self, off: usize, v: u64) {
        self.map.write64(off, v)
    }
}

impl Drop for DmaBuffer {
    fn drop(&mut self) {
        let mut u = sys::DmaUnmap {
            argsz: std::mem::size_of::<sys::DmaUnmap>() as u32,
            flags: 0,
            iova: self.iova,
            size: self.map.len() as u64,
        };
        // Nothing to do about a failure here: the container goes away with the process.
        let _ = sys::ioctl_ptr(&*self.container, sys::VFIO_IOMMU_UNMAP_DMA, &mut u);
    }
}

/// One MSI-X vector's eventfd.
#[derive(Debug)]
pub struct Irq {
    file: File,
    vector: u32,
}

/// An interrupt that did not come in time.
pub const HINT_TIMEOUT: &str = "no interrupt: is the vector enabled in the device (its IRQ enable bit)?";

impl Irq {
    pub fn vector(&self) -> u32 {
        self.vector
    }

    /// Waits up to `timeout` for the vector; returns how many interrupts came since the last wait
    /// (at least 1). A timeout is an error with `ErrorKind::TimedOut`.
    pub fn wait(&self, timeout: Duration) -> Result<u64> {
        let what = format!("MSI-X vector {}", self.vector);
        let ready = sys::poll_in(&self.file, timeout).map_err(|e| err("poll", &what, e))?;
        if !ready {
            let e = io::Error::new(io::ErrorKind::TimedOut, format!("none within {timeout:?}"));
            return Err(Error { hint: Some(HINT_TIMEOUT), ..err("waiting for an interrupt", what, e) });
        }
        let mut b = [0u8; 8];
        (&self.file).read_exact(&mut b).map_err(|e| err("reading the eventfd", what, e))?;
        Ok(u64::from_le_bytes(b))
    }

    /// True if an interrupt is pending (without waiting or consuming it).
    pub fn pending(&self) -> Result<bool> {
        sys::poll_in(&self.file, Duration::ZERO).map_err(|e| err("poll", format!("MSI-X vector {}", self.vector), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux_vfio_h() {
        // Values from include/uapi/linux/vfio.h (_IO(';', 100 + n)).
        assert_eq!(sys::VFIO_GET_API_VERSION, 0x3b64);
        assert_eq!(sys::VFIO_SET_IOMMU, 0x3b66);
        assert_eq!(sys::VFIO_GROUP_SET_CONTAINER, 0x3b68);
        assert_eq!(sys::VFIO_GROUP_GET_DEVICE_FD, 0x3b6a);
        assert_eq!(sys::VFIO_DEVICE_SET_IRQS, 0x3b6e);
        assert_eq!(sys::VFIO_DEVICE_RESET, 0x3b6f);
        assert_eq!(sys::VFIO_IOMMU_MAP_DMA, 0x3b71);
        assert_eq!(sys::VFIO_IOMMU_UNMAP_DMA, 0x3b72);
        assert_eq!(std::mem::size_of::<sys::RegionInfo>(), 32);
        assert_eq!(std::mem::size_of::<sys::DmaMap>(), 32);
        assert_eq!(std::mem::size_of::<sys::DmaUnmap>(), 24);
        assert_eq!(std::mem::offset_of!(sys::IrqSet, fds), sys::IRQ_SET_HEADER as usize);
    }

    #[test]
    fn errors_name_the_step_the_file_and_the_errno() {
        let e = Error {
            hint: Some(HINT_IOMMU),
            ..err("VFIO_GROUP_SET_CONTAINER", "/dev/vfio/3", io::Error::from_raw_os_error(libc::EPERM))
        };
        let s = e.to_string();
        assert!(
            s.starts_with("VFIO_GROUP_SET_CONTAINER on /dev/vfio/3: Operation not permitted (os error 1); "),
            "{s}"
        );
        assert!(s.ends_with("boot with cosim-launch --iommu"), "{s}");
    }

    #[test]
    fn a_function_without_iommu_group_says_how_to_get_one() {
        let e = Device::open("ffff:ff:1f.7").unwrap_err();
        assert_eq!(e.step, "reading the IOMMU group");
        assert!(e.to_string().contains("--iommu"), "{e}");
    }

    #[test]
    fn anonymous_mappings_are_bounds_checked_and_volatile_round_trips() {
        let m = sys::Mapping::anonymous(4096).unwrap();
        m.write64(8, 0x0123_4567_89ab_cdef);
        assert_eq!(m.read32(8), 0x89ab_cdef);
        assert_eq!(m.read8(15), 0x01);
        assert!(std::panic::catch_unwind(|| m.read32(4094)).is_err());
        assert!(std::panic::catch_unwind(|| m.read32(2)).is_err());
    }

    #[test]
    fn an_eventfd_wait_times_out() {
        let irq = Irq { file: File::from(sys::eventfd().unwrap()), vector: 0 };
        assert!(!irq.pending().unwrap());
        let e = irq.wait(Duration::from_millis(20)).unwrap_err();
        assert_eq!(e.source.kind(), io::ErrorKind::TimedOut);
        use std::io::Write;
        (&irq.file).write_all(&3u64.to_le_bytes()).unwrap();
        assert_eq!(irq.wait(Duration::from_secs(1)).unwrap(), 3);
    }
}
