//! The link between the simulation thread and the I/O thread of one endpoint: two crossbeam
//! channels, a "something is pending" flag the simulation checks with one atomic load per clock,
//! an eventfd that wakes the I/O thread only when it sleeps, and one that wakes the simulation
//! thread only when it sleeps (idle sleep, see [`SimWake`]).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use cosim_protocol::Message;
use crossbeam_channel::{Receiver, Sender};

/// I/O thread -> simulation thread.
#[derive(Debug)]
pub(crate) enum ToSim {
    /// A host message for the RTL (MMIO, DMA read completion, frame, serial, reset).
    Msg(Message),
    /// An INIT with a new session number arrived: drop the old session's outstanding state.
    NewSession,
    /// The host went silent (liveness timeout).
    HostLost,
    /// The host spoke again after being lost.
    HostBack,
    /// The host said goodbye: the simulation should end.
    Goodbye,
}

/// Simulation thread -> I/O thread.
#[derive(Debug)]
pub(crate) enum ToIo {
    /// Send this message to the host.
    Send(Message),
    /// Say goodbye and stop the thread.
    Shutdown,
}

/// Wakes the I/O thread when it sleeps in `poll(2)`.
#[derive(Debug)]
pub(crate) struct Waker {
    fd: OwnedFd,
    sleeping: AtomicBool,
}

impl Waker {
    pub(crate) fn new() -> std::io::Result<Self> {
        // SAFETY: eventfd(2) takes no pointers; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Self { fd: unsafe { OwnedFd::from_raw_fd(fd) }, sleeping: AtomicBool::new(false) })
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Called by the I/O thread before it sleeps.
    pub(crate) fn set_sleeping(&self, s: bool) {
        self.sleeping.store(s, Ordering::SeqCst);
    }

    /// Called after queueing a message: one write(2) only if the sleeping side sleeps. Returns
    /// true if it did.
    pub(crate) fn wake(&self) -> bool {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live local to our own eventfd.
            let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
            return true;
        }
        false
    }

    /// Clears the eventfd counter.
    pub(crate) fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live local from our own non-blocking eventfd.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

/// What the simulation's idle sleep needs of one endpoint (shared with the registry): whether
/// the I/O thread delivered something, the eventfd it writes when the simulation sleeps, and the
/// last clock at which the endpoint's core had anything pending or in flight.
#[derive(Debug)]
pub(crate) struct SimWake {
    /// Set by the I/O thread after queueing a message for the simulation.
    pub(crate) pending: Arc<AtomicBool>,
    /// Written by the I/O thread only while the simulation sleeps in [`crate::registry::sleep`].
    pub(crate) waker: Waker,
    /// The core's clock count at its last tick that was not quiet (relaxed: the simulation
    /// thread writes it and reads it back).
    pub(crate) busy_mark: AtomicU64,
    /// When the I/O thread woke the sleeping simulation ([`crate::registry::now_ns`]; 0: not since
    /// the last sleep), for the wake latency statistics.
    pub(crate) woken_at_ns: AtomicU64,
}

/// Sleeps in poll(2) until one of `wakers` is written or `timeout_ms` passes (an interrupting
/// signal ends it early too); drains those that were written. Returns true if one was.
pub(crate) fn poll_wakers(wakers: &[&Waker], timeout_ms: i32) -> bool {
    let mut fds: Vec<libc::pollfd> =
        wakers.iter().map(|w| libc::pollfd { fd: w.raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: `fds` is a live vector of pollfd structs and its length is passed.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    let mut woken = false;
    for (w, f) in wakers.iter().zip(&fds) {
        if f.revents != 0 {
            w.drain();
            woken = true;
        }
    }
    n > 0 && woken
}

/// The simulation thread's end.
#[derive(Debug)]
pub(crate) struct SimLink {
    pub(crate) rx: Receiver<ToSim>,
    pub(crate) pending: Arc<AtomicBool>,
    pub(crate) tx: Sender<ToIo>,
    pub(crate) waker: Arc<Waker>,
    pub(crate) wake: Arc<SimWake>,
}

/// The I/O thread's end.
#[derive(Debug)]
pub(crate) struct IoLink {
    pub(crate) tx: Sender<ToSim>,
    pub(crate) pending: Arc<AtomicBool>,
    pub(crate) rx: Receiver<ToIo>,
    pub(crate) waker: Arc<Waker>,
    pub(crate) wake: Arc<SimWake>,
}

impl IoLink {
    pub(crate) fn to_sim(&self, m: ToSim) {
        if self.tx.send(m).is_ok() {
            // SeqCst pairs with the sleeping simulation (registry::sleep): it sets its flag, then
            // loads `pending`; here `pending` is stored, then the flag swapped. One of the two
            // sees the other, so a message is never left behind a sleeping simulation.
            self.pending.store(true, Ordering::SeqCst);
            if self.wake.waker.wake() {
                self.wake.woken_at_ns.store(crate::registry::now_ns(), Ordering::Relaxed);
            }
        }
    }
}

/// A connected pair of link ends.
pub(crate) fn link() -> std::io::Result<(SimLink, IoLink)> {
    let (a_tx, a_rx) = crossbeam_channel::unbounded();
    let (b_tx, b_rx) = crossbeam_channel::unbounded();
    let pending = Arc::new(AtomicBool::new(false));
    let waker = Arc::new(Waker::new()?);
    let wake = Arc::new(SimWake { pending: pending.clone(), waker: Waker::new()?,
        busy_mark: AtomicU64::new(0),
        woken_at_ns: AtomicU64::new(0),
    });
    Ok((
        SimLink { rx: a_rx, pending: pending.clone(), tx: b_tx, waker: waker.clone(), wake: wake.clone() },
        IoLink { tx: a_tx, pending, rx: b_rx, waker, wake },
    ))
}

/// Counters of one endpoint, shared by both threads and the registry (relaxed atomics).
#[derive(Debug, Default)]
pub struct SharedStats {
    /// MMIO reads completed towards the host.
    pub mmio_reads: AtomicU64,
    /// MMIO writes given to the RTL.
    pub mmio_writes: AtomicU64,
    /// MMIO accesses rejected, timed out or answered with an AXI error.
    pub mmio_errors: AtomicU64,
    /// DMA read requests sent.
    pub dma_reads: AtomicU64,
    /// Bytes requested by DMA reads (host -> device).
    pub dma_read_bytes: AtomicU64,
    /// DMA write messages sent.
    pub dma_writes: AtomicU64,
    /// Bytes written by DMA (device -> host).
    pub dma_write_bytes: AtomicU64,
    /// MSI-X messages sent.
    pub irqs: AtomicU64,
    /// Frames sent to the host.
    pub frames_tx: AtomicU64,
    /// Frames received from the host.
    pub frames_rx: AtomicU64,
    /// Serial bytes sent to the host.
    pub serial_tx: AtomicU64,
    /// Serial bytes received from the host.
    pub serial_rx: AtomicU64,
    /// Malformed frames received and dropped.
    pub malformed: AtomicU64,
    /// Frames dropped by the session engine, for any reason (malformed included).
    pub dropped: AtomicU64,
    /// Host sessions started.
    pub sessions: AtomicU64,
    /// DPI pops refused because their pending bit was not reported (a shell bug).
    pub refused_pops: AtomicU64,
    /// Device resets requested by the host.
    pub resets: AtomicU64,
    /// Wall time the simulation clock was held waiting for DMA read completions (microseconds).
    pub dma_hold_us: AtomicU64,
    /// The design clock this endpoint reports, in Hz (set once at start).
    pub clock_hz: AtomicU64,
}

impl SharedStats {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}
