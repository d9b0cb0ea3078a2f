//! The C ABI used by `c/accelerator-pcie.c` (header `cosim_qemu_device.h`, made by cbindgen).
//!
//! Conventions: one opaque handle per device (`cosim_device_new` / `cosim_device_free`); inputs
//! before outputs; every buffer is followed by its length; every function checks its pointers,
//! catches panics and returns a [`CosimStatus`], so a bug here never aborts QEMU.
//!
//! Threads: QEMU calls everything with its big lock (BQL) held, from a vCPU thread or the main
//! loop. A vCPU's MMIO read releases the BQL while it waits for the simulation (QEMU's own
//! multi-process proxy does the same), so one thread at a time is let into a device by its
//! [`Gate`], the others in arrival order, before the BQL is taken again (lock order: device, then
//! BQL). Who waits and who does not is [`Wait`]; docs/qemu-device.md, "Threads and the big lock",
//! has the whole set of rules. A call that re-enters the device on the thread inside it (for
//! example a NIC loopback during a DMA) gets [`CosimStatus::Busy`].

use std::cell::Cell;
use std::collections::VecDeque;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use cosim_protocol::{AccessSize, BarIndex, Caps, GuestAddr, NUM_BARS};
use cosim_transport::{Endpoint, Side, ZmqOptions, ZmqTransport};

use crate::host::{DeviceOptions, HostDevice};
use crate::ops::{DmaError, QemuOps};

/// BAR flag: I/O space.
pub const COSIM_BAR_FLAG_IO: u8 = 1;
/// BAR flag: 64-bit memory BAR.
pub const COSIM_BAR_FLAG_MEM64: u8 = 2;
/// BAR flag: prefetchable.
pub const COSIM_BAR_FLAG_PREFETCH: u8 = 4;
/// Number of BAR slots in [`CosimDeviceInfo`].
pub const COSIM_NUM_BARS: usize = 6;
/// Default INIT / MMIO read timeout when `timeout_ms` is 0.
pub const COSIM_DEFAULT_TIMEOUT_MS: u32 = 5000;

/// Result of every call.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CosimStatus {
    /// Done.
    Ok = 0,
    /// A required pointer was NULL.
    NullPointer = 1,
    /// An argument is out of range (BAR index, access size, string encoding).
    InvalidArgument = 2,
    /// The device is inside another call (re-entry); nothing was done.
    Busy = 3,
    /// A bug: the Rust code panicked; nothing was done.
    Panic = 4,
    /// The device could not be created (see the error text).
    Failed = 5,
}

/// Inputs of [`cosim_device_new`] (QEMU's properties).
#[repr(C)]
#[derive(Debug)]
pub struct CosimDeviceParams {
    /// Device name for messages (the `id=`), may be NULL.
    pub name: *const c_char,
    /// `endpoint=`: `ipc:///dir/name`, a path, or `tcp://host[:port][?peer=host]`; tcp beyond
    /// loopback needs the key file named by `COSIM_KEY_FILE` (docs/protocol.md, "Access control").
    pub endpoint: *const c_char,
    /// `port=`: base TCP port for a tcp endpoint without a port (0: use `COSIM_PORT`).
    pub port: u32,
    /// `timeout-ms=`: INIT and MMIO read timeout (0: [`COSIM_DEFAULT_TIMEOUT_MS`]).
    pub timeout_ms: u32,
    /// A netdev is attached.
    pub has_nic: bool,
    /// A chardev is attached.
    pub has_serial: bool,
}

/// The HDL's configuration, as QEMU needs it to build the PCI function.
#[repr(C)]
#[derive(Debug, Default)]
pub struct CosimDeviceInfo {
    /// PCI vendor ID.
    pub vendor_id: u16,
    /// PCI device ID.
    pub device_id: u16,
    /// Subsystem vendor ID.
    pub subsystem_vendor_id: u16,
    /// Subsystem ID.
    pub subsystem_id: u16,
    /// Class code (base << 16 | sub << 8 | prog-if).
    pub class_code: u32,
    /// Revision ID.
    pub revision: u8,
    /// BAR sizes (0: absent).
    pub bar_size: [u64; COSIM_NUM_BARS],
    /// BAR flags (`COSIM_BAR_FLAG_*`).
    pub bar_flags: [u8; COSIM_NUM_BARS],
    /// MSI-X vectors (0: no MSI-X).
    pub msix_vectors: u16,
    /// BAR holding the MSI-X table.
    pub msix_table_bar: u8,
    /// Offset of the MSI-X table in its BAR.
    pub msix_table_offset: u32,
    /// BAR holding the PBA.
    pub msix_pba_bar: u8,
    /// Offset of the PBA in its BAR.
    pub msix_pba_offset: u32,
    /// Capability bits the HDL announced.
    pub peer_caps: u32,
}

/// QEMU services, called with the big lock held (`unlock_global` releases it, `lock_global`
/// takes it again). `opaque` is passed back to each.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CosimQemuCallbacks {
    /// Passed to every callback.
    pub opaque: *mut c_void,
    /// `pci_dma_read`; returns true on success.
    pub dma_read: Option<unsafe extern "C" fn(opaque: *mut c_void, addr: u64, buf: *mut u8, len: usize) -> bool>,
    /// `pci_dma_write`; returns true on success.
    pub dma_write: Option<unsafe extern "C" fn(opaque: *mut c_void, addr: u64, buf: *const u8, len: usize) -> bool>,
    /// `msix_notify`.
    pub msix_notify: Option<unsafe extern "C" fn(opaque: *mut c_void, vector: u16)>,
    /// Frame to the netdev.
    pub nic_send: Option<unsafe extern "C" fn(opaque: *mut c_void, buf: *const u8, len: usize)>,
    /// Bytes to the chardev.
    pub serial_write: Option<unsafe extern "C" fn(opaque: *mut c_void, buf: *const u8, len: usize)>,
    /// Schedule `cosim_device_poll` from the main loop (a bottom half).
    pub schedule_poll: Option<unsafe extern "C" fn(opaque: *mut c_void)>,
    /// Releases the big lock if this thread holds it (`bql_unlock`); returns true if it did.
    /// NULL: the lock is never released (every wait holds it; `x-hold-bql=on`).
    pub unlock_global: Option<unsafe extern "C" fn(opaque: *mut c_void) -> bool>,
    /// Takes the big lock again after `unlock_global` returned true (`bql_lock`).
    pub lock_global: Option<unsafe extern "C" fn(opaque: *mut c_void)>,
}

