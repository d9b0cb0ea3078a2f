//! accelerator-pcie under `qemu-system-x86_64 -M q35 -accel qtest`, driven through the qtest text
//! protocol, against a scripted fake HDL peer (ZeroMQ over ipc in a fresh temp dir).
//! Needs `make qemu`, so every test is `#[ignore]`d: a plain `cargo test --workspace` lists them as
//! ignored with that reason; `make test-qemu` runs them (`--include-ignored`), and a missing QEMU
//! then fails with the same hint.

mod common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use common::*;
use cosim_protocol::{
    AccessSize, BarDesc, DmaRead, DmaWrite, GoodbyeReason, GuestAddr, Message, MmioRead, MmioWrite, Msix,
};

const T: Duration = Duration::from_secs(5);
const SLOT: u8 = 4;
/// QEMU's error line when the HDL goes silent (the host session engine's wording).
const LOST: &str = "the device is lost";

fn start(dir: &TempDir, name: &str) -> Result<(FakePeer, Qemu)> {
    let ep = dir.endpoint(name);
    let peer = FakePeer::start(&ep, test_config(TEST_DEVICE));
    let mut q = Qemu::spawn(&device_args(&ep, "04.0", ""))?;
    map_bars(&mut q, SLOT, 0)?;
    peer.expect_session("INIT", T)?;
    Ok((peer, q))
}

#[test]
#[ignore = "needs `make qemu`: run by `make test-qemu` (or `make test`)"]
fn qemu_without_the_device_never_waits() -> Result<()> {
    let t0 = Instant::now();
    let mut q = Qemu::spawn(&[])?;
    let id = q.cfg_read(0, 0, 4)?; // host bridge
    ensure!(id & 0xffff == 0x8086, "q35 host bridge vendor: {id:#x}");
    ensure!(t0.elapsed() < Duration::from_secs(3), "QEMU without the device took {:?}", t0.elapsed());
    Ok(())
}

#[test]
#[ignore = "needs `make qemu`: run by `make test-qemu` (or `make test`)"]
fn missing_hdl_fails_device_with_a_hint() -> Result<()> {
    let dir = TempDir::new("nohdl");
    let q = Qemu::spawn(&device_args(&dir.endpoint("x"), "04.0", ",timeout-ms=300"))?;
    let (ok, err) = q.wait_exit(Duration::from_secs(10))?;
    ensure!(!ok, "QEMU must fail");
    ensure!(err.contains("no answer from the HDL simulation") && err.contains("start the simulation"), "stderr: {err}");
    Ok(())
}

#[test]
#[ignore = "needs `make qemu`: run by `make test-qemu` (or `make test`)"]
fn missing_endpoint_fails_device_with_a_hint() -> Result<()> {
    let q = Qemu::spawn(&["-device".into(), "accelerator-pcie,addr=04.0".into()])?;
    let (ok, err) = q.wait_exit(Duration::from_secs(10))?;
    ensure!(!ok && err.contains("endpoint= is required"), "stderr: {err}");
    Ok(())
}

#[test]
#[ignore = "needs `make qemu`: run by `make test-qemu` (or `make test`)"]
fn impossible_config_fails_device_with_a_hint() -> Result<()> {
    let dir = TempDir::new("badcfg");
    let ep = dir.endpoint("a");
    let mut cfg = test_config(TEST_DEVICE);
    cfg.bars[0] = BarDesc::mem32(3000);
    let _peer = FakePeer::start(&ep, cfg);
    let q = Qemu::spawn(&device_args(&ep, "04.0", ""))?;
    let (ok, err) = q.wait_exit(Duration::from_secs(10))?;
    ensure!(!ok, "QEMU must fail");
    ensure!(err.contains("impossible PCI configuration") && err.contains("BAR0"), "stderr: {err}");
    Ok(())
}

