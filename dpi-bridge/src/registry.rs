//! Process-wide view of every endpoint in the simulation, for the C++ main: the endpoints to
//! announce in the ready line, whether the simulation should stop, summed statistics, and what
//! the idle sleep needs (is anything pending in any endpoint, does the design say it is busy,
//! and a sleep that any endpoint's next message ends; docs/hdl-endpoint.md, "Idle sleep").

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::link::{SharedStats, SimWake};

static STOP: AtomicBool = AtomicBool::new(false);
static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
/// `cosim_busy` instances in the design (each declares when the design is busy).
static BUSY_DECLARED: AtomicU32 = AtomicU32::new(0);
/// `cosim_busy` instances whose `busy` input is high now (they start busy).
static BUSY_NOW: AtomicU32 = AtomicU32::new(0);

struct Entry {
    endpoint: String,
    stats: Arc<SharedStats>,
    wake: Arc<SimWake>,
}

/// Records a started endpoint. Its statistics stay counted after it closes.
pub(crate) fn register(endpoint: &str, stats: Arc<SharedStats>, wake: Arc<SimWake>) {
    if let Ok(mut r) = REGISTRY.lock() {
        r.push(Entry { endpoint: endpoint.to_string(), stats, wake });
    }
}

/// A `cosim_busy` instance starts (busy until its first clock says otherwise).
pub fn busy_declare() {
    BUSY_DECLARED.fetch_add(1, Ordering::Relaxed);
    BUSY_NOW.fetch_add(1, Ordering::Relaxed);
}

