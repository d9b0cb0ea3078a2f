//! Parsing of the guest's marker lines (written by `guest/initramfs/init`) and the results table.
//! Pure: no I/O besides formatting into a String. `COSIM-RESULT` lines are accel-tool's typed
//! records ([`Record`], crate `cosim-guest-results`); the other markers come from the init script
//! and stay untyped JSON.

use cosim_guest_results::{Check, Record};
use serde_json::{json, Value};

/// One marker line from the guest console.
#[derive(Debug, Clone, PartialEq)]
pub enum Marker {
    Boot(Value),
    /// Boxed: a record is much larger than the other markers' values.
    Result(Box<Record>),
    Fail(Value),
    Klog(Value),
    Output(Value),
    Done(Value),
}

const MARKERS: [&str; 6] =
    ["COSIM-BOOT ", "COSIM-RESULT ", "COSIM-FAIL ", "COSIM-KLOG ", "COSIM-OUTPUT ", "COSIM-DONE "];

/// Finds a marker in a console line (it may follow other text if the kernel interleaved output).
/// Returns None for ordinary lines; a marker with unparsable JSON yields `Err` with the line.
pub fn parse_line(line: &str) -> Option<Result<Marker, String>> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (pos, tag) = MARKERS.iter().filter_map(|m| line.find(m).map(|p| (p, *m))).min_by_key(|(p, _)| *p)?;
    let body = &line[pos + tag.len()..];
    let unparsable = |e: serde_json::Error| format!("unparsable {}line ({e}): {line}", tag);
    if tag == "COSIM-RESULT " {
        return Some(Record::from_line(body).map(|r| Marker::Result(Box::new(r))).map_err(unparsable));
    }
    let v: Value = match serde_json::from_str(body.trim()) {
        Ok(v) => v,
        Err(e) => return Some(Err(unparsable(e))),
    };
    Some(Ok(match tag {
        "COSIM-BOOT " => Marker::Boot(v),
        "COSIM-FAIL " => Marker::Fail(v),
        "COSIM-KLOG " => Marker::Klog(v),
        "COSIM-OUTPUT " => Marker::Output(v),
        _ => Marker::Done(v),
    }))
}

/// Everything the guest reported.
#[derive(Debug, Default, Clone)]
pub struct GuestReport {
    pub boot: Option<Value>,
    pub results: Vec<Record>,
    pub failures: Vec<Value>,
    pub klog: Vec<Value>,
    pub output: Vec<Value>,
    pub done: Option<Value>,
    pub parse_errors: Vec<String>,
}

impl GuestReport {
    pub fn add(&mut self, m: Result<Marker, String>) {
        match m {
            Ok(Marker::Boot(v)) => self.boot = Some(v),
            Ok(Marker::Result(r)) => self.results.push(*r),
            Ok(Marker::Fail(v)) => self.failures.push(v),
            Ok(Marker::Klog(v)) => self.klog.push(v),
            Ok(Marker::Output(v)) => self.output.push(v),
            Ok(Marker::Done(v)) => self.done = Some(v),
            Err(e) => self.parse_errors.push(e),
        }
    }

    /// True when the guest finished, reported no failure and every result is ok.
    pub fn all_ok(&self) -> bool {
        self.done.is_some()
            && self.failures.is_empty()
            && self.parse_errors.is_empty()
            && self.results.iter().all(Record::ok)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "boot": self.boot, "results": self.results, "failures": self.failures,
            "klog": self.klog, "output": self.output, "done": self.done,
            "parse_errors": self.parse_errors,
        })
    }
}

/// A clock in MHz, e.g. "100 MHz" or "156.25 MHz".
fn mhz(hz: u64) -> String {
    format!("{} MHz", (hz as f64 / 1e6 * 1000.0).round() / 1000.0)
}

/// A table cell: "-" for None.
fn cell<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// A time in µs with `prec` decimals, "-" for None.
fn us(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.prec$}"))
}

