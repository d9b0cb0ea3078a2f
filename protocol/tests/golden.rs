//! Fixed expected bytes for one message of each kind: these pin the code to docs/protocol.md.

use cosim_protocol::*;

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace().filter(|t| *t != "|").map(|t| u8::from_str_radix(t, 16).unwrap()).collect()
}

fn check(msg: Message, expected: &str) {
    let bytes = hex(expected);
    assert_eq!(msg.encode_to_vec(), bytes, "encoding of {msg:?}");
    assert_eq!(Message::decode(&bytes).unwrap(), msg, "decoding of {expected}");
}

#[test]
fn init() {
    check(
        Message::Init(Init {
            major: 2,
            minor: 0,
            caps: Caps::NIC | Caps::SERIAL,
            session: 0x0102030405060708,
            prev_session: 0x1112131415161718,
        }),
        "43 53 02 01 18 00 00 00 | 02 00 00 00 | 03 00 00 00 | 08 07 06 05 04 03 02 01 | 18 17 16 15 14 13 12 11",
    );
}

#[test]
fn config() {
    let mut device = DeviceConfig {
        vendor_id: 0x1ded,
        device_id: 0xacc1,
        subsystem_vendor_id: 0x1ded,
        subsystem_id: 1,
        class_code: 0x120000,
        revision: 1,
        msix: MsixConfig { vectors: 4, table_bar: 2, table_offset: 0, pba_bar: 2, pba_offset: 0x2000 },
        ..Default::default()
    };
    device.bars[0] = BarDesc::mem32(0x1000);
    device.bars[2] = BarDesc::mem64(0x4000, true);
    check(
        Message::Config(Config { major: 1, minor: 0, caps: Caps::NIC | Caps::SERIAL | Caps::MSIX, session: 9, device }),
        "43 53 02 02 74 00 00 00 \
         01 00 00 00 | 07 00 00 00 | 09 00 00 00 00 00 00 00 \
         ed 1d c1 ac ed 1d 01 00 | 00 00 12 00 | 01 00 | 04 00 | 02 02 00 00 | 00 00 00 00 | 00 20 00 00 \
         00 10 00 00 00 00 00 00 00 00 00 00 \
         00 00 00 00 00 00 00 00 00 00 00 00 \
         00 40 00 00 00 00 00 00 06 00 00 00 \
         00 00 00 00 00 00 00 00 00 00 00 00 \
         00 00 00 00 00 00 00 00 00 00 00 00 \
         00 00 00 00 00 00 00 00 00 00 00 00",
    );
}

#[test]
fn mmio_read() {
    check(
        Message::MmioRead(MmioRead { tag: 0x11223344, bar: BarIndex::new(2).unwrap(), size: AccessSize::B4, offset: 0x1000 }),
        "43 53 02 10 10 00 00 00 | 44 33 22 11 | 02 04 00 00 | 00 10 00 00 00 00 00 00",
    );
}

#[test]
fn mmio_write() {
    check(
        Message::MmioWrite(MmioWrite { bar: BarIndex::new(0).unwrap(), size: AccessSize::B2, offset: 0x24, data: 0xbeef }),
        "43 53 02 11 14 00 00 00 | 00 02 00 00 | 24 00 00 00 00 00 00 00 | ef be 00 00 00 00 00 00",
    );
}

#[test]
fn mmio_read_resp() {
    check(
        Message::MmioReadResp(MmioReadResp { tag: 7, status: Status::CompleterAbort, data: 0xffff_ffff }),
        "43 53 02 12 10 00 00 00 | 07 00 00 00 | 02 00 00 00 | ff ff ff ff 00 00 00 00",
    );
}

#[test]
fn dma_read() {
    check(
        Message::DmaRead(DmaRead { tag: 5, addr: GuestAddr(0x1234_5678_9abc_def0), len: 0x100 }),
        "43 53 02 20 10 00 00 00 | 05 00 00 00 | 00 01 00 00 | f0 de bc 9a 78 56 34 12",
    );
}

#[test]
fn dma_read_resp() {
    check(
        Message::DmaReadResp(DmaReadResp { tag: 5, status: Status::Ok, data: vec![0xaa, 0xbb, 0xcc] }),
        "43 53 02 21 0b 00 00 00 | 05 00 00 00 | 00 00 00 00 | aa bb cc",
    );
}

#[test]
fn dma_write() {
    check(
        Message::DmaWrite(DmaWrite { addr: GuestAddr(0x1000), data: vec![1, 2, 3, 4, 5] }),
        "43 53 02 22 0d 00 00 00 | 00 10 00 00 00 00 00 00 | 01 02 03 04 05",
    );
}

