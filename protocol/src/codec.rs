//! Byte layout of every message (see `docs/protocol.md`). All integers are little-endian.
//!
//! Frame = 8-byte header + payload:
//! `[0..2]` magic `"CS"`, `[2]` protocol major, `[3]` opcode, `[4..8]` payload length (u32).

use crate::config::{BarDesc, BarFlags, DeviceConfig, MsixConfig, NUM_BARS};
use crate::*;

/// Frame magic, bytes 0 and 1 of every frame.
pub const MAGIC: [u8; 2] = *b"CS";
/// Length of the frame header.
pub const HEADER_LEN: usize = 8;

const INIT_LEN: usize = 24;
const CONFIG_LEN: usize = 44 + NUM_BARS * 12;
/// CONFIG with the design clock appended (protocol 2.1, sent only to hosts of minor 1 or later).
const CONFIG_CLOCK_LEN: usize = CONFIG_LEN + 8;
const MMIO_READ_LEN: usize = 16;
const MMIO_WRITE_LEN: usize = 20;
const MMIO_READ_RESP_LEN: usize = 16;
const DMA_READ_LEN: usize = 16;
const DMA_READ_RESP_HDR: usize = 8;
const DMA_WRITE_HDR: usize = 8;
const MSIX_LEN: usize = 4;
const GOODBYE_LEN: usize = 16;
const HEARTBEAT_LEN: usize = 16;

/// Why a byte string is not a valid message. Decoding never panics; every failure is one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than a header (or than a fixed payload needs).
    #[error("truncated frame: need {needed} bytes, got {got}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// The first two bytes are not `"CS"`.
    #[error("bad magic {0:02x?} (expected \"CS\" = [43, 53])")]
    BadMagic([u8; 2]),
    /// The peer speaks another protocol major version.
    #[error("protocol version mismatch: we speak {ours}.x, the peer sent {theirs}.x")]
    VersionMismatch {
        /// Our major version.
        ours: u8,
        /// The peer's major version.
        theirs: u8,
    },
    /// The opcode byte names no message.
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    /// The header declares a longer payload than the frame holds.
    #[error("payload length {declared} in header is beyond the {available} bytes that follow it")]
    LengthBeyondPayload {
        /// Length from the header.
        declared: usize,
        /// Bytes after the header.
        available: usize,
    },
    /// Bytes follow the declared payload.
    #[error("{extra} trailing bytes after a payload of {declared} bytes")]
    TrailingBytes {
        /// Length from the header.
        declared: usize,
        /// Bytes beyond it.
        extra: usize,
    },
    /// The declared payload is larger than any message may be.
    #[error("oversize frame: payload of {len} bytes exceeds the maximum of {max}")]
    Oversize {
        /// Declared (or actual) payload length.
        len: usize,
        /// [`MAX_PAYLOAD_LEN`] or the per-message maximum.
        max: usize,
    },
    /// A fixed-size message has a payload of the wrong size.
    #[error("{opcode:?} payload must be {expected} bytes, got {got}")]
    PayloadLength {
        /// The message.
        opcode: Opcode,
        /// Its payload size.
        expected: usize,
        /// What arrived.
        got: usize,
    },
    /// A field holds a value outside its range.
    #[error("{opcode:?}: invalid {field} {value:#x}")]
    InvalidField {
        /// The message.
        opcode: Opcode,
        /// The field name.
        field: &'static str,
        /// The offending value.
        value: u64,
    },
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

// Callers check the payload length before reading, so these reads stay in bounds; `get`
// makes an out-of-bounds read return zero instead of panicking, should that check ever be wrong.
impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(s) = self.buf.get(self.pos..self.pos + N) {
            out.copy_from_slice(s);
        }
        self.pos += N;
        out
    }
    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.bytes())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }
    fn skip(&mut self, n: usize) {
        self.pos += n;
    }
    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }
}

fn fixed(opcode: Opcode, payload: &[u8], expected: usize) -> Result<(), DecodeError> {
    if payload.len() != expected {
        return Err(DecodeError::PayloadLength { opcode, expected, got: payload.len() });
    }
    Ok(())
}

fn at_least(opcode: Opcode, payload: &[u8], expected: usize) -> Result<(), DecodeError> {
    if payload.len() < expected {
        return Err(DecodeError::PayloadLength { opcode, expected, got: payload.len() });
    }
    Ok(())
}