/// Releases QEMU's big lock for its lifetime (if the calling thread held it) and takes it again
/// when dropped, also while a panic unwinds.
struct GlobalUnlocked {
    cb: CosimQemuCallbacks,
    released: bool,
}

impl GlobalUnlocked {
    fn new(cb: &CosimQemuCallbacks) -> Self {
        let released = match (cb.unlock_global, cb.lock_global) {
            // SAFETY: `opaque` is what QEMU gave us for this device; the callback only looks at
            // and releases the calling thread's lock.
            (Some(unlock), Some(_)) => unsafe { unlock(cb.opaque) },
            _ => false,
        };
        Self { cb: *cb, released }
    }
}

impl Drop for GlobalUnlocked {
    fn drop(&mut self) {
        if let (true, Some(lock)) = (self.released, self.cb.lock_global) {
            // SAFETY: as above; this thread released the lock in `new`.
            unsafe { lock(self.cb.opaque) }
        }
    }
}

/// The C callback table as a [`QemuOps`]; `release`: this call may release the big lock while
/// it waits for the simulation (a vCPU's MMIO access, see [`Wait::Cpu`]).
struct CCallbacks {
    cb: CosimQemuCallbacks,
    release: bool,
    /// The device was leaked with this thread inside while QEMU removed it: QEMU's side of the
    /// callbacks may be gone, so none is called any more.
    detached: Arc<AtomicBool>,
}

impl CCallbacks {
    fn live(&self) -> bool {
        !self.detached.load(Ordering::Acquire)
    }
}

// SAFETY: the device (and with it this table) is used by one thread at a time, under its
// mutex (see the module comment); every callback but the lock pair is called with the big lock
// held, which `QemuOps::unlocked` takes again before it returns.
unsafe impl Send for CCallbacks {}

impl QemuOps for CCallbacks {
    fn unlocked<R>(&mut self, f: impl FnOnce() -> R) -> R {
        if !self.release {
            return f();
        }
        let _unlocked = GlobalUnlocked::new(&self.cb);
        f()
    }

    fn dma_read(&mut self, addr: GuestAddr, buf: &mut [u8]) -> Result<(), DmaError> {
        let f = self.cb.dma_read.filter(|_| self.live()).ok_or(DmaError { addr, len: buf.len() })?;
        // SAFETY: `buf` is valid for `buf.len()` writable bytes; the callback contract (header)
        // is to write at most `len` bytes and not keep the pointer.
        let ok = unsafe { f(self.cb.opaque, addr.0, buf.as_mut_ptr(), buf.len()) };
        if ok { Ok(()) } else { Err(DmaError { addr, len: buf.len() }) }
    }

    fn dma_write(&mut self, addr: GuestAddr, data: &[u8]) -> Result<(), DmaError> {
        let f = self.cb.dma_write.filter(|_| self.live()).ok_or(DmaError { addr, len: data.len() })?;
        // SAFETY: `data` is valid for `data.len()` bytes for the duration of the call.
        let ok = unsafe { f(self.cb.opaque, addr.0, data.as_ptr(), data.len()) };
        if ok { Ok(()) } else { Err(DmaError { addr, len: data.len() }) }
    }

    fn msix_notify(&mut self, vector: u16) {
        if let Some(f) = self.cb.msix_notify.filter(|_| self.live()) {
            // SAFETY: plain values; `opaque` is what QEMU gave us for this device.
            unsafe { f(self.cb.opaque, vector) }
        }
    }

    fn nic_send(&mut self, frame: &[u8]) {
        if let Some(f) = self.cb.nic_send.filter(|_| self.live()) {
            // SAFETY: `frame` is valid for its length during the call.
            unsafe { f(self.cb.opaque, frame.as_ptr(), frame.len()) }
        }
    }

    fn serial_write(&mut self, data: &[u8]) {
        if let Some(f) = self.cb.serial_write.filter(|_| self.live()) {
            // SAFETY: `data` is valid for its length during the call.
            unsafe { f(self.cb.opaque, data.as_ptr(), data.len()) }
        }
    }

    fn schedule_poll(&mut self) {
        if let Some(f) = self.cb.schedule_poll.filter(|_| self.live()) {
            // SAFETY: `opaque` is what QEMU gave us for this device.
            unsafe { f(self.cb.opaque) }
        }
    }
}

type Dev = HostDevice<ZmqTransport, CCallbacks>;

/// One `accelerator-pcie` device (opaque to C).
pub struct CosimDevice {
    /// The device; taken only by the thread the [`Gate`] admitted, so never contended.
    inner: Mutex<Dev>,
    gate: Gate,
    /// A copy of the callbacks, for releasing the big lock while waiting at the gate.
    cb: CosimQemuCallbacks,
    /// Set when the device is leaked with a thread still inside: the callbacks do nothing more.
    detached: Arc<AtomicBool>,
    /// The longest wait at the gate (the device's MMIO timeout).
    timeout: Duration,
    notify_fd: c_int,
    /// The main loop's poll (or a NIC frame QEMU held back) found the device held: the thread
    /// inside schedules a poll when it leaves.
    poll_missed: AtomicBool,
    /// A device reset arrived while the device was held: forwarded by the next thread admitted
    /// (before its own access) or by the thread inside when it leaves.
    reset_pending: AtomicBool,
    /// Chardev bytes that arrived while the device was held (QEMU may hand them over after its
    /// `can_receive` said yes): forwarded the same way, at most [`SERIAL_PENDING_MAX`].
    serial_pending: Mutex<Vec<u8>>,
}

/// Chardev bytes kept for a busy device; more are dropped with a warning.
const SERIAL_PENDING_MAX: usize = 64 * 1024;

