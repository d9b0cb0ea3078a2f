//! The device's statistics while QEMU runs: the read-only QOM property `stats` read with QMP's
//! `qom-get` (docs/qemu-device.md, "Statistics"), against the scripted fake HDL peer, under qtest.
//! Needs `make qemu`, so the test is `#[ignore]`d; `make test-qemu` runs it (`--include-ignored`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use common::*;
use cosim_protocol::{DmaRead, DmaWrite, GuestAddr, Message, Msix};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(5);
const SLOT: u8 = 4;

/// A QMP client on a Unix socket: one JSON object per line each way.
struct Qmp {
    out: UnixStream,
    lines: BufReader<UnixStream>,
}

impl Qmp {
    fn connect(path: &Path) -> Result<Qmp> {
        let out = wait_for("the QMP socket", T, || Ok(UnixStream::connect(path).ok()))?;
        out.set_read_timeout(Some(T))?;
        let lines = BufReader::new(out.try_clone()?);
        let mut q = Qmp { out, lines };
        let greeting = q.next()?;
        ensure!(greeting.get("QMP").is_some(), "QMP greeting: {greeting}");
        q.execute(json!({"execute": "qmp_capabilities"}))?;
        Ok(q)
    }

    /// The next message that is not an event.
    fn next(&mut self) -> Result<Value> {
        loop {
            let mut line = String::new();
            ensure!(self.lines.read_line(&mut line).context("QMP read (5 s timeout)")? > 0, "QMP closed");
            let v: Value = serde_json::from_str(&line).with_context(|| format!("QMP line {line:?}"))?;
            if v.get("event").is_none() {
                return Ok(v);
            }
        }
    }

    fn execute(&mut self, cmd: Value) -> Result<Value> {
        writeln!(self.out, "{cmd}")?;
        let reply = self.next()?;
        match reply.get("return") {
            Some(r) => Ok(r.clone()),
            None => bail!("QMP {cmd} failed: {reply}"),
        }
    }

    /// `qom-get` of the device's `stats`, parsed.
    fn stats(&mut self, id: &str) -> Result<Value> {
        let r = self.execute(json!({"execute": "qom-get", "arguments": {"path": format!("/machine/peripheral/{id}"), "property": "stats"}}))?;
        let text = r.as_str().with_context(|| format!("stats is a string: {r}"))?;
        serde_json::from_str(text).with_context(|| format!("stats is JSON: {text}"))
    }
}

fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} is a number: {v}"))
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} is a number: {v}"))
}

#[test]
#[ignore = "needs `make qemu`: run by `make test-qemu` (or `make test`)"]
fn stats_are_readable_with_qom_get_while_running_and_printed_at_exit() -> Result<()> {
    let dir = TempDir::new("qmp");
    let ep = dir.endpoint("a");
    let peer = FakePeer::start(&ep, test_config(TEST_DEVICE));
    let sock = dir.path("qmp.sock");
    let mut args = device_args(&ep, "04.0", "");
    args.extend(["-qmp".into(), format!("unix:{},server=on,wait=off", sock.display())]);
    let mut q = Qemu::spawn(&args)?;
    map_bars(&mut q, SLOT, 0)?;
    peer.expect_session("INIT", T)?;
    let id = "acc04_0";
    let mut qmp = Qmp::connect(&sock)?;

    let before = qmp.stats(id)?;
    ensure!(u(&before, "mmio_reads") == 0 && before["read_p50_us"].is_null(), "no read yet: {before}");
    ensure!(u(&before, "clock_hz") == TEST_CLOCK_HZ, "the design clock from CONFIG: {before}");
    ensure!(u(&before, "sessions") == 1 && u(&before, "session_losses") == 0, "{before}");

    for i in 0..20 {
        q.readl(BAR0_ADDR + 4 * (i % 4))?;
    }
    for i in 0..5 {
        q.write(4, BAR0_ADDR + 0x40, i)?;
    }
    peer.send(Message::DmaWrite(DmaWrite { addr: GuestAddr(0x20_0000), data: vec![0x5a; 256] }));
    peer.send(Message::DmaRead(DmaRead { tag: 5, addr: GuestAddr(0x20_0000), len: 64 }));
    peer.expect_msg("DmaReadResp", T, |m| matches!(m, Message::DmaReadResp(r) if r.tag == 5).then_some(()))?;
    peer.send(Message::Msix(Msix { vector: 0 }));
    let after = wait_for("the MSI-X in the statistics", T, || {
        let s = qmp.stats(id)?;
        Ok((u(&s, "irqs") == 1).then_some(s))
    })?;
    ensure!(u(&after, "mmio_reads") == 20 && u(&after, "mmio_reads_failed") == 0, "{after}");
    ensure!(u(&after, "mmio_writes") == 5, "{after}");
    ensure!(u(&after, "dma_write_bytes") == 256 && u(&after, "dma_writes") == 1, "{after}");
    ensure!(u(&after, "dma_read_bytes") == 64 && u(&after, "dma_reads") == 1, "{after}");
    let (p50, p99, max) = (f(&after, "read_p50_us"), f(&after, "read_p99_us"), f(&after, "read_max_us"));
    ensure!(0.0 < p50 && p50 <= p99 && p99 <= max && max < 5_000_000.0, "latencies: {after}");

    // The peer goes away: a session loss, counted while QEMU keeps running.
    peer.kill();
    let lost = wait_for("the session loss", Duration::from_secs(10), || {
        let s = qmp.stats(id)?;
        Ok((u(&s, "session_losses") == 1).then_some(s))
    })?;
    ensure!(u(&lost, "mmio_reads") == 20, "{lost}");

    q.terminate();
    let (_, stderr) = q.wait_exit(T)?;
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("cosim-qemu: stats "))
        .with_context(|| format!("no stats line at exit:\n{stderr}"))?;
    let at_exit: Value = serde_json::from_str(line)?;
    ensure!(at_exit["device"] == id && at_exit["endpoint"] == ep.as_str(), "{at_exit}");
    ensure!(u(&at_exit, "mmio_reads") == 20 && u(&at_exit, "session_losses") == 1, "{at_exit}");
    Ok(())
}
