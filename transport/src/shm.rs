//! The shared-memory link for peers on one machine (docs/protocol.md, "Shared-memory link"):
//! two single-producer single-consumer rings of encoded frames in one shared mapping, and a
//! doorbell per direction.
//!
//! This is the only module of the crate besides `access` that may use `unsafe`: `memfd_create`,
//! `mmap`, atomics and byte copies on the shared mapping, FIFOs and `poll(2)`/`epoll(7)`. Every
//! block says why it is sound. Everything read from the mapping is the peer's and is checked as
//! untrusted input (indices, lengths): a buggy or hostile peer gives [`ShmError::Corrupt`],
//! never a read or write outside the mapping.
//!
//! Layout (all integers little-endian, the rings' control words are atomics):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `CSSHM\0\0\x01` |
//! | 8 | 4 | ring capacity in bytes (a power of two) |
//! | 16 | 8 | session number |
//! | 64 + 256 r | 8 | ring r: head (bytes ever published by its producer) |
//! | 128 + 256 r | 8 | ring r: tail (bytes ever consumed by its consumer) |
//! | 192 + 256 r | 4 | ring r: the consumer sleeps (1) and wants the doorbell |
//! | 196 + 256 r | 4 | ring r: the producer waits for space and wants the doorbell |
//! | 4096 + r cap | cap | ring r's data |
//!
//! Ring 0 carries `h2d`, ring 1 `d2h`. A record is a 4-byte frame length, 4 reserved bytes and
//! the frame, padded to 8 bytes; records wrap around the end of the data area.
//!
//! Waiting: a consumer with nothing to read looks at the ring for up to [`DEFAULT_SPIN`] (none
//! by default; `COSIM_SHM_SPIN_US`), yielding the CPU between looks (a busy spin measured far
//! worse on a loaded 2-core machine: the peer often needs that very core), then sets its "sleeps"
//! word, checks the ring once more and sleeps in `poll(2)` on its doorbell, a FIFO in the
//! endpoint's private directory. A producer that publishes a record and finds the word set
//! clears it and writes one byte to the FIFO. A FIFO, unlike a futex, is a file descriptor: it
//! sits in one `poll` with the ZeroMQ socket, in QEMU's main loop and in the bridge's I/O thread
//! (through [`Epoll`]), so nothing needs a thread of its own to watch the ring.
//!
//! The mapping is a sealed memfd (it cannot shrink, so no access can fault with `SIGBUS`),
//! reached by the peer through a symbolic link to `/proc/<pid>/fd/<n>` in the private directory.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cosim_protocol::{HEADER_LEN, MAX_PAYLOAD_LEN};

/// Magic at offset 0 (the last byte is the layout version).
const MAGIC: [u8; 8] = *b"CSSHM\0\0\x01";
/// Bytes before the first ring's data.
const HEADER_SIZE: usize = 4096;
/// Offset of ring r's control words: `CTRL + r * CTRL_STRIDE`.
const CTRL: usize = 64;
const CTRL_STRIDE: usize = 256;
const OFF_HEAD: usize = 0;
const OFF_TAIL: usize = 64;
const OFF_CONSUMER_SLEEPS: usize = 128;
const OFF_PRODUCER_WAITS: usize = 132;
/// Bytes of a record's header (length + reserved).
const REC_HDR: usize = 8;
/// Longest frame a ring carries: the protocol's largest.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_PAYLOAD_LEN;
/// Default capacity of each ring: 16 of the largest DMA frames.
pub const DEFAULT_CAPACITY: usize = 1 << 20;
/// Smallest and largest capacity [`ShmLink::attach`] accepts from a peer's header.
const MIN_CAPACITY: usize = 1 << 18;
const MAX_CAPACITY: usize = 1 << 26;
/// How long a waiting side spins before it sleeps on its doorbell: not at all by default. A
/// 20 us yielding spin cut the guest-visible MMIO read from about 41 to 26 us (median) on the
/// 2-core machine, but with a simulation clocking without pause beside it (DMA, free-running) a
/// spinning thread lost its core for milliseconds and DMA copies got a tail of up to 100 ms
/// (docs/benchmarks.md, "DMA copy engine against its bus"). Spin on machines with cores to spare.
pub const DEFAULT_SPIN: Duration = Duration::ZERO;
/// Environment variable overriding [`DEFAULT_SPIN`], in microseconds (0: never spin).
pub const SPIN_ENV: &str = "COSIM_SHM_SPIN_US";

/// [`DEFAULT_SPIN`], or what [`SPIN_ENV`] says.
pub fn spin_from_env() -> Duration {
    std::env::var(SPIN_ENV).ok().and_then(|s| s.trim().parse().ok()).map_or(DEFAULT_SPIN, Duration::from_micros)
}

/// Which rings a side produces and consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Produces ring 0 (`h2d`), consumes ring 1 (`d2h`); creates the mapping.
    Host,
    /// Produces ring 1, consumes ring 0; attaches to the host's mapping.
    Device,
}

