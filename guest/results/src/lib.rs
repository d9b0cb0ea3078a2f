//! The results `accel-tool --json` prints, one JSON object per line, and the launcher reads back
//! from the guest console (`COSIM-RESULT {...}`, docs/guest.md). One definition for both sides:
//! the tool builds a [`Record`] and prints it with [`Record::to_line`]; the launcher parses it with
//! [`Record::from_line`] and uses the typed fields.
//!
//! Wire format: a JSON object whose `kind` names the record (`info`, `gemm`, `bench`, `reset`,
//! `net`, `wait-nic`, `mmio-bench`, `error`), keys in alphabetical order (the order `serde_json::Value` prints,
//! which is what the tool printed before these types existed). A field documented "absent when"
//! is left out of the object; one documented "null when" is present as `null`. Unknown keys are
//! ignored when parsing. Pure: no I/O; builds static for the guest (serde and serde_json only).
#![forbid(unsafe_code)]

use serde::{Deserialize, Deserializer, Serialize};

/// One line of `accel-tool --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Record {
    Info(Info),
    Gemm(Gemm),
    Bench(Bench),
    Reset(Reset),
    Net(Net),
    WaitNic(WaitNic),
    MmioBench(MmioBench),
    /// A command that could not run at all (usage error, no accelerator); exit status 2.
    Error(ToolError),
}

impl Record {
    /// The JSON object on one line, keys sorted (the tool's wire format).
    pub fn to_line(&self) -> String {
        // Through Value: its map (no `preserve_order` in this workspace) sorts the keys, so the text
        // is the one the tool printed when it built Values by hand.
        serde_json::to_value(self).map(|v| v.to_string()).unwrap_or_else(|e| {
            // Unreachable: every field is a string, number, bool or null.
            format!("{{\"kind\":\"error\",\"command\":\"json\",\"ok\":false,\"error\":\"{e}\"}}")
        })
    }

    /// Parses one line (a JSON object) printed by [`Record::to_line`].
    pub fn from_line(line: &str) -> Result<Record, serde_json::Error> {
        serde_json::from_str(line.trim())
    }

    /// The `kind` on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Info(_) => "info",
            Record::Gemm(_) => "gemm",
            Record::Bench(_) => "bench",
            Record::Reset(_) => "reset",
            Record::Net(_) => "net",
            Record::WaitNic(_) => "wait-nic",
            Record::MmioBench(_) => "mmio-bench",
            Record::Error(_) => "error",
        }
    }

    /// Whether the operation succeeded (and, for checked GEMMs, matched the CPU reference).
    pub fn ok(&self) -> bool {
        match self {
            Record::Info(r) => r.ok,
            Record::Gemm(r) => r.ok,
            Record::Bench(r) => r.ok,
            Record::Reset(r) => r.ok,
            Record::Net(r) => r.ok,
            Record::WaitNic(r) => r.ok,
            Record::MmioBench(r) => r.ok,
            Record::Error(r) => r.ok,
        }
    }

    /// The device node (`/dev/accelN`, or `cpu` for a CPU-only GEMM); None for net and error.
    pub fn device(&self) -> Option<&str> {
        match self {
            Record::Info(r) => Some(&r.device),
            Record::Gemm(r) => Some(&r.device),
            Record::Bench(r) => Some(&r.device),
            Record::Reset(r) => Some(&r.device),
            Record::WaitNic(r) => Some(&r.device),
            Record::MmioBench(r) => Some(&r.device),
            Record::Net(_) | Record::Error(_) => None,
        }
    }

    /// The error message, if the record carries one.
    pub fn error(&self) -> Option<&str> {
        match self {
            Record::Info(r) => r.error.as_deref(),
            Record::Gemm(r) => r.error.as_deref(),
            Record::Bench(r) => r.error.as_deref(),
            Record::Reset(r) => r.error.as_deref(),
            Record::Net(_) => None,
            Record::WaitNic(r) => r.error.as_deref(),
            Record::MmioBench(r) => r.error.as_deref(),
            Record::Error(r) => Some(&r.error),
        }
    }

    pub fn as_gemm(&self) -> Option<&Gemm> {
        match self {
            Record::Gemm(g) => Some(g),
            _ => None,
        }
    }

    pub fn as_info(&self) -> Option<&Info> {
        match self {
            Record::Info(i) => Some(i),
            _ => None,
        }
    }

    pub fn as_net(&self) -> Option<&Net> {
        match self {
            Record::Net(n) => Some(n),
            _ => None,
        }
    }

    pub fn as_wait_nic(&self) -> Option<&WaitNic> {
        match self {
            Record::WaitNic(w) => Some(w),
            _ => None,
        }
    }
}