/// A `cosim_busy` instance's input changed to `busy` (the module reports changes only).
pub fn busy_set(busy: bool) {
    if busy {
        BUSY_NOW.fetch_add(1, Ordering::Relaxed);
    } else {
        let _ = BUSY_NOW.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

/// What the idle sleep of the C++ main looks at, read together.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CosimIdle {
    /// `cosim_busy` instances in the design; 0 means the design never said when it is idle
    /// and the simulation does not sleep.
    pub declared: u32,
    /// `cosim_busy` instances that say busy now.
    pub busy: u32,
    /// Changes whenever an endpoint's per-clock tick saw something pending or in flight (MMIO
    /// queued or on the bus, DMA reads outstanding, a DMA read beat, a frame, a serial byte, a
    /// reset for the RTL): equal in two calls means every endpoint was quiet in between.
    pub bridge_mark: u64,
    /// True if an endpoint has messages from its I/O thread that no tick has taken in yet.
    pub pending: bool,
}

/// The idle state now.
pub fn idle() -> CosimIdle {
    let mut s = CosimIdle {
        declared: BUSY_DECLARED.load(Ordering::Relaxed),
        busy: BUSY_NOW.load(Ordering::Relaxed),
        ..CosimIdle::default()
    };
    if let Ok(r) = REGISTRY.lock() {
        for e in r.iter() {
            // Wrapping sum: any endpoint's mark moving changes it (marks only grow).
            s.bridge_mark = s.bridge_mark.wrapping_add(e.wake.busy_mark.load(Ordering::Relaxed));
            s.pending |= e.wake.pending.load(Ordering::SeqCst);
        }
    }
    s
}

/// Nanoseconds since the first call in this process (a monotonic clock both threads share).
pub(crate) fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Wake latencies measured so far (nanoseconds from the I/O thread's wake to the simulation
/// running again), at most [`MAX_WAKES_KEPT`] of them.
static WAKES: Mutex<Vec<u64>> = Mutex::new(Vec::new());
const MAX_WAKES_KEPT: usize = 1 << 20;

/// Wake latency of the idle sleep: from the moment an endpoint's I/O thread, holding a message
/// for the sleeping simulation, writes its eventfd, to the simulation thread running again.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CosimWakeStats {
    /// Wakes by a message measured.
    pub wakes: u64,
    /// Median, in nanoseconds.
    pub p50_ns: u64,
    /// 99th percentile, in nanoseconds.
    pub p99_ns: u64,
    /// Largest, in nanoseconds.
    pub max_ns: u64,
}

/// The wake latencies so far.
pub fn wake_stats() -> CosimWakeStats {
    let Ok(w) = WAKES.lock() else { return CosimWakeStats::default() };
    if w.is_empty() {
        return CosimWakeStats::default();
    }
    let mut v = w.clone();
    v.sort_unstable();
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    CosimWakeStats { wakes: v.len() as u64, p50_ns: at(0.5), p99_ns: at(0.99), max_ns: v[v.len() - 1] }
}

/// Sleeps until any endpoint's I/O thread delivers a message, a signal interrupts, or
/// `timeout_ms` passes. Returns true if a message ended it (or one was already pending: then
/// it does not sleep at all). Called by the simulation thread between clocks only.
pub fn sleep(timeout_ms: i32) -> bool {
    let wakes: Vec<Arc<SimWake>> = match REGISTRY.lock() {
        Ok(r) => r.iter().map(|e| e.wake.clone()).collect(),
        Err(_) => return false,
    };
    // Flag first, then look at `pending` (SeqCst both sides, see IoLink::to_sim). A write left
    // over from an earlier sleep is drained here: whatever caused it set `pending` first.
    for w in &wakes {
        w.woken_at_ns.store(0, Ordering::Relaxed);
        w.waker.set_sleeping(true);
        w.waker.drain();
    }
    let woken = if wakes.iter().any(|w| w.pending.load(Ordering::SeqCst)) || stop_requested() {
        true
    } else {
        let wakers: Vec<&crate::link::Waker> = wakes.iter().map(|w| &w.waker).collect();
        crate::link::poll_wakers(&wakers, timeout_ms)
    };
    let now = now_ns();
    for w in &wakes {
        w.waker.set_sleeping(false);
        let at = w.woken_at_ns.swap(0, Ordering::Relaxed);
        if at != 0 {
            if let Ok(mut v) = WAKES.lock() {
                if v.len() < MAX_WAKES_KEPT {
                    v.push(now.saturating_sub(at));
                }
            }
        }
    }
    woken || wakes.iter().any(|w| w.pending.load(Ordering::SeqCst))
}

/// Asks the simulation loop to end (goodbye from a host).
pub(crate) fn request_stop(why: &str) {
    if !STOP.swap(true, Ordering::SeqCst) {
        tracing::info!(target: "cosim::dpi", why, "simulation stop requested");
    }
}

/// True once some endpoint asked the simulation to stop.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// The endpoints started so far, comma-separated.
pub fn endpoints() -> String {
    REGISTRY.lock().map(|r| r.iter().map(|e| e.endpoint.as_str()).collect::<Vec<_>>().join(",")).unwrap_or_default()
}

/// Statistics summed over every endpoint.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CosimSimStats {
    /// Endpoints started.
    pub endpoints: u64,
    /// MMIO reads completed.
    pub mmio_reads: u64,
    /// MMIO writes performed.
    pub mmio_writes: u64,
    /// MMIO accesses rejected, timed out or answered with an AXI error.
    pub mmio_errors: u64,
    /// DMA read requests.
    pub dma_reads: u64,
    /// Bytes read from guest memory (host -> device).
    pub dma_read_bytes: u64,
    /// DMA write messages.
    pub dma_writes: u64,
    /// Bytes written to guest memory (device -> host).
    pub dma_write_bytes: u64,
    /// MSI-X interrupts sent.
    pub irqs: u64,
    /// NIC frames sent to the host.
    pub frames_tx: u64,
    /// NIC frames received from the host.
    pub frames_rx: u64,
    /// Serial bytes sent to the host.
    pub serial_tx: u64,
    /// Serial bytes received from the host.
    pub serial_rx: u64,
    /// Malformed messages dropped (frames of another protocol version included).
    pub malformed: u64,
    /// Frames dropped by the session engine for any reason: malformed, another version, not
    /// of the session (foreign INIT, GOODBYE, HEARTBEAT), stale completions, duplicates.
    pub dropped: u64,
    /// Host sessions started.
    pub sessions: u64,
    /// DPI pops refused because this clock's tick had not reported their pending bit.
    pub refused_pops: u64,
    /// Device resets by the host.
    pub resets: u64,
    /// Wall time the clock was held for DMA read completions, in microseconds.
    pub dma_hold_us: u64,
    /// The design clock the endpoints report (CLOCK_HZ / +cosim_clock_hz), in Hz; 0 if they
    /// differ or none reports one.
    pub clock_hz: u64,
}

/// Sums the statistics of every endpoint.
pub fn stats() -> CosimSimStats {
    let mut s = CosimSimStats::default();
    let Ok(r) = REGISTRY.lock() else { return s };
    let g = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    for e in r.iter() {
        let x = &e.stats;
        s.endpoints += 1;
        s.mmio_reads += g(&x.mmio_reads);
        s.mmio_writes += g(&x.mmio_writes);
        s.mmio_errors += g(&x.mmio_errors);
        s.dma_reads += g(&x.dma_reads);
        s.dma_read_bytes += g(&x.dma_read_bytes);
        s.dma_writes += g(&x.dma_writes);
        s.dma_write_bytes += g(&x.dma_write_bytes);
        s.irqs += g(&x.irqs);
        s.frames_tx += g(&x.frames_tx);
        s.frames_rx += g(&x.frames_rx);
        s.serial_tx += g(&x.serial_tx);
        s.serial_rx += g(&x.serial_rx);
        s.malformed += g(&x.malformed);
        s.dropped += g(&x.dropped);
        s.sessions += g(&x.sessions);
        s.refused_pops += g(&x.refused_pops);
        s.resets += g(&x.resets);
        s.dma_hold_us += g(&x.dma_hold_us);
        let c = g(&x.clock_hz);
        s.clock_hz = if s.endpoints == 1 || s.clock_hz == c { c } else { 0 };
    }
    s
}