/// Failures of the shared-memory link.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The mapping or a file does not look like ours (wrong magic, size, owner, seals, session).
    #[error("{0}")]
    Invalid(String),
    /// The peer wrote indices or lengths that cannot be right; the ring is unusable.
    #[error("the shared ring is corrupt: {0}")]
    Corrupt(String),
    /// The ring stayed full for the whole timeout (the peer is not consuming).
    #[error("the shared ring stayed full for {0:?}: the peer is not receiving")]
    Full(Duration),
    /// A frame longer than any protocol frame.
    #[error("frame of {0} bytes is longer than the largest protocol frame")]
    TooLong(usize),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ShmError {
    let what = what.into();
    move |source| ShmError::Io { what, source }
}

fn last_err(what: impl Into<String>) -> ShmError {
    ShmError::Io { what: what.into(), source: std::io::Error::last_os_error() }
}

fn cstr(p: &Path) -> Result<CString, ShmError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| ShmError::Invalid(format!("{} contains a NUL byte", p.display())))
}

/// The names a host publishes for one session next to the endpoint's base path: the link to
/// the mapping and the two doorbells.
pub fn paths(base: &Path, session: u64) -> [PathBuf; 3] {
    let stem = format!("{}.shm-{session:016x}", base.display());
    [PathBuf::from(&stem), PathBuf::from(format!("{stem}.h2d")), PathBuf::from(format!("{stem}.d2h"))]
}

