//! Parsing of the guest's marker lines (written by `guest/initramfs/init`) and the results table.
//! Pure: no I/O besides formatting into a String.

use serde_json::{json, Value};

/// One marker line from the guest console.
#[derive(Debug, Clone, PartialEq)]
pub enum Marker {
    Boot(Value),
    Result(Value),
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
    let v: Value = match serde_json::from_str(body.trim()) {
        Ok(v) => v,
        Err(e) => return Some(Err(format!("unparsable {}line ({e}): {line}", tag))),
    };
    Some(Ok(match tag {
        "COSIM-BOOT " => Marker::Boot(v),
        "COSIM-RESULT " => Marker::Result(v),
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
    pub results: Vec<Value>,
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
            Ok(Marker::Result(v)) => self.results.push(v),
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
            && self.results.iter().all(|r| r["ok"].as_bool() == Some(true))
    }

    pub fn to_json(&self) -> Value {
        json!({
            "boot": self.boot, "results": self.results, "failures": self.failures,
            "klog": self.klog, "output": self.output, "done": self.done,
            "parse_errors": self.parse_errors,
        })
    }
}

fn num(v: &Value, key: &str, prec: usize) -> String {
    match &v[key] {
        Value::Null => "-".into(),
        Value::Number(n) if n.is_f64() => format!("{:.*}", prec, n.as_f64().unwrap_or(0.0)),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn size(v: &Value) -> String {
    format!("{}x{}x{}", num(v, "m", 0), num(v, "n", 0), num(v, "k", 0))
}

/// The results table: one row per gemm/bench result, then info, then failures.
pub fn table(report: &GuestReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let gemms: Vec<&Value> = report
        .results
        .iter()
        .filter(|r| matches!(r["kind"].as_str(), Some("gemm") | Some("bench")))
        .collect();
    if !gemms.is_empty() {
        let _ = writeln!(
            s,
            "{:<12} {:<14} {:<6} {:>12} {:>12} {:>14} {:>14} {:>14}",
            "device", "MxNxK", "result", "RTL cycles", "DMA wait", "accel us (*)", "device us (*)", "CPU us (*)"
        );
        for r in gemms {
            let bench = r["kind"] == "bench";
            let result = if r["ok"].as_bool() == Some(true) {
                match r["check"].as_str() {
                    Some("pass") => "pass",
                    _ => "ok",
                }
            } else {
                "FAIL"
            };
            let (accel, dev, cpu) = if bench {
                (num(r, "accel_us_median", 1), num(r, "device_us_median", 1), num(r, "cpu_us_median", 1))
            } else {
                (num(r, "accel_us", 1), num(r, "device_us", 1), num(r, "cpu_us", 1))
            };
            let device = r["device"].as_str().unwrap_or("-").trim_start_matches("/dev/");
            let _ = writeln!(
                s,
                "{:<12} {:<14} {:<6} {:>12} {:>12} {:>14} {:>14} {:>14}",
                device,
                size(r),
                result,
                num(r, "rtl_cycles", 0),
                num(r, "dma_wait_cycles", 0),
                accel,
                dev,
                cpu
            );
        }
        let _ = writeln!(
            s,
            "(*) measured in the guest: accel = the GEMM ioctl (copies, DMA, RTL, interrupt), device = START \
             to interrupt seen by the driver, CPU = the same GEMM computed by the guest CPU{}",
            if report.results.iter().any(|r| r["kind"] == "bench") { "; bench rows show medians" } else { "" }
        );
    }
    for r in report.results.iter().filter(|r| r["kind"] == "info") {
        let _ = writeln!(
            s,
            "{}: {} id {} v{} array {}x{} max_dim {} jobs {} errors {} timeouts {} irqs {} nic rx/tx {}/{} uart rx {}",
            r["device"].as_str().unwrap_or("-"),
            num(r, "pci", 0),
            num(r, "id", 0),
            num(r, "version", 0),
            num(r, "array_rows", 0),
            num(r, "array_cols", 0),
            num(r, "max_dim", 0),
            num(r, "jobs", 0),
            num(r, "errors", 0),
            num(r, "timeouts", 0),
            num(r, "irqs", 0),
            num(r, "nic_rx_frames", 0),
            num(r, "nic_tx_frames", 0),
            num(r, "uart_rx_bytes", 0)
        );
    }
    for r in report.results.iter().filter(|r| r["kind"] == "net") {
        let _ = writeln!(
            s,
            "net {} ({}): sent {} received {} lost {} rtt median {} us max {} us",
            num(r, "iface", 0),
            num(r, "mac", 0),
            num(r, "sent", 0),
            num(r, "received", 0),
            num(r, "lost", 0),
            num(r, "rtt_us_median", 1),
            num(r, "rtt_us_max", 1)
        );
    }
    // Other kinds; "error" records are shown by the FAILED lines below.
    for r in report
        .results
        .iter()
        .filter(|r| !matches!(r["kind"].as_str(), Some("gemm" | "bench" | "info" | "net" | "error")))
    {
        let _ = writeln!(s, "{r}");
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

    #[test]
    fn parses_markers_and_ignores_other_lines() {
        assert!(parse_line("[    5.7] Run /init as init process").is_none());
        let m = parse_line("COSIM-BOOT {\"kernel\":\"6.1\",\"devices\":2}\r").unwrap().unwrap();
        assert_eq!(m, Marker::Boot(json!({"kernel": "6.1", "devices": 2})));
        // A marker after interleaved kernel text is still found.
        let m = parse_line("[ 1.0] foo COSIM-DONE {\"items\":1,\"failures\":0}").unwrap().unwrap();
        assert_eq!(m, Marker::Done(json!({"items": 1, "failures": 0})));
        assert!(parse_line("COSIM-RESULT {broken").unwrap().is_err());
    }

    #[test]
    fn report_ok_only_when_done_and_all_results_ok() {
        let mut r = GuestReport::default();
        r.add(parse_line("COSIM-RESULT {\"kind\":\"gemm\",\"ok\":true,\"m\":4,\"n\":4,\"k\":4}").unwrap());
        assert!(!r.all_ok(), "not done yet");
        r.add(parse_line("COSIM-DONE {\"items\":1,\"failures\":0}").unwrap());
        assert!(r.all_ok());
        r.add(parse_line("COSIM-RESULT {\"kind\":\"gemm\",\"ok\":false,\"m\":4,\"n\":4,\"k\":4}").unwrap());
        assert!(!r.all_ok());
    }

    #[test]
    fn table_shows_rows_and_failures() {
        let mut r = GuestReport::default();
        r.add(parse_line(
            "COSIM-RESULT {\"kind\":\"gemm\",\"ok\":true,\"check\":\"pass\",\"device\":\"/dev/accel0\",\"m\":64,\"n\":64,\"k\":64,\"rtl_cycles\":20000,\"accel_us\":1234.5,\"cpu_us\":99.0}",
        )
        .unwrap());
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
    }
}