/// Outcome of the comparison of C with the guest CPU's reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    Pass,
    Fail,
    /// Not compared (no `--check`, or no CPU path).
    Skipped,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Pass => "pass",
            Check::Fail => "fail",
            Check::Skipped => "skipped",
        }
    }
}

/// `info`: identity, configuration and counters of one accelerator (`ACCEL_IOC_INFO`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Info {
    pub ok: bool,
    pub device: String,
    /// Absent when the device answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Absent when the device could not be opened or did not answer.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub info: Option<DeviceInfo>,
}

/// The fields of a successful `info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub index: u32,
    /// PCI address, e.g. `0000:00:02.0`.
    pub pci: String,
    /// Hex, e.g. `0x1ded`.
    pub vendor: String,
    /// Hex, e.g. `0xacc1`.
    pub device_id: String,
    pub revision: u8,
    /// The ID register in hex, e.g. `0x47454d4d`.
    pub id: String,
    /// `MAJOR.MINOR` of the VERSION register.
    pub version: String,
    pub array_rows: u32,
    pub array_cols: u32,
    pub max_dim: u32,
    pub msix_vectors: u32,
    pub timeout_ms: u32,
    pub jobs: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub irqs: u64,
    pub jobs_done_reg: u64,
    pub abi_version: u32,
    pub nic_rx_frames: u32,
    pub nic_tx_frames: u32,
    pub uart_rx_bytes: u32,
}

/// `gemm`: one job on one device (or on the CPU only, `device` = `cpu`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gemm {
    pub ok: bool,
    pub device: String,
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub seed: u64,
    /// Index of the job in `--repeat`; absent when the device could not be used at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<u32>,
    /// Absent when the device could not be used at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Check>,
    /// Guest CPU time of the reference in µs; null with `--no-cpu`, absent when the device could
    /// not be used at all.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub cpu_us: Option<Option<f64>>,
    /// The GEMM ioctl as timed by the tool, µs; absent for `cpu` and when the device was unusable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel_us: Option<f64>,
    /// `ceil(m*n*k / (rows*cols))` of the device's array; absent like `accel_us`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ideal_cycles: Option<u64>,
    /// The device's array, `ROWSxCOLS`; absent like `accel_us`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array: Option<String>,
    /// Hash of C (`0x` and 16 hex digits), to compare runs; present when C was computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c_hash: Option<String>,
    /// Present when the job completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtl_cycles: Option<u64>,
    /// Present when the job completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dma_wait_cycles: Option<u64>,
    /// START to the interrupt as seen by the driver, µs; present when the job completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_us: Option<f64>,
    /// The device's ERROR code (0 when the job completed); present when the job ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_error: Option<u32>,
    /// Name of `dev_error`; present when the ioctl failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_error_name: Option<String>,
    /// The ioctl's errno (null if it had none); present when the ioctl failed.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub errno: Option<Option<i32>>,
    /// Elements of C that differ from the reference; present when checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mismatches: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Gemm {
    /// A record with only the job's identity (`ok` false, every optional field absent), for
    /// struct-update syntax.
    pub fn new(device: String, (m, n, k): (u32, u32, u32), seed: u64) -> Gemm {
        Gemm {
            ok: false,
            device,
            m,
            n,
            k,
            seed,
            run: None,
            check: None,
            cpu_us: None,
            accel_us: None,
            ideal_cycles: None,
            array: None,
            c_hash: None,
            rtl_cycles: None,
            dma_wait_cycles: None,
            device_us: None,
            dev_error: None,
            dev_error_name: None,
            errno: None,
            mismatches: None,
            error: None,
        }
    }

    /// A job that could not start: the device could not be opened or queried.
    pub fn unusable(device: String, dims: (u32, u32, u32), seed: u64, error: String) -> Gemm {
        Gemm { error: Some(error), ..Gemm::new(device, dims, seed) }
    }
}