// SAFETY: `inner` and `serial_pending` are mutexes, `gate` a mutex and a condition variable;
// `cb` holds the C callbacks and QEMU's `opaque` pointer, used from other threads only for the
// big-lock pair, which QEMU allows from any thread.
unsafe impl Sync for CosimDevice {}
// SAFETY: as above.
unsafe impl Send for CosimDevice {}

/// A number for the calling thread, never 0: the address of a thread-local (one without a
/// destructor, so it stays readable while QEMU's exit notifiers run).
fn thread_tag() -> usize {
    thread_local!(static TAG: u8 = const { 0 });
    TAG.with(|t| t as *const u8 as usize)
}

thread_local! {
    /// How many devices the calling thread is inside (a device's DMA or MSI-X that reaches
    /// another device's BAR): such a nested call never waits and never releases the big lock.
    static INSIDE: Cell<u32> = const { Cell::new(0) };
}

/// Who may use a device: one thread at a time, the others queued in arrival order, so a vCPU
/// that reads back to back cannot starve another vCPU's access (each waits its turn).
#[derive(Default)]
struct Gate {
    st: Mutex<GateState>,
    cv: Condvar,
}

#[derive(Default)]
struct GateState {
    /// [`thread_tag`] of the thread inside (0: none).
    holder: usize,
    /// Tickets of the threads waiting, oldest first.
    queue: VecDeque<u64>,
    next_ticket: u64,
    /// Threads inside or queued (what [`cosim_device_free`] waits for).
    users: usize,
    /// Being freed: nobody new gets in.
    closing: bool,
    /// Accesses given up since the last admission (handed to the device's statistics).
    refused: u64,
}

/// Why the gate did not let a thread in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// The calling thread is already inside (re-entry).
    Reentry,
    /// Another thread is inside or waiting, and this call does not wait (or waited too long).
    Held,
    /// The device is being freed.
    Closing,
}

impl Gate {
    fn state(&self) -> MutexGuard<'_, GateState> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets the caller in at once if nobody is inside or waiting. Ok: the accesses refused
    /// since the last admission.
    fn try_enter(&self, me: usize) -> Result<u64, Refused> {
        let mut s = self.state();
        if s.closing {
            Err(Refused::Closing)
        } else if s.holder == me {
            Err(Refused::Reentry)
        } else if s.holder == 0 && s.queue.is_empty() {
            s.holder = me;
            s.users += 1;
            Ok(std::mem::take(&mut s.refused))
        } else {
            Err(Refused::Held)
        }
    }

    /// Queues the caller. Called with the big lock still held, so that a device being freed
    /// (under the big lock) counts the caller before it releases the lock to wait.
    fn queue(&self) -> Result<u64, Refused> {
        let mut s = self.state();
        if s.closing {
            return Err(Refused::Closing);
        }
        let ticket = s.next_ticket;
        s.next_ticket += 1;
        s.queue.push_back(ticket);
        s.users += 1;
        Ok(ticket)
    }

    /// Waits (the caller has released the big lock) for `ticket`'s turn, up to `timeout`. Ok:
    /// as [`Gate::try_enter`]. On an error the caller has left the gate: the device may be
    /// freed at once, so the caller must not touch it any more. `nobody_left` runs (gate
    /// locked) when the caller gives up and nobody else is inside or waiting, so that what the
    /// device was asked meanwhile (a poll, a reset) is not left waiting for the next access.
    fn wait_turn(
        &self,
        me: usize,
        ticket: u64,
        timeout: Duration,
        count: bool,
        nobody_left: impl FnOnce(),
    ) -> Result<u64, Refused> {
        let deadline = Instant::now() + timeout;
        let mut s = self.state();
        loop {
            if !s.closing && s.holder == 0 && s.queue.front() == Some(&ticket) {
                s.queue.pop_front();
                s.holder = me;
                return Ok(std::mem::take(&mut s.refused));
            }
            let now = Instant::now();
            if s.closing || now >= deadline {
                s.queue.retain(|&t| t != ticket);
                let why = if s.closing {
                    Refused::Closing
                } else {
                    s.refused += u64::from(count);
                    if s.holder == 0 && s.queue.is_empty() {
                        nobody_left();
                    }
                    Refused::Held
                };
                s.users -= 1;
                // Notified before the gate's mutex is released: after that the device may be
                // gone.
                self.cv.notify_all();
                return Err(why);
            }
            s = self.cv.wait_timeout(s, deadline - now).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn leave(&self) {
        let mut s = self.state();
        s.holder = 0;
        s.users -= 1;
        self.cv.notify_all();
    }

    /// Lets nobody new in (waiters give up). Returns the threads still inside or queued, and
    /// whether the calling thread is the one inside.
    fn begin_close(&self, me: usize) -> (usize, bool) {
        let mut s = self.state();
        s.closing = true;
        self.cv.notify_all();
        (s.users, s.holder == me)
    }

    /// After [`Gate::begin_close`]: waits (the caller has released the big lock) until every
    /// thread inside or queued has left, up to `timeout`. False if some are still there.
    fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.state();
        while s.users > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self.cv.wait_timeout(s, left).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
        true
    }

    fn busy(&self) -> bool {
        let s = self.state();
        s.holder != 0 || !s.queue.is_empty() || s.closing
    }
}

/// How a call gets at a device another thread holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Wait {
    /// A vCPU's MMIO access: waits its turn with the big lock released (up to the device's
    /// timeout), and a read releases the big lock while it waits for the simulation.
    Cpu,
    /// Waits its turn with the big lock released, up to this long; holds the big lock inside.
    For(Duration),
    /// Does not wait ([`CosimStatus::Busy`]); holds the big lock inside. The main loop's poll
    /// and tick (the thread inside serves the link), a reset and chardev bytes (forwarded for
    /// them), a NIC frame (QEMU queues it), and an access that is not a vCPU's (a device's
    /// DMA or MSI-X into the BAR, where waiting with the big lock held could deadlock).
    No,
}

/// How long the `stats` property waits for a busy device.
const STATS_WAIT: Duration = Duration::from_millis(200);

