//! A safe wrapper around one open `/dev/accelN`, speaking the cosim_accel ioctl ABI defined in
//! `gemm-abi` (`cosim_gemm_abi::ioctl`, checked against `guest/driver/cosim_accel_ioctl.h` by that
//! crate's tests). One of the tool's two modules with `unsafe` (the other is `net`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub use cosim_gemm_abi::ioctl::ABI_VERSION;
use cosim_gemm_abi::ioctl::{AccelGemm, AccelInfo, GEMM as IOC_GEMM, INFO as IOC_INFO, RESET as IOC_RESET};
use cosim_gemm_abi::ErrorCode;

/// Name of a device ERROR code (docs/register-map.md), `UNKNOWN` for codes the map does not have.
pub fn device_error_name(code: u32) -> &'static str {
    ErrorCode::try_from(code).map_or("UNKNOWN", ErrorCode::name)
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

    pub fn info(&self) -> io::Result<AccelInfo> {
        let mut info = AccelInfo::default();
        // SAFETY: IOC_INFO writes exactly size_of::<AccelInfo>() bytes (encoded in the request)
        // into the pointed-to `#[repr(C)]` struct, which lives for the duration of the call.
        let r = unsafe {
            libc::ioctl(self.file.as_raw_fd(), IOC_INFO as libc::c_ulong, &mut info as *mut AccelInfo)
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
        let mut req = AccelGemm {
            m,
            n,
            k,
            timeout_ms,
            a_ptr: a.as_ptr() as u64,
            b_ptr: b.as_ptr() as u64,
            c_ptr: c.as_mut_ptr() as u64,
            ..AccelGemm::default()
        };
        // SAFETY: the driver reads m*k bytes from a_ptr and k*n bytes from b_ptr and writes m*n
        // i32 to c_ptr; the slice lengths were checked above and the borrows outlive the call.
        // It reads and writes `req` (size encoded in IOC_GEMM).
        let r = unsafe {
            libc::ioctl(self.file.as_raw_fd(), IOC_GEMM as libc::c_ulong, &mut req as *mut AccelGemm)
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