#[test]
#[ignore = "needs `make qemu`: run by `make test-qemu` (or `make test`)"]
fn config_space_matches_the_hdl() -> Result<()> {
    let dir = TempDir::new("cfg");
    let (_peer, mut q) = start(&dir, "a")?;
    ensure!(q.cfg_read(SLOT, 0x00, 2)? == u32::from(TEST_VENDOR));
    ensure!(q.cfg_read(SLOT, 0x02, 2)? == u32::from(TEST_DEVICE));
    ensure!(q.cfg_read(SLOT, 0x08, 4)? == 0x1200_0001, "class/revision");
    ensure!(q.cfg_read(SLOT, 0x2c, 2)? == 0x1ded && q.cfg_read(SLOT, 0x2e, 2)? == 0x0042, "subsystem");
    // BAR sizes: write all ones, read back the size mask.
    let mut size_of = |off: u8, low_bits: u32| -> Result<u64> {
        let old = q.cfg_read(SLOT, off, 4)?;
        q.cfg_write(SLOT, off, 4, 0xffff_ffff)?;
        let v = q.cfg_read(SLOT, off, 4)?;
        q.cfg_write(SLOT, off, 4, old)?;
        Ok(1u64 << (v & !low_bits).trailing_zeros())
    };
    ensure!(size_of(0x10, 0xf)? == 4096, "BAR0 size");
    ensure!(size_of(0x18, 0xf)? == 16 * 1024, "BAR2 size");
    ensure!(size_of(0x20, 0x3)? == 32, "BAR4 size");
    ensure!(q.cfg_read(SLOT, 0x18, 1)? & 0x7 == 0x4, "BAR2 is 64-bit memory");
    ensure!(q.cfg_read(SLOT, 0x20, 1)? & 0x1 == 0x1, "BAR4 is I/O");
    ensure!(q.cfg_read(SLOT, 0x14, 4)? == 0 && q.cfg_read(SLOT, 0x24, 4)? == 0, "absent BARs");
    let msix = q.find_cap(SLOT, 0x11)?.ok_or_else(|| anyhow::anyhow!("no MSI-X capability"))?;
    ensure!(q.cfg_read(SLOT, msix + 2, 2)? & 0x7ff == 3, "4 vectors");
    ensure!(q.cfg_read(SLOT, msix + 4, 4)? == 2, "table in BAR2 at 0");
    ensure!(q.cfg_read(SLOT, msix + 8, 4)? == 0x2002, "PBA in BAR2 at 0x2000");
    Ok(())
}

#[test]
#[ignore = "needs `make qemu`: run by `make test-qemu` (or `make test`)"]
fn mmio_of_every_size_reaches_every_bar() -> Result<()> {
    let dir = TempDir::new("mmio");
    let (peer, mut q) = start(&dir, "a")?;
    peer.clear();
    for (bar, base) in [(0u8, BAR0_ADDR), (2, BAR2_ADDR)] {
        for (i, size) in [1usize, 2, 4, 8].into_iter().enumerate() {
            // BAR2 offsets avoid the MSI-X table (0..0x40) and PBA (0x2000..0x2008).
            let off = 0x100 + 0x10 * i as u64 + if bar == 2 { 0x1000 } else { 0 };
            let mask = AccessSize::try_from(size as u8).unwrap().mask();
            let v = q.read_n(size, base + off)?;
            ensure!(v == default_read_value(bar, off) & mask, "read BAR{bar}+{off:#x}/{size}: {v:#x}");
            let r = peer.expect_msg("MmioRead", T, |m| match m {
                Message::MmioRead(r) => Some(*r),
                _ => None,
            })?;
            ensure!(r.bar.get() == bar && r.offset == off && r.size.bytes() == size, "{r:?}");
            let data = 0xdead_beef_cafe_f00du64 & mask;
            q.write(size, base + off, data)?;
            let w = peer.expect_msg("MmioWrite", T, |m| match m {
                Message::MmioWrite(w) => Some(*w),
                _ => None,
            })?;
            ensure!(
                w == MmioWrite { bar: w.bar, size: AccessSize::try_from(size as u8).unwrap(), offset: off, data }
                    && w.bar.get() == bar,
                "{w:?}"
            );
        }
    }
    for size in [1usize, 2, 4] {
        let off = size as u64 * 4;
        let v = q.inp(size, BAR4_PORT + off as u16)?;
        let mask = AccessSize::try_from(size as u8).unwrap().mask();
        ensure!(u64::from(v) == default_read_value(4, off) & mask, "in BAR4+{off:#x}/{size}: {v:#x}");
        q.outp(size, BAR4_PORT + off as u16, 0x5a5a_5a5a & mask as u32)?;
        let w = peer.expect_msg("MmioWrite to BAR4", T, |m| match m {
            Message::MmioWrite(w) if w.bar.get() == 4 => Some(*w),
            _ => None,
        })?;
        ensure!(w.offset == off && w.size.bytes() == size && w.data == 0x5a5a_5a5a & mask, "{w:?}");
    }
    Ok(())
}