/// A thread inside a device (from [`CosimDevice::enter`]); leaving is done on drop, also when a
/// panic unwinds, so the gate is never left closed behind a thread that is gone.
struct Inside<'a> {
    dev: &'a CosimDevice,
    d: Option<MutexGuard<'a, Dev>>,
}

impl std::ops::Deref for Inside<'_> {
    type Target = Dev;
    fn deref(&self) -> &Dev {
        self.d.as_ref().expect("inside until dropped")
    }
}

impl std::ops::DerefMut for Inside<'_> {
    fn deref_mut(&mut self) -> &mut Dev {
        self.d.as_mut().expect("inside until dropped")
    }
}

impl Drop for Inside<'_> {
    /// Forwards a reset and chardev bytes that arrived meanwhile, asks for a poll the main
    /// loop missed, and lets the next thread in. Runs with the big lock held.
    fn drop(&mut self) {
        if let Some(mut d) = self.d.take() {
            let _ = catch_unwind(AssertUnwindSafe(|| {
                self.dev.forward_pending(&mut d);
                if self.dev.poll_missed.swap(false, Ordering::AcqRel) {
                    d.ops_mut().schedule_poll();
                }
            }));
            drop(d);
        }
        INSIDE.with(|c| c.set(c.get().saturating_sub(1)));
        self.dev.gate.leave();
    }
}

impl CosimDevice {
    /// Admits the calling thread (see [`Wait`]) and takes the device.
    fn enter(&self, wait: Wait) -> Result<Inside<'_>, CosimStatus> {
        let me = thread_tag();
        let wait = if INSIDE.with(Cell::get) > 0 { Wait::No } else { wait };
        match self.gate.try_enter(me) {
            Ok(refused) => return Ok(self.admitted(wait, refused)),
            Err(Refused::Reentry) => {
                tracing::warn!(target: "cosim::guest", "re-entrant call into accelerator-pcie refused");
                return Err(CosimStatus::Busy);
            }
            Err(Refused::Closing) => return Err(CosimStatus::Busy),
            Err(Refused::Held) => {}
        }
        let limit = match wait {
            Wait::No => return Err(CosimStatus::Busy),
            Wait::Cpu => self.timeout,
            Wait::For(d) => d,
        };
        let ticket = self.gate.queue().map_err(|_| CosimStatus::Busy)?;
        // From here until admitted, touch only locals and the gate: a device being freed may go
        // as soon as this thread has left the gate.
        let cb = self.cb;
        let unlocked = GlobalUnlocked::new(&cb);
        let give_up = !unlocked.released;
        let poll = move || {
            if let Some(f) = cb.schedule_poll {
                // SAFETY: `opaque` is what QEMU gave us; the device is not freed while the gate
                // is locked with this thread still counted. qemu_bh_schedule is thread-safe.
                unsafe { f(cb.opaque) }
            }
        };
        // Without the big lock released (a coroutine, x-hold-bql=on) waiting would keep the
        // thread inside from finishing: give up at once.
        let turn =
            self.gate.wait_turn(me, ticket, if give_up { Duration::ZERO } else { limit }, wait == Wait::Cpu, poll);
        drop(unlocked); // the big lock again; admitted threads hold the gate first (lock order)
        match turn {
            Ok(refused) => Ok(self.admitted(wait, refused)),
            Err(Refused::Held) if !give_up => {
                tracing::error!(target: "cosim::peer", wait = ?wait, timeout_ms = limit.as_millis(),
                    "accelerator-pcie: the device stayed busy with another thread's access; this access is dropped");
                Err(CosimStatus::Busy)
            }
            Err(_) => Err(CosimStatus::Busy),
        }
    }

    fn admitted(&self, wait: Wait, refused: u64) -> Inside<'_> {
        INSIDE.with(|c| c.set(c.get() + 1));
        let d = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut inside = Inside { dev: self, d: Some(d) };
        inside.ops_mut().release = wait == Wait::Cpu;
        if refused > 0 {
            inside.count_refused(refused);
        }
        // A reset that came while another thread was inside goes before this access.
        self.forward_pending(&mut inside);
        inside
    }

    /// Forwards a reset and chardev bytes that arrived while the device was held.
    fn forward_pending(&self, d: &mut Dev) {
        if self.reset_pending.swap(false, Ordering::AcqRel) {
            d.reset();
        }
        let bytes = std::mem::take(&mut *self.serial_pending.lock().unwrap_or_else(|p| p.into_inner()));
        if !bytes.is_empty() {
            d.serial_receive(&bytes);
        }
    }
}

static LOG_INIT: Once = Once::new();

/// Installs the `tracing` subscriber once per process: filter from `COSIM_LOG` (default `warn`),
/// output on stderr.
fn init_logging() {
    LOG_INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env("COSIM_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init();
    });
}

fn write_err(err: *mut c_char, err_len: usize, msg: &str) {
    if err.is_null() || err_len == 0 {
        return;
    }
    let bytes = msg.as_bytes();
    let n = bytes.len().min(err_len - 1);
    // SAFETY: the caller gives `err` as a buffer of `err_len` bytes; we write `n + 1 <= err_len`.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), err.cast::<u8>(), n);
        *err.add(n) = 0;
    }
}

/// Reads an optional C string.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string valid for the call.
unsafe fn opt_str(p: *const c_char) -> Result<Option<String>, ()> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: guaranteed by the caller.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map(|s| Some(s.to_string())).map_err(|_| ())
}