/// `bench`: one square size, repeated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bench {
    pub ok: bool,
    pub device: String,
    pub m: u32,
    pub n: u32,
    pub k: u32,
    /// Jobs that completed.
    pub runs: u32,
    pub check: Check,
    /// Of the last completed job (0 if none).
    pub rtl_cycles: u64,
    pub dma_wait_cycles: u64,
    pub ideal_cycles: u64,
    /// Null when no job completed.
    pub accel_us_min: Option<f64>,
    /// 0 when no job completed.
    pub accel_us_median: f64,
    pub device_us_median: f64,
    pub cpu_us_min: Option<f64>,
    pub cpu_us_median: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `reset`: the device's status cleared and a function reset tried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reset {
    pub ok: bool,
    pub device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `net`: raw Ethernet ping-pong through a NIC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Net {
    pub ok: bool,
    pub iface: String,
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    pub peer_mac: String,
    pub sent: u32,
    pub received: u32,
    pub lost: u32,
    /// Frame size in bytes.
    pub size: u64,
    /// Null when no frame was answered.
    pub rtt_us_median: Option<f64>,
    pub rtt_us_max: Option<f64>,
    /// The interface's own counters.
    pub if_tx_packets: u64,
    pub if_rx_packets: u64,
}

/// `wait-nic`: the accelerator's Ethernet counters after waiting for `frames`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitNic {
    pub ok: bool,
    pub device: String,
    pub frames: u32,
    pub nic_rx_frames: u32,
    pub nic_tx_frames: u32,
    pub waited_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `mmio-bench`: 32-bit reads of BAR0's ID register one after another and posted writes to
/// SCRATCH, from user space through the PCI function's `resource0` mapping; one record per device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MmioBench {
    pub ok: bool,
    /// PCI address of the function, e.g. `0000:00:03.0`.
    pub device: String,
    /// Devices probed at the same time (one thread each) in this run, this one included.
    pub devices: u32,
    /// Timed reads and writes.
    pub reads: u32,
    pub writes: u32,
    /// Reads that did not return the ID value (e.g. all ones from a lost device).
    pub read_errors: u32,
    pub read_p50_us: f64,
    pub read_p90_us: f64,
    pub read_p99_us: f64,
    pub read_max_us: f64,
    pub read_mean_us: f64,
    /// Reads divided by the wall time of the read loop.
    pub reads_per_s: f64,
    /// Writes divided by the wall time of the write loop (posted: no completion is waited for).
    pub writes_per_s: f64,
    /// True if the tool unbound the driver for the run (and bound it again after).
    pub driver_unbound: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `error`: a command that could not run (`ok` is always false).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolError {
    /// The subcommand, e.g. `gemm`.
    pub command: String,
    pub ok: bool,
    pub error: String,
}

