//! The cosim wire protocol: message types and a pure encoder/decoder.
//!
//! Two peers speak it. The **host side** is QEMU's `accelerator-pcie` device (or the Rust host
//! model that stands in for it in tests); it owns guest memory, starts MMIO requests, device
//! resets and the INIT handshake. The **device side** is the HDL simulation (the DPI bridge under
//! Verilator); it owns simulated time, answers INIT with the device's PCI configuration, completes
//! MMIO reads and starts DMA and MSI-X.
//!
//! This crate does no I/O and keeps no state beyond the [`liveness::Liveness`] helper (which is
//! given the time by its caller). `docs/protocol.md` describes every byte; the fixed-bytes tests in
//! `tests/golden.rs` pin the code to it. [`Message::decode`] returns `Ok` or a typed
//! [`DecodeError`] for any input and never panics. No `unsafe` anywhere (forbidden).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod codec;
mod config;
pub mod liveness;
pub mod session;

pub use codec::{DecodeError, HEADER_LEN, MAGIC};
pub use config::{
    BarDesc, BarFlags, ConfigError, DeviceConfig, MsixConfig, DEFAULT_CLOCK_HZ, DEFAULT_DMA_READ_LATENCY, NUM_BARS,
};

/// Protocol major version. Peers with different majors refuse each other.
///
/// 2: INIT carries the previous session number, HEARTBEAT and GOODBYE carry the session number,
/// so a peer can tell its session's messages from stray ones (docs/protocol.md, "Session rules").
pub const VERSION_MAJOR: u8 = 2;
/// Protocol minor version. Additions that an older peer can ignore bump the minor.
///
/// 1: CONFIG may end with the design's clock in Hz, sent only to hosts whose INIT says minor 1 or
/// later (a 2.0 host decodes CONFIG at its fixed 2.0 length).
pub const VERSION_MINOR: u8 = 1;

/// Largest DMA transfer carried by one [`DmaRead`] or [`DmaWrite`]; larger ones are split.
pub const MAX_DMA_LEN: usize = 64 * 1024;
/// Largest Ethernet frame carried by [`Message::NicFrame`] (jumbo frame).
pub const MAX_FRAME_LEN: usize = 9216;
/// Largest serial chunk carried by one [`Message::Serial`].
pub const MAX_SERIAL_LEN: usize = 4096;
/// Largest payload of any message; a frame with a longer payload is rejected as oversize.
pub const MAX_PAYLOAD_LEN: usize = MAX_DMA_LEN + 16;

/// Interval at which each side sends [`Message::Heartbeat`].
pub const HEARTBEAT_INTERVAL_MS: u64 = 100;
/// A peer from which nothing arrived for this long is considered dead.
pub const LIVENESS_TIMEOUT_MS: u64 = 1000;

bitflags::bitflags! {
    /// Capability bits exchanged in [`Init`] and [`Config`]. Unknown bits are ignored.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Caps: u32 {
        /// The peer sends and receives [`Message::NicFrame`].
        const NIC = 1 << 0;
        /// The peer sends and receives [`Message::Serial`].
        const SERIAL = 1 << 1;
        /// The peer may issue MSI-X interrupts.
        const MSIX = 1 << 2;
        /// Shared-memory link (docs/protocol.md, "Shared-memory link"). Set by the transport,
        /// never by a session engine: in INIT, the host created the mapping of this INIT's
        /// session; in CONFIG, the device attached to it and sends everything after this CONFIG
        /// through it.
        const SHM = 1 << 3;
    }
}

/// What the shared-memory negotiation needs of a session frame, read from its fixed header
/// without decoding it: INIT, CONFIG, HEARTBEAT and GOODBYE all carry a session number at
/// payload bytes 8..16, INIT and CONFIG their capability bits at payload bytes 4..8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionFrame {
    /// INIT, CONFIG, HEARTBEAT or GOODBYE.
    pub opcode: Opcode,
    /// The session number the frame carries.
    pub session: u64,
    /// Capability bits (INIT and CONFIG only; empty otherwise).
    pub caps: Caps,
}

/// Byte offset of INIT's and CONFIG's capability bits in a frame.
const FRAME_CAPS: usize = HEADER_LEN + 4;
/// Byte offset of the session number of INIT, CONFIG, HEARTBEAT and GOODBYE in a frame.
const FRAME_SESSION: usize = HEADER_LEN + 8;