#[test]
#[ignore = "needs `make qemu`: run by `make test-qemu` (or `make test`)"]
fn dma_write_lands_in_guest_memory_and_dma_read_returns_it() -> Result<()> {
    let dir = TempDir::new("dma");
    let (peer, mut q) = start(&dir, "a")?;
    let data: Vec<u8> = (0..256u32).map(|i| (i * 7 + 1) as u8).collect();
    peer.send(Message::DmaWrite(DmaWrite { addr: GuestAddr(0x20_0000), data: data.clone() }));
    peer.send(Message::DmaRead(DmaRead { tag: 77, addr: GuestAddr(0x20_0000), len: 256 }));
    let got = peer.expect_msg("DmaReadResp", T, |m| match m {
        Message::DmaReadResp(r) if r.tag == 77 => Some(r.data.clone()),
        _ => None,
    })?;
    ensure!(got == data, "DMA read returned other bytes");
    ensure!(q.mem_read(0x20_0000, 256)? == data, "guest memory differs");
    // A large transfer (64 KiB, the maximum per message) the other way.
    let big: Vec<u8> = (0..65536u32).map(|i| (i ^ (i >> 8)) as u8).collect();
    for chunk in 0..16 {
        q.mem_write(0x30_0000 + chunk * 4096, &big[chunk as usize * 4096..][..4096])?;
    }
    peer.send(Message::DmaRead(DmaRead { tag: 78, addr: GuestAddr(0x30_0000), len: 65536 }));
    let got = peer.expect_msg("DmaReadResp 64K", T, |m| match m {
        Message::DmaReadResp(r) if r.tag == 78 => Some(r.data.clone()),
        _ => None,
    })?;
    ensure!(got == big, "64 KiB DMA read differs");
    Ok(())
}

#[test]
#[ignore = "needs `make qemu`: run by `make test-qemu` (or `make test`)"]
fn msix_is_delivered_and_pending_while_masked() -> Result<()> {
    let dir = TempDir::new("msix");
    let (peer, mut q) = start(&dir, "a")?;
    let cap = q.find_cap(SLOT, 0x11)?.expect("MSI-X capability");
    // Vector 0 -> RAM 0x1000 data 0x12345678; vector 1 -> RAM 0x1010, masked.
    q.write(4, BAR2_ADDR, 0x1000)?;
    q.write(4, BAR2_ADDR + 4, 0)?;
    q.write(4, BAR2_ADDR + 8, 0x1234_5678)?;
    q.write(4, BAR2_ADDR + 12, 0)?;
    q.write(4, BAR2_ADDR + 16, 0x1010)?;
    q.write(4, BAR2_ADDR + 20, 0)?;
    q.write(4, BAR2_ADDR + 24, 0xabcd)?;
    q.write(4, BAR2_ADDR + 28, 1)?;
    ensure!(q.readl(BAR2_ADDR + 8)? == 0x1234_5678, "table readback");
    let ctl = q.cfg_read(SLOT, cap + 2, 2)?;
    q.cfg_write(SLOT, cap + 2, 2, ctl | 0x8000)?;
    // The table lives in QEMU: none of those accesses reached the HDL.
    q.write(4, BAR0_ADDR + 0x80, 0x5e17)?;
    let first = peer.expect_msg("MmioWrite", T, |m| match m {
        Message::MmioWrite(w) => Some(*w),
        Message::MmioRead(r) => Some(MmioWrite { bar: r.bar, size: r.size, offset: r.offset, data: u64::MAX }),
        _ => None,
    })?;
    ensure!(first.bar.get() == 0 && first.offset == 0x80, "MSI-X table access was forwarded: {first:?}");

    peer.send(Message::Msix(Msix { vector: 0 }));
    wait_for("MSI-X vector 0 write to RAM", T, || Ok((q.readl(0x1000)? == 0x1234_5678).then_some(())))?;

    peer.send(Message::Msix(Msix { vector: 1 }));
    wait_for("PBA bit 1", T, || Ok((q.readq(BAR2_ADDR + 0x2000)? & 2 != 0).then_some(())))?;
    ensure!(q.readl(0x1010)? == 0, "masked vector must not be delivered");
    q.write(4, BAR2_ADDR + 28, 0)?; // unmask: the pending message goes out
    wait_for("pending vector 1 delivered", T, || Ok((q.readl(0x1010)? == 0xabcd).then_some(())))?;
    ensure!(q.readq(BAR2_ADDR + 0x2000)? & 2 == 0, "PBA bit cleared after delivery");

    // Function mask: pending, then delivered on unmask.
    q.mem_write(0x1000, &[0; 4])?;
    q.cfg_write(SLOT, cap + 2, 2, ctl | 0xc000)?;
    peer.send(Message::Msix(Msix { vector: 0 }));
    wait_for("PBA bit 0", T, || Ok((q.readq(BAR2_ADDR + 0x2000)? & 1 != 0).then_some(())))?;
    q.cfg_write(SLOT, cap + 2, 2, ctl | 0x8000)?;
    wait_for("vector 0 after function unmask", T, || Ok((q.readl(0x1000)? == 0x1234_5678).then_some(())))?;
    Ok(())
}