/// For `Option<Option<T>>` fields: a present key (even `null`) is `Some(..)`; an absent one takes
/// the field's `default` (None).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as the tool printed them before these types (from e2e console logs, and for the rarer
    /// shapes from the code of guest/tool at that time).
    const SAMPLES: &[&str] = &[
        r#"{"abi_version":1,"array_cols":4,"array_rows":4,"device":"/dev/accel0","device_id":"0xacc1","errors":0,"id":"0x47454d4d","index":0,"irqs":6,"jobs":6,"jobs_done_reg":6,"kind":"info","max_dim":1024,"msix_vectors":4,"nic_rx_frames":0,"nic_tx_frames":0,"ok":true,"pci":"0000:00:02.0","revision":1,"timeout_ms":120000,"timeouts":0,"uart_rx_bytes":0,"vendor":"0x1ded","version":"1.0"}"#,
        r#"{"abi_version":1,"array_cols":4,"array_rows":4,"device":"/dev/accel0","device_id":"0xacc1","errors":0,"id":"0x47454d4d","index":0,"irqs":0,"jobs":0,"jobs_done_reg":4294967295,"kind":"info","max_dim":1024,"msix_vectors":4,"nic_rx_frames":4294967295,"nic_tx_frames":4294967295,"ok":true,"pci":"0000:00:02.0","revision":1,"timeout_ms":120000,"timeouts":1,"uart_rx_bytes":4294967295,"vendor":"0x1ded","version":"1.0"}"#,
        r#"{"device":"/dev/accel3","error":"cannot open /dev/accel3: No such file or directory (os error 2)","kind":"info","ok":false}"#,
        r#"{"accel_us":10057.738,"array":"4x4","c_hash":"0xaf48304c85d2e748","check":"pass","cpu_us":342.45,"dev_error":0,"device":"/dev/accel0","device_us":3545.527,"dma_wait_cycles":11,"ideal_cycles":1,"k":1,"kind":"gemm","m":1,"mismatches":0,"n":1,"ok":true,"rtl_cycles":19,"run":0,"seed":11}"#,
        r#"{"accel_us":2438.898,"array":"4x4","c_hash":"0xe8a1105ad53c739c","check":"pass","cpu_us":54.922,"dev_error":0,"device":"/dev/accel1","device_us":1842.659,"dma_wait_cycles":2230,"ideal_cycles":20,"k":5,"kind":"gemm","m":9,"mismatches":0,"n":7,"ok":true,"rtl_cycles":2275,"run":0,"seed":22}"#,
        // --no-cpu, no --check.
        r#"{"accel_us":120.0,"array":"4x4","c_hash":"0x22149f17c2391261","check":"skipped","cpu_us":null,"dev_error":0,"device":"/dev/accel0","device_us":80.5,"dma_wait_cycles":17,"ideal_cycles":4,"k":4,"kind":"gemm","m":4,"n":4,"ok":true,"rtl_cycles":28,"run":1,"seed":1}"#,
        // The ioctl refused the job (EINVAL).
        r#"{"accel_us":35.2,"array":"4x4","check":"fail","cpu_us":1.5,"dev_error":0,"dev_error_name":"NONE","device":"/dev/accel0","errno":22,"error":"/dev/accel0: gemm: Invalid argument (os error 22)","ideal_cycles":500,"k":1,"kind":"gemm","m":2000,"n":1,"ok":false,"run":0,"seed":1}"#,
        r#"{"accel_us":35.2,"array":"4x4","check":"skipped","cpu_us":1.5,"dev_error":3,"dev_error_name":"DMA","device":"/dev/accel0","errno":null,"error":"x","ideal_cycles":500,"k":1,"kind":"gemm","m":2000,"n":1,"ok":false,"run":0,"seed":1}"#,
        // C differs from the reference.
        r#"{"accel_us":100.25,"array":"4x4","c_hash":"0x0000000000000001","check":"fail","cpu_us":3.0,"dev_error":0,"device":"/dev/accel0","device_us":50.0,"dma_wait_cycles":2,"error":"/dev/accel0: 1 of 16 elements differ; first at C[0][0]: expected 1, got 2","ideal_cycles":4,"k":4,"kind":"gemm","m":4,"mismatches":1,"n":4,"ok":false,"rtl_cycles":30,"run":0,"seed":1}"#,
        // The device could not be used.
        r#"{"device":"/dev/accel1","error":"cannot open /dev/accel1: Permission denied (os error 13)","k":4,"kind":"gemm","m":4,"n":4,"ok":false,"seed":1}"#,
        // --cpu-only.
        r#"{"c_hash":"0x22149f17c2391261","check":"skipped","cpu_us":19.76,"device":"cpu","k":4,"kind":"gemm","m":4,"n":4,"ok":true,"run":0,"seed":12}"#,
        r#"{"accel_us_median":2050.5,"accel_us_min":1999.0,"check":"pass","cpu_us_median":30.25,"cpu_us_min":29.0,"device":"/dev/accel0","device_us_median":1200.0,"dma_wait_cycles":300,"ideal_cycles":32,"k":8,"kind":"bench","m":8,"n":8,"ok":true,"rtl_cycles":400,"runs":3}"#,
        r#"{"accel_us_median":0.0,"accel_us_min":null,"check":"pass","cpu_us_median":30.25,"cpu_us_min":30.25,"device":"/dev/accel0","device_us_median":0.0,"dma_wait_cycles":0,"error":"/dev/accel0: gemm 8x8x8: Connection timed out (os error 110)","ideal_cycles":32,"k":8,"kind":"bench","m":8,"n":8,"ok":false,"rtl_cycles":0,"runs":0}"#,
        r#"{"device":"/dev/accel0","kind":"reset","ok":true}"#,
        r#"{"device":"/dev/accel0","error":"/dev/accel0: reset: Input/output error (os error 5)","kind":"reset","ok":false}"#,
        r#"{"if_rx_packets":1001,"if_tx_packets":1003,"iface":"eth0","kind":"net","lost":0,"mac":"52:54:00:12:34:56","ok":true,"peer_mac":"02:00:00:00:00:02","received":1000,"rtt_us_max":4020.125,"rtt_us_median":812.5,"sent":1000,"size":64}"#,
        r#"{"if_rx_packets":0,"if_tx_packets":10,"iface":"eth0","kind":"net","lost":10,"mac":"52:54:00:12:34:56","ok":false,"peer_mac":"02:00:00:00:00:02","received":0,"rtt_us_max":null,"rtt_us_median":null,"sent":10,"size":64}"#,
        r#"{"device":"/dev/accel0","frames":1000,"kind":"wait-nic","nic_rx_frames":1000,"nic_tx_frames":1000,"ok":true,"waited_ms":5350}"#,
        r#"{"device":"/dev/accel0","error":"/dev/accel0: NIC_RX_FRAMES=3 NIC_TX_FRAMES=3 after 500 ms, waited for 10","frames":10,"kind":"wait-nic","nic_rx_frames":3,"nic_tx_frames":3,"ok":false,"waited_ms":500}"#,
        r#"{"device":"0000:00:03.0","devices":4,"driver_unbound":true,"kind":"mmio-bench","ok":true,"read_errors":0,"read_max_us":2150.5,"read_mean_us":95.25,"read_p50_us":80.5,"read_p90_us":140.0,"read_p99_us":610.75,"reads":10000,"reads_per_s":10498.5,"writes":10000,"writes_per_s":512000.0}"#,
        r#"{"command":"gemm","error":"no accelerator found (no /dev/accelN: is an accelerator-pcie device present and the cosim_accel module loaded?)","kind":"error","ok":false}"#,
    ];

    #[test]
    fn sample_lines_round_trip_byte_for_byte() {
        for line in SAMPLES {
            let r = Record::from_line(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(&r.to_line(), line);
            // The typed record and the untyped object agree on the kind and ok.
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["kind"], r.kind(), "{line}");
            assert_eq!(v["ok"], r.ok(), "{line}");
        }
    }

    #[test]
    fn null_and_absent_stay_apart() {
        let no_cpu = Record::from_line(SAMPLES[5]).unwrap();
        assert_eq!(no_cpu.as_gemm().unwrap().cpu_us, Some(None));
        let unusable = Record::from_line(SAMPLES[9]).unwrap();
        assert_eq!(unusable.as_gemm().unwrap().cpu_us, None);
        assert_eq!(
            unusable,
            Record::Gemm(Gemm::unusable(
                "/dev/accel1".into(),
                (4, 4, 4),
                1,
                "cannot open /dev/accel1: Permission denied (os error 13)".into()
            ))
        );
        let refused = Record::from_line(SAMPLES[6]).unwrap();
        assert_eq!(refused.as_gemm().unwrap().errno, Some(Some(22)));
        assert_eq!(Record::from_line(SAMPLES[7]).unwrap().as_gemm().unwrap().errno, Some(None));
    }

    #[test]
    fn failed_info_has_no_details() {
        let r = Record::from_line(SAMPLES[2]).unwrap();
        let i = r.as_info().unwrap();
        assert!(!i.ok && i.info.is_none());
        assert_eq!(r.error(), Some("cannot open /dev/accel3: No such file or directory (os error 2)"));
        let ok = Record::from_line(SAMPLES[0]).unwrap();
        assert_eq!(ok.as_info().unwrap().info.as_ref().map(|d| d.jobs), Some(6));
    }

    #[test]
    fn wrong_or_unknown_kinds_are_errors() {
        assert!(Record::from_line(r#"{"kind":"gemm","ok":true}"#).is_err(), "missing fields");
        assert!(Record::from_line(r#"{"kind":"teleport","ok":true}"#).is_err());
        assert!(Record::from_line(r#"{"ok":true}"#).is_err());
        assert!(Record::from_line("not json").is_err());
    }
}