fn new_inner(params: &CosimDeviceParams, cb: CosimQemuCallbacks) -> Result<(CosimDevice, CosimDeviceInfo), String> {
    // SAFETY: the header documents both as NULL or NUL-terminated strings.
    let name = unsafe { opt_str(params.name) }.map_err(|_| "id is not UTF-8".to_string())?;
    // SAFETY: as above.
    let endpoint = unsafe { opt_str(params.endpoint) }.map_err(|_| "endpoint= is not UTF-8".to_string())?;
    let name = name.filter(|n| !n.is_empty()).unwrap_or_else(|| "accelerator-pcie".to_string());
    let endpoint = endpoint.filter(|e| !e.is_empty()).ok_or_else(|| {
        "endpoint= is required: ipc:///<dir>/<name>, a path, or tcp://<host>[:<port>] \
         (the same endpoint the HDL simulation was started with)"
            .to_string()
    })?;
    let port = match params.port {
        0 => None,
        p @ 1..=65534 => Some(p as u16),
        p => return Err(format!("port={p} is not a usable base port (1..65534)")),
    };
    let ep = Endpoint::parse_with_port(&endpoint, port).map_err(|e| e.to_string())?;
    let timeout = Duration::from_millis(u64::from(if params.timeout_ms == 0 {
        COSIM_DEFAULT_TIMEOUT_MS
    } else {
        params.timeout_ms
    }));
    let mut caps = Caps::MSIX;
    if params.has_nic {
        caps |= Caps::NIC;
    }
    if params.has_serial {
        caps |= Caps::SERIAL;
    }
    // A short send timeout: a full queue means a stuck peer, and QEMU must not hang on it.
    let zopts = ZmqOptions { send_timeout: Duration::from_millis(1000), ..ZmqOptions::default() };
    let link = ZmqTransport::open(&ep, Side::Host, &zopts).map_err(|e| format!("{e}"))?;
    let notify_fd = link.notify_fd().map_err(|e| e.to_string())?;
    let opts = DeviceOptions { name, endpoint: ep.to_string(), timeout, caps };
    let detached = Arc::new(AtomicBool::new(false));
    let ops = CCallbacks { cb, release: false, detached: Arc::clone(&detached) };
    let dev = HostDevice::connect(link, ops, opts).map_err(|e| e.to_string())?;
    let c = dev.config().clone();
    let mut info = CosimDeviceInfo {
        vendor_id: c.vendor_id,
        device_id: c.device_id,
        subsystem_vendor_id: c.subsystem_vendor_id,
        subsystem_id: c.subsystem_id,
        class_code: c.class_code,
        revision: c.revision,
        msix_vectors: c.msix.vectors,
        msix_table_bar: c.msix.table_bar,
        msix_table_offset: c.msix.table_offset,
        msix_pba_bar: c.msix.pba_bar,
        msix_pba_offset: c.msix.pba_offset,
        peer_caps: dev.peer_caps().bits(),
        ..CosimDeviceInfo::default()
    };
    for (i, b) in c.bars.iter().enumerate().take(NUM_BARS) {
        info.bar_size[i] = b.size;
        info.bar_flags[i] = b.flags.bits();
    }
    let dev = CosimDevice {
        inner: Mutex::new(dev),
        gate: Gate::default(),
        cb,
        detached,
        timeout,
        notify_fd,
        poll_missed: AtomicBool::new(false),
        reset_pending: AtomicBool::new(false),
        serial_pending: Mutex::new(Vec::new()),
    };
    Ok((dev, info))
}

/// Connects to the HDL simulation and runs the INIT exchange (blocks up to the timeout).
/// On success returns a handle and fills `*info_out`; on failure returns NULL and writes a
/// NUL-terminated message (saying what to start or fix) into `err` (`err_len` bytes).
///
/// # Safety
/// `params`, `callbacks` and `info_out` are valid pointers (or NULL, which fails); the strings in
/// `params` are NUL-terminated; `err` is NULL or has `err_len` writable bytes. The callbacks stay
/// valid until [`cosim_device_free`].
#[no_mangle]
pub unsafe extern "C" fn cosim_device_new(
    params: *const CosimDeviceParams,
    callbacks: *const CosimQemuCallbacks,
    info_out: *mut CosimDeviceInfo,
    err: *mut c_char,
    err_len: usize,
) -> *mut CosimDevice {
    if params.is_null() || callbacks.is_null() || info_out.is_null() {
        write_err(err, err_len, "cosim_device_new: NULL argument");
        return std::ptr::null_mut();
    }
    // SAFETY: checked non-NULL; valid per the contract above.
    let (params, cb) = unsafe { (&*params, *callbacks) };
    match catch_unwind(AssertUnwindSafe(|| {
        init_logging();
        new_inner(params, cb)
    })) {
        Ok(Ok((dev, info))) => {
            // SAFETY: checked non-NULL; the caller owns the storage.
            unsafe { info_out.write(info) };
            Box::into_raw(Box::new(dev))
        }
        Ok(Err(msg)) => {
            write_err(err, err_len, &msg);
            std::ptr::null_mut()
        }
        Err(_) => {
            write_err(err, err_len, "internal error (panic) while connecting; see the log above");
            std::ptr::null_mut()
        }
    }
}

/// Says goodbye to the HDL and frees the device. NULL is ignored. A vCPU may still be inside
/// the device or waiting for it (an MMIO read waiting with the big lock released, when QEMU
/// unplugs the device): new callers are refused, waiters give up, and the one inside is waited
/// for with the big lock released, up to twice the device's timeout and one second. If it is
/// still there (or it is the calling thread), the device is detached (no more callbacks into
/// QEMU) and leaked, with an error line, never freed under it. The caller deletes what the
/// callbacks use (NIC, bottom half) only after this returns.
///
/// # Safety
/// `dev` came from [`cosim_device_new`] and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn cosim_device_free(dev: *mut CosimDevice) {
    if dev.is_null() {
        return;
    }
    // SAFETY: live per the contract; other threads may still hold shared references.
    let shared = unsafe { &*dev };
    let gone = guard(false, || {
        let (users, me_inside) = shared.gate.begin_close(thread_tag());
        if users == 0 {
            return true;
        }
        if me_inside {
            return false;
        }
        let _unlocked = GlobalUnlocked::new(&shared.cb);
        shared.gate.wait_closed(2 * shared.timeout + Duration::from_secs(1))
    });
    if !gone {
        shared.detached.store(true, Ordering::Release);
        let msg = "cosim: accelerator-pcie: a thread stayed inside the device being removed; it is detached and leaked\n";
        // SAFETY: writes the bytes of a static string to stderr.
        let _ = unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
        return;
    }
    // SAFETY: ownership returns to Rust; nobody else is inside or waiting, and the caller does
    // not use `dev` again.
    let dev = unsafe { Box::from_raw(dev) };
    let _ = catch_unwind(AssertUnwindSafe(move || {
        if let Ok(mut d) = dev.inner.lock() {
            let report = d.shutdown();
            // Written straight to fd 2: this runs from QEMU's exit notifier, when Rust's
            // thread-locals (and with them `tracing` and `eprintln!`) may be gone.
            let lines = report.map(|r| format!("cosim: {r}\n")).unwrap_or_default() + &d.stats_exit_line() + "\n";
            // SAFETY: writes the bytes of a live String to stderr.
            let _ = unsafe { libc::write(2, lines.as_ptr().cast(), lines.len()) };
        }
        drop(dev);
    }));
}