#[test]
#[ignore = "needs `make qemu`: run by `make test-qemu` (or `make test`)"]
fn nic_frames_travel_both_ways() -> Result<()> {
    let dir = TempDir::new("nic");
    let ep = dir.endpoint("a");
    let peer = FakePeer::start(&ep, test_config(TEST_DEVICE));
    let test_sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    test_sock.set_read_timeout(Some(T))?;
    let qemu_port = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let test_port = test_sock.local_addr()?.port();
    let mut args = vec![
        "-netdev".to_string(),
        format!(
            "dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port={qemu_port},\
             remote.type=inet,remote.host=127.0.0.1,remote.port={test_port}"
        ),
    ];
    args.extend(device_args(&ep, "04.0", ",netdev=n0"));
    let mut q = Qemu::spawn(&args)?;
    map_bars(&mut q, SLOT, 0)?;
    peer.expect_session("INIT", T)?;
    // netdev -> device -> HDL
    let frame_in: Vec<u8> = (0..64u8).collect();
    test_sock.send_to(&frame_in, ("127.0.0.1", qemu_port))?;
    let got = peer.expect_msg("NicFrame from the netdev", T, |m| match m {
        Message::NicFrame(f) => Some(f.clone()),
        _ => None,
    })?;
    ensure!(got == frame_in, "frame to the HDL differs");
    // HDL -> device -> netdev
    let frame_out: Vec<u8> = (0..100u8).rev().collect();
    peer.send(Message::NicFrame(frame_out.clone()));
    let mut buf = [0u8; 2048];
    let (n, _) = test_sock.recv_from(&mut buf)?;
    ensure!(buf[..n] == frame_out[..], "frame from the HDL differs");
    Ok(())
}

#[test]
#[ignore = "needs `make qemu`: run by `make test-qemu` (or `make test`)"]
fn serial_bytes_travel_both_ways() -> Result<()> {
    use std::io::{Read, Write};
    let dir = TempDir::new("ser");
    let ep = dir.endpoint("a");
    let sock = dir.path("serial.sock");
    let peer = FakePeer::start(&ep, test_config(TEST_DEVICE));
    let mut args = vec![
        "-chardev".to_string(),
        format!("socket,id=c0,path={},server=on,wait=off", sock.display()),
    ];
    args.extend(device_args(&ep, "04.0", ",chardev=c0"));
    let mut q = Qemu::spawn(&args)?;
    q.cfg_read(0, 0, 4)?; // QEMU is up (the socket is listening)
    let mut s = std::os::unix::net::UnixStream::connect(&sock)?;
    s.set_read_timeout(Some(T))?;
    s.write_all(b"hello uart\n")?;
    let mut got = Vec::new();
    while got.len() < 11 {
        let chunk = peer.expect_msg("Serial from the chardev", T, |m| match m {
            Message::Serial(b) => Some(b.clone()),
            _ => None,
        })?;
        got.extend(chunk);
    }
    ensure!(got == b"hello uart\n", "serial to the HDL: {got:?}");
    peer.send(Message::Serial(b"from the rtl".to_vec()));
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf)?;
    ensure!(&buf == b"from the rtl", "serial from the HDL: {buf:?}");
    Ok(())
}

