//! The cosim_accel ioctl ABI (mirror of `guest/driver/cosim_accel_ioctl.h`) and a safe wrapper
//! around one open `/dev/accelN`. The only `unsafe` of the tool lives here.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub const ABI_VERSION: u32 = 1;

/// `struct cosim_accel_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawInfo {
    pub abi_version: u32,
    pub index: u32,
    pub vendor: u16,
    pub device: u16,
    pub revision: u8,
    pub pad0: [u8; 3],
    pub id: u32,
    pub version: u32,
    pub array_rows: u32,
    pub array_cols: u32,
    pub max_dim: u32,
    pub msix_vectors: u32,
    pub timeout_ms: u32,
    pub pad1: u32,
    pub jobs: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub irqs: u64,
    pub jobs_done_reg: u64,
    pub pci_name: [u8; 32],
    pub nic_rx_frames: u32,
    pub nic_tx_frames: u32,
    pub uart_rx_bytes: u32,
    pub pad2: u32,
}

/// `struct cosim_accel_gemm`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RawGemm {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub timeout_ms: u32,
    pub a_ptr: u64,
    pub b_ptr: u64,
    pub c_ptr: u64,
    pub cycles: u64,
    pub dma_wait_cycles: u64,
    pub device_ns: u64,
    pub dev_error: u32,
    pub pad0: u32,
}

// The C header's layout (checked here so a mismatch fails the build).
const _: () = assert!(std::mem::size_of::<RawInfo>() == 136);
const _: () = assert!(std::mem::size_of::<RawGemm>() == 72);

const IOC_MAGIC: u32 = b'G' as u32;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// Linux `_IOC(dir, type, nr, size)` for x86.
const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (IOC_MAGIC << 8) | nr
}

pub const IOC_INFO: u32 = ioc(IOC_READ, 0x01, std::mem::size_of::<RawInfo>());
pub const IOC_GEMM: u32 = ioc(IOC_READ | IOC_WRITE, 0x02, std::mem::size_of::<RawGemm>());
pub const IOC_RESET: u32 = ioc(0, 0x03, 0);

/// Names of the device's ERROR codes (docs/register-map.md).
pub fn device_error_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "ZERO_DIM",
        2 => "DIM_TOO_LARGE",
        3 => "BAD_STRIDE",
        4 => "MISALIGNED",
        5 => "BUSY",
        6 => "DMA_ERROR",
        _ => "UNKNOWN",
    }
}

/// One open accelerator.
pub struct Device {
    file: File,
    path: PathBuf,
}

/// Result of a GEMM job as reported by the driver.
#[derive(Clone, Copy, Debug)]
pub struct GemmOutcome {
    pub cycles: u64,
    pub dma_wait_cycles: u64,
    pub device_ns: u64,
    pub dev_error: u32,
}

/// A failed GEMM ioctl: the errno plus whatever the driver wrote back.
#[derive(Debug)]
pub struct GemmError {
    pub err: io::Error,
    pub outcome: GemmOutcome,
}

impl Device {
    pub fn open(path: &Path) -> io::Result<Device> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Device { file, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn info(&self) -> io::Result<RawInfo> {
        // SAFETY: RawInfo is plain old data (integers and byte arrays); all-zero is a valid value.
        let mut info: RawInfo = unsafe { std::mem::zeroed() };
        // SAFETY: IOC_INFO writes exactly size_of::<RawInfo>() bytes (encoded in the request) into
        // the pointed-to struct, which lives for the duration of the call.
        let r = unsafe {
            libc::ioctl(self.file.as_raw_fd(), IOC_INFO as libc::c_ulong, &mut info as *mut RawInfo)
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(info)
    }

    /// C = A x B for `(m, n, k)`. `a` is m*k, `b` is k*n, `c` is m*n (packed row-major).
    pub fn gemm(
        &self,
        (m, n, k): (u32, u32, u32),
        a: &[i8],
        b: &[i8],
        c: &mut [i32],
        timeout_ms: u32,
    ) -> Result<GemmOutcome, GemmError> {
        let (mu, nu, ku) = (m as usize, n as usize, k as usize);
        if a.len() < mu * ku || b.len() < ku * nu || c.len() < mu * nu {
            return Err(GemmError {
                err: io::Error::new(io::ErrorKind::InvalidInput, "buffer smaller than the matrix"),
                outcome: GemmOutcome { cycles: 0, dma_wait_cycles: 0, device_ns: 0, dev_error: 0 },
            });
        }
        let mut req = RawGemm {
            m,
            n,
            k,
            timeout_ms,
            a_ptr: a.as_ptr() as u64,
            b_ptr: b.as_ptr() as u64,
            c_ptr: c.as_mut_ptr() as u64,
            ..RawGemm::default()
        };
        // SAFETY: the driver reads m*k bytes from a_ptr and k*n bytes from b_ptr and writes m*n
        // i32 to c_ptr; the slice lengths were checked above and the borrows outlive the call.
        // It reads and writes `req` (size encoded in IOC_GEMM).
        let r = unsafe {
            libc::ioctl(self.file.as_raw_fd(), IOC_GEMM as libc::c_ulong, &mut req as *mut RawGemm)
        };
        let outcome = GemmOutcome {
            cycles: req.cycles,
            dma_wait_cycles: req.dma_wait_cycles,
            device_ns: req.device_ns,
            dev_error: req.dev_error,
        };
        if r < 0 {
            return Err(GemmError { err: io::Error::last_os_error(), outcome });
        }
        Ok(outcome)
    }

    pub fn reset(&self) -> io::Result<()> {
        // SAFETY: IOC_RESET takes no argument.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), IOC_RESET as libc::c_ulong, 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_codes_match_linux_macros() {
        // _IOR('G', 1, 136), _IOWR('G', 2, 72), _IO('G', 3) as computed by <linux/ioctl.h>.
        assert_eq!(IOC_INFO, 0x8088_4701);
        assert_eq!(IOC_GEMM, 0xc048_4702);
        assert_eq!(IOC_RESET, 0x0000_4703);
    }
}