/// Runs `f`, or returns `on_panic` if it panics: no panic unwinds into QEMU's C code.
fn guard<R>(on_panic: R, f: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(on_panic)
}

/// Runs `f` on the device behind `dev` (waiting for it as `wait` says), with pointer, re-entry
/// and panic checks.
///
/// # Safety
/// `dev` is NULL or a live handle from [`cosim_device_new`].
unsafe fn with_dev(dev: *const CosimDevice, wait: Wait, f: impl FnOnce(&mut Dev)) -> CosimStatus {
    if dev.is_null() {
        return CosimStatus::NullPointer;
    }
    // SAFETY: non-NULL and live per the caller's contract; only shared access to the handle.
    let dev = unsafe { &*dev };
    let r = catch_unwind(AssertUnwindSafe(|| {
        let mut d = dev.enter(wait)?;
        let r = catch_unwind(AssertUnwindSafe(|| f(&mut d)));
        drop(d); // leaves the device
        r.map_err(|_| CosimStatus::Panic)
    }));
    match r {
        Ok(Ok(())) => CosimStatus::Ok,
        Ok(Err(st)) => st,
        Err(_) => CosimStatus::Panic,
    }
}

fn access(bar: u8, size: u32) -> Option<(BarIndex, AccessSize)> {
    Some((BarIndex::new(bar)?, AccessSize::try_from(u8::try_from(size).ok()?).ok()?))
}

/// The file descriptor QEMU's main loop watches for readability (ZeroMQ's `ZMQ_FD`,
/// edge-triggered: call [`cosim_device_poll`] when it fires). -1 for NULL.
///
/// # Safety
/// `dev` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn cosim_device_notify_fd(dev: *const CosimDevice) -> c_int {
    if dev.is_null() {
        return -1;
    }
    // SAFETY: non-NULL and live per the contract.
    guard(-1, || unsafe { (*dev).notify_fd })
}

/// MMIO read of `size` (1, 2, 4, 8) bytes at `offset` of BAR `bar`. Blocks until the HDL
/// completes it or the timeout passes, serving DMA and MSI-X meanwhile. `*data_out` always gets
/// a value: all ones when the HDL is absent or the read fails. `from_cpu`: a vCPU's access (it
/// may wait its turn and release the big lock while it waits); false for anything else, for
/// example another device's DMA into the BAR (refused with `Busy` if the device is held).
///
/// # Safety
/// `dev` is NULL or a live handle; `data_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cosim_device_mmio_read(
    dev: *mut CosimDevice,
    bar: u8,
    offset: u64,
    size: u32,
    from_cpu: bool,
    data_out: *mut u64,
) -> CosimStatus {
    if data_out.is_null() {
        return CosimStatus::NullPointer;
    }
    let ones = match size {
        1 | 2 | 4 => (1u64 << (8 * size)) - 1,
        _ => u64::MAX,
    };
    // SAFETY: checked non-NULL; writable per the contract.
    unsafe { data_out.write(ones) };
    let Some((bar, size)) = access(bar, size) else {
        return CosimStatus::InvalidArgument;
    };
    let mut value = ones;
    // SAFETY: forwarded contract.
    let wait = if from_cpu { Wait::Cpu } else { Wait::No };
    // SAFETY: forwarded contract.
    let st = unsafe { with_dev(dev, wait, |d| value = d.mmio_read(bar, offset, size)) };
    // SAFETY: as above.
    unsafe { data_out.write(value) };
    st
}

/// Posted MMIO write of the low `size` bytes of `data` at `offset` of BAR `bar`; `from_cpu` as
/// for [`cosim_device_mmio_read`].
///
/// # Safety
/// `dev` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn cosim_device_mmio_write(
    dev: *mut CosimDevice,
    bar: u8,
    offset: u64,
    size: u32,
    data: u64,
    from_cpu: bool,
) -> CosimStatus {
    let Some((bar, size)) = access(bar, size) else {
        return CosimStatus::InvalidArgument;
    };
    // SAFETY: forwarded contract.
    let wait = if from_cpu { Wait::Cpu } else { Wait::No };
    // SAFETY: forwarded contract.
    unsafe { with_dev(dev, wait, |d| d.mmio_write(bar, offset, size, data)) }
}

/// The device's statistics as one JSON object (docs/qemu-device.md, "Statistics"), for the
/// read-only QOM property `stats`. Writes at most `len - 1` bytes and a NUL into `buf` (nothing
/// when `buf` is NULL or `len` is 0) and returns the length of the whole text without the NUL,
/// so a caller can ask with `len = 0` and call again with a buffer of that size + 1. Returns 0
/// for a NULL or busy handle or after a panic.
///
/// # Safety
/// `dev` is NULL or a live handle; `buf` is NULL or points to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn cosim_device_stats_json(dev: *const CosimDevice, buf: *mut c_char, len: usize) -> usize {
    if dev.is_null() {
        return 0;
    }
    let mut json = String::new();
    // SAFETY: forwarded contract.
    if unsafe { with_dev(dev, Wait::For(STATS_WAIT), |d| json = d.stats_json()) } != CosimStatus::Ok {
        return 0;
    }
    guard(0, || {
        if !buf.is_null() && len > 0 {
            let n = json.len().min(len - 1);
            // SAFETY: `buf` has `len` writable bytes per the contract and `n + 1 <= len`; the
            // source is a live String of at least `n` bytes and does not overlap `buf`.
            unsafe {
                std::ptr::copy_nonoverlapping(json.as_ptr(), buf.cast::<u8>(), n);
                buf.add(n).write(0);
            }
        }
        json.len()
    })
}