#[test]
#[ignore = "needs `make qemu`: run by `make test-qemu` (or `make test`)"]
fn hdl_killed_and_restarted_reconnects() -> Result<()> {
    let dir = TempDir::new("restart");
    let ep = dir.endpoint("a");
    let (peer, mut q) = start(&dir, "a")?;
    ensure!(q.readl(BAR0_ADDR + 0x10)? == default_read_value(0, 0x10) as u32);
    peer.kill();
    q.wait_stderr(LOST, Duration::from_secs(4))?;
    let t0 = Instant::now();
    for _ in 0..5 {
        ensure!(q.readl(BAR0_ADDR + 0x10)? == 0xffff_ffff, "all ones while the HDL is gone");
        ensure!(q.readq(BAR0_ADDR + 0x18)? == u64::MAX);
    }
    ensure!(t0.elapsed() < Duration::from_secs(2), "reads while disconnected must not wait");
    q.write(4, BAR0_ADDR, 1)?; // dropped, no hang
    let errors = q.stderr_text().matches(LOST).count();
    ensure!(errors == 1, "one clear error line, got {errors}:\n{}", q.stderr_text());
    ensure!(q.alive(), "QEMU keeps running");

    let peer2 = FakePeer::start(&ep, test_config(TEST_DEVICE));
    peer2.expect_session("INIT again", Duration::from_secs(5))?;
    wait_for("reads after reconnect", T, || {
        Ok((q.readl(BAR0_ADDR + 0x10)? == default_read_value(0, 0x10) as u32).then_some(()))
    })?;
    q.wait_stderr("reconnected", T)?;
    peer2.send(Message::DmaWrite(DmaWrite { addr: GuestAddr(0x5000), data: vec![9; 8] }));
    wait_for("DMA after reconnect", T, || Ok((q.mem_read(0x5000, 8)? == vec![9; 8]).then_some(())))?;
    eprintln!("QEMU stderr:\n{}", q.stderr_text());
    Ok(())
}

#[test]
#[ignore = "needs `make qemu`: run by `make test-qemu` (or `make test`)"]
fn hdl_restarted_at_once_is_noticed_by_the_liveness_timeout() -> Result<()> {
    let dir = TempDir::new("quick");
    let ep = dir.endpoint("a");
    let (peer, mut q) = start(&dir, "a")?;
    ensure!(q.readl(BAR0_ADDR + 0x10)? == default_read_value(0, 0x10) as u32);
    peer.kill();
    let killed = Instant::now();
    let peer2 = FakePeer::start(&ep, test_config(TEST_DEVICE));
    // Protocol 2: the new simulation's heartbeats carry no session of QEMU's and do not keep the
    // old one alive, so QEMU notices the restart when the old session's liveness runs out (1 s).
    peer2.expect_session("INIT to the restarted HDL", T)?;
    let took = killed.elapsed();
    ensure!(took >= Duration::from_millis(900), "QEMU sent INIT {took:?} after the kill, before the liveness timeout");
    wait_for("reads after the restart", T, || {
        Ok((q.readl(BAR0_ADDR + 0x10)? == default_read_value(0, 0x10) as u32).then_some(()))
    })?;
    Ok(())
}

#[test]
#[ignore = "needs `make qemu`: run by `make test-qemu` (or `make test`)"]
fn hdl_returning_with_another_layout_stays_disconnected() -> Result<()> {
    let dir = TempDir::new("mismatch");
    let ep = dir.endpoint("a");
    let (peer, mut q) = start(&dir, "a")?;
    peer.kill();
    q.wait_stderr(LOST, Duration::from_secs(4))?;
    let mut other = test_config(TEST_DEVICE);
    other.bars[0] = BarDesc::mem32(8192);
    let peer2 = FakePeer::start(&ep, other);
    peer2.expect_session("INIT to the changed HDL", Duration::from_secs(5))?;
    // QEMU refuses that session by its number: GOODBYE(Refused).
    let reason = peer2.expect("GOODBYE refusing the other layout", T, |e| match e {
        PeerEvent::SessionEnded { reason, .. } => Some(*reason),
        _ => None,
    })?;
    ensure!(reason == GoodbyeReason::Refused, "{reason:?}");
    q.wait_stderr("came back with another configuration", Duration::from_secs(5))?;
    ensure!(q.readl(BAR0_ADDR)? == 0xffff_ffff, "stays disconnected");
    Ok(())
}