impl SessionFrame {
    /// `Some` for a frame of our version whose opcode is INIT, CONFIG, HEARTBEAT or GOODBYE and
    /// that is long enough to hold the session number; `None` for anything else (which the
    /// decoder judges as usual).
    pub fn peek(frame: &[u8]) -> Option<Self> {
        if frame.len() < FRAME_SESSION + 8 || frame[..2] != MAGIC || frame[2] != VERSION_MAJOR {
            return None;
        }
        let opcode = match frame[3] {
            0x01 => Opcode::Init,
            0x02 => Opcode::Config,
            0x51 => Opcode::Goodbye,
            0x52 => Opcode::Heartbeat,
            _ => return None,
        };
        let session = u64::from_le_bytes(frame[FRAME_SESSION..FRAME_SESSION + 8].try_into().ok()?);
        let caps = match opcode {
            Opcode::Init | Opcode::Config => {
                Caps::from_bits_retain(u32::from_le_bytes(frame[FRAME_CAPS..FRAME_CAPS + 4].try_into().ok()?))
            }
            _ => Caps::empty(),
        };
        Some(Self { opcode, session, caps })
    }

    /// Sets or clears `bit` in the capability bits of an INIT or CONFIG frame (what
    /// [`SessionFrame::peek`] accepted); other frames are left alone.
    pub fn set_cap(frame: &mut [u8], bit: Caps, on: bool) {
        if !matches!(Self::peek(frame), Some(f) if matches!(f.opcode, Opcode::Init | Opcode::Config)) {
            return;
        }
        let mut caps = Caps::from_bits_retain(u32::from_le_bytes(frame[FRAME_CAPS..FRAME_CAPS + 4].try_into().expect("4 bytes")));
        caps.set(bit, on);
        frame[FRAME_CAPS..FRAME_CAPS + 4].copy_from_slice(&caps.bits().to_le_bytes());
    }
}

/// A BAR number, 0 to 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BarIndex(u8);

impl BarIndex {
    /// Returns the BAR index if `index < 6`.
    pub const fn new(index: u8) -> Option<Self> {
        if (index as usize) < NUM_BARS {
            Some(Self(index))
        } else {
            None
        }
    }
    /// The BAR number.
    pub const fn get(self) -> u8 {
        self.0
    }
}

/// A guest physical (bus) address as seen by the device for DMA.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct GuestAddr(pub u64);

impl std::fmt::Debug for GuestAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GuestAddr({:#x})", self.0)
    }
}

impl std::fmt::Display for GuestAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Width of an MMIO access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AccessSize {
    /// 1 byte.
    B1 = 1,
    /// 2 bytes.
    B2 = 2,
    /// 4 bytes.
    B4 = 4,
    /// 8 bytes.
    B8 = 8,
}

impl AccessSize {
    /// Size in bytes.
    pub const fn bytes(self) -> usize {
        self as usize
    }
    /// Mask of the data bits this access carries.
    pub const fn mask(self) -> u64 {
        match self {
            Self::B8 => u64::MAX,
            s => (1u64 << (8 * s as u32)) - 1,
        }
    }
}

impl TryFrom<u8> for AccessSize {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            1 => Ok(Self::B1),
            2 => Ok(Self::B2),
            4 => Ok(Self::B4),
            8 => Ok(Self::B8),
            other => Err(other),
        }
    }
}

/// Completion status of an MMIO read or a DMA read (PCIe completion status names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// Successful completion.
    Ok = 0,
    /// Unsupported request: nothing decodes this address (or bus mastering is off).
    UnsupportedRequest = 1,
    /// Completer abort: the target decoded the address but failed the access.
    CompleterAbort = 2,
}

impl TryFrom<u8> for Status {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            0 => Ok(Self::Ok),
            1 => Ok(Self::UnsupportedRequest),
            2 => Ok(Self::CompleterAbort),
            other => Err(other),
        }
    }
}

/// Host -> device: start of a session. The device answers with [`Config`], every time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Init {
    /// Host's protocol major version.
    pub major: u8,
    /// Host's protocol minor version.
    pub minor: u8,
    /// Host's capabilities.
    pub caps: Caps,
    /// Host-chosen session number, echoed in [`Config`]; identifies the session. Never 0.
    pub session: u64,
    /// The session this host had with the device before (0: none). A device with a live
    /// session accepts a new INIT only from that session's host (docs/protocol.md, rule 1).
    pub prev_session: u64,
}

