//! The end-to-end checks that hold whichever QEMU device stands for the accelerator: the same
//! guest, driver and GEMM jobs through cosim's patched `accelerator-pcie` (e2e.rs) and through an
//! unpatched QEMU's `vfio-user-pci` (vfio_user.rs). Each check launches its own run with the
//! mode's arguments, asserts what both modes share and returns the run for the mode's own checks
//! (the patched device's UART and QEMU statistics, vfio-user's command line).

use std::time::Duration;

use cosim_guest_results::{MmioBench, Record};

use super::{assert_exact, device_info, gemm_item, gemms, infos, results, run_json, JsonRun, LAUNCH};

/// Wall-clock bound of one launcher run (the launcher's own stage timeouts are tighter).
pub const RUN_LIMIT: Duration = Duration::from_secs(600);
/// After SIGTERM, the launcher stops QEMU (5 s) and the simulations (10 s each).
pub const STOP_GRACE: Duration = Duration::from_secs(35);

/// How the launcher is told which QEMU device to use.
pub struct Mode {
    /// Prefix of the runs' log directories.
    pub name: &'static str,
    /// Launcher arguments that select the mode.
    pub args: &'static [&'static str],
}

/// cosim's QEMU with `accelerator-pcie` (the launcher's default).
pub const PATCHED: Mode = Mode { name: "e2e", args: &[] };
/// An unpatched QEMU with `vfio-user-pci`, the simulations serving vfio-user.
pub const VFIO_USER: Mode = Mode { name: "vfio-user", args: &["--mode", "vfio-user"] };

impl Mode {
    /// `cosim-launch ARGS <mode args> --json --log-dir <fresh dir>`, bounded by [`RUN_LIMIT`].
    pub fn launch(&self, test: &str, args: &[&str]) -> JsonRun {
        run_json(LAUNCH, &format!("{}-{test}", self.name), args, self.args, RUN_LIMIT, STOP_GRACE)
    }
}