#[test]
#[ignore = "needs `make qemu`: run by `make test-qemu` (or `make test`)"]
fn two_devices_in_one_qemu() -> Result<()> {
    let dir = TempDir::new("two");
    let (ea, eb) = (dir.endpoint("a"), dir.endpoint("b"));
    let pa = FakePeer::start(&ea, test_config(0xacc1));
    let pb = FakePeer::start_with(&eb, test_config(0xacc2), Box::new(|r, _| 0xb000_0000 + r.offset));
    let mut args = device_args(&ea, "04.0", "");
    args.extend(device_args(&eb, "05.0", ""));
    let mut q = Qemu::spawn(&args)?;
    ensure!(q.cfg_read(4, 0x02, 2)? == 0xacc1 && q.cfg_read(5, 0x02, 2)? == 0xacc2, "device IDs");
    map_bars(&mut q, 4, 0)?;
    map_bars(&mut q, 5, 0x0100_0000)?;
    ensure!(q.readl(BAR0_ADDR + 0x20)? == default_read_value(0, 0x20) as u32, "device a");
    ensure!(q.readl(BAR0_ADDR + 0x0100_0000 + 0x20)? == 0xb000_0020, "device b");
    q.write(4, BAR0_ADDR + 0x0100_0000 + 0x44, 0xbb)?;
    let w = pb.expect_msg("write at b", T, |m| match m {
        Message::MmioWrite(w) => Some(*w),
        _ => None,
    })?;
    ensure!(w.offset == 0x44 && w.data == 0xbb);
    ensure!(
        pa.expect_msg("nothing at a", Duration::from_millis(300), |m| matches!(m, Message::MmioWrite(_)).then_some(())).is_err(),
        "a write to device b reached device a"
    );
    Ok(())
}

#[test]
#[ignore = "needs `make qemu`: run by `make test-qemu` (or `make test`)"]
fn dma_while_a_read_is_outstanding_does_not_deadlock() -> Result<()> {
    let dir = TempDir::new("dmaread");
    let ep = dir.endpoint("a");
    // On a read of BAR0+0x40 the "RTL" first writes guest memory, reads it back by DMA and raises
    // MSI-X, and only then completes the read with what it read.
    let _peer = FakePeer::start_with(
        &ep,
        test_config(TEST_DEVICE),
        Box::new(|r: &MmioRead, ctx: &mut PeerCtx<'_>| {
            if r.offset != 0x40 {
                return default_read_value(r.bar.get(), r.offset);
            }
            ctx.send(&Message::DmaWrite(DmaWrite { addr: GuestAddr(0x6000), data: 0x0123_4567_89ab_cdefu64.to_le_bytes().to_vec() }));
            let back = ctx.dma_read(5, 0x6000, 8);
            u64::from_le_bytes(back.try_into().unwrap())
        }),
    );
    let mut q = Qemu::spawn(&device_args(&ep, "04.0", ""))?;
    map_bars(&mut q, SLOT, 0)?;
    let v = q.readq(BAR0_ADDR + 0x40)?;
    ensure!(v == 0x0123_4567_89ab_cdef, "read completed with {v:#x}");
    ensure!(q.readq(0x6000)? == 0x0123_4567_89ab_cdef, "DMA write landed");
    Ok(())
}

#[test]
#[ignore = "needs `make qemu`: run by `make test-qemu` (or `make test`)"]
fn malformed_messages_are_logged_and_dropped() -> Result<()> {
    let dir = TempDir::new("garbage");
    let (peer, mut q) = start(&dir, "a")?;
    peer.send_raw(b"garbage!".to_vec());
    peer.send_raw(vec![0xff; 64]);
    let mut bad_op = Message::Msix(Msix { vector: 0 }).encode_to_vec();
    bad_op[3] = 0x7f; // unknown opcode
    peer.send_raw(bad_op);
    peer.send(Message::Msix(Msix { vector: 3000 })); // valid frame, impossible vector
    peer.send(Message::DmaWrite(DmaWrite { addr: GuestAddr(0x7000), data: vec![0x42; 4] }));
    wait_for("DMA after garbage", T, || Ok((q.mem_read(0x7000, 4)? == vec![0x42; 4]).then_some(())))?;
    q.wait_stderr("malformed frame dropped: unknown opcode 0x7f", T)?;
    ensure!(q.readl(BAR0_ADDR + 8)? == default_read_value(0, 8) as u32, "device still works");
    ensure!(q.alive());
    Ok(())
}

