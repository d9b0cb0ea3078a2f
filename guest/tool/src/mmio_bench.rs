//! `mmio-bench`: how fast a guest reaches the accelerator's registers from user space.
//!
//! Maps BAR0 of every `accelerator-pcie` function through sysfs (`/sys/bus/pci/devices/BDF/resource0`)
//! and times 32-bit reads of the side-effect-free ID register one after another, then posted
//! 32-bit writes to SCRATCH (docs/register-map.md). The cosim_accel driver has no mmap of its own
//! and claims BAR0, and the guest kernel has `CONFIG_IO_STRICT_DEVMEM`, so sysfs refuses to map a
//! BAR a driver holds: the tool then unbinds the driver for the run and binds it again afterwards
//! (`driver_unbound` in the record). A function without a driver is enabled first (without that its
//! MMIO reads 0 without reaching the device). With several devices and `--concurrent`, one thread
//! per device, all released at the same instant.
//!
//! One of the tool's modules with `unsafe` (the mapping and the volatile accesses), each block with
//! its `// SAFETY:` line.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cosim_gemm_abi::{pci, regs};
use cosim_guest_results::MmioBench;

const SYSFS_PCI: &str = "/sys/bus/pci/devices";

/// Reads before the timed loop (first-touch costs: page tables, TLB, QEMU's MMIO dispatch).
const WARMUP_READS: u32 = 16;

/// How long a thread waits at the start for the others (their warm-up reads included).
const START_LIMIT: Duration = Duration::from_secs(30);

/// Releases the probing threads together once all have arrived. Unlike `std::sync::Barrier` it
/// cannot hang: a thread that fails before it arrives breaks the gate, and so does a wait that
/// ends at its limit (a thread arriving after that must not measure alone as if concurrent).
struct StartGate {
    n: usize,
    state: Mutex<GateState>,
    cv: Condvar,
}

#[derive(Default)]
struct GateState {
    arrived: usize,
    /// All arrived before anything failed: the measurement starts (a later failure changes
    /// nothing for those already released).
    open: bool,
    /// A thread failed before it arrived, or a wait ran out: nobody starts any longer.
    broken: bool,
}

impl StartGate {
    fn new(n: usize) -> Self {
        Self { n, state: Mutex::new(GateState::default()), cv: Condvar::new() }
    }

    /// Arrives and waits for the others: Err says why the measurement must not start.
    fn wait(&self, limit: Duration) -> Result<(), String> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.arrived += 1;
        if st.arrived >= self.n && !st.broken {
            st.open = true;
        }
        self.cv.notify_all();
        let (mut st, _) = self
            .cv
            .wait_timeout_while(st, limit, |g| !g.open && !g.broken)
            .unwrap_or_else(|e| e.into_inner());
        if st.open {
            return Ok(());
        }
        if st.broken {
            return Err("another probing thread failed before the start".into());
        }
        st.broken = true;
        self.cv.notify_all();
        Err(format!("only {} of {} probing threads started within {limit:?}", st.arrived, self.n))
    }

    /// A thread failed before it arrived: nobody waits for it any longer.
    fn fail(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !st.open {
            st.broken = true;
        }
        self.cv.notify_all();
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Devices to use: None for all, else the first N (by PCI address).
    pub devices: Option<usize>,
    pub reads: u32,
    pub writes: u32,
    /// Probe the devices at the same time (one thread each) instead of one after the other.
    pub concurrent: bool,
}

/// `--devices`: all accelerators (None) or the first N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceCount(pub Option<usize>);

