//! Process-wide view of every endpoint in the simulation, for the C++ main: the endpoints to
//! announce in the ready line, whether the simulation should stop, and summed statistics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::link::SharedStats;

static STOP: AtomicBool = AtomicBool::new(false);
/// Messages that crossed any endpoint (both directions, heartbeats excluded).
static ACTIVITY: AtomicU64 = AtomicU64::new(0);
static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

struct Entry {
    endpoint: String,
    stats: Arc<SharedStats>,
}

/// Records a started endpoint. Its statistics stay counted after it closes.
pub(crate) fn register(endpoint: &str, stats: Arc<SharedStats>) {
    if let Ok(mut r) = REGISTRY.lock() {
        r.push(Entry { endpoint: endpoint.to_string(), stats });
    }
}

/// Asks the simulation loop to end (goodbye from a host).
pub(crate) fn request_stop(why: &str) {
    if !STOP.swap(true, Ordering::SeqCst) {
        tracing::info!(target: "cosim::dpi", why, "simulation stop requested");
    }
}

/// Counts one message through the bridge (for the C++ main's idle detection).
#[inline]
pub(crate) fn note_activity() {
    ACTIVITY.fetch_add(1, Ordering::Relaxed);
}

/// Messages that crossed the bridge so far (heartbeats excluded).
pub fn activity() -> u64 {
    ACTIVITY.load(Ordering::Relaxed)
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
    }
    s
}