/// GEMMs of several sizes on one device, bit-exact against the guest CPU; the same job twice in
/// the same RTL cycles; a size above MAX_DIM refused with EINVAL while the guest carries on; the
/// driver's job counter.
pub fn single_device_gemms_are_exact(mode: &Mode) -> JsonRun {
    let sizes: [(u64, u64, u64, u64); 5] =
        [(1, 1, 1, 11), (4, 4, 4, 12), (17, 33, 9, 13), (64, 64, 64, 14), (130, 20, 7, 15)];
    let items: Vec<String> = sizes.iter().map(|&(m, n, k, s)| gemm_item(m, n, k, s)).collect();
    let mut args: Vec<&str> = Vec::new();
    for it in &items {
        args.extend(["--run", it]);
    }
    // Nonsense from the guest: a dimension above MAX_DIM is refused with an errno, and the
    // guest carries on with the next item.
    // The same job again: the same C, and with the default modelled DMA read latency the same
    // RTL cycles and DMA wait, whatever QEMU's (TCG, loaded machine) response times were.
    let again = gemm_item(64, 64, 64, 14);
    args.extend(["--run", &again]);
    args.extend(["--run", "gemm --m 2000 --n 1 --k 1 --check"]);
    args.extend(["--run", "info"]);
    let run = mode.launch("single", &args);
    assert_eq!(run.code, 1, "only the deliberately bad item may fail: {}", run.json);
    let gemms = gemms(&run.json);
    assert_eq!(gemms.len(), sizes.len() + 2, "one result per size, the repeat and the refused one: {}", run.json);
    let repeat = &gemms[sizes.len()];
    assert_exact(repeat);
    assert_eq!(repeat.c_hash, gemms[3].c_hash);
    let counts = |r: &cosim_guest_results::Gemm| (r.rtl_cycles, r.dma_wait_cycles);
    assert_eq!(counts(repeat), counts(&gemms[3]), "same job, same RTL cycles: {repeat:?} vs {:?}", gemms[3]);
    let refused = &gemms[sizes.len() + 1];
    assert_eq!((refused.ok, refused.errno), (false, Some(Some(22))), "EINVAL: {refused:?}");
    assert!(run.json["guest"]["klog"].to_string().contains("bad size m=2000"), "driver log line: {}", run.json);
    for (r, &(m, n, k, _)) in gemms.iter().zip(&sizes) {
        assert_eq!((u64::from(r.m), u64::from(r.n), u64::from(r.k)), (m, n, k));
        assert_exact(r);
    }
    let failures = run.json["guest"]["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["item"], sizes.len() + 1, "the oversize GEMM is the failing item: {failures:?}");
    assert_eq!(infos(&run.json).len(), 1);
    assert_eq!(device_info(&run.json, "/dev/accel0").jobs, sizes.len() as u64 + 1, "driver job counter");
    run
}

/// Two devices in one guest: the same GEMM on both at the same time (same C, same RTL cycles),
/// then a job on the second only; each driver instance counts its own jobs.
pub fn two_devices_work_at_the_same_time(mode: &Mode) -> JsonRun {
    let both = "gemm --m 48 --n 40 --k 56 --seed 21 --check --device all".to_string();
    let second = "gemm --m 9 --n 7 --k 5 --seed 22 --check --device /dev/accel1".to_string();
    let run = mode.launch("dual-dev", &["--devices", "2", "--run", &both, "--run", &second, "--run", "info"]);
    assert_eq!(run.code, 0, "{}", run.json);
    let gemms = gemms(&run.json);
    assert_eq!(gemms.len(), 3, "{}", run.json);
    for r in &gemms {
        assert_exact(r);
    }
    let devs: Vec<&str> = gemms.iter().map(|r| r.device.as_str()).collect();
    assert!(devs[..2].contains(&"/dev/accel0") && devs[..2].contains(&"/dev/accel1"), "{devs:?}");
    // The same GEMM on both devices, at the same time, gives the same C in the same RTL cycles.
    assert_eq!(gemms[0].c_hash, gemms[1].c_hash);
    assert_eq!(
        (gemms[0].rtl_cycles, gemms[0].dma_wait_cycles),
        (gemms[1].rtl_cycles, gemms[1].dma_wait_cycles),
        "{:?} vs {:?}",
        gemms[0],
        gemms[1]
    );
    assert_eq!(device_info(&run.json, "/dev/accel0").jobs, 1, "accel0 ran one job");
    assert_eq!(device_info(&run.json, "/dev/accel1").jobs, 2, "accel1 ran two jobs");
    run
}

/// A short `accel-tool mmio-bench` on one device, then a GEMM: plausible, ordered latencies, and
/// the bench gives the device back to the driver. Returns the run and the bench's record.
pub fn mmio_bench_smoke(mode: &Mode) -> (JsonRun, MmioBench) {
    // A short accel-tool mmio-bench on one device (make bench-guest-mmio runs the long one), then
    // a GEMM: the bench unbinds the driver for its run and must bind it again.
    let gemm = gemm_item(8, 8, 8, 31);
    let run = mode.launch("mmio-bench", &["--run", "mmio-bench --reads 200 --writes 200", "--run", &gemm]);
    assert_eq!(run.code, 0, "{}", run.json);
    let benches: Vec<MmioBench> = results(&run.json)
        .into_iter()
        .filter_map(|r| match r {
            Record::MmioBench(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(benches.len(), 1, "one record for the one device: {}", run.json);
    let b = benches[0].clone();
    assert!(b.ok && b.error.is_none(), "{b:?}");
    assert_eq!((b.devices, b.reads, b.writes, b.read_errors), (1, 200, 200, 0), "{b:?}");
    assert!(b.device.contains(':') && b.device.contains('.'), "a PCI address: {b:?}");
    // Ordered percentiles, each read a real round trip to the simulation (well above 1 us, below
    // the launcher's workload timeout), and rates that agree with the latencies.
    assert!(1.0 < b.read_p50_us && b.read_p50_us <= b.read_p90_us, "{b:?}");
    assert!(b.read_p90_us <= b.read_p99_us && b.read_p99_us <= b.read_max_us, "{b:?}");
    assert!(b.read_max_us < 10_000_000.0, "{b:?}");
    assert!(b.read_p50_us <= b.read_mean_us * 10.0 && b.read_mean_us <= b.read_max_us, "{b:?}");
    let from_mean = 1e6 / b.read_mean_us;
    assert!(b.reads_per_s > 0.5 * from_mean && b.reads_per_s < 1.5 * from_mean, "reads/s vs mean latency: {b:?}");
    assert!(b.writes_per_s > 0.0, "{b:?}");
    assert!(b.driver_unbound, "the driver holds BAR0, so the tool must have unbound it: {b:?}");
    let gemms = gemms(&run.json);
    assert_eq!(gemms.len(), 1, "{}", run.json);
    assert_exact(&gemms[0]);
    (run, b)
}
