//! Session rules of the device side (docs/protocol.md), checked on the bridge's Rust half
//! without Verilator: a raw host-side ZeroMQ transport on one side, the test thread playing the
//! simulation (calling `tick` and the transaction methods) on the other.

mod common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use cosim_dpi_bridge::{PEND_MMIO, PEND_RBEAT};
use cosim_protocol::*;
use cosim_transport::Transport;

use common::{endpoint, expect, host, init, init_after, start, tick_until};

#[test]
fn discards_until_init_answers_every_init_and_new_session_drops_state() -> Result<()> {
    let (_d, e) = endpoint()?;
    let mut ep = start(&e)?;
    let mut h = host(&e)?;
    let bar0 = BarIndex::new(0).unwrap();
    // Before INIT: discarded.
    h.send(&Message::MmioWrite(MmioWrite { bar: bar0, size: AccessSize::B4, offset: 0, data: 1 }))?;
    ensure!(!tick_until(&mut ep, PEND_MMIO, Duration::from_millis(300)), "an MMIO write before INIT reached the RTL");
    // Every INIT of the session's host gets a CONFIG with its session (a repeated one too).
    for (s, prev) in [(7u64, 0u64), (7, 0), (8, 7)] {
        h.send(&init_after(s, prev))?;
        let m = expect(&mut h, &mut ep, "CONFIG", |m| matches!(m, Message::Config(_)))?;
        let Message::Config(c) = m else { unreachable!() };
        ensure!(c.session == s && c.device.device_id == 0x1234 && c.device.bars[2].size == 0x4000);
    }
    // In a session MMIO flows.
    h.send(&Message::MmioRead(MmioRead { tag: 5, bar: bar0, size: AccessSize::B4, offset: 0x10 }))?;
    ensure!(tick_until(&mut ep, PEND_MMIO, Duration::from_secs(5)));
    let b = ep.core.mmio_pop().unwrap();
    ensure!(!b.write && b.addr == 0x10 && b.wstrb == 0x0f);
    ep.core.mmio_read_done(0, 0xdead_beef_1234_5678);
    let m = expect(&mut h, &mut ep, "MMIO completion", |m| matches!(m, Message::MmioReadResp(_)))?;
    ensure!(m == Message::MmioReadResp(MmioReadResp { tag: 5, status: Status::Ok, data: 0x1234_5678 }), "{m:?}");
    // A DMA read outstanding when a new session starts completes with DECERR.
    ep.core.dma_ar(3, 0x1000, 0, 3, 1);
    expect(&mut h, &mut ep, "DMA read", |m| matches!(m, Message::DmaRead(_)))?;
    h.send(&init_after(9, 8))?;
    expect(&mut h, &mut ep, "CONFIG", |m| matches!(m, Message::Config(c) if c.session == 9))?;
    ensure!(tick_until(&mut ep, PEND_RBEAT, Duration::from_secs(5)));
    let beat = ep.core.dma_r().unwrap();
    ensure!(beat.resp == 3 && beat.last && beat.id == 3, "{beat:?}");
    Ok(())
}

#[test]
fn other_major_is_refused_and_malformed_frames_are_dropped() -> Result<()> {
    let (_d, e) = endpoint()?;
    let mut ep = start(&e)?;
    let mut h = host(&e)?;
    h.send_frame(b"not a frame")?;
    let mut other = init(1).encode_to_vec();
    other[2] = VERSION_MAJOR + 1;
    h.send_frame(&other)?;
    expect(&mut h, &mut ep, "GOODBYE(Refused)", |m| {
        matches!(m, Message::Goodbye(Goodbye { reason: GoodbyeReason::Refused, session: 0 }))
    })?;
    // Still serving: a proper INIT is answered.
    h.send(&init(2))?;
    expect(&mut h, &mut ep, "CONFIG", |m| matches!(m, Message::Config(c) if c.session == 2))?;
    Ok(())
}

