//! Malformed input gives the matching typed error; arbitrary bytes never panic; every message
//! survives an encode/decode round trip.

use cosim_protocol::*;
use proptest::prelude::*;

fn frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![b'C', b'S', VERSION_MAJOR, op];
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn truncated_header() {
    assert_eq!(Message::decode(&[0x43, 0x53, 1]), Err(DecodeError::Truncated { needed: 8, got: 3 }));
    assert_eq!(Message::decode(&[]), Err(DecodeError::Truncated { needed: 8, got: 0 }));
}

#[test]
fn wrong_magic() {
    let mut f = Message::Reset.encode_to_vec();
    f[0] = b'X';
    assert_eq!(Message::decode(&f), Err(DecodeError::BadMagic([b'X', b'S'])));
}

#[test]
fn wrong_version_names_both() {
    let mut f = Message::Reset.encode_to_vec();
    f[2] = VERSION_MAJOR + 1;
    let e = Message::decode(&f).unwrap_err();
    assert_eq!(e, DecodeError::VersionMismatch { ours: VERSION_MAJOR, theirs: VERSION_MAJOR + 1 });
    let text = e.to_string();
    assert!(text.contains(&format!("{}", VERSION_MAJOR)) && text.contains(&format!("{}", VERSION_MAJOR + 1)), "{text}");
}

#[test]
fn unknown_opcode() {
    assert_eq!(Message::decode(&frame(0x7f, &[])), Err(DecodeError::UnknownOpcode(0x7f)));
}

#[test]
fn length_beyond_payload() {
    let mut f = Message::Msix(Msix { vector: 1 }).encode_to_vec();
    f.truncate(f.len() - 1);
    assert_eq!(Message::decode(&f), Err(DecodeError::LengthBeyondPayload { declared: 4, available: 3 }));
}

#[test]
fn trailing_bytes() {
    let mut f = Message::Reset.encode_to_vec();
    f.push(0);
    assert_eq!(Message::decode(&f), Err(DecodeError::TrailingBytes { declared: 0, extra: 1 }));
}

#[test]
fn oversize_frame() {
    let mut f = frame(0x22, &[]);
    f[4..8].copy_from_slice(&((MAX_PAYLOAD_LEN + 1) as u32).to_le_bytes());
    assert_eq!(Message::decode(&f), Err(DecodeError::Oversize { len: MAX_PAYLOAD_LEN + 1, max: MAX_PAYLOAD_LEN }));
    let big = frame(0x40, &vec![0u8; MAX_FRAME_LEN + 1]);
    assert_eq!(Message::decode(&big), Err(DecodeError::Oversize { len: MAX_FRAME_LEN + 1, max: MAX_FRAME_LEN }));
    let dma = frame(0x22, &vec![0u8; 8 + MAX_DMA_LEN + 1]);
    assert_eq!(Message::decode(&dma), Err(DecodeError::Oversize { len: MAX_DMA_LEN + 1, max: MAX_DMA_LEN }));
}

#[test]
fn wrong_fixed_payload_length() {
    assert_eq!(
        Message::decode(&frame(0x30, &[1, 0])),
        Err(DecodeError::PayloadLength { opcode: Opcode::Msix, expected: 4, got: 2 })
    );
}

#[test]
fn invalid_fields() {
    // BAR 6, size 3, status 9, empty DMA write, DMA read of 0 and of too many bytes.
    let mut p = vec![0u8; 16];
    p[4] = 6;
    p[5] = 4;
    assert!(matches!(Message::decode(&frame(0x10, &p)), Err(DecodeError::InvalidField { field: "BAR index", value: 6, .. })));
    p[4] = 0;
    p[5] = 3;
    assert!(matches!(Message::decode(&frame(0x10, &p)), Err(DecodeError::InvalidField { field: "access size", value: 3, .. })));
    let mut r = vec![0u8; 16];
    r[4] = 9;
    assert!(matches!(Message::decode(&frame(0x12, &r)), Err(DecodeError::InvalidField { field: "status", value: 9, .. })));
    assert!(matches!(Message::decode(&frame(0x22, &[0; 8])), Err(DecodeError::InvalidField { field: "length", .. })));
    let mut d = vec![0u8; 16];
    assert!(matches!(Message::decode(&frame(0x20, &d)), Err(DecodeError::InvalidField { field: "length", value: 0, .. })));
    d[4..8].copy_from_slice(&((MAX_DMA_LEN + 1) as u32).to_le_bytes());
    assert!(matches!(Message::decode(&frame(0x20, &d)), Err(DecodeError::InvalidField { field: "length", .. })));
    // A 2-byte write whose data has bits above 16.
    let mut w = vec![0u8; 20];
    w[1] = 2;
    w[12] = 0;
    w[14] = 1;
    assert!(matches!(Message::decode(&frame(0x11, &w)), Err(DecodeError::InvalidField { field: "data beyond access size", .. })));
}