/// Removes the names of offers whose host died before a device attached (a host killed between
/// INIT and CONFIG): a link next to `base` to `/proc/<pid>/fd/<n>` that dangles and whose
/// process `kill(pid, 0)` says does not exist, and its two doorbells. Names of a live process
/// (also another user's, or one hidden from this `/proc`), or that cannot be checked, stay.
fn remove_dead_offers(base: &Path) {
    let (Some(dir), Some(stem)) = (base.parent(), base.file_name()) else { return };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let prefix = format!("{}.shm-", stem.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(session) = name.strip_prefix(&prefix) else { continue };
        if session.len() != 16 || !session.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue; // a doorbell (".h2d", ".d2h") or something else
        }
        let link = e.path();
        let Some(pid) = std::fs::read_link(&link).ok().and_then(|t| offer_pid(&t)) else { continue };
        let dangling = std::fs::metadata(&link).is_err_and(|err| err.kind() == std::io::ErrorKind::NotFound);
        if dangling && process_is_gone(pid) {
            tracing::info!(target: "cosim::shm", "removing {} and its doorbells: the host that offered it is gone", link.display());
            for p in [link.clone(), PathBuf::from(format!("{}.h2d", link.display())), PathBuf::from(format!("{}.d2h", link.display()))] {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// The process of an offer's link target, `/proc/<pid>/fd/<n>` (what [`ShmLink::create`] writes).
fn offer_pid(target: &Path) -> Option<libc::pid_t> {
    let t = target.to_str()?.strip_prefix("/proc/")?;
    let (pid, fd) = t.split_once("/fd/")?;
    fd.parse::<u32>().ok()?;
    pid.parse::<libc::pid_t>().ok().filter(|&p| p > 0)
}

/// True only if no process `pid` exists (`kill(pid, 0)` fails with ESRCH; EPERM means another
/// user's live process).
fn process_is_gone(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 sends nothing; it only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// A shared mapping (private to this module: only [`ShmLink`] touches its bytes).
#[derive(Debug)]
struct Region {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain shared memory owned by this value; every access goes through
// atomics or byte copies of the owning `ShmLink`, which one thread uses at a time (`&mut self`).
unsafe impl Send for Region {}

impl Region {
    /// A fresh sealed memfd of `cap` bytes per ring, mapped, with the header written.
    fn create(cap: usize, session: u64) -> Result<Self, ShmError> {
        assert!(cap.is_power_of_two() && cap >= 2 * (REC_HDR + MAX_FRAME), "ring capacity {cap}");
        let name = CString::new("cosim-shm").expect("no NUL");
        // SAFETY: `name` is a valid NUL-terminated string; the result is checked.
        let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if raw < 0 {
            return Err(last_err("memfd_create"));
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let len = HEADER_SIZE + 2 * cap;
        // SAFETY: plain system calls on our own descriptor; results checked.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(last_err("ftruncate"));
        }
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(last_err("sealing the memfd"));
        }
        let r = Self::map(fd, len, cap)?;
        // SAFETY: the header lies inside the fresh mapping, which nobody else can reach yet.
        unsafe {
            std::ptr::copy_nonoverlapping(MAGIC.as_ptr(), r.ptr.as_ptr(), 8);
            std::ptr::write_unaligned(r.ptr.as_ptr().add(8).cast::<u32>(), (cap as u32).to_le());
            std::ptr::write_unaligned(r.ptr.as_ptr().add(16).cast::<u64>(), session.to_le());
        }
        Ok(r)
    }

    /// Maps `fd` (which must be `len` bytes long and sealed against shrinking).
    fn map(fd: OwnedFd, len: usize, cap: usize) -> Result<Self, ShmError> {
        // SAFETY: a new shared mapping of our descriptor at an address the kernel picks; checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(last_err("mmap"));
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| ShmError::Invalid("mmap returned NULL".into()))?;
        Ok(Self { ptr, len, cap, fd })
    }

    /// Opens and checks the host's mapping through `link`: a memfd of this user, sealed
    /// against shrinking, of the size its header announces, for `session`.
    fn open(link: &Path, session: u64) -> Result<Self, ShmError> {
        let c = cstr(link)?;
        // SAFETY: `c` is a valid C string; the result is checked.
        let raw = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if raw < 0 {
            return Err(last_err(format!("opening {}", link.display())));
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let meta = std::fs::File::from(fd.try_clone().map_err(io_err("dup"))?).metadata().map_err(io_err("fstat"))?;
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        if !meta.file_type().is_file() || meta.uid() != uid {
            return Err(ShmError::Invalid(format!("{} is not a regular file of this user", link.display())));
        }
        // SAFETY: plain fcntl on our own descriptor.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
            return Err(ShmError::Invalid(format!("{} is not a memfd sealed against shrinking", link.display())));
        }
        let len = meta.len() as usize;
        if !(HEADER_SIZE + 2 * MIN_CAPACITY..=HEADER_SIZE + 2 * MAX_CAPACITY).contains(&len) {
            return Err(ShmError::Invalid(format!("shared mapping of impossible size {len}")));
        }
        let mut r = Self::map(fd, len, 0)?;
        let mut hdr = [0u8; 24];
        // SAFETY: 24 bytes at the start of a mapping of at least HEADER_SIZE bytes.
        unsafe { std::ptr::copy_nonoverlapping(r.ptr.as_ptr(), hdr.as_mut_ptr(), hdr.len()) };
        let cap = u32::from_le_bytes(hdr[8..12].try_into().expect("4 bytes")) as usize;
        let their_session = u64::from_le_bytes(hdr[16..24].try_into().expect("8 bytes"));
        if hdr[..8] != MAGIC {
            return Err(ShmError::Invalid("shared mapping without our magic (another layout version?)".into()));
        }
        if !cap.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&cap) || len != HEADER_SIZE + 2 * cap {
            return Err(ShmError::Invalid(format!("ring capacity {cap} does not fit a mapping of {len} bytes")));
        }
        if their_session != session {
            return Err(ShmError::Invalid(format!("mapping of session {their_session:#x}, expected {session:#x}")));
        }
        r.cap = cap;
        Ok(r)
    }

    fn ctrl(&self, ring: usize, off: usize) -> *mut u8 {
        debug_assert!(ring < 2 && off + 8 <= CTRL_STRIDE);
        // SAFETY: CTRL + 2 * CTRL_STRIDE <= HEADER_SIZE <= len: inside the mapping.
        unsafe { self.ptr.as_ptr().add(CTRL + ring * CTRL_STRIDE + off) }
    }

    fn word64(&self, ring: usize, off: usize) -> &AtomicU64 {
        // SAFETY: the address is inside the mapping (see `ctrl`), 8-byte aligned (page-aligned
        // base, offsets multiples of 8), and lives as long as `self`. The memory is shared with
        // the peer, which only ever accesses it atomically (or, if hostile, at worst changes the
        // value: every value is validated before use).
        unsafe { &*self.ctrl(ring, off).cast::<AtomicU64>() }
    }

    fn word32(&self, ring: usize, off: usize) -> &AtomicU32 {
        // SAFETY: as `word64`, 4-byte aligned.
        unsafe { &*self.ctrl(ring, off).cast::<AtomicU32>() }
    }

    fn data(&self, ring: usize) -> *mut u8 {
        // SAFETY: HEADER_SIZE + ring * cap + cap <= len for ring < 2.
        unsafe { self.ptr.as_ptr().add(HEADER_SIZE + ring * self.cap) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no reference into it outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A doorbell: a FIFO opened for reading and writing, never blocking.
#[derive(Debug)]
pub struct Bell {
    fd: OwnedFd,
}

impl Bell {
    fn create(path: &Path) -> Result<Self, ShmError> {
        let c = cstr(path)?;
        // SAFETY: valid C string; result checked.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            return Err(last_err(format!("mkfifo {}", path.display())));
        }
        Self::open(path)
    }

    fn open(path: &Path) -> Result<Self, ShmError> {
        let c = cstr(path)?;
        // SAFETY: valid C string; result checked. O_RDWR on a FIFO never blocks on Linux.
        let raw =
            unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW) };
        if raw < 0 {
            return Err(last_err(format!("opening {}", path.display())));
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let f = std::fs::File::from(fd.try_clone().map_err(io_err("dup"))?);
        let meta = f.metadata().map_err(io_err("fstat"))?;
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        if !meta.file_type().is_fifo() || meta.uid() != uid {
            return Err(ShmError::Invalid(format!("{} is not a FIFO of this user", path.display())));
        }
        Ok(Self { fd })
    }

    /// Wakes the side sleeping on this bell (one byte; a full FIFO already wakes it).
    fn ring(&self) {
        let b = 1u8;
        // SAFETY: writes one byte from a live local to our own non-blocking descriptor.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&b as *const u8).cast(), 1) };
    }

    /// Empties the FIFO.
    fn drain(&self) {
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reads into a live local buffer of the length passed, from our descriptor.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < buf.len() as isize {
                return;
            }
        }
    }

    /// The descriptor to poll for readability.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Waits up to `timeout` until one of `fds` is readable (a signal ends the wait early).
pub fn poll_readable(fds: &[RawFd], timeout: Duration) {
    let mut p: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    // SAFETY: `p` is a live array of pollfd of the length passed.
    unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
}

/// An epoll descriptor: one readable fd for a set of them (level-triggered), for event loops
/// that take a single descriptor (QEMU's device, the bridge's I/O thread).
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// An empty set.
    pub fn new() -> Result<Self, ShmError> {
        // SAFETY: no pointers; result checked.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(last_err("epoll_create1"));
        }
        // SAFETY: a fresh descriptor nothing else owns.
        Ok(Self { fd: unsafe { OwnedFd::from_raw_fd(raw) } })
    }

    /// Adds (`true`) or removes `fd`.
    pub fn watch(&self, fd: RawFd, on: bool) -> Result<(), ShmError> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: fd as u64 };
        let op = if on { libc::EPOLL_CTL_ADD } else { libc::EPOLL_CTL_DEL };
        // SAFETY: `ev` is a live epoll_event; both descriptors are open.
        if unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) } != 0 {
            return Err(last_err("epoll_ctl"));
        }
        Ok(())
    }

    /// The descriptor, readable while any member is.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// One side's end of a shared-memory link: it produces one ring and consumes the other.