#[test]
#[ignore = "needs `make qemu`: run by `make test-qemu` (or `make test`)"]
fn reset_is_forwarded() -> Result<()> {
    let dir = TempDir::new("reset");
    let (peer, mut q) = start(&dir, "a")?;
    q.readl(BAR0_ADDR)?;
    peer.clear();
    q.outp(1, 0xcf9, 0x06)?; // q35 reset control register: hard reset
    peer.expect_msg("RESET", T, |m| matches!(m, Message::Reset).then_some(()))?;
    Ok(())
}

#[test]
#[ignore = "needs `make qemu`: run by `make test-qemu` (or `make test`)"]
fn clean_qemu_exit_says_goodbye() -> Result<()> {
    let dir = TempDir::new("bye");
    let ep = dir.endpoint("a");
    let peer = FakePeer::start(&ep, test_config(TEST_DEVICE));
    let mut q = Qemu::spawn(&device_args(&ep, "04.0", ""))?;
    map_bars(&mut q, SLOT, 0)?;
    let session = peer.expect_session("INIT", T)?;
    q.readl(BAR0_ADDR)?;
    q.terminate();
    // The peer's session engine ends a session only for a GOODBYE that carries its number.
    let (ended, reason) = peer.expect("GOODBYE for our session", T, |e| match e {
        PeerEvent::SessionEnded { session, reason } => Some((*session, *reason)),
        _ => None,
    })?;
    ensure!(ended == session && reason == GoodbyeReason::Shutdown, "session {ended:#x} ended ({reason:?}), ours was {session:#x}");
    let (_, _err) = q.wait_exit(T)?;
    Ok(())
}

#[test]
#[ignore = "needs `make qemu`: run by `make test-qemu` (or `make test`)"]
fn tcp_endpoint_with_port_property_and_cosim_port() -> Result<()> {
    // port= on the device.
    let p = cosim_transport::free_port_pair("127.0.0.1")?;
    let peer = FakePeer::start(&format!("tcp://127.0.0.1:{p}"), test_config(TEST_DEVICE));
    let mut q = Qemu::spawn(&device_args("tcp://127.0.0.1", "04.0", &format!(",port={p}")))?;
    map_bars(&mut q, SLOT, 0)?;
    ensure!(q.readl(BAR0_ADDR + 4)? == default_read_value(0, 4) as u32, "read over tcp (port=)");
    drop(q);
    drop(peer);
    // COSIM_PORT when neither the endpoint nor port= names one.
    let p = cosim_transport::free_port_pair("127.0.0.1")?;
    let _peer = FakePeer::start(&format!("tcp://127.0.0.1:{p}"), test_config(TEST_DEVICE));
    let mut q = Qemu::spawn_env(&device_args("tcp://127.0.0.1", "04.0", ""), &[("COSIM_PORT", p.to_string())])?;
    map_bars(&mut q, SLOT, 0)?;
    ensure!(q.readl(BAR0_ADDR + 4)? == default_read_value(0, 4) as u32, "read over tcp (COSIM_PORT)");
    Ok(())
}

#[test]
#[ignore = "needs `make qemu`: run by `make test-qemu` (or `make test`)"]
fn hdl_stalling_during_a_read_gives_all_ones_then_recovers() -> Result<()> {
    let dir = TempDir::new("stall");
    let ep = dir.endpoint("a");
    // A read of BAR0+0x99 stalls the whole "simulation" (no heartbeats) for 2.5 s.
    let peer = FakePeer::start_with(
        &ep,
        test_config(TEST_DEVICE),
        Box::new(|r: &MmioRead, _ctx: &mut PeerCtx<'_>| {
            if r.offset == 0x98 {
                std::thread::sleep(Duration::from_millis(2500));
            }
            default_read_value(r.bar.get(), r.offset)
        }),
    );
    let mut q = Qemu::spawn(&device_args(&ep, "04.0", ",timeout-ms=10000"))?;
    map_bars(&mut q, SLOT, 0)?;
    peer.expect_session("INIT", T)?;
    let t0 = Instant::now();
    ensure!(q.readl(BAR0_ADDR + 0x98)? == 0xffff_ffff, "a read of a silent HDL returns all ones");
    let waited = t0.elapsed();
    ensure!(waited < Duration::from_millis(2400), "liveness ends the wait, not timeout-ms: {waited:?}");
    q.wait_stderr(LOST, T)?;
    // The simulation resumes: INIT again, and reads work.
    peer.expect_session("INIT again", T)?;
    wait_for("reads after the stall", T, || Ok((q.readl(BAR0_ADDR)? == default_read_value(0, 0) as u32).then_some(())))?;
    Ok(())
}