fn arb_message() -> impl Strategy<Value = Message> {
    let bar = (0u8..6).prop_map(|b| BarIndex::new(b).unwrap());
    let size = prop_oneof![Just(AccessSize::B1), Just(AccessSize::B2), Just(AccessSize::B4), Just(AccessSize::B8)];
    let status = prop_oneof![Just(Status::Ok), Just(Status::UnsupportedRequest), Just(Status::CompleterAbort)];
    let bars = proptest::collection::vec((any::<u64>(), 0u8..8), 6).prop_map(|v| {
        let mut b = [BarDesc::ABSENT; 6];
        for (i, (s, f)) in v.into_iter().enumerate() {
            b[i] = BarDesc { size: s, flags: BarFlags::from_bits_truncate(f) };
        }
        b
    });
    // The design clock: absent (0, the 2.0 length) or any value (2.1).
    let rev_clock = (any::<u8>(), prop_oneof![Just(0u64), any::<u64>()]);
    let device = (any::<[u16; 5]>(), 0u32..0x100_0000, rev_clock, bars, any::<(u8, u32, u8, u32)>()).prop_map(
        |(ids, class_code, (revision, clock_hz), bars, (tb, to, pb, po))| DeviceConfig {
            vendor_id: ids[0],
            device_id: ids[1],
            subsystem_vendor_id: ids[2],
            subsystem_id: ids[3],
            class_code,
            revision,
            bars,
            msix: MsixConfig { vectors: ids[4], table_bar: tb, table_offset: to, pba_bar: pb, pba_offset: po },
            clock_hz,
        },
    );
    prop_oneof![
        (any::<u8>(), any::<u8>(), any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(major, minor, c, session, prev_session)| {
            Message::Init(Init { major, minor, caps: Caps::from_bits_retain(c), session, prev_session })
        }),
        (any::<u8>(), any::<u8>(), any::<u32>(), any::<u64>(), device).prop_map(|(major, minor, c, session, device)| {
            Message::Config(Config { major, minor, caps: Caps::from_bits_retain(c), session, device })
        }),
        (any::<u32>(), bar.clone(), size.clone(), any::<u64>())
            .prop_map(|(tag, bar, size, offset)| Message::MmioRead(MmioRead { tag, bar, size, offset })),
        (bar, size, any::<u64>(), any::<u64>()).prop_map(|(bar, size, offset, d)| {
            Message::MmioWrite(MmioWrite { bar, size, offset, data: d & size.mask() })
        }),
        (any::<u32>(), status.clone(), any::<u64>())
            .prop_map(|(tag, status, data)| Message::MmioReadResp(MmioReadResp { tag, status, data })),
        (any::<u32>(), any::<u64>(), 1u32..=MAX_DMA_LEN as u32)
            .prop_map(|(tag, a, len)| Message::DmaRead(DmaRead { tag, addr: GuestAddr(a), len })),
        (any::<u32>(), status, proptest::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(tag, status, data)| Message::DmaReadResp(DmaReadResp { tag, status, data })),
        (any::<u64>(), proptest::collection::vec(any::<u8>(), 1..300))
            .prop_map(|(a, data)| Message::DmaWrite(DmaWrite { addr: GuestAddr(a), data })),
        any::<u16>().prop_map(|vector| Message::Msix(Msix { vector })),
        proptest::collection::vec(any::<u8>(), 1..300).prop_map(Message::NicFrame),
        proptest::collection::vec(any::<u8>(), 1..300).prop_map(Message::Serial),
        Just(Message::Reset),
        (prop_oneof![Just(GoodbyeReason::Shutdown), Just(GoodbyeReason::Refused), Just(GoodbyeReason::Error)], any::<u64>())
            .prop_map(|(reason, session)| Message::Goodbye(Goodbye { reason, session })),
        (any::<u64>(), any::<u64>()).prop_map(|(instance, session)| Message::Heartbeat(Heartbeat { instance, session })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn every_message_round_trips(msg in arb_message()) {
        let bytes = msg.encode_to_vec();
        prop_assert_eq!(Message::decode(&bytes), Ok(msg));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Message::decode(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(msg in arb_message(), pos in any::<usize>(), val in any::<u8>(), cut in any::<usize>()) {
        let mut bytes = msg.encode_to_vec();
        let i = pos % bytes.len();
        bytes[i] = val;
        let _ = Message::decode(&bytes);
        bytes.truncate(cut % (bytes.len() + 1));
        let _ = Message::decode(&bytes);
    }

    #[test]
    fn valid_headers_with_random_payloads_never_panic(op in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Message::decode(&frame(op, &payload));
    }
}

#[test]
fn dma_split_covers_everything() {
    let reads = Message::split_dma_read(10, GuestAddr(0x1000), 3 * MAX_DMA_LEN as u64 + 5);
    assert_eq!(reads.len(), 4);
    assert_eq!(reads[3], DmaRead { tag: 13, addr: GuestAddr(0x1000 + 3 * MAX_DMA_LEN as u64), len: 5 });
    let data: Vec<u8> = (0..MAX_DMA_LEN + 3).map(|i| i as u8).collect();
    let writes = Message::split_dma_write(GuestAddr(0), &data);
    assert_eq!(writes.len(), 2);
    assert_eq!(writes[1].data, data[MAX_DMA_LEN..]);
    assert!(Message::split_dma_read(0, GuestAddr(0), 0).is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5_000, ..ProptestConfig::default() })]

    #[test]
    fn decode_vec_agrees_with_decode(msg in arb_message(), pos in any::<usize>(), val in any::<u8>()) {
        let mut bytes = msg.encode_to_vec();
        prop_assert_eq!(Message::decode_vec(bytes.clone()), Message::decode(&bytes));
        let i = pos % bytes.len();
        bytes[i] = val;
        prop_assert_eq!(Message::decode_vec(bytes.clone()), Message::decode(&bytes));
    }
}