/// Handles everything the HDL sent (call when the notify fd is readable, or from the bottom half
/// requested through `schedule_poll`). `Busy`: another thread holds the device (and serves the
/// link); it schedules the bottom half when it leaves, so the caller may stop watching the fd
/// until the bottom half runs.
///
/// # Safety
/// `dev` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn cosim_device_poll(dev: *mut CosimDevice) -> CosimStatus {
    // SAFETY: forwarded contract.
    let st = unsafe { with_dev(dev, Wait::No, |d| d.poll()) };
    if st == CosimStatus::Busy {
        // SAFETY: `dev` is non-NULL here (with_dev said Busy) and live per the contract.
        unsafe { (*dev).poll_missed.store(true, Ordering::Release) };
    }
    st
}

/// True while a thread is inside the device or waiting for it. Then a NIC frame or chardev
/// bytes should wait in QEMU (the `can_receive` callbacks say no); the device schedules the
/// bottom half when it is free again, where QEMU is told to deliver them.
///
/// # Safety
/// `dev` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn cosim_device_busy(dev: *const CosimDevice) -> bool {
    if dev.is_null() {
        return false;
    }
    // SAFETY: non-NULL and live per the contract; only shared access to the handle.
    let dev = unsafe { &*dev };
    guard(false, || {
        let busy = dev.gate.busy();
        if busy {
            dev.poll_missed.store(true, Ordering::Release);
        }
        busy
    })
}

/// Periodic work: heartbeats and liveness. Returns the milliseconds until the next call is due.
///
/// # Safety
/// `dev` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn cosim_device_tick(dev: *mut CosimDevice) -> u32 {
    // SAFETY: forwarded contract.
    unsafe { with_dev(dev, Wait::No, |d| d.tick(Instant::now())) };
    50
}

/// Device reset: forwarded to the HDL.
///
/// # Safety
/// `dev` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn cosim_device_reset(dev: *mut CosimDevice) -> CosimStatus {
    // SAFETY: forwarded contract.
    let st = unsafe { with_dev(dev, Wait::No, |d| d.reset()) };
    if st == CosimStatus::Busy {
        // The thread inside forwards it when it leaves (a reset must not wait with the big
        // lock released in the middle of QEMU's reset phases).
        // SAFETY: non-NULL here and live per the contract.
        unsafe { (*dev).reset_pending.store(true, Ordering::Release) };
        return CosimStatus::Ok;
    }
    st
}

/// A frame from the netdev, for the HDL's NIC. `Busy`: another thread is inside the device;
/// QEMU should keep the frame queued (the receive callback answers 0) until the bottom half
/// flushes the queue.
///
/// # Safety
/// `dev` is NULL or a live handle; `buf` has `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cosim_device_nic_receive(dev: *mut CosimDevice, buf: *const u8, len: usize) -> CosimStatus {
    if buf.is_null() {
        return CosimStatus::NullPointer;
    }
    // SAFETY: `buf` has `len` readable bytes per the contract.
    let frame = unsafe { std::slice::from_raw_parts(buf, len) };
    // SAFETY: forwarded contract.
    let st = unsafe { with_dev(dev, Wait::No, |d| d.nic_receive(frame)) };
    if st == CosimStatus::Busy {
        // QEMU queues the frame (the C side answers 0) and the bottom half flushes the queue.
        // SAFETY: non-NULL here and live per the contract.
        unsafe { (*dev).poll_missed.store(true, Ordering::Release) };
    }
    st
}

/// Bytes from the chardev, for the HDL's UART.
///
/// # Safety
/// `dev` is NULL or a live handle; `buf` has `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cosim_device_serial_receive(dev: *mut CosimDevice, buf: *const u8, len: usize) -> CosimStatus {
    if buf.is_null() {
        return CosimStatus::NullPointer;
    }
    // SAFETY: `buf` has `len` readable bytes per the contract.
    let data = unsafe { std::slice::from_raw_parts(buf, len) };
    // SAFETY: forwarded contract.
    let st = unsafe { with_dev(dev, Wait::No, |d| d.serial_receive(data)) };
    if st == CosimStatus::Busy {
        // QEMU reads what its can_receive allowed even if the device got busy since: keep the
        // bytes for the next thread admitted (or the one inside, when it leaves).
        // SAFETY: non-NULL here and live per the contract.
        let dev = unsafe { &*dev };
        let kept = guard(false, || {
            let mut p = dev.serial_pending.lock().unwrap_or_else(|p| p.into_inner());
            let fits = p.len() + data.len() <= SERIAL_PENDING_MAX;
            if fits {
                p.extend_from_slice(data);
            }
            fits
        });
        if !kept {
            tracing::warn!(target: "cosim::guest", len = data.len(), "chardev bytes for a busy accelerator-pcie dropped (64 KiB kept already)");
        }
        dev.poll_missed.store(true, Ordering::Release);
        return CosimStatus::Ok;
    }
    st
}

/// True if the device currently has a session with the HDL (1) or not (0).
///
/// # Safety
/// `dev` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn cosim_device_connected(dev: *const CosimDevice) -> bool {
    if dev.is_null() {
        return false;
    }
    // SAFETY: non-NULL and live per the contract; only shared access to the handle.
    let dev = unsafe { &*dev };
    // Busy (inside a call of this device, so it has a session): connected.
    guard(false, || dev.inner.try_lock().map(|d| d.state() == crate::LinkState::Connected).unwrap_or(true))
}