/// One row of the GEMM table: a gemm result or a bench size (its medians).
struct GemmRow<'a> {
    device: &'a str,
    size: (u32, u32, u32),
    ok: bool,
    check: Option<Check>,
    rtl_cycles: Option<u64>,
    dma_wait_cycles: Option<u64>,
    accel_us: Option<f64>,
    device_us: Option<f64>,
    cpu_us: Option<f64>,
}

impl<'a> GemmRow<'a> {
    fn of(r: &'a Record) -> Option<GemmRow<'a>> {
        match r {
            Record::Gemm(g) => Some(GemmRow {
                device: &g.device,
                size: (g.m, g.n, g.k),
                ok: g.ok,
                check: g.check,
                rtl_cycles: g.rtl_cycles,
                dma_wait_cycles: g.dma_wait_cycles,
                accel_us: g.accel_us,
                device_us: g.device_us,
                cpu_us: g.cpu_us.flatten(),
            }),
            Record::Bench(b) => Some(GemmRow {
                device: &b.device,
                size: (b.m, b.n, b.k),
                ok: b.ok,
                check: Some(b.check),
                rtl_cycles: Some(b.rtl_cycles),
                dma_wait_cycles: Some(b.dma_wait_cycles),
                accel_us: Some(b.accel_us_median),
                device_us: Some(b.device_us_median),
                cpu_us: Some(b.cpu_us_median),
            }),
            _ => None,
        }
    }
}

/// The results table: one row per gemm/bench result, then info, then failures.
pub fn table(report: &GuestReport) -> String {
    table_at_clock(report, None)
}

/// [`table`] with the design clock the devices reported (`clock_hz`): the GEMM rows then also show
/// the RTL cycles as time at that clock and how many times faster than the guest CPU that is.
pub fn table_at_clock(report: &GuestReport, clock_hz: Option<u64>) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let gemms: Vec<GemmRow> = report.results.iter().filter_map(GemmRow::of).collect();
    if !gemms.is_empty() {
        let _ = write!(
            s,
            "{:<12} {:<14} {:<6} {:>12} {:>12} {:>14} {:>14} {:>14}",
            "device", "MxNxK", "result", "RTL cycles", "DMA wait", "accel us (*)", "device us (*)", "CPU us (*)"
        );
        if let Some(hz) = clock_hz {
            let _ = write!(s, " {:>16} {:>10}", format!("RTL us @{}", mhz(hz)), "CPU/RTL");
        }
        s.push('\n');
        for r in gemms {
            let result = match (r.ok, r.check) {
                (true, Some(Check::Pass)) => "pass",
                (true, _) => "ok",
                (false, _) => "FAIL",
            };
            let (m, n, k) = r.size;
            let _ = write!(
                s,
                "{:<12} {:<14} {:<6} {:>12} {:>12} {:>14} {:>14} {:>14}",
                r.device.trim_start_matches("/dev/"),
                format!("{m}x{n}x{k}"),
                result,
                cell(r.rtl_cycles),
                cell(r.dma_wait_cycles),
                us(r.accel_us, 1),
                us(r.device_us, 1),
                us(r.cpu_us, 1)
            );
            if let Some(hz) = clock_hz {
                let rtl_us = r.rtl_cycles.filter(|&c| c > 0).map(|c| c as f64 * 1e6 / hz as f64);
                let ratio = rtl_us.zip(r.cpu_us).map(|(rtl, cpu)| format!("{:.1}x", cpu / rtl));
                let _ = write!(s, " {:>16} {:>10}", us(rtl_us, 2), ratio.unwrap_or_else(|| "-".into()));
            }
            s.push('\n');
        }
        if let Some(hz) = clock_hz {
            let _ = writeln!(
                s,
                "RTL us: the RTL cycles at the design clock the simulation reports ({}), what the job would take \
                 on the hardware; CPU/RTL: the guest CPU's time for the same GEMM divided by that",
                mhz(hz)
            );
        }
        let _ = writeln!(
            s,
            "(*) measured in the guest: accel = the GEMM ioctl (copies, DMA, RTL, interrupt), device = START \
             to interrupt seen by the driver, CPU = the same GEMM computed by the guest CPU{}",
            if report.results.iter().any(|r| matches!(r, Record::Bench(_))) { "; bench rows show medians" } else { "" }
        );
    }
    for i in report.results.iter().filter_map(|r| match r {
        Record::Info(i) => Some(i),
        _ => None,
    }) {
        let _ = match &i.info {
            Some(d) => writeln!(
                s,
                "{}: {} id {} v{} array {}x{} max_dim {} jobs {} errors {} timeouts {} irqs {} nic rx/tx {}/{} uart rx {}",
                i.device,
                d.pci,
                d.id,
                d.version,
                d.array_rows,
                d.array_cols,
                d.max_dim,
                d.jobs,
                d.errors,
                d.timeouts,
                d.irqs,
                d.nic_rx_frames,
                d.nic_tx_frames,
                d.uart_rx_bytes
            ),
            None => writeln!(s, "{}: {}", i.device, i.error.as_deref().unwrap_or("no information")),
        };
    }
    for n in report.results.iter().filter_map(Record::as_net) {
        let _ = writeln!(
            s,
            "net {} ({}): sent {} received {} lost {} rtt median {} us max {} us",
            n.iface,
            n.mac,
            n.sent,
            n.received,
            n.lost,
            us(n.rtt_us_median, 1),
            us(n.rtt_us_max, 1)
        );
    }
    for m in report.results.iter().filter_map(|r| match r {
        Record::MmioBench(m) => Some(m),
        _ => None,
    }) {
        let _ = writeln!(
            s,
            "mmio {} ({} at once): read p50 {:.1} us p90 {:.1} us p99 {:.1} us max {:.1} us, {:.0} reads/s, {:.0} writes/s{}",
            m.device,
            m.devices,
            m.read_p50_us,
            m.read_p90_us,
            m.read_p99_us,
            m.read_max_us,
            m.reads_per_s,
            m.writes_per_s,
            m.error.as_deref().map(|e| format!(" FAIL: {e}")).unwrap_or_default()
        );
    }
    // Other kinds as their JSON; "error" records are shown by the FAILED lines below.
    for r in report.results.iter().filter(|r| matches!(r, Record::Reset(_) | Record::WaitNic(_))) {
        let _ = writeln!(s, "{}", r.to_line());
    }
    // What "sh:" items (and accel-tool, besides its records) printed, by item.
    for o in &report.output {
        let _ = writeln!(s, "[{}] {}", o["item"].as_i64().map_or_else(|| "?".into(), |i| i.to_string()),
            o["line"].as_str().unwrap_or(""));
    }
    for f in &report.failures {
        let _ = writeln!(
            s,
            "FAILED [{}] {}: {}",
            f["stage"].as_str().unwrap_or("?"),
            f["cmd"].as_str().unwrap_or(""),
            f["message"].as_str().unwrap_or("").replace('\n', " | ")
        );
    }
    for e in &report.parse_errors {
        let _ = writeln!(s, "UNPARSABLE {e}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEMM_OK: &str = "{\"accel_us\":1234.5,\"array\":\"4x4\",\"c_hash\":\"0x22149f17c2391261\",\"check\":\"pass\",\"cpu_us\":99.0,\"dev_error\":0,\"device\":\"/dev/accel0\",\"device_us\":800.25,\"dma_wait_cycles\":100,\"ideal_cycles\":16384,\"k\":64,\"kind\":\"gemm\",\"m\":64,\"mismatches\":0,\"n\":64,\"ok\":true,\"rtl_cycles\":20000,\"run\":0,\"seed\":1}";

    #[test]
    fn parses_markers_and_ignores_other_lines() {
        assert!(parse_line("[    5.7] Run /init as init process").is_none());
        let m = parse_line("COSIM-BOOT {\"kernel\":\"6.1\",\"devices\":2}\r").unwrap().unwrap();
        assert_eq!(m, Marker::Boot(json!({"kernel": "6.1", "devices": 2})));
        // A marker after interleaved kernel text is still found.
        let m = parse_line("[ 1.0] foo COSIM-DONE {\"items\":1,\"failures\":0}").unwrap().unwrap();
        assert_eq!(m, Marker::Done(json!({"items": 1, "failures": 0})));
        assert!(parse_line("COSIM-RESULT {broken").unwrap().is_err());
        // A result must be one of accel-tool's records.
        let m = parse_line(&format!("COSIM-RESULT {GEMM_OK}")).unwrap().unwrap();
        assert!(matches!(m, Marker::Result(ref r) if matches!(**r, Record::Gemm(ref g) if g.rtl_cycles == Some(20000))), "{m:?}");
        assert!(parse_line("COSIM-RESULT {\"kind\":\"gemm\",\"ok\":true}").unwrap().is_err());
    }

    #[test]
    fn report_ok_only_when_done_and_all_results_ok() {
        let mut r = GuestReport::default();
        r.add(parse_line(&format!("COSIM-RESULT {GEMM_OK}")).unwrap());
        assert!(!r.all_ok(), "not done yet");
        r.add(parse_line("COSIM-DONE {\"items\":1,\"failures\":0}").unwrap());
        assert!(r.all_ok());
        r.add(parse_line(&format!("COSIM-RESULT {}", GEMM_OK.replace("\"ok\":true", "\"ok\":false"))).unwrap());
        assert!(!r.all_ok());
    }

    #[test]
    fn table_shows_rows_and_failures() {
        let mut r = GuestReport::default();
        r.add(parse_line(&format!("COSIM-RESULT {GEMM_OK}")).unwrap());
        r.add(parse_line(
            "COSIM-FAIL {\"stage\":\"workload\",\"item\":1,\"cmd\":\"accel-tool info\",\"exit\":2,\"message\":\"no accelerator found\"}",
        )
        .unwrap());
        let t = table(&r);
        assert!(t.contains("accel0"), "{t}");
        assert!(t.contains("64x64x64"), "{t}");
        assert!(t.contains("20000"), "{t}");
        assert!(t.contains("1234.5"), "{t}");
        assert!(t.contains("FAILED [workload] accel-tool info: no accelerator found"), "{t}");
        assert!(t.contains("accel0       64x64x64       pass          20000          100         1234.5          800.2           99.0"), "{t}");
    }

    #[test]
    fn table_at_the_design_clock_shows_rtl_time_next_to_the_cpu() {
        let mut r = GuestReport::default();
        r.add(parse_line(&format!("COSIM-RESULT {GEMM_OK}")).unwrap());
        assert_eq!(table_at_clock(&r, None), table(&r), "no clock: the plain table");
        // 20000 cycles at 100 MHz are 200 us; the guest CPU took 99 us: 0.5 times the RTL's time.
        let t = table_at_clock(&r, Some(100_000_000));
        assert!(t.contains("RTL us @100 MHz"), "{t}");
        assert!(t.contains("99.0           200.00       0.5x"), "{t}");
        let t = table_at_clock(&r, Some(156_250_000));
        assert!(t.contains("RTL us @156.25 MHz") && t.contains("128.00"), "{t}");
    }

    #[test]
    fn table_shows_the_output_of_sh_items_in_order() {
        let mut r = GuestReport::default();
        for l in [
            r#"COSIM-OUTPUT {"item":0,"line":"template: id 0x7e010001 dma ok"}"#,
            r#"COSIM-OUTPUT {"item":2,"line":"a \"quoted\" line"}"#,
        ] {
            r.add(parse_line(l).unwrap());
        }
        r.add(parse_line(r#"COSIM-FAIL {"stage":"workload","item":2,"cmd":"sh:x","exit":1,"message":"m"}"#).unwrap());
        let t = table(&r);
        let want = "[0] template: id 0x7e010001 dma ok\n[2] a \"quoted\" line\nFAILED [workload] sh:x: m\n";
        assert_eq!(t, want);
    }

    #[test]
    fn summary_keeps_the_tool_text() {
        // The results in the launcher's JSON are the tool's objects, field for field.
        let mut r = GuestReport::default();
        r.add(parse_line(&format!("COSIM-RESULT {GEMM_OK}")).unwrap());
        assert_eq!(r.to_json()["results"][0].to_string(), GEMM_OK);
    }
}