fn bounded(opcode: Opcode, field: &'static str, len: usize, max: usize) -> Result<(), DecodeError> {
    if len == 0 || len > max {
        return Err(DecodeError::InvalidField { opcode, field, value: len as u64 });
    }
    Ok(())
}

fn bar(opcode: Opcode, v: u8) -> Result<BarIndex, DecodeError> {
    BarIndex::new(v).ok_or(DecodeError::InvalidField { opcode, field: "BAR index", value: v.into() })
}

fn size(opcode: Opcode, v: u8) -> Result<AccessSize, DecodeError> {
    AccessSize::try_from(v).map_err(|v| DecodeError::InvalidField { opcode, field: "access size", value: v.into() })
}

fn status(opcode: Opcode, v: u8) -> Result<Status, DecodeError> {
    Status::try_from(v).map_err(|v| DecodeError::InvalidField { opcode, field: "status", value: v.into() })
}

impl Message {
    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&MAGIC);
        out.push(VERSION_MAJOR);
        out.push(self.opcode() as u8);
        out.extend_from_slice(&[0; 4]); // length, patched below
        match self {
            Message::Init(m) => {
                out.extend_from_slice(&[m.major, m.minor, 0, 0]);
                out.extend_from_slice(&m.caps.bits().to_le_bytes());
                out.extend_from_slice(&m.session.to_le_bytes());
                out.extend_from_slice(&m.prev_session.to_le_bytes());
            }
            Message::Config(m) => {
                out.extend_from_slice(&[m.major, m.minor, 0, 0]);
                out.extend_from_slice(&m.caps.bits().to_le_bytes());
                out.extend_from_slice(&m.session.to_le_bytes());
                let d = &m.device;
                for v in [d.vendor_id, d.device_id, d.subsystem_vendor_id, d.subsystem_id] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out.extend_from_slice(&d.class_code.to_le_bytes());
                out.extend_from_slice(&[d.revision, 0]);
                out.extend_from_slice(&d.msix.vectors.to_le_bytes());
                out.extend_from_slice(&[d.msix.table_bar, d.msix.pba_bar, 0, 0]);
                out.extend_from_slice(&d.msix.table_offset.to_le_bytes());
                out.extend_from_slice(&d.msix.pba_offset.to_le_bytes());
                for b in &d.bars {
                    out.extend_from_slice(&b.size.to_le_bytes());
                    out.extend_from_slice(&[b.flags.bits(), 0, 0, 0]);
                }
                if d.clock_hz != 0 {
                    out.extend_from_slice(&d.clock_hz.to_le_bytes());
                }
            }
            Message::MmioRead(m) => {
                out.extend_from_slice(&m.tag.to_le_bytes());
                out.extend_from_slice(&[m.bar.get(), m.size as u8, 0, 0]);
                out.extend_from_slice(&m.offset.to_le_bytes());
            }
            Message::MmioWrite(m) => {
                out.extend_from_slice(&[m.bar.get(), m.size as u8, 0, 0]);
                out.extend_from_slice(&m.offset.to_le_bytes());
                out.extend_from_slice(&m.data.to_le_bytes());
            }
            Message::MmioReadResp(m) => {
                out.extend_from_slice(&m.tag.to_le_bytes());
                out.extend_from_slice(&[m.status as u8, 0, 0, 0]);
                out.extend_from_slice(&m.data.to_le_bytes());
            }
            Message::DmaRead(m) => {
                out.extend_from_slice(&m.tag.to_le_bytes());
                out.extend_from_slice(&m.len.to_le_bytes());
                out.extend_from_slice(&m.addr.0.to_le_bytes());
            }
            Message::DmaReadResp(m) => {
                out.extend_from_slice(&m.tag.to_le_bytes());
                out.extend_from_slice(&[m.status as u8, 0, 0, 0]);
                out.extend_from_slice(&m.data);
            }
            Message::DmaWrite(m) => {
                out.extend_from_slice(&m.addr.0.to_le_bytes());
                out.extend_from_slice(&m.data);
            }
            Message::Msix(m) => {
                out.extend_from_slice(&m.vector.to_le_bytes());
                out.extend_from_slice(&[0, 0]);
            }
            Message::NicFrame(d) | Message::Serial(d) => out.extend_from_slice(d),
            Message::Reset => {}
            Message::Goodbye(g) => {
                out.extend_from_slice(&[g.reason as u8, 0, 0, 0, 0, 0, 0, 0]);
                out.extend_from_slice(&g.session.to_le_bytes());
            }
            Message::Heartbeat(h) => {
                out.extend_from_slice(&h.instance.to_le_bytes());
                out.extend_from_slice(&h.session.to_le_bytes());
            }
        }
        let len = (out.len() - start - HEADER_LEN) as u32;
        out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    }

    /// Like [`Message::decode`], but reuses the frame's buffer for bulk payloads (DMA data,
    /// frames, serial bytes) instead of copying them.
    pub fn decode_vec(mut frame: Vec<u8>) -> Result<Message, DecodeError> {
        let bulk_header = match frame.get(3).copied().and_then(|op| Opcode::try_from(op).ok()) {
            Some(Opcode::DmaWrite) => HEADER_LEN + DMA_WRITE_HDR,
            Some(Opcode::DmaReadResp) => HEADER_LEN + DMA_READ_RESP_HDR,
            Some(Opcode::NicFrame | Opcode::Serial) => HEADER_LEN,
            _ => return Self::decode(&frame),
        };
        // Validate without copying the bulk part, then move the bulk bytes into the message.
        let mut msg = Self::decode_with(&frame, false)?;
        let data = match &mut msg {
            Message::DmaWrite(DmaWrite { data, .. })
            | Message::DmaReadResp(DmaReadResp { data, .. })
            | Message::NicFrame(data)
            | Message::Serial(data) => data,
            _ => return Ok(msg),
        };
        frame.drain(..bulk_header);
        *data = frame;
        Ok(msg)
    }

    /// Decodes exactly one frame. Never panics.
    pub fn decode(frame: &[u8]) -> Result<Message, DecodeError> {
        Self::decode_with(frame, true)
    }

    /// `copy == false` leaves bulk payloads empty (the caller moves them in).
    fn decode_with(frame: &[u8], copy: bool) -> Result<Message, DecodeError> {
        let bulk = |b: &[u8]| if copy { b.to_vec() } else { Vec::new() };
        if frame.len() < HEADER_LEN {
            return Err(DecodeError::Truncated { needed: HEADER_LEN, got: frame.len() });
        }
        let mut h = Reader::new(frame);
        let magic = h.bytes::<2>();
        if magic != MAGIC {
            return Err(DecodeError::BadMagic(magic));
        }
        let major = h.u8();
        if major != VERSION_MAJOR {
            return Err(DecodeError::VersionMismatch { ours: VERSION_MAJOR, theirs: major });
        }
        let op_byte = h.u8();
        let declared = h.u32() as usize;
        if declared > MAX_PAYLOAD_LEN {
            return Err(DecodeError::Oversize { len: declared, max: MAX_PAYLOAD_LEN });
        }
        let available = frame.len() - HEADER_LEN;
        if declared > available {
            return Err(DecodeError::LengthBeyondPayload { declared, available });
        }
        if declared < available {
            return Err(DecodeError::TrailingBytes { declared, extra: available - declared });
        }
        let op = Opcode::try_from(op_byte).map_err(DecodeError::UnknownOpcode)?;
        let payload = &frame[HEADER_LEN..];
        let mut r = Reader::new(payload);
        Ok(match op {
            Opcode::Init => {
                fixed(op, payload, INIT_LEN)?;
                let (major, minor) = (r.u8(), r.u8());
                r.skip(2);
                let caps = Caps::from_bits_retain(r.u32());
                let session = r.u64();
                Message::Init(Init { major, minor, caps, session, prev_session: r.u64() })
            }
            Opcode::Config => {
                if payload.len() != CONFIG_CLOCK_LEN {
                    fixed(op, payload, CONFIG_LEN)?;
                }
                let (major, minor) = (r.u8(), r.u8());
                r.skip(2);
                let caps = Caps::from_bits_retain(r.u32());
                let session = r.u64();
                let mut d = DeviceConfig {
                    vendor_id: r.u16(),
                    device_id: r.u16(),
                    subsystem_vendor_id: r.u16(),
                    subsystem_id: r.u16(),
                    class_code: r.u32(),
                    revision: r.u8(),
                    ..Default::default()
                };
                r.skip(1);
                let vectors = r.u16();
                let (table_bar, pba_bar) = (r.u8(), r.u8());
                r.skip(2);
                d.msix = MsixConfig {
                    vectors,
                    table_bar,
                    table_offset: r.u32(),
                    pba_bar,
                    pba_offset: r.u32(),
                };
                for b in d.bars.iter_mut() {
                    let size = r.u64();
                    let flags = r.u8();
                    r.skip(3);
                    *b = BarDesc {
                        size,
                        flags: BarFlags::from_bits(flags).ok_or(DecodeError::InvalidField {
                            opcode: op,
                            field: "BAR flags",
                            value: flags.into(),
                        })?,
                    };
                }
                if payload.len() == CONFIG_CLOCK_LEN {
                    d.clock_hz = r.u64();
                }
                Message::Config(Config { major, minor, caps, session, device: d })
            }
            Opcode::MmioRead => {
                fixed(op, payload, MMIO_READ_LEN)?;
                let tag = r.u32();
                let b = bar(op, r.u8())?;
                let s = size(op, r.u8())?;
                r.skip(2);
                Message::MmioRead(MmioRead { tag, bar: b, size: s, offset: r.u64() })
            }
            Opcode::MmioWrite => {
                fixed(op, payload, MMIO_WRITE_LEN)?;
                let b = bar(op, r.u8())?;
                let s = size(op, r.u8())?;
                r.skip(2);
                let offset = r.u64();
                let data = r.u64();
                if data & !s.mask() != 0 {
                    return Err(DecodeError::InvalidField { opcode: op, field: "data beyond access size", value: data });
                }
                Message::MmioWrite(MmioWrite { bar: b, size: s, offset, data })
            }
            Opcode::MmioReadResp => {
                fixed(op, payload, MMIO_READ_RESP_LEN)?;
                let tag = r.u32();
                let st = status(op, r.u8())?;
                r.skip(3);
                Message::MmioReadResp(MmioReadResp { tag, status: st, data: r.u64() })
            }
            Opcode::DmaRead => {
                fixed(op, payload, DMA_READ_LEN)?;
                let tag = r.u32();
                let len = r.u32();
                bounded(op, "length", len as usize, MAX_DMA_LEN)?;
                Message::DmaRead(DmaRead { tag, len, addr: GuestAddr(r.u64()) })
            }
            Opcode::DmaReadResp => {
                at_least(op, payload, DMA_READ_RESP_HDR)?;
                let tag = r.u32();
                let st = status(op, r.u8())?;
                r.skip(3);
                let data = r.rest();
                if data.len() > MAX_DMA_LEN {
                    return Err(DecodeError::Oversize { len: data.len(), max: MAX_DMA_LEN });
                }
                Message::DmaReadResp(DmaReadResp { tag, status: st, data: bulk(data) })
            }
            Opcode::DmaWrite => {
                at_least(op, payload, DMA_WRITE_HDR)?;
                let addr = GuestAddr(r.u64());
                let data = r.rest();
                if data.len() > MAX_DMA_LEN {
                    return Err(DecodeError::Oversize { len: data.len(), max: MAX_DMA_LEN });
                }
                bounded(op, "length", data.len(), MAX_DMA_LEN)?;
                Message::DmaWrite(DmaWrite { addr, data: bulk(data) })
            }
            Opcode::Msix => {
                fixed(op, payload, MSIX_LEN)?;
                Message::Msix(Msix { vector: r.u16() })
            }
            Opcode::NicFrame => {
                if payload.len() > MAX_FRAME_LEN {
                    return Err(DecodeError::Oversize { len: payload.len(), max: MAX_FRAME_LEN });
                }
                bounded(op, "frame length", payload.len(), MAX_FRAME_LEN)?;
                Message::NicFrame(bulk(payload))
            }
            Opcode::Serial => {
                if payload.len() > MAX_SERIAL_LEN {
                    return Err(DecodeError::Oversize { len: payload.len(), max: MAX_SERIAL_LEN });
                }
                bounded(op, "serial chunk length", payload.len(), MAX_SERIAL_LEN)?;
                Message::Serial(bulk(payload))
            }
            Opcode::Reset => {
                fixed(op, payload, 0)?;
                Message::Reset
            }
            Opcode::Goodbye => {
                fixed(op, payload, GOODBYE_LEN)?;
                let v = r.u8();
                let reason = GoodbyeReason::try_from(v).map_err(|v| DecodeError::InvalidField {
                    opcode: op,
                    field: "goodbye reason",
                    value: v.into(),
                })?;
                r.skip(7);
                Message::Goodbye(Goodbye { reason, session: r.u64() })
            }
            Opcode::Heartbeat => {
                fixed(op, payload, HEARTBEAT_LEN)?;
                let instance = r.u64();
                Message::Heartbeat(Heartbeat { instance, session: r.u64() })
            }
        })
    }
}
