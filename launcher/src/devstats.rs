//! Statistics of the run's devices, collected from the logs after the processes ended: QEMU's
//! `cosim-qemu: stats {...}` line per device (`qemu-stderr.log`, docs/qemu-device.md
//! "Statistics") next to each simulation's `cosim-sim: stats key=value ...` line (`simN.log`).
//! Pure apart from reading those files.

use std::path::Path;

use serde_json::{json, Map, Value};

const QEMU_PREFIX: &str = "cosim-qemu: stats ";
const SIM_PREFIX: &str = "cosim-sim: stats ";

/// The JSON object of a QEMU stats line.
pub fn parse_qemu_line(line: &str) -> Option<Value> {
    let body = &line[line.find(QEMU_PREFIX)? + QEMU_PREFIX.len()..];
    serde_json::from_str::<Value>(body.trim()).ok().filter(Value::is_object)
}

/// The `key=value` pairs of a simulation's stats line (numbers as numbers).
pub fn parse_sim_line(line: &str) -> Option<Value> {
    let body = &line[line.find(SIM_PREFIX)? + SIM_PREFIX.len()..];
    let map: Map<String, Value> = body
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let n = v.parse::<u64>().map(Value::from).or_else(|_| v.parse::<f64>().map(Value::from));
            (k.to_string(), n.unwrap_or_else(|_| Value::from(v)))
        })
        .collect();
    (!map.is_empty()).then_some(Value::Object(map))
}

/// One object per device, `{"device":"accelN","qemu":{..}|null,"sim":{..}|null}`: QEMU's line for
/// the device with id `accelN` (the launcher's ids), and the last stats line of `simN.log`.
pub fn collect(log_dir: &Path, devices: usize) -> Vec<Value> {
    let qemu_lines: Vec<Value> = std::fs::read_to_string(log_dir.join("qemu-stderr.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(parse_qemu_line)
        .collect();
    (0..devices)
        .map(|i| {
            let id = format!("accel{i}");
            let qemu = qemu_lines.iter().rev().find(|v| v["device"] == id.as_str()).cloned();
            let sim = std::fs::read_to_string(log_dir.join(format!("sim{i}.log")))
                .unwrap_or_default()
                .lines()
                .rev()
                .find_map(parse_sim_line);
            json!({ "device": id, "qemu": qemu, "sim": sim })
        })
        .collect()
}

/// The design clock every device reported (None if unknown or if they differ): QEMU's, else the
/// simulation's `clock_hz=` (vfio-user mode has no QEMU statistics).
pub fn clock_hz(stats: &[Value]) -> Option<u64> {
    let mut clocks = stats.iter().map(|s| {
        let reported = |side: &str| s[side]["clock_hz"].as_u64().filter(|&c| c > 0);
        reported("qemu").or_else(|| reported("sim"))
    });
    let first = clocks.next()??;
    clocks.all(|c| c == Some(first)).then_some(first)
}

fn n(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::Null => "-".into(),
        Value::Number(x) => x.to_string(),
        other => other.to_string(),
    }
}

/// One line per device with QEMU's side and the simulation's side; empty if neither is known.
pub fn table(stats: &[Value]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for d in stats {
        let (q, sim) = (&d["qemu"], &d["sim"]);
        if q.is_null() && sim.is_null() {
            continue;
        }
        let mut line = format!("{}:", d["device"].as_str().unwrap_or("?"));
        if !q.is_null() {
            let _ = write!(
                line,
                " QEMU mmio reads {} (p50 {} us, p99 {} us) writes {}, DMA read {} B write {} B, irqs {}, session losses {}",
                n(q, "mmio_reads"),
                n(q, "read_p50_us"),
                n(q, "read_p99_us"),
                n(q, "mmio_writes"),
                n(q, "dma_read_bytes"),
                n(q, "dma_write_bytes"),
                n(q, "irqs"),
                n(q, "session_losses")
            );
        }
        if !sim.is_null() {
            let _ = write!(
                line,
                "{} sim cycles {} ({} cycles/s), mmio reads {} writes {}, sim CPU {} s of {} s",
                if q.is_null() { "" } else { ";" },
                n(sim, "cycles"),
                n(sim, "cycles_per_s"),
                n(sim, "mmio_reads"),
                n(sim, "mmio_writes"),
                n(sim, "sim_cpu_s"),
                n(sim, "wall_s")
            );
        }
        let _ = writeln!(s, "{line}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU: &str = r#"cosim-qemu: stats {"device":"accel1","endpoint":"ipc:///x/accel1","clock_hz":100000000,"mmio_reads":12,"read_p50_us":97.3,"read_p99_us":181.0,"mmio_writes":3,"dma_read_bytes":4096,"dma_write_bytes":1024,"irqs":2,"session_losses":0}"#;
    const SIM: &str = "cosim-sim: stats cycles=60467200 wall_s=11.781 cycles_per_s=5132770 mmio_reads=12 mmio_writes=3 sim_cpu_s=11.019";

    #[test]
    fn parses_both_lines_and_ignores_others() {
        let q = parse_qemu_line(QEMU).unwrap();
        assert_eq!((q["device"].as_str(), q["mmio_reads"].as_u64()), (Some("accel1"), Some(12)));
        let s = parse_sim_line(SIM).unwrap();
        assert_eq!((s["cycles"].as_u64(), s["wall_s"].as_f64()), (Some(60_467_200), Some(11.781)));
        assert_eq!(parse_qemu_line("cosim: frames dropped ..."), None);
        assert_eq!(parse_qemu_line("cosim-qemu: stats {not json"), None);
        assert_eq!(parse_sim_line("cosim-sim: ready endpoint=x"), None);
    }

    #[test]
    fn collects_by_device_and_agrees_on_the_clock() {
        let dir = std::env::temp_dir().join(format!("cosim-devstats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("qemu-stderr.log"), format!("noise\n{}\n{}\n", QEMU.replace("accel1", "accel0"), QEMU))
            .unwrap();
        std::fs::write(dir.join("sim1.log"), format!("INFO ...\n{SIM}\n")).unwrap();
        let stats = collect(&dir, 2);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(stats[0]["qemu"]["device"], "accel0");
        assert!(stats[0]["sim"].is_null(), "no sim0.log");
        assert_eq!(stats[1]["sim"]["mmio_reads"], 12);
        assert_eq!(clock_hz(&stats), Some(100_000_000));
        let t = table(&stats);
        assert!(t.contains("accel1: QEMU mmio reads 12 (p50 97.3 us, p99 181.0 us)"), "{t}");
        assert!(t.contains("sim cycles 60467200 (5132770 cycles/s)"), "{t}");
        let mut other = stats.clone();
        other[1]["qemu"]["clock_hz"] = json!(250_000_000);
        assert_eq!(clock_hz(&other), None, "devices disagree");
        assert_eq!(clock_hz(&[]), None);
        // Without QEMU's statistics (vfio-user mode), the simulations' clock if they report one.
        let sims = |c: &[Value]| c.iter().map(|c| json!({"qemu": null, "sim": {"clock_hz": c}})).collect::<Vec<_>>();
        assert_eq!(clock_hz(&sims(&[json!(250_000_000), json!(250_000_000)])), Some(250_000_000));
        assert_eq!(clock_hz(&sims(&[json!(250_000_000), json!(0)])), None);
        assert_eq!(clock_hz(&[json!({"qemu": null, "sim": {"cycles": 5}})]), None);
    }
}