#[derive(Debug)]
pub struct ShmLink {
    region: Region,
    tx: usize,
    rx: usize,
    /// Our own copies of the indices we own (the mapping's copies are for the peer).
    head: u64,
    tail: u64,
    /// Rung by the peer: data in our rx ring, or space in our tx ring.
    my_bell: Bell,
    peer_bell: Bell,
    session: u64,
    /// Names in the file system (the host's, removed by [`ShmLink::unlink`] and on drop).
    names: Vec<PathBuf>,
    /// Frames taken from our rx ring while a send waited for space (so two sides that both
    /// send into full rings cannot wait for each other); [`ShmLink::try_recv`] returns them first.
    backlog: std::collections::VecDeque<Vec<u8>>,
    /// Set once the ring was found corrupt: every later call fails.
    broken: std::cell::RefCell<Option<String>>,
    spin: Duration,
}

impl ShmLink {
    /// The host side: a fresh mapping and two doorbells for `session`, published next to
    /// `base` (see [`paths`]) for the device to [`ShmLink::attach`].
    pub fn create(base: &Path, session: u64, capacity: usize) -> Result<Self, ShmError> {
        let [link, bell_h2d, bell_d2h] = paths(base, session);
        let region = Region::create(capacity, session)?;
        let mut names = Vec::new();
        let mut guard = |p: &Path| names.push(p.to_path_buf());
        let target = format!("/proc/{}/fd/{}", std::process::id(), region.fd.as_raw_fd());
        // Left-overs of an earlier process with the same session number are not ours to trust.
        for p in [&link, &bell_h2d, &bell_d2h] {
            let _ = std::fs::remove_file(p);
        }
        remove_dead_offers(base);
        std::os::unix::fs::symlink(&target, &link).map_err(io_err(format!("symlink {}", link.display())))?;
        guard(&link);
        let cleanup = |names: &[PathBuf]| names.iter().for_each(|p| drop(std::fs::remove_file(p)));
        let peer_bell = match Bell::create(&bell_h2d) {
            Ok(b) => b,
            Err(e) => {
                cleanup(&names);
                return Err(e);
            }
        };
        names.push(bell_h2d);
        let my_bell = match Bell::create(&bell_d2h) {
            Ok(b) => b,
            Err(e) => {
                cleanup(&names);
                return Err(e);
            }
        };
        names.push(bell_d2h);
        Ok(Self::new(region, Role::Host, my_bell, peer_bell, session, names))
    }

    /// The device side: attaches to the host's mapping for `session` next to `base`, checking
    /// everything (owner, seals, size, magic, session).
    pub fn attach(base: &Path, session: u64) -> Result<Self, ShmError> {
        let [link, bell_h2d, bell_d2h] = paths(base, session);
        let region = Region::open(&link, session)?;
        let my_bell = Bell::open(&bell_h2d)?;
        let peer_bell = Bell::open(&bell_d2h)?;
        Ok(Self::new(region, Role::Device, my_bell, peer_bell, session, Vec::new()))
    }

