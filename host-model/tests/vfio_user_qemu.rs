//! A stock QEMU (no cosim code: `make qemu-stock`) drives the test design's simulation through
//! `-device vfio-user-pci` under qtest: config space and MSI-X capability as QEMU presents them,
//! MMIO through QEMU's BARs, the design's DMA into QEMU's guest RAM (a shared memfd), MSI-X
//! through QEMU's own table (a message lands in RAM, a masked one waits), and what QEMU does when
//! the simulation goes away (it keeps running; its accesses fail).
//!
//! Needs `make sim-test qemu-stock`; run by `make test-vfio-user` (and `make test`).

#[path = "../../qemu-device/tests/common/mod.rs"]
mod qtest;
mod test_dev;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Result};
use cosim_host_model::{sim_binary, SimOptions, SimProcess};
use qtest::{map_bars, wait_for, Qemu, BAR0_ADDR, BAR2_ADDR};
use test_dev::*;

const T: Duration = Duration::from_secs(20);
const SLOT: u8 = 4;

/// The stock QEMU: `$COSIM_QEMU_STOCK` (set by make), else the checkout's build/qemu-stock.
fn stock_qemu() -> PathBuf {
    let p = std::env::var_os("COSIM_QEMU_STOCK")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/qemu-stock/qemu-system-x86_64"));
    assert!(p.exists(), "{} does not exist: build the stock QEMU first (`make qemu-stock`)", p.display());
    p
}

struct Rig {
    sim: SimProcess,
    q: Qemu,
    _dir: tempfile::TempDir,
}

fn start() -> Result<Rig> {
    start_with(true)
}

/// `shared`: guest RAM in a shared memfd (what vfio-user DMA needs) or QEMU's default private RAM.
fn start_with(shared: bool) -> Result<Rig> {
    let bin = sim_binary("cosim_test_top", "sim-test")?;
    let dir = tempfile::Builder::new().prefix("cosim-vfio-user-qemu").tempdir()?;
    let sock = dir.path().join("dev.sock");
    let opts = SimOptions { log: Some(dir.path().join("sim.log")), ready_timeout: T, ..SimOptions::default() };
    let sim = SimProcess::spawn_with(&bin, &format!("vfio-user://{}", sock.display()), opts)?;
    let dev = serde_json::json!({
        "driver": "vfio-user-pci",
        "socket": { "path": sock, "type": "unix" },
        "addr": format!("{SLOT:02x}.0"),
    });
    let mut args: Vec<String> = Vec::new();
    if shared {
        args.extend(
            ["-object", "memory-backend-memfd,id=ram,size=128M,share=on", "-machine", "memory-backend=ram"]
                .map(String::from),
        );
    }
    args.extend(["-device".to_string(), dev.to_string()]);
    let mut q = Qemu::spawn_bin(&stock_qemu(), &args, &[])?;
    let id = q.cfg_read(SLOT, 0, 4);
    ensure!(
        matches!(id, Ok(0x7e57_1ded)),
        "QEMU's view of the function: {id:?}; QEMU stderr:\n{}\nsim log:\n{}",
        q.stderr_text(),
        sim.log()
    );
    map_bars(&mut q, SLOT, 0)?;
    Ok(Rig { sim, q, _dir: dir })
}

