//! A virtio-serial port (`/dev/vportNpM`, driver virtio_console) as the server's stream
//! (`accel-tool serve --serial`, `cosim-launch --serve --serve-channel serial`). The port can be
//! open only once, so reading and writing share one non-blocking file; waits use `poll(2)` (the
//! only `unsafe` here, one call with its `// SAFETY:` line). A session is one connection of the
//! host's client to QEMU's chardev: while no client is connected the port reports POLLHUP (reads
//! return 0, and a blocking write would wait for the next client), so a read ends the session
//! with end-of-stream and a write fails with `BrokenPipe`.
//!
//! Known limit (docs/guest.md, "Serve mode"): when a client leaves and the next one connects
//! before the guest has looked, the guest never sees the port without a client, and replies to
//! requests the first client left outstanding go to the second. The TCP channel has no such
//! limit, which is why it is the default.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How often a wait looks again (a client's arrival, or a stalled transfer).
const POLL_MS: i32 = 100;

/// poll(2) on one file: the returned events.
fn poll(file: &File, events: libc::c_short, timeout_ms: i32) -> io::Result<libc::c_short> {
    let mut fds = libc::pollfd {
        fd: file.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd that lives for the duration of the call; the fd is open (owned by
    // `file`, borrowed for the call).
    let r = unsafe { libc::poll(&mut fds, 1, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(e)
        };
    }
    Ok(fds.revents)
}

/// An open virtio-serial port.
pub struct Port {
    file: Arc<File>,
}

impl Port {
    pub fn open(path: &Path) -> io::Result<Port> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        Ok(Port {
            file: Arc::new(file),
        })
    }

    /// Returns once a client is connected on the host side.
    pub fn wait_for_host(&self) -> io::Result<()> {
        while poll(&self.file, libc::POLLIN, POLL_MS)? & libc::POLLHUP != 0 {
            std::thread::sleep(Duration::from_millis(POLL_MS as u64));
        }
        Ok(())
    }

    /// The reading and the writing half of the current session.
    pub fn halves(&self) -> (PortReader, PortWriter) {
        (
            PortReader {
                file: self.file.clone(),
            },
            PortWriter {
                file: self.file.clone(),
            },
        )
    }
}

/// Reads of one session: end-of-stream once the client is gone.
pub struct PortReader {
    file: Arc<File>,
}

impl Read for PortReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match (&*self.file).read(buf) {
                // 0: no client (any more).
                Ok(n) => return Ok(n),
                // Wakes for data and for the client leaving (POLLHUP; the next read returns 0).
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    poll(&self.file, libc::POLLIN, POLL_MS)?;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Writes of one session: `BrokenPipe` once the client is gone (never a wait for the next one).
pub struct PortWriter {
    file: Arc<File>,
}

impl Write for PortWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match (&*self.file).write(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if poll(&self.file, libc::POLLOUT, POLL_MS)? & libc::POLLHUP != 0 {
                        return Err(io::Error::new(
                            ErrorKind::BrokenPipe,
                            "the host's client disconnected",
                        ));
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