    fn new(region: Region, role: Role, my_bell: Bell, peer_bell: Bell, session: u64, names: Vec<PathBuf>) -> Self {
        let (tx, rx) = match role {
            Role::Host => (0, 1),
            Role::Device => (1, 0),
        };
        // Both sides start at 0 and own the index they write: the host's mapping is fresh, and
        // the host sends nothing through it before the device attached (it waits for CONFIG).
        // What the mapping says of our own indices is never read back.
        let (head, tail) = (0, 0);
        region.word64(tx, OFF_HEAD).store(head, Ordering::SeqCst);
        region.word64(rx, OFF_TAIL).store(tail, Ordering::SeqCst);
        Self {
            region,
            tx,
            rx,
            head,
            tail,
            my_bell,
            peer_bell,
            session,
            names,
            backlog: Default::default(),
            broken: Default::default(),
            spin: spin_from_env(),
        }
    }

    /// Sets how long a wait spins before sleeping on the doorbell.
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// The session this mapping belongs to.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// Removes the names in the file system (the device has opened them, or never will).
    pub fn unlink(&mut self) {
        for p in self.names.drain(..) {
            let _ = std::fs::remove_file(p);
        }
    }

    /// The doorbell this side sleeps on: readable when the peer published a frame (or made
    /// room) while this side was waiting. Drained by [`ShmLink::arm`].
    pub fn bell_fd(&self) -> RawFd {
        self.my_bell.raw_fd()
    }

    fn corrupt(&self, why: String) -> ShmError {
        self.broken.borrow_mut().get_or_insert(why.clone());
        ShmError::Corrupt(why)
    }

    fn check(&self) -> Result<(), ShmError> {
        match &*self.broken.borrow() {
            Some(why) => Err(ShmError::Corrupt(why.clone())),
            None => Ok(()),
        }
    }

    /// Bytes published and not yet consumed in our rx ring, validated.
    fn available(&self) -> Result<u64, ShmError> {
        self.check()?;
        let head = self.region.word64(self.rx, OFF_HEAD).load(Ordering::SeqCst);
        let avail = head.wrapping_sub(self.tail);
        if avail > self.region.cap as u64 || !head.is_multiple_of(8) {
            return Err(self
                .corrupt(format!("peer's head {head} with our tail {} and capacity {}", self.tail, self.region.cap)));
        }
        Ok(avail)
    }

    /// Takes the next frame without waiting.
    pub fn try_recv(&mut self) -> Result<Option<Vec<u8>>, ShmError> {
        if let Some(f) = self.backlog.pop_front() {
            return Ok(Some(f));
        }
        self.take_from_ring()
    }