#[test]
#[ignore = "needs `make sim-test qemu-stock`: run by `make test-vfio-user` (or `make test`)"]
fn stock_qemu_drives_the_rtl_mmio_dma_and_msix() -> Result<()> {
    let mut r = start()?;
    let q = &mut r.q;
    let cap = q.find_cap(SLOT, 0x11)?.ok_or_else(|| anyhow::anyhow!("no MSI-X capability"))?;
    ensure!(q.cfg_read(SLOT, cap + 2, 2)? & 0x7ff == 7, "8 vectors");
    ensure!(q.cfg_read(SLOT, cap + 8, 4)? == 0x2002, "PBA in BAR2 at 0x2000");
    // MMIO of every width through QEMU's BAR.
    let id = q.readq(BAR0_ADDR + ID)?;
    ensure!(id != 0 && id != u64::MAX, "ID register {id:#x}");
    q.write(8, BAR0_ADDR + SCRATCH0, 0x0102_0304_0506_0708)?;
    ensure!(q.readq(BAR0_ADDR + SCRATCH0)? == 0x0102_0304_0506_0708);
    ensure!(q.readl(BAR0_ADDR + SCRATCH0 + 4)? == 0x0102_0304);
    ensure!(q.readw(BAR0_ADDR + SCRATCH0 + 2)? == 0x0506);
    ensure!(q.readb(BAR0_ADDR + SCRATCH0 + 1)? == 0x07);
    // MSI-X on (every entry still masked, as Linux does it: QEMU 10.2.2's vfio-pci crashes when
    // MSI-X is enabled while a vector above an unused one is already unmasked, docs/vfio-user.md),
    // then vector 2 -> RAM 0x1000 and vector 3 -> RAM 0x1010 (left masked) in QEMU's table.
    let ctl = q.cfg_read(SLOT, cap + 2, 2)?;
    q.cfg_write(SLOT, cap + 2, 2, ctl | 0x8000)?;
    for (v, addr, data, mask) in [(2u64, 0x1000u64, 0x1234_5678u64, 0u64), (3, 0x1010, 0xabcd, 1)] {
        q.write(4, BAR2_ADDR + 16 * v, addr)?;
        q.write(4, BAR2_ADDR + 16 * v + 4, 0)?;
        q.write(4, BAR2_ADDR + 16 * v + 8, data)?;
        q.write(4, BAR2_ADDR + 16 * v + 12, mask)?;
    }
    // The design copies 4000 bytes in guest RAM and interrupts on vector 2.
    let data: Vec<u8> = (0..4000u32).map(|i| (i * 13 + 5) as u8).collect();
    q.mem_write(0x20_0003, &data)?;
    q.write(8, BAR0_ADDR + DMA_SRC, 0x20_0003)?;
    q.write(8, BAR0_ADDR + DMA_DST, 0x30_0001)?;
    q.write(8, BAR0_ADDR + DMA_LEN, data.len() as u64)?;
    q.write(4, BAR0_ADDR + DMA_CTRL, 0b11 | (2 << 16))?;
    wait_for("MSI-X vector 2 in RAM", T, || Ok((q.readl(0x1000)? == 0x1234_5678).then_some(())))?;
    let st = q.readq(BAR0_ADDR + DMA_STATUS)?;
    ensure!(st & 0b111 == 0b010, "status {st:#x} after the copy; sim log:\n{}", r.sim.log());
    ensure!(q.mem_read(0x30_0001, data.len())? == data, "the copy in guest RAM");
    // A masked vector waits (QEMU's MSI-X core) and is delivered on unmask.
    q.write(4, BAR0_ADDR + IRQ_TRIGGER, 3)?;
    std::thread::sleep(Duration::from_millis(200));
    ensure!(q.readl(0x1010)? == 0, "a masked vector was delivered");
    q.write(4, BAR2_ADDR + 16 * 3 + 12, 0)?;
    wait_for("vector 3 after unmask", T, || Ok((q.readl(0x1010)? == 0xabcd).then_some(())))?;
    // A DMA outside guest RAM: the design sees an error, the simulation says why.
    q.write(8, BAR0_ADDR + DMA_SRC, 0x40_0000_0000)?;
    q.write(8, BAR0_ADDR + DMA_LEN, 64)?;
    q.mem_write(0x1000, &[0; 4])?;
    q.write(4, BAR0_ADDR + DMA_CTRL, 0b11 | (2 << 16))?;
    wait_for("completion of the failed copy", T, || Ok((q.readl(0x1000)? == 0x1234_5678).then_some(())))?;
    ensure!(q.readq(BAR0_ADDR + DMA_STATUS)? & 0b110 == 0b110, "ERROR status after a DMA outside guest RAM");
    r.sim.wait_log("outside every range the client mapped", T)?;
    let err = q.stderr_text();
    ensure!(!err.contains("warning") && !err.contains("error"), "QEMU complained:\n{err}");
    Ok(())
}

#[test]
#[ignore = "needs `make sim-test qemu-stock`: run by `make test-vfio-user` (or `make test`)"]
fn qemu_survives_the_simulation_going_away() -> Result<()> {
    let mut r = start()?;
    r.q.write(8, BAR0_ADDR + SCRATCH0, 99)?;
    ensure!(r.q.readq(BAR0_ADDR + SCRATCH0)? == 99);
    r.sim.kill();
    // QEMU keeps running: its reads of the device now fail (all ones) instead of hanging.
    let v = wait_for("reads failing after the server went away", T, || {
        let v = r.q.readl(BAR0_ADDR + SCRATCH0)?;
        Ok((v != 99).then_some(v))
    })?;
    ensure!(v == u32::MAX, "read after the server went away: {v:#x}");
    ensure!(r.q.readl(0x1000).is_ok(), "QEMU still answers");
    r.q.wait_stderr("failed: Bad address", T)?;
    Ok(())
}

/// The usual mistake: QEMU's RAM is not shared memory. Everything but DMA works; the design's DMA
/// fails with an error status, and the simulation says what to change.
#[test]
#[ignore = "needs `make sim-test qemu-stock`: run by `make test-vfio-user` (or `make test`)"]
fn guest_ram_that_is_not_shared_fails_dma_with_a_hint() -> Result<()> {
    let mut r = start_with(false)?;
    let q = &mut r.q;
    q.write(8, BAR0_ADDR + SCRATCH0, 5)?;
    ensure!(q.readq(BAR0_ADDR + SCRATCH0)? == 5, "MMIO works without shared RAM");
    q.mem_write(0x20_0000, &[7; 64])?;
    q.write(8, BAR0_ADDR + DMA_SRC, 0x20_0000)?;
    q.write(8, BAR0_ADDR + DMA_DST, 0x30_0000)?;
    q.write(8, BAR0_ADDR + DMA_LEN, 64)?;
    q.write(4, BAR0_ADDR + DMA_CTRL, 0b01)?;
    let st = wait_for("the copy to end", T, || {
        let st = q.readq(BAR0_ADDR + DMA_STATUS)?;
        Ok((st & 0b011 == 0b010).then_some(st))
    })?;
    ensure!(st & 0b100 != 0, "status {st:#x}: ERROR expected");
    ensure!(q.mem_read(0x30_0000, 64)? == [0; 64], "nothing was written");
    r.sim.wait_log("not shared memory (start QEMU with -object memory-backend-memfd", T)?;
    Ok(())
}
