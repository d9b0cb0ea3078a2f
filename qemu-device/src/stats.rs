//! Statistics users read: the MMIO read latency histogram kept by the device, and the one JSON
//! object (`stats`) that QEMU shows as a read-only QOM property (`qom-get`) while running and
//! prints at exit (docs/qemu-device.md, "Statistics").

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::host::{DeviceStats, HostDevice, HostLink};
use crate::ops::QemuOps;

/// Buckets of [`LatencyHistogram`]: bucket 0 holds reads under 1 us, bucket i (1 to 98) those in
/// [2^((i-1)/4), 2^(i/4)) us (a quarter octave, 19 % wide), bucket 99 everything from 2^24.5 us
/// (about 24 s) on.
pub const LATENCY_BUCKETS: usize = 100;

/// MMIO read latency, from the request to its completion, in fixed quarter-octave buckets:
/// recording is a few arithmetic operations and no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: [u64; LATENCY_BUCKETS],
    count: u64,
    sum_ns: u64,
    max_ns: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self { counts: [0; LATENCY_BUCKETS], count: 0, sum_ns: 0, max_ns: 0 }
    }
}

fn bucket(ns: u64) -> usize {
    if ns < 1000 {
        return 0;
    }
    let quarters = ((ns as f64 / 1000.0).log2() * 4.0).floor() as usize;
    (quarters + 1).min(LATENCY_BUCKETS - 1)
}

/// Upper bound of bucket `i` in microseconds.
fn upper_us(i: usize) -> f64 {
    (i as f64 / 4.0).exp2()
}

impl LatencyHistogram {
    /// Adds one read.
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket(ns)] += 1;
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    /// Reads recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `p`-th percentile (0 < p <= 100) in microseconds: the upper bound of the bucket that
    /// holds it (at most 19 % above the true value), never above the largest read. None if empty.
    pub fn percentile_us(&self, p: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((p / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(upper_us(i).min(self.max_us()));
            }
        }
        Some(self.max_us())
    }

    /// The largest read in microseconds (0 if empty).
    pub fn max_us(&self) -> f64 {
        self.max_ns as f64 / 1000.0
    }

    /// The mean in microseconds. None if empty.
    pub fn mean_us(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ns as f64 / self.count as f64 / 1000.0)
    }
}

/// MMIO reads of every device in this process that wait for their completion right now, and
/// the most at one moment so far (`reads_in_flight_max` in the JSON). Above 1 only when reads
/// of several vCPUs overlap: possible because a waiting read releases QEMU's big lock.
#[derive(Debug)]
pub struct ReadsInFlight {
    now: AtomicU32,
    max: AtomicU32,
}

/// The process's [`ReadsInFlight`].
pub static READS_IN_FLIGHT: ReadsInFlight = ReadsInFlight { now: AtomicU32::new(0), max: AtomicU32::new(0) };

impl ReadsInFlight {
    /// Counts one waiting read until the returned guard is dropped.
    pub fn enter(&'static self) -> InFlight {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        InFlight(self)
    }

    /// The most reads waiting at one moment so far.
    pub fn max(&self) -> u32 {
        self.max.load(Ordering::SeqCst)
    }
}

/// One read counted in [`ReadsInFlight`] (see [`ReadsInFlight::enter`]).
#[derive(Debug)]
pub struct InFlight(&'static ReadsInFlight);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `Some(x)` as a number with one decimal, `None` as `null`.
fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "null".into(), |x| format!("{:.1}", x))
}

/// The device's statistics as one JSON object (keys sorted; no allocation per MMIO access, only
/// when asked). `clock_hz`: the design clock from CONFIG (0: the simulation did not report one);
/// `reads_in_flight_max`: [`ReadsInFlight::max`] of the process.
pub fn stats_json(
    s: &DeviceStats,
    sessions: u64,
    session_losses: u64,
    frames_dropped: u64,
    clock_hz: u64,
    reads_in_flight_max: u32,
) -> String {
    let h = &s.read_latency;
    format!(
        concat!(
            "{{\"accesses_refused\":{},\"clock_hz\":{},\"dma_read_bytes\":{},\"dma_reads\":{},\"dma_write_bytes\":{},\"dma_writes\":{},",
            "\"frames_dropped\":{},\"frames_rx\":{},\"frames_tx\":{},\"irqs\":{},\"mmio_reads\":{},",
            "\"mmio_reads_failed\":{},\"mmio_writes\":{},\"read_max_us\":{},\"read_mean_us\":{},",
            "\"read_p50_us\":{},\"read_p99_us\":{},\"reads_in_flight_max\":{},\"send_failures\":{},",
            "\"serial_rx\":{},\"serial_tx\":{},",
            "\"session_losses\":{},\"sessions\":{}}}"
        ),
        s.accesses_refused,
        clock_hz,
        s.dma_read_bytes,
        s.dma_reads,
        s.dma_write_bytes,
        s.dma_writes,
        frames_dropped,
        s.frames_rx,
        s.frames_tx,
        s.irqs,
        s.mmio_reads,
        s.mmio_reads_failed,
        s.mmio_writes,
        num((h.count() > 0).then(|| h.max_us())),
        num(h.mean_us()),
        num(h.percentile_us(50.0)),
        num(h.percentile_us(99.0)),
        reads_in_flight_max,
        s.send_failures,
        s.serial_rx,
        s.serial_tx,
        session_losses,
        sessions,
    )
}