#[cfg(test)]
mod tests {
    use super::{Gate, Refused};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Waits until `n` threads are queued at the gate.
    fn queued(g: &Gate, n: usize) {
        let t0 = Instant::now();
        while g.state().queue.len() < n {
            assert!(t0.elapsed() < Duration::from_secs(10), "threads never queued");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn enter_waiting(g: &Gate, me: usize, timeout: Duration) -> Result<u64, Refused> {
        let t = g.queue()?;
        g.wait_turn(me, t, timeout, true, || {})
    }

    /// The gate admits in arrival order: a thread that leaves and comes straight back (a vCPU
    /// reading back to back) queues behind the ones already waiting, so nobody starves.
    #[test]
    fn gate_admits_waiters_in_arrival_order_and_refuses_reentry() {
        let g = Arc::new(Gate::default());
        g.try_enter(1).unwrap();
        assert_eq!(g.try_enter(1), Err(Refused::Reentry));
        assert_eq!(g.try_enter(2), Err(Refused::Held));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut hs = Vec::new();
        for me in [2usize, 3] {
            let (g2, order) = (Arc::clone(&g), Arc::clone(&order));
            hs.push(std::thread::spawn(move || {
                enter_waiting(&g2, me, Duration::from_secs(10)).unwrap();
                order.lock().unwrap().push(me);
                g2.leave();
            }));
            queued(&g, me - 1);
        }
        g.leave();
        // Thread 1 comes back at once: 2 and 3 are queued, so it must wait its turn.
        assert_eq!(g.try_enter(1), Err(Refused::Held), "a waiter is queued: no overtaking");
        enter_waiting(&g, 1, Duration::from_secs(10)).unwrap();
        order.lock().unwrap().push(1);
        g.leave();
        hs.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(*order.lock().unwrap(), vec![2, 3, 1]);
        assert!(!g.busy());
    }

    /// A wait has a bound; the one that gives up leaves the queue and is counted, the next in
    /// line gets in (and learns the count), and a give-up with nobody left says so.
    #[test]
    fn gate_wait_times_out_and_leaves_the_queue() {
        let g = Gate::default();
        g.try_enter(1).unwrap();
        let t0 = Instant::now();
        let t = g.queue().unwrap();
        let mut nobody = false;
        assert_eq!(g.wait_turn(2, t, Duration::from_millis(50), true, || nobody = true), Err(Refused::Held));
        assert!(t0.elapsed() >= Duration::from_millis(50));
        assert!(!nobody, "thread 1 is still inside");
        assert!(g.state().queue.is_empty() && g.state().users == 1);
        g.leave();
        assert_eq!(g.try_enter(3), Ok(1), "one access refused since the last admission");
        let t = g.queue().unwrap();
        g.leave();
        // Admitted at once when the gate is free and the ticket is first.
        assert_eq!(g.wait_turn(4, t, Duration::ZERO, true, || {}), Ok(0));
        let t = g.queue().unwrap();
        g.leave();
        g.try_enter(5).unwrap_err();
        let mut nobody = false;
        g.try_enter(6).unwrap_err();
        // Ticket t is first and the gate is free, so it is let in even with no time left.
        assert_eq!(g.wait_turn(7, t, Duration::ZERO, true, || nobody = true), Ok(0));
        g.leave();
        assert!(!nobody && !g.busy());
    }

    /// Closing refuses newcomers, makes the waiters give up and waits for the thread inside;
    /// it says false if that thread stays past the bound.
    #[test]
    fn gate_close_waits_for_the_thread_inside() {
        let g = Arc::new(Gate::default());
        g.try_enter(1).unwrap();
        let waiter = {
            let g = Arc::clone(&g);
            std::thread::spawn(move || enter_waiting(&g, 2, Duration::from_secs(10)))
        };
        queued(&g, 1);
        assert_eq!(g.begin_close(1), (2, true), "thread 1 inside and thread 2 queued");
        assert_eq!(waiter.join().unwrap(), Err(Refused::Closing));
        assert!(!g.wait_closed(Duration::from_millis(50)), "thread 1 is still inside");
        assert_eq!(g.try_enter(3), Err(Refused::Closing));
        assert_eq!(g.queue(), Err(Refused::Closing));
        let inside = {
            let g = Arc::clone(&g);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                g.leave();
            })
        };
        assert!(g.wait_closed(Duration::from_secs(10)), "closes once thread 1 has left");
        inside.join().unwrap();
    }

    /// The helpers that catch panics for the exported functions of this file. A helper counts
    /// only while it calls `catch_unwind` or a helper listed before it.
    const GUARDS: [&str; 2] = ["guard", "with_dev"];

    fn body<'a>(src: &'a str, name: &str) -> &'a str {
        let start = src.find(&format!("fn {name}(")).or_else(|| src.find(&format!("fn {name}<")));
        let start = start.unwrap_or_else(|| panic!("fn {name} not found"));
        let open = start + src[start..].find(" {\n").expect("body");
        &src[open..open + src[open..].find("\n}\n").expect("end of body")]
    }

    /// `body` calls `f` (not merely a function whose name ends with `f`).
    fn calls(body: &str, f: &str) -> bool {
        body.match_indices(&format!("{f}(")).any(|(i, _)| {
            !body[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '.')
        })
    }

    /// Every exported function catches panics (directly or through a guard): a new export
    /// without one fails here. A panic must never unwind into QEMU.
    #[test]
    fn every_export_catches_panics() {
        let src = include_str!("ffi.rs");
        let src = &src[..src.find("\n#[cfg(test)]\nmod tests").expect("test module")];
        let catches = |b: &str, guards: &[&str]| calls(b, "catch_unwind") || guards.iter().any(|g| calls(b, g));
        for (i, g) in GUARDS.iter().enumerate() {
            assert!(catches(body(src, g), &GUARDS[..i]), "guard {g} does not catch panics");
        }
        let name_after = |s: &str| s[s.find("fn ").expect("fn") + 3..].split(['(', '<']).next().unwrap().to_string();
        let exports: Vec<String> = src.split("#[no_mangle]\n").skip(1).map(name_after).collect();
        let pub_extern: Vec<String> =
            src.lines().filter(|l| l.starts_with("pub ") && l.contains("extern \"C\" fn ")).map(name_after).collect();
        assert_eq!(exports, pub_extern, "every `pub extern \"C\" fn` is #[no_mangle] and vice versa");
        assert!(exports.len() >= 10, "found only {exports:?}");
        for name in &exports {
            assert!(
                catches(body(src, name), &GUARDS),
                "exported {name} does not catch panics (use catch_unwind or one of {GUARDS:?})"
            );
        }
        eprintln!("{} exports, each catches panics: {}", exports.len(), exports.join(", "));
    }
}