    fn take_from_ring(&mut self) -> Result<Option<Vec<u8>>, ShmError> {
        let avail = self.available()?;
        if avail == 0 {
            return Ok(None);
        }
        let cap = self.region.cap;
        let pos = (self.tail % cap as u64) as usize;
        let data = self.region.data(self.rx);
        // SAFETY: pos is a multiple of 8 below cap (cap is a multiple of 8), so the 4 bytes lie
        // inside this ring's data area. The peer published them (head read with SeqCst above).
        let len = u32::from_le(unsafe { std::ptr::read_volatile(data.add(pos).cast::<u32>()) }) as usize;
        let rec = REC_HDR + len.next_multiple_of(8);
        if len == 0 || len > MAX_FRAME || rec as u64 > avail {
            return Err(self.corrupt(format!("record of {len} bytes with {avail} bytes published")));
        }
        let mut out = vec![0u8; len];
        let start = (pos + REC_HDR) % cap;
        let first = len.min(cap - start);
        // SAFETY: `start + first <= cap` and `len - first < cap` (len <= MAX_FRAME < cap): both
        // copies stay inside this ring's data area; `out` has `len` bytes. The bytes were
        // published by the peer; a peer that changes them while we copy can only give us
        // garbage in our private copy, which the codec checks like any received frame.
        unsafe {
            std::ptr::copy_nonoverlapping(data.add(start), out.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(data, out.as_mut_ptr().add(first), len - first);
        }
        self.tail = self.tail.wrapping_add(rec as u64);
        self.region.word64(self.rx, OFF_TAIL).store(self.tail, Ordering::SeqCst);
        if self.region.word32(self.rx, OFF_PRODUCER_WAITS).swap(0, Ordering::SeqCst) != 0 {
            self.peer_bell.ring();
        }
        Ok(Some(out))
    }

    /// Prepares to sleep on [`ShmLink::bell_fd`]: empties the doorbell and asks the peer to
    /// ring it for the next frame. Returns true if a frame is already waiting (then do not
    /// sleep). Call it before every sleep, as ZeroMQ's `ZMQ_EVENTS` before polling `ZMQ_FD`.
    pub fn arm(&self) -> Result<bool, ShmError> {
        if !self.backlog.is_empty() || self.available()? > 0 {
            return Ok(true);
        }
        self.my_bell.drain();
        self.region.word32(self.rx, OFF_CONSUMER_SLEEPS).store(1, Ordering::SeqCst);
        Ok(self.available()? > 0)
    }

    /// True if a frame is waiting (or the ring is broken, which the next receive reports).
    /// Unlike [`ShmLink::arm`] it asks the peer for nothing: for a caller's own spin loop.
    pub fn has_frames(&self) -> bool {
        !self.backlog.is_empty() || self.available().map_or(true, |a| a > 0)
    }

    /// How long a wait spins before it sleeps (see [`SPIN_ENV`]).
    pub fn spin(&self) -> Duration {
        self.spin
    }

    /// Spins up to the spin time for a frame, then returns what [`ShmLink::try_recv`] says.
    pub fn spin_recv(&mut self, limit: Duration) -> Result<Option<Vec<u8>>, ShmError> {
        let t0 = Instant::now();
        let limit = limit.min(self.spin);
        loop {
            if let Some(f) = self.try_recv()? {
                return Ok(Some(f));
            }
            if t0.elapsed() >= limit {
                return Ok(None);
            }
            // Yield rather than burn: on a busy machine the peer may need this very core.
            std::thread::yield_now();
        }
    }

    /// Waits up to `timeout` for a frame: spins briefly, then sleeps on the doorbell (and on
    /// `extra`, descriptors that also end the wait). `Ok(None)` on timeout or when `extra` fired.
    pub fn recv_timeout(&mut self, timeout: Duration, extra: &[RawFd]) -> Result<Option<Vec<u8>>, ShmError> {
        if let Some(f) = self.spin_recv(timeout)? {
            return Ok(Some(f));
        }
        let deadline = Instant::now() + timeout.saturating_sub(self.spin);
        loop {
            if !self.arm()? {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(None);
                }
                let mut fds = vec![self.my_bell.raw_fd()];
                fds.extend_from_slice(extra);
                poll_readable(&fds, left);
            }
            if let Some(f) = self.try_recv()? {
                return Ok(Some(f));
            }
            if !extra.is_empty() || Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// Free bytes in our tx ring, validated.
    fn free(&mut self) -> Result<usize, ShmError> {
        self.check()?;
        let tail = self.region.word64(self.tx, OFF_TAIL).load(Ordering::SeqCst);
        let used = self.head.wrapping_sub(tail);
        if used > self.region.cap as u64 || !tail.is_multiple_of(8) {
            return Err(self
                .corrupt(format!("peer's tail {tail} with our head {} and capacity {}", self.head, self.region.cap)));
        }
        Ok(self.region.cap - used as usize)
    }

    /// Publishes one frame; a full ring waits (spinning, then on the doorbell) up to `timeout`.
    pub fn send(&mut self, frame: &[u8], timeout: Duration) -> Result<(), ShmError> {
        if frame.is_empty() || frame.len() > MAX_FRAME {
            return Err(ShmError::TooLong(frame.len()));
        }
        let rec = REC_HDR + frame.len().next_multiple_of(8);
        if self.free()? < rec {
            let t0 = Instant::now();
            loop {
                // Empty the bell first: a ring left from an earlier frame in our rx ring would
                // make every poll below return at once (a hot spin until room or the timeout).
                // Nothing is lost: room and our rx ring are both checked again below.
                self.my_bell.drain();
                self.region.word32(self.tx, OFF_PRODUCER_WAITS).store(1, Ordering::SeqCst);
                if self.free()? >= rec {
                    break;
                }
                let left = timeout.saturating_sub(t0.elapsed());
                if left.is_zero() {
                    return Err(ShmError::Full(timeout));
                }
                // Keep consuming meanwhile: the peer may be waiting for room to send to us.
                while let Some(f) = self.take_from_ring()? {
                    self.backlog.push_back(f);
                }
                if t0.elapsed() < self.spin {
                    std::thread::yield_now();
                } else {
                    // Our bell also rings for frames in our rx ring: a spurious wake-up re-checks.
                    poll_readable(&[self.my_bell.raw_fd()], left.min(Duration::from_millis(10)));
                }
            }
        }
        let cap = self.region.cap;
        let pos = (self.head % cap as u64) as usize;
        let data = self.region.data(self.tx);
        let start = (pos + REC_HDR) % cap;
        let first = frame.len().min(cap - start);
        // SAFETY: `pos` is a multiple of 8 below cap: the 8-byte record header fits before the
        // end of the data area. The frame copies stay inside it as in `try_recv`. The bytes
        // from `head` for `rec` bytes are free (checked above): the peer does not read them
        // until we publish the new head below.
        unsafe {
            std::ptr::write_volatile(data.add(pos).cast::<u64>(), (frame.len() as u64).to_le());
            std::ptr::copy_nonoverlapping(frame.as_ptr(), data.add(start), first);
            std::ptr::copy_nonoverlapping(frame.as_ptr().add(first), data, frame.len() - first);
        }
        self.head = self.head.wrapping_add(rec as u64);
        self.region.word64(self.tx, OFF_HEAD).store(self.head, Ordering::SeqCst);
        if self.region.word32(self.tx, OFF_CONSUMER_SLEEPS).swap(0, Ordering::SeqCst) != 0 {
            self.peer_bell.ring();
        }
        Ok(())
    }
}

impl Drop for ShmLink {
    fn drop(&mut self) {
        self.unlink();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> crate::PrivateDir {
        crate::PrivateDir::new("cosim-shm-test").unwrap()
    }

    fn pair(d: &crate::PrivateDir, session: u64) -> (ShmLink, ShmLink) {
        let base = d.path().join("ep");
        let h = ShmLink::create(&base, session, DEFAULT_CAPACITY).unwrap();
        let dev = ShmLink::attach(&base, session).unwrap();
        (h, dev)
    }

    #[test]
    fn frames_go_both_ways_in_order_and_wrap() {
        let d = dir();
        let (mut h, mut dev) = pair(&d, 7);
        assert!(h.try_recv().unwrap().is_none());
        // Enough odd-sized frames to wrap the ring several times.
        for i in 0..5000usize {
            let f: Vec<u8> = (0..(1 + i * 37 % 3000)).map(|k| (k ^ i) as u8).collect();
            h.send(&f, Duration::from_secs(1)).unwrap();
            assert_eq!(dev.try_recv().unwrap().as_deref(), Some(&f[..]), "frame {i}");
            dev.send(&f[..f.len().min(100)], Duration::from_secs(1)).unwrap();
            assert_eq!(h.try_recv().unwrap().as_deref(), Some(&f[..f.len().min(100)]));
        }
        assert!(dev.try_recv().unwrap().is_none());
    }

    #[test]
    fn largest_frames_fill_the_ring_and_a_full_ring_times_out() {
        let d = dir();
        let (mut h, mut dev) = pair(&d, 8);
        let big = vec![0xa5u8; MAX_FRAME];
        let mut n = 0;
        while h.send(&big, Duration::from_millis(20)).is_ok() {
            n += 1;
            assert!(n < 100, "the ring never filled");
        }
        assert_eq!(n, DEFAULT_CAPACITY / (REC_HDR + MAX_FRAME));
        assert!(matches!(h.send(&big, Duration::ZERO), Err(ShmError::Full(_))));
        assert!(matches!(h.send(&vec![0; MAX_FRAME + 1], Duration::ZERO), Err(ShmError::TooLong(_))));
        for _ in 0..n {
            assert_eq!(dev.try_recv().unwrap().unwrap().len(), MAX_FRAME);
        }
        h.send(&big, Duration::ZERO).unwrap();
    }

    #[test]
    fn a_sleeping_consumer_is_woken_by_its_doorbell() {
        let d = dir();
        let (mut h, mut dev) = pair(&d, 9);
        let t = std::thread::spawn(move || {
            let t0 = Instant::now();
            let f = dev.recv_timeout(Duration::from_secs(5), &[]).unwrap();
            (f, t0.elapsed())
        });
        std::thread::sleep(Duration::from_millis(50));
        h.send(b"wake", Duration::ZERO).unwrap();
        let (f, waited) = t.join().unwrap();
        assert_eq!(f.as_deref(), Some(&b"wake"[..]));
        assert!(waited < Duration::from_secs(1), "woke after {waited:?}");
        // Nobody sends: the wait ends at its timeout.
        let t0 = Instant::now();
        assert!(h.recv_timeout(Duration::from_millis(30), &[]).unwrap().is_none());
        assert!(t0.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn a_full_ring_waits_for_the_consumer() {
        let d = dir();
        let (mut h, mut dev) = pair(&d, 10);
        let t = std::thread::spawn(move || {
            let mut got = 0u64;
            while got < 200 * 65536 {
                match dev.recv_timeout(Duration::from_secs(5), &[]).unwrap() {
                    Some(f) => got += f.len() as u64,
                    None => panic!("producer stopped"),
                }
            }
            got
        });
        for _ in 0..200 {
            h.send(&vec![1u8; 65536], Duration::from_secs(5)).unwrap();
        }
        assert_eq!(t.join().unwrap(), 200 * 65536);
    }

    #[test]
    fn two_senders_into_full_rings_do_not_wait_for_each_other() {
        let d = dir();
        let (mut h, mut dev) = pair(&d, 14);
        let big = vec![3u8; 65536];
        let t = std::thread::spawn(move || {
            for _ in 0..100 {
                dev.send(&big, Duration::from_secs(5)).unwrap();
            }
            let mut got = 0;
            while got < 100 {
                dev.recv_timeout(Duration::from_secs(5), &[]).unwrap().expect("host frames");
                got += 1;
            }
        });
        for _ in 0..100 {
            h.send(&vec![4u8; 65536], Duration::from_secs(5)).unwrap();
        }
        let mut got = 0;
        while got < 100 {
            assert_eq!(h.recv_timeout(Duration::from_secs(5), &[]).unwrap().expect("device frames").len(), 65536);
            got += 1;
        }
        t.join().unwrap();
    }

    /// Writes into the mapping as a hostile peer would.
    fn poke(l: &ShmLink, ring: usize, off: usize, v: u64) {
        l.region.word64(ring, off).store(v, Ordering::SeqCst);
    }

    #[test]
    fn a_hostile_peer_gets_errors_not_crashes() {
        let d = dir();
        // Head far beyond the tail.
        let (h, mut dev) = pair(&d, 11);
        poke(&h, 0, OFF_HEAD, 1 << 40);
        assert!(matches!(dev.try_recv(), Err(ShmError::Corrupt(_))));
        assert!(matches!(dev.try_recv(), Err(ShmError::Corrupt(_))), "stays broken");
        // A record longer than what was published, then a tail the consumer never reached.
        let (mut h, mut dev) = pair(&d, 12);
        h.send(b"12345678", Duration::ZERO).unwrap();
        // SAFETY: test-only write of a record length inside ring 0's data area.
        unsafe { std::ptr::write_volatile(h.region.data(0).cast::<u32>(), 60000) };
        assert!(matches!(dev.try_recv(), Err(ShmError::Corrupt(_))));
        poke(&dev, 0, OFF_TAIL, 1000);
        assert!(matches!(h.send(b"x", Duration::ZERO), Err(ShmError::Corrupt(_))));
        // A length of 0; a misaligned head.
        let (mut h, mut dev) = pair(&d, 13);
        h.send(b"abc", Duration::ZERO).unwrap();
        // SAFETY: as above.
        unsafe { std::ptr::write_volatile(h.region.data(0).cast::<u32>(), 0) };
        assert!(matches!(dev.try_recv(), Err(ShmError::Corrupt(_))));
        poke(&dev, 1, OFF_HEAD, 3);
        assert!(matches!(h.try_recv(), Err(ShmError::Corrupt(_))));
        assert!(matches!(h.arm(), Err(ShmError::Corrupt(_))));
    }

    #[test]
    fn a_dead_hosts_offer_is_removed_by_the_next_offer() {
        let d = dir();
        let base = d.path().join("ep");
        // A live offer (its target exists) stays.
        let live = ShmLink::create(&base, 0xbb, DEFAULT_CAPACITY).unwrap();
        // A host killed between INIT and CONFIG: its link points into a process that is gone.
        let [dead, dead_h2d, dead_d2h] = paths(&base, 0xaa);
        std::os::unix::fs::symlink("/proc/2147483647/fd/3", &dead).unwrap();
        std::fs::write(&dead_h2d, b"").unwrap();
        std::fs::write(&dead_d2h, b"").unwrap();
        // Another endpoint's dead offer is not this one's to remove.
        let [other, ..] = paths(&d.path().join("other"), 0xcc);
        std::os::unix::fs::symlink("/proc/2147483647/fd/4", &other).unwrap();
        // A dangling link of a live process (as another user's or a hidden one looks), and one
        // that is not an offer's, stay.
        let [alive, ..] = paths(&base, 0xee);
        std::os::unix::fs::symlink(format!("/proc/{}/fd/999999", std::process::id()), &alive).unwrap();
        let [foreign, ..] = paths(&base, 0xef);
        std::os::unix::fs::symlink("/nonexistent/file", &foreign).unwrap();
        let _next = ShmLink::create(&base, 0xdd, DEFAULT_CAPACITY).unwrap();
        for p in [&dead, &dead_h2d, &dead_d2h] {
            assert!(std::fs::symlink_metadata(p).is_err(), "{} should be gone", p.display());
        }
        for p in paths(&base, 0xbb).iter().chain([&other, &alive, &foreign]) {
            assert!(std::fs::symlink_metadata(p).is_ok(), "{} should stay", p.display());
        }
        drop(live);
    }

    #[test]
    fn indices_planted_before_attach_are_not_taken() {
        let d = dir();
        let base = d.path().join("ep");
        let mut h = ShmLink::create(&base, 15, DEFAULT_CAPACITY).unwrap();
        // A hostile host writes unaligned indices into the device's words before it attaches.
        poke(&h, 1, OFF_HEAD, (DEFAULT_CAPACITY - 4) as u64);
        poke(&h, 0, OFF_TAIL, 3);
        let mut dev = ShmLink::attach(&base, 15).unwrap();
        dev.send(b"first", Duration::ZERO).unwrap();
        assert_eq!(h.try_recv().unwrap().as_deref(), Some(&b"first"[..]));
        h.send(b"back", Duration::ZERO).unwrap();
        assert_eq!(dev.try_recv().unwrap().as_deref(), Some(&b"back"[..]));
    }

    #[test]
    fn attach_checks_session_and_files() {
        let d = dir();
        let base = d.path().join("ep");
        let h = ShmLink::create(&base, 21, DEFAULT_CAPACITY).unwrap();
        assert!(matches!(ShmLink::attach(&base, 22), Err(ShmError::Io { .. })), "no such session");
        // A plain file where the mapping should be: not sealed.
        let [link, ..] = paths(&base, 23);
        std::fs::write(&link, vec![0u8; HEADER_SIZE + 2 * DEFAULT_CAPACITY]).unwrap();
        assert!(matches!(ShmLink::attach(&base, 23), Err(ShmError::Invalid(_))));
        // The right session attaches; the host's names go when it is dropped.
        let dev = ShmLink::attach(&base, 21).unwrap();
        assert_eq!(dev.session(), 21);
        drop(h);
        assert!(!paths(&base, 21).iter().any(|p| p.exists()));
    }
}