#[test]
fn stray_frames_never_disturb_a_live_session() -> Result<()> {
    let (_d, e) = endpoint()?;
    let mut ep = start(&e)?;
    let mut h = host(&e)?;
    h.send(&init(0x51))?;
    expect(&mut h, &mut ep, "CONFIG", |m| matches!(m, Message::Config(c) if c.session == 0x51))?;
    // What a stray process might push: another version, garbage, an INIT of another host, a
    // GOODBYE and a HEARTBEAT of other sessions, a completion for no DMA read.
    let mut other = init(1).encode_to_vec();
    other[2] = VERSION_MAJOR + 1;
    for i in 0..200u64 {
        h.send_frame(&other)?;
        h.send_frame(b"garbage")?;
        h.send(&init(0x1000 + i))?;
        h.send(&Message::Goodbye(Goodbye { reason: GoodbyeReason::Shutdown, session: 0x2000 + i }))?;
        h.send(&Message::Heartbeat(Heartbeat { instance: i, session: 0x3000 + i }))?;
        h.send(&Message::DmaReadResp(DmaReadResp { tag: 77, status: Status::Ok, data: vec![0; 8] }))?;
    }
    // The session still works, and nothing was refused or reconfigured.
    let bar0 = BarIndex::new(0).unwrap();
    h.send(&Message::MmioRead(MmioRead { tag: 9, bar: bar0, size: AccessSize::B4, offset: 0x20 }))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    loop {
        ensure!(Instant::now() < deadline, "the read never reached the RTL; device sent {seen:?}");
        if ep.core.tick() & PEND_MMIO != 0 {
            let b = ep.core.mmio_pop().unwrap();
            ensure!(!b.write && b.addr == 0x20);
            ep.core.mmio_read_done(0, 0x42);
            break;
        }
        while let Some(m) = h.recv(Duration::ZERO)? {
            if !matches!(m, Message::Heartbeat(_)) {
                seen.push(m.opcode());
            }
        }
    }
    let m = expect(&mut h, &mut ep, "MMIO completion", |m| !matches!(m, Message::Heartbeat(_)))?;
    ensure!(m == Message::MmioReadResp(MmioReadResp { tag: 9, status: Status::Ok, data: 0x42 }), "{m:?}; before: {seen:?}");
    ensure!(seen.is_empty(), "the device answered stray frames: {seen:?}");
    let st = cosim_dpi_bridge::registry::stats();
    ensure!(st.dropped >= 1200, "dropped frames not counted: {st:?}");
    ensure!(st.sessions >= 1, "{st:?}");
    Ok(())
}

#[test]
fn heartbeats_flow_and_a_lost_host_fails_waiting_dma_reads() -> Result<()> {
    let (_d, e) = endpoint()?;
    let mut ep = start(&e)?;
    let mut h = host(&e)?;
    h.send(&init(1))?;
    expect(&mut h, &mut ep, "CONFIG", |m| matches!(m, Message::Config(_)))?;
    // The device heartbeats about every 100 ms.
    let t0 = Instant::now();
    let mut beats = 0;
    while t0.elapsed() < Duration::from_millis(550) {
        if let Some(Message::Heartbeat(_)) = h.recv(Duration::from_millis(20))? {
            beats += 1;
        }
    }
    ensure!((3..=8).contains(&beats), "{beats} heartbeats in 550 ms");
    // A DMA read the host never answers; the host goes silent: after the liveness timeout the
    // read completes with DECERR and the simulation keeps going.
    ep.core.dma_ar(1, 0x2000, 1, 3, 1);
    ensure!(tick_until(&mut ep, PEND_RBEAT, Duration::from_secs(3)), "read not failed after host loss");
    let b = ep.core.dma_r().unwrap();
    ensure!(b.resp == 3 && !b.last);
    ensure!(tick_until(&mut ep, PEND_RBEAT, Duration::from_secs(1)), "second beat of the failed read");
    ensure!(ep.core.dma_r().unwrap().last);
    Ok(())
}

#[test]
fn goodbye_from_the_host_requests_stop() -> Result<()> {
    let (_d, e) = endpoint()?;
    let mut ep = start(&e)?;
    let mut h = host(&e)?;
    h.send(&init(1))?;
    expect(&mut h, &mut ep, "CONFIG", |m| matches!(m, Message::Config(_)))?;
    h.send(&Message::Goodbye(Goodbye { reason: GoodbyeReason::Shutdown, session: 1 }))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ep.core.goodbye() {
        ep.core.tick();
        ensure!(Instant::now() < deadline, "goodbye not seen");
        std::thread::sleep(Duration::from_millis(1));
    }
    ensure!(cosim_dpi_bridge::registry::stop_requested());
    // Dropping the endpoint says goodbye to the host of the session.
    h.send(&init(2))?;
    expect(&mut h, &mut ep, "CONFIG", |m| matches!(m, Message::Config(c) if c.session == 2))?;
    drop(ep);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(Message::Goodbye(Goodbye { reason: GoodbyeReason::Shutdown, session: 2 })) = h.recv(Duration::from_millis(50))? {
            break;
        }
        ensure!(Instant::now() < deadline, "no GOODBYE from the device");
    }
    Ok(())
}