impl<L: HostLink, Q: QemuOps> HostDevice<L, Q> {
    /// [`stats_json`] of this device: its counters, the session engine's, and the design clock.
    pub fn stats_json(&self) -> String {
        let ss = self.session_stats();
        stats_json(&self.stats(), ss.sessions, ss.losses, ss.drops.total(), self.config().clock_hz, READS_IN_FLIGHT.max())
    }

    /// The line QEMU prints on stderr when the device goes away (the launcher collects it):
    /// `cosim-qemu: stats {"device":ID,"endpoint":..., ...the stats}`.
    pub fn stats_exit_line(&self) -> String {
        let json = self.stats_json();
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        format!(
            "cosim-qemu: stats {{\"device\":\"{}\",\"endpoint\":\"{}\",{}",
            esc(&self.options().name),
            esc(&self.options().endpoint),
            &json[1..]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_quarter_octaves() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(999), 0);
        assert_eq!(bucket(1000), 1);
        assert_eq!(bucket(1188), 1); // below 2^0.25 us = 1.189 us
        assert_eq!(bucket(1190), 2);
        assert_eq!(bucket(2000), 5);
        assert_eq!(bucket(u64::MAX), LATENCY_BUCKETS - 1);
        for i in 1..LATENCY_BUCKETS - 1 {
            // Every value lies below its bucket's upper bound and at or above the one before.
            let lo = (upper_us(i - 1) * 1000.0).ceil() as u64;
            let hi = (upper_us(i) * 1000.0).floor() as u64 - 1;
            assert_eq!((bucket(lo), bucket(hi)), (i, i), "bucket {i}: {lo}..={hi} ns");
        }
    }

    #[test]
    fn percentiles_within_a_bucket_of_the_truth() {
        let mut h = LatencyHistogram::default();
        assert_eq!((h.percentile_us(50.0), h.mean_us()), (None, None));
        // 98 reads of 100 us, one of 1 ms, one of 10 ms.
        for _ in 0..98 {
            h.record(Duration::from_micros(100));
        }
        h.record(Duration::from_millis(1));
        h.record(Duration::from_millis(10));
        assert_eq!(h.count(), 100);
        let p50 = h.percentile_us(50.0).unwrap();
        assert!((100.0..100.0 * 1.19).contains(&p50), "{p50}");
        let p99 = h.percentile_us(99.0).unwrap();
        assert!((1000.0..1000.0 * 1.19).contains(&p99), "{p99}");
        assert_eq!(h.percentile_us(100.0), Some(10_000.0), "the top is the exact maximum");
        assert_eq!(h.max_us(), 10_000.0);
        assert_eq!(h.mean_us(), Some((98.0 * 100.0 + 1000.0 + 10_000.0) / 100.0));
    }

    #[test]
    fn json_has_every_field_and_null_latencies_without_reads() {
        let mut s = DeviceStats { mmio_reads: 3, mmio_writes: 2, dma_read_bytes: 4096, irqs: 1, ..Default::default() };
        let empty = stats_json(&s, 1, 0, 0, 100_000_000, 0);
        assert!(empty.contains("\"read_p50_us\":null") && empty.contains("\"read_p99_us\":null"), "{empty}");
        for _ in 0..3 {
            s.read_latency.record(Duration::from_micros(50));
        }
        let j = stats_json(&s, 2, 1, 7, 100_000_000, 2);
        for want in [
            "\"clock_hz\":100000000",
            "\"mmio_reads\":3",
            "\"mmio_writes\":2",
            "\"dma_read_bytes\":4096",
            "\"irqs\":1",
            "\"sessions\":2",
            "\"session_losses\":1",
            "\"frames_dropped\":7",
            "\"read_max_us\":50.0",
            "\"reads_in_flight_max\":2",
        ] {
            assert!(j.contains(want), "{want} in {j}");
        }
        assert!(j.starts_with('{') && j.ends_with('}') && j.matches(':').count() == 23, "{j}");
    }
}