#[test]
fn msix() {
    check(Message::Msix(Msix { vector: 3 }), "43 53 02 30 04 00 00 00 | 03 00 00 00");
}

#[test]
fn nic_frame() {
    check(Message::NicFrame(vec![0xde, 0xad]), "43 53 02 40 02 00 00 00 | de ad");
}

#[test]
fn serial() {
    check(Message::Serial(b"hi".to_vec()), "43 53 02 41 02 00 00 00 | 68 69");
}

#[test]
fn reset() {
    check(Message::Reset, "43 53 02 50 00 00 00 00");
}

#[test]
fn goodbye() {
    check(
        Message::Goodbye(Goodbye { reason: GoodbyeReason::Refused, session: 0x0102030405060708 }),
        "43 53 02 51 10 00 00 00 | 01 00 00 00 00 00 00 00 | 08 07 06 05 04 03 02 01",
    );
}

#[test]
fn heartbeat() {
    check(
        Message::Heartbeat(Heartbeat { instance: 0xdead_beef, session: 0x0102030405060708 }),
        "43 53 02 52 10 00 00 00 | ef be ad de 00 00 00 00 | 08 07 06 05 04 03 02 01",
    );
}

#[test]
fn shm_capability_bit_and_session_frames() {
    // INIT with NIC and SHM: capability bits 0x09 at payload bytes 4..8.
    let init = Message::Init(Init { major: 2, minor: 0, caps: Caps::NIC | Caps::SHM, session: 0x0102030405060708, prev_session: 0 });
    let mut f = init.encode_to_vec();
    assert_eq!(f[12..16], [0x09, 0, 0, 0]);
    let p = SessionFrame::peek(&f).unwrap();
    assert_eq!((p.opcode, p.session, p.caps), (Opcode::Init, 0x0102030405060708, Caps::NIC | Caps::SHM));
    SessionFrame::set_cap(&mut f, Caps::SHM, false);
    assert_eq!(Message::decode(&f).unwrap(), Message::Init(Init { major: 2, minor: 0, caps: Caps::NIC, session: 0x0102030405060708, prev_session: 0 }));
    let hb = Message::Heartbeat(Heartbeat { instance: 5, session: 77 }).encode_to_vec();
    assert_eq!(SessionFrame::peek(&hb), Some(SessionFrame { opcode: Opcode::Heartbeat, session: 77, caps: Caps::empty() }));
    let mut bye = Message::Goodbye(Goodbye { reason: GoodbyeReason::Shutdown, session: 78 }).encode_to_vec();
    let before = bye.clone();
    SessionFrame::set_cap(&mut bye, Caps::SHM, true);
    assert_eq!(bye, before, "only INIT and CONFIG carry capability bits");
    assert_eq!(SessionFrame::peek(&bye).unwrap().session, 78);
    let read = Message::MmioRead(MmioRead { tag: 1, bar: BarIndex::new(0).unwrap(), size: AccessSize::B4, offset: 0 });
    assert_eq!(SessionFrame::peek(&read.encode_to_vec()), None);
    assert_eq!(SessionFrame::peek(&hb[..20]), None, "truncated");
    let mut other_version = hb.clone();
    other_version[2] = 1;
    assert_eq!(SessionFrame::peek(&other_version), None);
}

#[test]
fn config_with_design_clock() {
    // Protocol 2.1: the design clock (100 MHz) after the six BAR descriptors; 124 bytes.
    let mut device = DeviceConfig {
        vendor_id: 0x1ded,
        device_id: 0xacc1,
        class_code: 0x120000,
        revision: 1,
        clock_hz: 100_000_000,
        ..Default::default()
    };
    device.bars[0] = BarDesc::mem32(0x1000);
    check(
        Message::Config(Config { major: 2, minor: 1, caps: Caps::MSIX, session: 9, device }),
        "43 53 02 02 7c 00 00 00 \
         02 01 00 00 | 04 00 00 00 | 09 00 00 00 00 00 00 00 \
         ed 1d c1 ac 00 00 00 00 | 00 00 12 00 | 01 00 | 00 00 | 00 00 00 00 | 00 00 00 00 | 00 00 00 00 \
         00 10 00 00 00 00 00 00 00 00 00 00 \
         00 00 00 00 00 00 00 00 00 00 00 00 \
         00 00 00 00 00 00 00 00 00 00 00 00 \
         00 00 00 00 00 00 00 00 00 00 00 00 \
         00 00 00 00 00 00 00 00 00 00 00 00 \
         00 00 00 00 00 00 00 00 00 00 00 00 \
         00 e1 f5 05 00 00 00 00",
    );
}