/// Device -> host: answer to [`Init`] with the device's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Device's protocol major version.
    pub major: u8,
    /// Device's protocol minor version.
    pub minor: u8,
    /// Device's capabilities.
    pub caps: Caps,
    /// The session number from the [`Init`] this answers.
    pub session: u64,
    /// PCI identity, BARs and MSI-X layout.
    pub device: DeviceConfig,
}

/// Host -> device: read `size` bytes at `offset` of BAR `bar`. Answered by [`MmioReadResp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioRead {
    /// Matches the response; unique among outstanding reads.
    pub tag: u32,
    /// Target BAR.
    pub bar: BarIndex,
    /// Access width.
    pub size: AccessSize,
    /// Byte offset into the BAR.
    pub offset: u64,
}

/// Host -> device: posted write of `size` bytes (low bytes of `data`) at `offset` of BAR `bar`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioWrite {
    /// Target BAR.
    pub bar: BarIndex,
    /// Access width.
    pub size: AccessSize,
    /// Byte offset into the BAR.
    pub offset: u64,
    /// Data, little-endian, in the low `size` bytes.
    pub data: u64,
}

/// Device -> host: completion of an [`MmioRead`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioReadResp {
    /// Tag of the read.
    pub tag: u32,
    /// Completion status; `data` is meaningful only for [`Status::Ok`].
    pub status: Status,
    /// Read data in the low `size` bytes.
    pub data: u64,
}

/// Device -> host: read `len` bytes of guest memory at `addr`. Answered by [`DmaReadResp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaRead {
    /// Matches the response; unique among outstanding DMA reads.
    pub tag: u32,
    /// Guest (bus) address.
    pub addr: GuestAddr,
    /// Length in bytes, 1 to [`MAX_DMA_LEN`].
    pub len: u32,
}

/// Host -> device: completion of a [`DmaRead`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmaReadResp {
    /// Tag of the read.
    pub tag: u32,
    /// Completion status; `data` is empty unless [`Status::Ok`].
    pub status: Status,
    /// The bytes read.
    pub data: Vec<u8>,
}

/// Device -> host: posted write of `data` to guest memory at `addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmaWrite {
    /// Guest (bus) address.
    pub addr: GuestAddr,
    /// 1 to [`MAX_DMA_LEN`] bytes.
    pub data: Vec<u8>,
}

/// Device -> host: signal MSI-X vector `vector`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msix {
    /// Vector number, below the configured vector count.
    pub vector: u16,
}

/// Either side: "I am alive". `instance` is random per process start, so a restart is seen
/// even when it is faster than the liveness timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Sender's instance number (random at process start).
    pub instance: u64,
    /// The session the sender is in (0: none).
    pub session: u64,
}

/// Either side: the sender is leaving (or refusing). Only a GOODBYE carrying the current
/// session number ends a session; one with session 0 refuses a peer that has no session yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Goodbye {
    /// Why.
    pub reason: GoodbyeReason,
    /// The session it ends (0: none).
    pub session: u64,
}

/// Why a side says goodbye.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum GoodbyeReason {
    /// Orderly shutdown (QEMU quit, simulation finished).
    Shutdown = 0,
    /// The peer refused us (for example a protocol version mismatch).
    Refused = 1,
    /// The sender hit an error it cannot recover from.
    Error = 2,
}

impl TryFrom<u8> for GoodbyeReason {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            0 => Ok(Self::Shutdown),
            1 => Ok(Self::Refused),
            2 => Ok(Self::Error),
            other => Err(other),
        }
    }
}

/// Operation codes, byte 3 of every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// [`Message::Init`]
    Init = 0x01,
    /// [`Message::Config`]
    Config = 0x02,
    /// [`Message::MmioRead`]
    MmioRead = 0x10,
    /// [`Message::MmioWrite`]
    MmioWrite = 0x11,
    /// [`Message::MmioReadResp`]
    MmioReadResp = 0x12,
    /// [`Message::DmaRead`]
    DmaRead = 0x20,
    /// [`Message::DmaReadResp`]
    DmaReadResp = 0x21,
    /// [`Message::DmaWrite`]
    DmaWrite = 0x22,
    /// [`Message::Msix`]
    Msix = 0x30,
    /// [`Message::NicFrame`]
    NicFrame = 0x40,
    /// [`Message::Serial`]
    Serial = 0x41,
    /// [`Message::Reset`]
    Reset = 0x50,
    /// [`Message::Goodbye`]
    Goodbye = 0x51,
    /// [`Message::Heartbeat`]
    Heartbeat = 0x52,
}