/// Pushes `count` stray frames into each channel of `endpoint` from sockets of their own (a
/// local process that is not a session peer), blocking at most 2 s per frame.
fn inject_stray(endpoint: &str, count: u64) -> Result<std::thread::JoinHandle<Result<u64>>> {
    use cosim_protocol::session::stray::{frame, Toward};
    let e = cosim_transport::Endpoint::parse(endpoint)?;
    let ctx = zmq::Context::new();
    let mut socks = Vec::new();
    for (addr, toward) in [(e.h2d(), Toward::Device), (e.d2h(), Toward::Host)] {
        let s = ctx.socket(zmq::PUSH)?;
        s.set_linger(0)?;
        s.set_sndtimeo(2000)?;
        s.connect(&addr)?;
        socks.push((s, toward));
    }
    Ok(std::thread::spawn(move || {
        let _ctx = ctx;
        let mut sent = 0;
        for n in 0..count {
            for (s, toward) in &socks {
                s.send(frame(*toward, n), 0)?;
                sent += 1;
            }
        }
        Ok(sent)
    }))
}

#[test]
#[ignore = "needs `make qemu`: run by `make test-qemu` (or `make test`)"]
fn stray_frames_in_both_channels_never_disturb_the_session() -> Result<()> {
    let dir = TempDir::new("stray");
    let ep = dir.endpoint("a");
    let (peer, mut q) = {
        let peer = FakePeer::start(&ep, test_config(TEST_DEVICE));
        let mut q = Qemu::spawn(&device_args(&ep, "04.0", ""))?;
        map_bars(&mut q, SLOT, 0)?;
        peer.expect_session("INIT", T)?;
        (peer, q)
    };
    let injector = inject_stray(&ep, 20_000)?;
    // MMIO reads and DMA keep working while the stray frames arrive.
    let mut reads = 0;
    let t0 = Instant::now();
    while !injector.is_finished() || reads < 200 {
        ensure!(t0.elapsed() < Duration::from_secs(120), "injection did not finish");
        let off = 0x100 + 8 * (reads % 64);
        let v = q.readl(BAR0_ADDR + off)?;
        ensure!(u64::from(v) == default_read_value(0, off) & 0xffff_ffff, "read {reads} of BAR0+{off:#x} gave {v:#x}");
        if reads % 50 == 0 {
            let addr = 0x9000 + reads;
            peer.send(Message::DmaWrite(DmaWrite { addr: GuestAddr(addr), data: vec![reads as u8; 4] }));
            let want = vec![reads as u8; 4];
            wait_for("DMA write under stray frames", T, || Ok((q.mem_read(addr, 4)? == want).then_some(())))?;
        }
        reads += 1;
    }
    let sent = injector.join().map_err(|_| anyhow::anyhow!("injector panicked"))??;
    ensure!(sent == 40_000, "{sent}");
    ensure!(q.readl(BAR0_ADDR + 8)? == default_read_value(0, 8) as u32);
    // No second session: neither side restarted or re-INITed.
    ensure!(peer.expect_session("a second INIT", Duration::from_millis(500)).is_err(), "the session restarted");
    let err = q.stderr_text();
    ensure!(!err.contains(LOST) && !err.contains("up again"), "QEMU's session flapped:\n{err}");
    let lines = err.lines().count();
    ensure!(lines < 20, "{lines} lines on QEMU's stderr for 20000 stray frames (must be rate-limited):\n{err}");
    ensure!(err.contains("dropped"), "QEMU must say it dropped frames:\n{err}");
    // At exit QEMU reports its drop counts.
    q.terminate();
    let (_, err) = q.wait_exit(T)?;
    ensure!(err.contains("frames dropped on the link"), "no drop counts at exit:\n{err}");
    Ok(())
}