/// Parses `--devices`: `all` or a count of at least 1.
pub fn parse_devices(s: &str) -> Result<DeviceCount, String> {
    if s == "all" {
        return Ok(DeviceCount(None));
    }
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(DeviceCount(Some(n))),
        _ => Err(format!("--devices: expected \"all\" or a number of at least 1, got {s:?}")),
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn read_hex(path: &Path) -> Option<u32> {
    u32::from_str_radix(read_trimmed(path)?.trim_start_matches("0x"), 16).ok()
}

fn write_sysfs(path: &Path, value: &str) -> Result<(), String> {
    fs::write(path, value).map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
}

/// PCI addresses of the accelerator's functions (vendor and device ID of the register map), sorted.
pub fn find_functions() -> Vec<String> {
    let mut found: Vec<String> = fs::read_dir(SYSFS_PCI)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| {
                    let p = e.path();
                    read_hex(&p.join("vendor")) == Some(u32::from(pci::VENDOR_ID))
                        && read_hex(&p.join("device")) == Some(u32::from(pci::DEVICE_ID))
                })
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// BAR0 of one function, mapped into this process (unmapped on drop).
struct Bar0 {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain device memory owned by this value; every access is a volatile
// 32-bit load or store, which is as safe from any thread as from the one that mapped it.
unsafe impl Send for Bar0 {}

impl Bar0 {
    fn map(dev: &Path) -> io::Result<Bar0> {
        let path = dev.join("resource0");
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let len = (file.metadata()?.len() as usize).min(pci::BAR0_SIZE as usize);
        if len < regs::SCRATCH as usize + 4 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{} is only {len} bytes", path.display())));
        }
        // SAFETY: a fresh shared mapping of `len` bytes of an open file at offset 0; the kernel
        // checks the length against the BAR. The fd may be closed afterwards (the mapping stays).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Bar0 { base, len })
    }

    fn reg(&self, offset: u64) -> *mut u32 {
        assert!(offset as usize + 4 <= self.len && offset.is_multiple_of(4), "register {offset:#x} outside BAR0");
        // SAFETY: the offset is inside the mapping (asserted above), so the result stays in bounds.
        unsafe { self.base.as_ptr().add(offset as usize).cast::<u32>() }
    }

    fn read32(&self, offset: u64) -> u32 {
        let p = self.reg(offset);
        // SAFETY: `p` is an aligned address inside the live mapping (`reg`); a volatile load is one
        // 32-bit MMIO read of the device.
        unsafe { p.read_volatile() }
    }

    fn write32(&self, offset: u64, value: u32) {
        let p = self.reg(offset);
        // SAFETY: as `read32`; one 32-bit MMIO write.
        unsafe { p.write_volatile(value) }
    }
}

impl Drop for Bar0 {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no reference into it outlives `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// One function made mappable, and what to undo afterwards.
struct Prepared {
    bdf: String,
    bar: Bar0,
    /// The driver unbound for the run (bound again by `restore`).
    unbound: Option<String>,
    /// The tool enabled the function (disabled again by `restore`).
    enabled: bool,
}

fn enable(dev: &Path) -> Result<bool, String> {
    if read_trimmed(&dev.join("enable")).as_deref() == Some("0") {
        write_sysfs(&dev.join("enable"), "1")?;
        return Ok(true);
    }
    Ok(false)
}

fn prepare(bdf: &str) -> Result<Prepared, String> {
    let dev = Path::new(SYSFS_PCI).join(bdf);
    let mut enabled = enable(&dev)?;
    let mut unbound = None;
    let bar = match Bar0::map(&dev) {
        Ok(bar) => bar,
        Err(first) => {
            // A driver holding BAR0 makes the kernel refuse the mapping (IO_STRICT_DEVMEM).
            let driver = fs::read_link(dev.join("driver"))
                .ok()
                .and_then(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
                .ok_or_else(|| format!("{bdf}: cannot map resource0: {first}"))?;
            write_sysfs(&dev.join("driver/unbind"), bdf)?;
            unbound = Some(driver);
            let again = enable(&dev).and_then(|e| {
                enabled = e;
                Bar0::map(&dev).map_err(|e| format!("{bdf}: cannot map resource0 with the driver unbound: {e}"))
            });
            match again {
                Ok(bar) => bar,
                Err(e) => {
                    undo(bdf, &dev, enabled, unbound.as_deref());
                    return Err(e);
                }
            }
        }
    };
    Ok(Prepared { bdf: bdf.to_string(), bar, unbound, enabled })
}

/// Disables what the tool enabled and binds the driver it unbound; failures only warn.
fn undo(bdf: &str, dev: &Path, enabled: bool, unbound: Option<&str>) {
    if enabled {
        if let Err(e) = write_sysfs(&dev.join("enable"), "0") {
            eprintln!("accel-tool: warning: {e}");
        }
    }
    if let Some(driver) = unbound {
        if let Err(e) = write_sysfs(&Path::new("/sys/bus/pci/drivers").join(driver).join("bind"), bdf) {
            eprintln!("accel-tool: warning: could not bind {bdf} to {driver} again: {e}");
        }
    }
}

fn restore(p: Prepared) {
    let Prepared { bdf, bar, unbound, enabled } = p;
    drop(bar);
    undo(&bdf, &PathBuf::from(SYSFS_PCI).join(&bdf), enabled, unbound.as_deref());
}

/// Nearest-rank percentile of sorted samples (ns), in microseconds.
fn percentile_us(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1e3
}

fn per_s(count: u32, wall: Duration) -> f64 {
    if count == 0 || wall.is_zero() {
        return 0.0;
    }
    (f64::from(count) / wall.as_secs_f64()).round()
}

/// The timed loops on one mapped function.
fn measure(p: &Prepared, devices: u32, reads: u32, writes: u32, start: &StartGate) -> MmioBench {
    let bar = &p.bar;
    let mut lat: Vec<u32> = Vec::with_capacity(reads as usize);
    let mut read_errors = 0u32;
    for _ in 0..WARMUP_READS {
        bar.read32(regs::ID);
    }
    if let Err(e) = start.wait(START_LIMIT) {
        return failed(&p.bdf, devices, reads, writes, e);
    }
    let t0 = Instant::now();
    for _ in 0..reads {
        let t = Instant::now();
        let v = bar.read32(regs::ID);
        lat.push(t.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
        if v != regs::ID_VALUE {
            read_errors += 1;
        }
    }
    let read_wall = t0.elapsed();
    let t1 = Instant::now();
    let mut last = 0;
    for i in 0..writes {
        last = 0x5a00_0000 ^ i;
        bar.write32(regs::SCRATCH, last);
    }
    let write_wall = t1.elapsed();
    // The read-back (not timed) checks that the posted writes arrived, the last one last.
    let back = bar.read32(regs::SCRATCH);
    lat.sort_unstable();
    let mean =
        if lat.is_empty() { 0.0 } else { lat.iter().map(|&n| f64::from(n)).sum::<f64>() / lat.len() as f64 / 1e3 };
    let mut errors = Vec::new();
    if read_errors > 0 {
        errors.push(format!("{read_errors} of {reads} reads of ID did not return {:#010x}", regs::ID_VALUE));
    }
    if writes > 0 && back != last {
        errors.push(format!("SCRATCH read back {back:#010x} after writing {last:#010x}"));
    }
    MmioBench {
        ok: errors.is_empty(),
        device: p.bdf.clone(),
        devices,
        reads,
        writes,
        read_errors,
        read_p50_us: percentile_us(&lat, 50.0),
        read_p90_us: percentile_us(&lat, 90.0),
        read_p99_us: percentile_us(&lat, 99.0),
        read_max_us: percentile_us(&lat, 100.0),
        read_mean_us: (mean * 1e3).round() / 1e3,
        reads_per_s: per_s(reads, read_wall),
        writes_per_s: per_s(writes, write_wall),
        driver_unbound: p.unbound.is_some(),
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    }
}

fn failed(bdf: &str, devices: u32, reads: u32, writes: u32, error: String) -> MmioBench {
    MmioBench {
        ok: false,
        device: bdf.to_string(),
        devices,
        reads,
        writes,
        read_errors: 0,
        read_p50_us: 0.0,
        read_p90_us: 0.0,
        read_p99_us: 0.0,
        read_max_us: 0.0,
        read_mean_us: 0.0,
        reads_per_s: 0.0,
        writes_per_s: 0.0,
        driver_unbound: false,
        error: Some(error),
    }
}

/// Runs the benchmark; one record per device, in PCI address order. Err: no device to probe.
pub fn run(o: &Options) -> Result<Vec<MmioBench>, String> {
    let mut all = find_functions();
    if all.is_empty() {
        return Err(format!(
            "no accelerator-pcie function found in {SYSFS_PCI} (vendor {:#06x}, device {:#06x})",
            pci::VENDOR_ID,
            pci::DEVICE_ID
        ));
    }
    if let Some(n) = o.devices {
        if n > all.len() {
            return Err(format!("--devices {n}: only {} accelerator-pcie function(s) present", all.len()));
        }
        all.truncate(n);
    }
    let groups: Vec<Vec<String>> = if o.concurrent { vec![all] } else { all.into_iter().map(|d| vec![d]).collect() };
    let mut records = Vec::new();
    for group in groups {
        let at_once = group.len() as u32;
        let mut ready = Vec::new();
        for bdf in &group {
            match prepare(bdf) {
                Ok(p) => ready.push(p),
                Err(e) => records.push(failed(bdf, at_once, o.reads, o.writes, e)),
            }
        }
        let gate = Arc::new(StartGate::new(ready.len()));
        let handles: Vec<_> = ready
            .into_iter()
            .map(|p| {
                let gate = Arc::clone(&gate);
                let (reads, writes) = (o.reads, o.writes);
                std::thread::spawn(move || {
                    // The driver is bound again even if the measurement panics, and a panic
                    // before the start releases the threads waiting there.
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        measure(&p, at_once, reads, writes, &gate)
                    }));
                    if r.is_err() {
                        gate.fail();
                    }
                    restore(p);
                    r.unwrap_or_else(|e| std::panic::resume_unwind(e))
                })
            })
            .collect();
        // Every thread is joined (and so every device restored) before a panic is reported.
        let joined: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        for r in joined {
            records.push(r.map_err(|_| "a benchmark thread panicked".to_string())?);
        }
    }
    records.sort_by(|a, b| (a.devices, &a.device).cmp(&(b.devices, &b.device)));
    Ok(records)
}

/// The human table.
pub fn print_table(rows: &[&MmioBench]) {
    println!(
        "{:<14} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>10} {:>11} {:>6}",
        "device", "at_once", "reads", "p50_us", "p90_us", "p99_us", "max_us", "reads/s", "writes/s", "ok"
    );
    for r in rows {
        println!(
            "{:<14} {:>7} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.0} {:>11.0} {:>6}",
            r.device,
            r.devices,
            r.reads,
            r.read_p50_us,
            r.read_p90_us,
            r.read_p99_us,
            r.read_max_us,
            r.reads_per_s,
            r.writes_per_s,
            if r.ok { "yes" } else { "NO" }
        );
        if let Some(e) = &r.error {
            println!("  error: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate_threads(gate: &Arc<StartGate>, n: usize, limit: Duration) -> Vec<std::thread::JoinHandle<Result<(), String>>> {
        (0..n)
            .map(|_| {
                let g = Arc::clone(gate);
                std::thread::spawn(move || g.wait(limit))
            })
            .collect()
    }

    #[test]
    fn the_start_gate_opens_when_all_arrive() {
        let gate = Arc::new(StartGate::new(3));
        let released = gate_threads(&gate, 3, Duration::from_secs(10));
        // A failure after the start (a panic while measuring) changes nothing for the others.
        while !gate.state.lock().unwrap().open {
            std::thread::yield_now();
        }
        gate.fail();
        for h in released {
            assert_eq!(h.join().unwrap(), Ok(()));
        }
    }

    #[test]
    fn a_thread_that_fails_before_the_start_releases_the_others() {
        let gate = Arc::new(StartGate::new(3));
        let t0 = Instant::now();
        let waiting = gate_threads(&gate, 2, Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
        gate.fail();
        for h in waiting {
            assert_eq!(h.join().unwrap(), Err("another probing thread failed before the start".to_string()));
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "released by the failure, not the limit");
    }

    #[test]
    fn the_start_gate_gives_up_after_its_limit() {
        let gate = Arc::new(StartGate::new(2));
        let r = gate_threads(&gate, 1, Duration::from_millis(100)).pop().unwrap().join().unwrap();
        assert_eq!(r, Err("only 1 of 2 probing threads started within 100ms".to_string()));
        // The late one does not measure alone as if the other ran beside it.
        let late = gate_threads(&gate, 1, Duration::from_secs(10)).pop().unwrap().join().unwrap();
        assert_eq!(late, Err("another probing thread failed before the start".to_string()));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let s: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_us(&s, 50.0), 50.0);
        assert_eq!(percentile_us(&s, 99.0), 99.0);
        assert_eq!(percentile_us(&s, 100.0), 100.0);
        assert_eq!(percentile_us(&[7000], 1.0), 7.0);
        assert_eq!(percentile_us(&[], 50.0), 0.0);
    }

    #[test]
    fn devices_argument() {
        assert_eq!(parse_devices("all"), Ok(DeviceCount(None)));
        assert_eq!(parse_devices("4"), Ok(DeviceCount(Some(4))));
        assert!(parse_devices("0").is_err());
        assert!(parse_devices("x").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(per_s(1000, Duration::from_millis(100)), 10_000.0);
        assert_eq!(per_s(0, Duration::from_millis(100)), 0.0);
        assert_eq!(per_s(5, Duration::ZERO), 0.0);
    }
}