impl TryFrom<u8> for Opcode {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        Ok(match v {
            0x01 => Self::Init,
            0x02 => Self::Config,
            0x10 => Self::MmioRead,
            0x11 => Self::MmioWrite,
            0x12 => Self::MmioReadResp,
            0x20 => Self::DmaRead,
            0x21 => Self::DmaReadResp,
            0x22 => Self::DmaWrite,
            0x30 => Self::Msix,
            0x40 => Self::NicFrame,
            0x41 => Self::Serial,
            0x50 => Self::Reset,
            0x51 => Self::Goodbye,
            0x52 => Self::Heartbeat,
            other => return Err(other),
        })
    }
}

/// One protocol message. The direction each travels is given in its documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Host -> device: session start.
    Init(Init),
    /// Device -> host: answer to INIT.
    Config(Config),
    /// Host -> device: MMIO read request.
    MmioRead(MmioRead),
    /// Host -> device: posted MMIO write.
    MmioWrite(MmioWrite),
    /// Device -> host: MMIO read completion.
    MmioReadResp(MmioReadResp),
    /// Device -> host: DMA read request.
    DmaRead(DmaRead),
    /// Host -> device: DMA read completion.
    DmaReadResp(DmaReadResp),
    /// Device -> host: posted DMA write.
    DmaWrite(DmaWrite),
    /// Device -> host: MSI-X interrupt.
    Msix(Msix),
    /// Either way: one Ethernet frame (without FCS), up to [`MAX_FRAME_LEN`] bytes.
    NicFrame(Vec<u8>),
    /// Either way: serial (UART) bytes, up to [`MAX_SERIAL_LEN`] per message.
    Serial(Vec<u8>),
    /// Host -> device: device reset (PCI reset / system reset).
    Reset,
    /// Either way: the sender is leaving.
    Goodbye(Goodbye),
    /// Either way: liveness.
    Heartbeat(Heartbeat),
}

impl Message {
    /// The opcode this message is encoded with.
    pub fn opcode(&self) -> Opcode {
        match self {
            Self::Init(_) => Opcode::Init,
            Self::Config(_) => Opcode::Config,
            Self::MmioRead(_) => Opcode::MmioRead,
            Self::MmioWrite(_) => Opcode::MmioWrite,
            Self::MmioReadResp(_) => Opcode::MmioReadResp,
            Self::DmaRead(_) => Opcode::DmaRead,
            Self::DmaReadResp(_) => Opcode::DmaReadResp,
            Self::DmaWrite(_) => Opcode::DmaWrite,
            Self::Msix(_) => Opcode::Msix,
            Self::NicFrame(_) => Opcode::NicFrame,
            Self::Serial(_) => Opcode::Serial,
            Self::Reset => Opcode::Reset,
            Self::Goodbye(_) => Opcode::Goodbye,
            Self::Heartbeat(_) => Opcode::Heartbeat,
        }
    }

    /// Encodes the message into a new buffer.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        let bulk = match self {
            Self::DmaWrite(DmaWrite { data, .. })
            | Self::DmaReadResp(DmaReadResp { data, .. })
            | Self::NicFrame(data)
            | Self::Serial(data) => data.len(),
            _ => 0,
        };
        let mut out = Vec::with_capacity(HEADER_LEN + 128 + bulk);
        self.encode(&mut out);
        out
    }

    /// Splits a DMA read of any length into requests of at most [`MAX_DMA_LEN`] bytes,
    /// with consecutive tags starting at `first_tag`.
    pub fn split_dma_read(first_tag: u32, addr: GuestAddr, len: u64) -> Vec<DmaRead> {
        let mut out = Vec::new();
        let mut done = 0u64;
        let mut tag = first_tag;
        while done < len {
            let chunk = (len - done).min(MAX_DMA_LEN as u64);
            out.push(DmaRead { tag, addr: GuestAddr(addr.0.wrapping_add(done)), len: chunk as u32 });
            tag = tag.wrapping_add(1);
            done += chunk;
        }
        out
    }

    /// Splits a DMA write of any length into posted writes of at most [`MAX_DMA_LEN`] bytes.
    pub fn split_dma_write(addr: GuestAddr, data: &[u8]) -> Vec<DmaWrite> {
        data.chunks(MAX_DMA_LEN)
            .enumerate()
            .map(|(i, c)| DmaWrite {
                addr: GuestAddr(addr.0.wrapping_add((i * MAX_DMA_LEN) as u64)),
                data: c.to_vec(),
            })
            .collect()
    }
}
