//! The session rules of docs/protocol.md ("Session rules"), once, for every peer.
//!
//! Two sans-I/O state machines: [`HostSession`] (QEMU's device, the host model, a mediator's
//! host side) and [`DeviceSession`] (the DPI bridge, the test peers, a mediator's device side).
//! They read no clock and touch no socket: the caller passes the time in, feeds every received
//! frame (decoded message or decode error) and the timer, and carries out the [`HostEvent`]s or
//! [`DeviceEvent`]s they queue, in order: send a message, hand one to the device logic, report
//! that the session came up or went down. Random session numbers come from a seed given at
//! construction, so a run is reproducible in tests.
//!
//! What they guarantee (checked by the property tests in this module):
//! - nothing but INIT/CONFIG/HEARTBEAT/GOODBYE passes outside a session, in either direction;
//! - every MMIO read (host) and DMA read (device) gets at most one completion handed on, only
//!   while it is outstanding in the current session; a late or repeated one is dropped;
//! - once a session is up, only messages that belong to it change it: an INIT from another
//!   host, a CONFIG or GOODBYE with another session number, a HEARTBEAT of another session, a
//!   frame of another protocol version or a malformed frame is counted and dropped;
//! - drops are logged at warn level, rate-limited ([`DropLog`]), and counted in [`DropCounts`].

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::liveness::{Liveness, PeerEvent};
use crate::{
    Caps, Config, ConfigError, DecodeError, DeviceConfig, DmaRead, Goodbye, GoodbyeReason, Heartbeat, Init, Message,
    MmioReadResp, HEARTBEAT_INTERVAL_MS, LIVENESS_TIMEOUT_MS, VERSION_MAJOR, VERSION_MINOR,
};

/// Log target of session events and dropped frames.
pub const LOG_TARGET: &str = "cosim::session";
/// A host repeats INIT this often until CONFIG arrives (a device may drop it while it still
/// serves another host, or start after the host).
pub const INIT_RETRY_MS: u64 = 200;
/// Dropped frames logged one by one before the log switches to periodic summaries.
pub const DROP_LOG_FIRST: u64 = 5;
/// Interval of the summary line about dropped frames ("N more dropped").
pub const DROP_LOG_INTERVAL_MS: u64 = 10_000;

/// Timing of a session. [`Timing::default`] is the protocol's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// HEARTBEAT interval.
    pub heartbeat: Duration,
    /// Silence after which the peer is lost.
    pub liveness_timeout: Duration,
    /// INIT repeat interval during a handshake.
    pub init_retry: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(HEARTBEAT_INTERVAL_MS),
            liveness_timeout: Duration::from_millis(LIVENESS_TIMEOUT_MS),
            init_retry: Duration::from_millis(INIT_RETRY_MS),
        }
    }
}

/// Why a received frame (or a message we were asked to send) was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropKind {
    /// The frame did not decode (any [`DecodeError`] but a version mismatch).
    Malformed,
    /// The frame carries another protocol major version.
    Version,
    /// INIT, CONFIG, HEARTBEAT or GOODBYE that does not belong to the session.
    Foreign,
    /// A completion for no outstanding request (late, repeated, or of an older session).
    Stale,
    /// A request whose tag is already outstanding.
    Duplicate,
    /// A transaction message while no session is up.
    OutsideSession,
    /// A message that only the other side sends.
    WrongDirection,
}

impl DropKind {
    fn describe(self) -> &'static str {
        match self {
            Self::Malformed => "malformed frame",
            Self::Version => "frame of another protocol version",
            Self::Foreign => "session message that does not belong to this session",
            Self::Stale => "completion for no outstanding request",
            Self::Duplicate => "request with a tag already outstanding",
            Self::OutsideSession => "message outside a session",
            Self::WrongDirection => "message of the wrong direction",
        }
    }
}

/// Counters of dropped frames, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// [`DropKind::Malformed`].
    pub malformed: u64,
    /// [`DropKind::Version`].
    pub version: u64,
    /// [`DropKind::Foreign`].
    pub foreign: u64,
    /// [`DropKind::Stale`].
    pub stale: u64,
    /// [`DropKind::Duplicate`].
    pub duplicate: u64,
    /// [`DropKind::OutsideSession`].
    pub outside_session: u64,
    /// [`DropKind::WrongDirection`].
    pub wrong_direction: u64,
}

impl DropCounts {
    /// All drops.
    pub fn total(&self) -> u64 {
        self.malformed
            + self.version
            + self.foreign
            + self.stale
            + self.duplicate
            + self.outside_session
            + self.wrong_direction
    }

    fn bump(&mut self, k: DropKind) {
        let c = match k {
            DropKind::Malformed => &mut self.malformed,
            DropKind::Version => &mut self.version,
            DropKind::Foreign => &mut self.foreign,
            DropKind::Stale => &mut self.stale,
            DropKind::Duplicate => &mut self.duplicate,
            DropKind::OutsideSession => &mut self.outside_session,
            DropKind::WrongDirection => &mut self.wrong_direction,
        };
        *c += 1;
    }
}

impl std::fmt::Display for DropCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "malformed {}, other version {}, foreign {}, stale {}, duplicate {}, outside a session {}, wrong direction {}",
            self.malformed,
            self.version,
            self.foreign,
            self.stale,
            self.duplicate,
            self.outside_session,
            self.wrong_direction
        )
    }
}

/// Rate limiter for drop warnings: the first [`DROP_LOG_FIRST`] are logged one by one, then at
/// most one summary line per [`DROP_LOG_INTERVAL_MS`] with the count since the last line.
#[derive(Debug, Clone, Default)]
pub struct DropLog {
    logged: u64,
    unlogged: u64,
    last_summary: Option<Instant>,
}

impl DropLog {
    /// Records one drop at `now`; logs it or folds it into the next summary.
    pub fn drop_frame(&mut self, now: Instant, name: &str, kind: DropKind, detail: &dyn std::fmt::Display, counts: &DropCounts) {
        if self.logged < DROP_LOG_FIRST {
            self.logged += 1;
            tracing::warn!(target: LOG_TARGET, "{name}: {} dropped: {detail}", kind.describe());
            if self.logged == DROP_LOG_FIRST {
                tracing::warn!(target: LOG_TARGET,
                    "{name}: further dropped frames are summarised every {} s", DROP_LOG_INTERVAL_MS / 1000);
                self.last_summary = Some(now);
            }
            return;
        }
        self.unlogged += 1;
        self.flush(now, name, counts);
    }

    /// Logs the summary if one is due (callers also call it from their timer).
    pub fn flush(&mut self, now: Instant, name: &str, counts: &DropCounts) {
        if self.unlogged == 0 {
            return;
        }
        let due = self
            .last_summary
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_millis(DROP_LOG_INTERVAL_MS));
        if due {
            tracing::warn!(target: LOG_TARGET, "{name}: {} more frames dropped (totals: {counts})", self.unlogged);
            self.unlogged = 0;
            self.last_summary = Some(now);
        }
    }
}

/// A small deterministic generator for session numbers (splitmix64).
#[derive(Debug, Clone)]
struct Ids(u64);

impl Ids {
    fn next_nonzero(&mut self) -> u64 {
        loop {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            if z != 0 {
                return z;
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Host side
// ------------------------------------------------------------------------------------------

/// Why the host has no session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// Nothing arrived from the device for the liveness timeout.
    Lost,
    /// The device said GOODBYE for our session.
    Goodbye(GoodbyeReason),
    /// The device came back with a configuration other than the one first accepted; the host
    /// stays down until the device restarts.
    ConfigChanged {
        /// The configuration first accepted (the PCI function was realized with it).
        pinned: Box<DeviceConfig>,
        /// What the device announced now.
        now: Box<DeviceConfig>,
    },
    /// The device speaks another major version or refused us; down until it restarts.
    Refused(HandshakeError),
    /// The caller ended the session ([`HostSession::close`]).
    Closed,
}

/// Why the first handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// No CONFIG for our INIT in time.
    #[error("no CONFIG within {0:?}")]
    Timeout(Duration),
    /// The device speaks another major version.
    #[error("the device speaks protocol {theirs}.x, we speak {ours}.x")]
    Version {
        /// Ours.
        ours: u8,
        /// Theirs.
        theirs: u8,
    },
    /// The device answered GOODBYE(Refused).
    #[error("the device refused the session (GOODBYE Refused)")]
    Refused,
    /// The configuration is impossible.
    #[error("impossible configuration: {0}")]
    Config(ConfigError),
}

/// State of a [`HostSession`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostState {
    /// INIT sent, waiting for the CONFIG that carries `session`.
    Handshake {
        /// Session number of our INIT.
        session: u64,
        /// True for the first handshake (a failure ends it: [`HostEvent::Failed`]).
        first: bool,
    },
    /// Session up: transactions flow.
    Up {
        /// Session number.
        session: u64,
    },
    /// No session; a new INIT is sent when the device is heard again.
    Down(DownReason),
    /// The first handshake failed; nothing more happens.
    Failed(HandshakeError),
}

/// What a [`HostSession`] asks its caller to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEvent {
    /// Send this message to the device.
    Send(Message),
    /// The session is up (first time or again) with this CONFIG.
    Up(Config),
    /// The completion of an outstanding MMIO read.
    ReadDone(MmioReadResp),
    /// An outstanding MMIO read will never complete (the session ended): answer all ones.
    ReadAborted {
        /// Its tag.
        tag: u32,
    },
    /// Device-started traffic for the device logic: DMA_READ, DMA_WRITE, MSIX, NIC_FRAME, SERIAL.
    Deliver(Message),
    /// The session is down.
    Down(DownReason),
    /// The first handshake failed.
    Failed(HandshakeError),
}

/// Counters of a [`HostSession`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostSessionStats {
    /// Sessions that came up.
    pub sessions: u64,
    /// Sessions that went down.
    pub losses: u64,
    /// Frames dropped, by reason.
    pub drops: DropCounts,
}

/// The host side of the protocol for one device. See the module docs.
#[derive(Debug)]
pub struct HostSession {
    name: String,
    caps: Caps,
    instance: u64,
    timing: Timing,
    handshake_timeout: Duration,
    ids: Ids,
    state: HostState,
    prev_session: u64,
    handshake_started: Instant,
    last_init: Instant,
    /// A refusal that names no session (a frame of another version, GOODBYE(Refused) with
    /// session 0) seen during the handshake: it ends the handshake only if no CONFIG follows
    /// within the liveness timeout, so a stray frame cannot fail a handshake the device answers.
    refused: Option<(Instant, HandshakeError)>,
    pinned: Option<DeviceConfig>,
    peer_caps: Caps,
    liveness: Liveness,
    next_tag: u32,
    reads: HashSet<u32>,
    dma_reads: HashSet<u32>,
    events: std::collections::VecDeque<HostEvent>,
    stats: HostSessionStats,
    drop_log: DropLog,
}

/// Settings of a [`HostSession`].
#[derive(Debug, Clone)]
pub struct HostSessionConfig {
    /// Name used in log lines (device name and endpoint).
    pub name: String,
    /// Capabilities announced in INIT.
    pub caps: Caps,
    /// Our instance number (random per process).
    pub instance: u64,
    /// Seed of the session numbers (random per process; fixed in tests).
    pub seed: u64,
    /// How long the first handshake may take.
    pub handshake_timeout: Duration,
    /// Protocol timing.
    pub timing: Timing,
}

impl HostSession {
    /// Starts the first handshake at `now`: queues INIT.
    pub fn new(cfg: HostSessionConfig, now: Instant) -> Self {
        let mut s = Self {
            name: cfg.name,
            caps: cfg.caps,
            instance: cfg.instance,
            timing: cfg.timing,
            handshake_timeout: cfg.handshake_timeout,
            ids: Ids(cfg.seed),
            state: HostState::Down(DownReason::Closed),
            prev_session: 0,
            handshake_started: now,
            last_init: now,
            refused: None,
            pinned: None,
            peer_caps: Caps::empty(),
            liveness: Liveness::with_timing(cfg.timing.heartbeat, cfg.timing.liveness_timeout),
            next_tag: 1,
            reads: HashSet::new(),
            dma_reads: HashSet::new(),
            events: Default::default(),
            stats: HostSessionStats::default(),
            drop_log: DropLog::default(),
        };
        s.start_handshake(now, true);
        s
    }

    /// Current state.
    pub fn state(&self) -> &HostState {
        &self.state
    }

    /// True while a session is up.
    pub fn is_up(&self) -> bool {
        matches!(self.state, HostState::Up { .. })
    }

    /// The current session number, if up.
    pub fn session(&self) -> Option<u64> {
        match self.state {
            HostState::Up { session } => Some(session),
            _ => None,
        }
    }

    /// The configuration of the first session (the one the PCI function was realized with).
    pub fn config(&self) -> Option<&DeviceConfig> {
        self.pinned.as_ref()
    }

    /// The device's capabilities from its last CONFIG.
    pub fn peer_caps(&self) -> Caps {
        self.peer_caps
    }

    /// Counters.
    pub fn stats(&self) -> HostSessionStats {
        self.stats
    }

    /// Name used in log lines.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next queued event.
    pub fn poll_event(&mut self) -> Option<HostEvent> {
        self.events.pop_front()
    }

    /// When [`HostSession::handle_timeout`] should run next.
    pub fn next_timeout(&self, now: Instant) -> Instant {
        let hb = now + self.timing.heartbeat / 2;
        match self.state {
            HostState::Handshake { first, .. } => {
                let retry = self.last_init + self.timing.init_retry;
                let t = hb.min(retry);
                if first {
                    t.min(self.handshake_started + self.handshake_timeout)
                } else {
                    t
                }
            }
            _ => hb,
        }
    }

    /// Timers: heartbeats, liveness, INIT repeats, the first handshake's timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, HostState::Failed(_)) {
            return;
        }
        if self.liveness.heartbeat_due(now) {
            // During a handshake, the session being set up: the device counts it once it took the INIT.
            let session = match self.state {
                HostState::Up { session } | HostState::Handshake { session, .. } => session,
                _ => 0,
            };
            self.events.push_back(HostEvent::Send(Message::Heartbeat(Heartbeat { instance: self.instance, session })));
        }
        if self.liveness.poll(now) == PeerEvent::Lost {
            match self.state {
                HostState::Up { .. } => self.go_down(DownReason::Lost),
                HostState::Handshake { first: false, .. } => {
                    self.state = HostState::Down(DownReason::Lost);
                }
                _ => {}
            }
        }
        if let HostState::Handshake { session, first } = self.state {
            let refusal_stands = self
                .refused
                .as_ref()
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= self.timing.liveness_timeout);
            if refusal_stands {
                let (_, err) = self.refused.take().expect("checked");
                self.refuse_handshake(err, first);
            } else if first && now.saturating_duration_since(self.handshake_started) >= self.handshake_timeout {
                self.fail(HandshakeError::Timeout(self.handshake_timeout));
            } else if now.saturating_duration_since(self.last_init) >= self.timing.init_retry {
                self.send_init(now, session);
            }
        }
        self.drop_log.flush(now, &self.name, &self.stats.drops);
    }

    /// Feeds a frame that failed to decode.
    pub fn handle_decode_error(&mut self, now: Instant, e: DecodeError) {
        if let DecodeError::VersionMismatch { ours, theirs } = e {
            // Only the first handshake can be refused this way: a host that had a session keeps
            // retrying, so a stray frame can never lock it out of a device it knows.
            if let HostState::Handshake { first: true, .. } = self.state {
                self.stats.drops.bump(DropKind::Version);
                self.refused.get_or_insert((now, HandshakeError::Version { ours, theirs }));
                return;
            }
            self.dropped(now, DropKind::Version, &e);
            return;
        }
        self.dropped(now, DropKind::Malformed, &e);
    }

    /// Feeds a received message.
    pub fn handle_message(&mut self, now: Instant, msg: Message) {
        if matches!(self.state, HostState::Failed(_)) {
            return;
        }
        let up = self.session();
        match msg {
            Message::Heartbeat(h) => match up {
                Some(s) if h.session == s => {
                    self.liveness.on_receive(now, Some(h.instance));
                }
                // A device without a session (e.g. restarted): not ours, but claims nothing.
                Some(_) if h.session == 0 => {}
                Some(_) => self.dropped(now, DropKind::Foreign, &format_args!("HEARTBEAT of session {:#x}", h.session)),
                None => self.heard_outside_session(now, Some(h.instance)),
            },
            Message::Config(c) => self.on_config(now, c),
            Message::Goodbye(g) => self.on_goodbye(now, g),
            Message::MmioReadResp(r) => {
                if up.is_some() && self.reads.remove(&r.tag) {
                    self.liveness.on_receive(now, None);
                    self.events.push_back(HostEvent::ReadDone(r));
                } else if up.is_some() {
                    self.dropped(now, DropKind::Stale, &format_args!("MMIO completion with tag {}", r.tag));
                } else {
                    self.dropped(now, DropKind::OutsideSession, &format_args!("MMIO completion with tag {}", r.tag));
                }
            }
            m @ (Message::DmaRead(_) | Message::DmaWrite(_) | Message::Msix(_) | Message::NicFrame(_) | Message::Serial(_)) => {
                if up.is_none() {
                    self.dropped(now, DropKind::OutsideSession, &format_args!("{:?}", m.opcode()));
                    return;
                }
                if let Message::DmaRead(DmaRead { tag, .. }) = m {
                    if !self.dma_reads.insert(tag) {
                        self.dropped(now, DropKind::Duplicate, &format_args!("DMA read tag {tag}"));
                        return;
                    }
                }
                self.liveness.on_receive(now, None);
                self.events.push_back(HostEvent::Deliver(m));
            }
            m @ (Message::Init(_) | Message::MmioRead(_) | Message::MmioWrite(_) | Message::DmaReadResp(_) | Message::Reset) => {
                self.dropped(now, DropKind::WrongDirection, &format_args!("{:?}", m.opcode()));
            }
        }
    }

    /// Starts an MMIO read: returns its tag and queues the request, or `None` without a
    /// session (the caller answers all ones).
    pub fn mmio_read(&mut self, bar: crate::BarIndex, offset: u64, size: crate::AccessSize) -> Option<u32> {
        self.session()?;
        let mut tag = self.next_tag;
        while self.reads.contains(&tag) || tag == 0 {
            tag = tag.wrapping_add(1);
        }
        self.next_tag = tag.wrapping_add(1);
        self.reads.insert(tag);
        self.events.push_back(HostEvent::Send(Message::MmioRead(crate::MmioRead { tag, bar, size, offset })));
        Some(tag)
    }

    /// Gives up an outstanding read (its caller timed out): a completion arriving later is stale.
    pub fn abandon_read(&mut self, tag: u32) {
        self.reads.remove(&tag);
    }

    /// True while `tag` is an outstanding MMIO read.
    pub fn read_outstanding(&self, tag: u32) -> bool {
        self.reads.contains(&tag)
    }

    /// Queues a host-started message of the session: MMIO_WRITE, RESET, NIC_FRAME, SERIAL, or a
    /// DMA_READ_RESP for an outstanding DMA read. Returns false (and queues nothing) without a
    /// session, for a DMA completion that is not outstanding, or for a device-to-host message.
    pub fn send(&mut self, msg: Message) -> bool {
        if self.session().is_none() {
            return false;
        }
        match &msg {
            Message::DmaReadResp(r) => {
                if !self.dma_reads.remove(&r.tag) {
                    return false;
                }
            }
            Message::Reset => self.dma_reads.clear(),
            Message::MmioWrite(_) | Message::NicFrame(_) | Message::Serial(_) => {}
            _ => return false,
        }
        self.events.push_back(HostEvent::Send(msg));
        true
    }

    /// Ends the session cleanly: queues GOODBYE(Shutdown) for it. The state becomes
    /// `Down(Closed)` and stays so.
    pub fn close(&mut self) {
        let session = match self.state {
            HostState::Up { session } | HostState::Handshake { session, .. } => session,
            _ => 0,
        };
        if session != 0 {
            self.events.push_back(HostEvent::Send(Message::Goodbye(Goodbye { reason: GoodbyeReason::Shutdown, session })));
        }
        self.abort_reads();
        self.state = HostState::Down(DownReason::Closed);
    }

    fn heard_outside_session(&mut self, now: Instant, instance: Option<u64>) {
        let ev = self.liveness.on_receive(now, instance);
        match &self.state {
            HostState::Down(DownReason::Closed) => {}
            HostState::Down(DownReason::ConfigChanged { .. } | DownReason::Refused(_)) if ev == PeerEvent::Restarted => {
                tracing::warn!(target: LOG_TARGET, "{}: the device restarted; sending INIT", self.name);
                self.start_handshake(now, false);
            }
            HostState::Down(DownReason::ConfigChanged { .. } | DownReason::Refused(_)) => {}
            HostState::Down(_) => {
                if matches!(ev, PeerEvent::Appeared | PeerEvent::Restarted) {
                    tracing::warn!(target: LOG_TARGET, "{}: the device is back; sending INIT", self.name);
                    self.start_handshake(now, false);
                }
            }
            _ => {}
        }
    }

    fn on_config(&mut self, now: Instant, c: Config) {
        if matches!(self.state, HostState::Up { session } if session == c.session) {
            // The answer to a repeated INIT of this session, arriving after the first: harmless.
            self.liveness.on_receive(now, None);
            return;
        }
        let HostState::Handshake { session, first } = self.state else {
            self.dropped(now, DropKind::Foreign, &format_args!("CONFIG of session {:#x} outside a handshake", c.session));
            return;
        };
        if c.session != session {
            self.dropped(now, DropKind::Foreign, &format_args!("CONFIG of session {:#x}, ours is {session:#x}", c.session));
            return;
        }
        self.liveness.on_receive(now, None);
        if c.major != VERSION_MAJOR {
            let err = HandshakeError::Version { ours: VERSION_MAJOR, theirs: c.major };
            if first {
                self.fail(err);
            } else {
                self.refuse_session(session, DownReason::Refused(err));
            }
            return;
        }
        if let Err(e) = c.device.validate() {
            if first {
                self.fail(HandshakeError::Config(e));
            } else {
                self.refuse_session(session, DownReason::Refused(HandshakeError::Config(e)));
            }
            return;
        }
        if let Some(pinned) = &self.pinned {
            if !pinned.same_pci_function(&c.device) {
                let why = DownReason::ConfigChanged { pinned: Box::new(pinned.clone()), now: Box::new(c.device.clone()) };
                self.refuse_session(session, why);
                return;
            }
        }
        // The design clock is not PCI: a restarted simulation may report another one.
        self.pinned = Some(c.device.clone());
        self.peer_caps = c.caps;
        self.refused = None;
        self.prev_session = session;
        self.state = HostState::Up { session };
        self.stats.sessions += 1;
        if !first {
            tracing::warn!(target: LOG_TARGET, "{}: session {session:#x} with the device is up again", self.name);
        }
        self.events.push_back(HostEvent::Up(c));
    }

    fn on_goodbye(&mut self, now: Instant, g: Goodbye) {
        match self.state {
            HostState::Up { session } if g.session == session => {
                self.liveness.on_goodbye();
                self.go_down(DownReason::Goodbye(g.reason));
            }
            HostState::Handshake { session, first } if g.session == session => {
                self.liveness.on_goodbye();
                self.refuse_handshake(HandshakeError::Refused, first);
            }
            HostState::Handshake { first: true, .. } if g.session == 0 && g.reason == GoodbyeReason::Refused => {
                self.refused.get_or_insert((now, HandshakeError::Refused));
            }
            _ => self.dropped(now, DropKind::Foreign, &format_args!("GOODBYE({:?}) of session {:#x}", g.reason, g.session)),
        }
    }

    fn refuse_handshake(&mut self, err: HandshakeError, first: bool) {
        if first {
            self.fail(err);
        } else {
            tracing::error!(target: LOG_TARGET, "{}: {err}; staying disconnected until the device restarts", self.name);
            self.state = HostState::Down(DownReason::Refused(err));
        }
    }

    fn refuse_session(&mut self, session: u64, why: DownReason) {
        tracing::error!(target: LOG_TARGET, "{}: {}; staying disconnected until the device restarts", self.name, describe_down(&why));
        self.events.push_back(HostEvent::Send(Message::Goodbye(Goodbye { reason: GoodbyeReason::Refused, session })));
        self.state = HostState::Down(why.clone());
        self.events.push_back(HostEvent::Down(why));
    }

    fn start_handshake(&mut self, now: Instant, first: bool) {
        let session = self.ids.next_nonzero();
        self.handshake_started = now;
        self.refused = None;
        self.state = HostState::Handshake { session, first };
        self.send_init(now, session);
    }

    fn send_init(&mut self, now: Instant, session: u64) {
        self.last_init = now;
        self.events.push_back(HostEvent::Send(Message::Init(Init {
            major: VERSION_MAJOR,
            minor: VERSION_MINOR,
            caps: self.caps,
            session,
            prev_session: self.prev_session,
        })));
    }

    fn abort_reads(&mut self) {
        let mut tags: Vec<u32> = self.reads.drain().collect();
        tags.sort_unstable();
        for tag in tags {
            self.events.push_back(HostEvent::ReadAborted { tag });
        }
        self.dma_reads.clear();
    }

    fn go_down(&mut self, why: DownReason) {
        tracing::error!(target: LOG_TARGET, "{}: {}; MMIO reads return all ones until the device is back", self.name, describe_down(&why));
        self.abort_reads();
        self.stats.losses += 1;
        self.state = HostState::Down(why.clone());
        self.events.push_back(HostEvent::Down(why));
    }

    fn fail(&mut self, e: HandshakeError) {
        self.state = HostState::Failed(e.clone());
        self.events.push_back(HostEvent::Failed(e));
    }

    fn dropped(&mut self, now: Instant, kind: DropKind, detail: &dyn std::fmt::Display) {
        self.stats.drops.bump(kind);
        self.drop_log.drop_frame(now, &self.name, kind, detail, &self.stats.drops);
    }
}

/// One line on why a host session is down.
pub fn describe_down(why: &DownReason) -> String {
    match why {
        DownReason::Lost => format!("the device is lost: nothing of our session arrived for {LIVENESS_TIMEOUT_MS} ms"),
        DownReason::Goodbye(r) => format!("the device said goodbye ({r:?})"),
        DownReason::ConfigChanged { pinned, now } => format!(
            "the device came back with another configuration than the one this PCI function was realized with \
             (realized: {pinned:?}; now: {now:?}): restart it with the original configuration or restart the host"
        ),
        DownReason::Refused(e) => format!("the device cannot serve this host: {e}"),
        DownReason::Closed => "the session was closed".to_string(),
    }
}

// ------------------------------------------------------------------------------------------
// Device side
// ------------------------------------------------------------------------------------------

/// State of a [`DeviceSession`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    /// No session: everything but INIT is discarded.
    Waiting,
    /// A session with a host.
    Up {
        /// Session number (from the host's INIT).
        session: u64,
        /// False once the host was silent for the liveness timeout (the session is kept, and a
        /// new INIT from any host is accepted).
        host_alive: bool,
    },
}

/// What a [`DeviceSession`] asks its caller to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceEvent {
    /// Send this message to the host.
    Send(Message),
    /// A new session started: forget every transaction of the old one.
    SessionStarted {
        /// Its number.
        session: u64,
        /// The host's capabilities.
        caps: Caps,
    },
    /// Host-started traffic for the device logic: MMIO_READ, MMIO_WRITE, DMA_READ_RESP (of an
    /// outstanding DMA read), NIC_FRAME, SERIAL, RESET.
    Deliver(Message),
    /// The host was silent for the liveness timeout (the session is kept).
    HostLost,
    /// The host of the session is heard again.
    HostBack,
    /// The host ended the session (GOODBYE).
    SessionEnded(GoodbyeReason),
}

/// Counters of a [`DeviceSession`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceSessionStats {
    /// Sessions started.
    pub sessions: u64,
    /// INITs answered (a repeated INIT of the current session is answered again).
    pub inits: u64,
    /// Host-started messages discarded because no session was up.
    pub discarded_before_init: u64,
    /// Messages the device logic asked to send that were not sent (no session, or a
    /// completion for a read that is not outstanding).
    pub unsent: u64,
    /// Frames dropped, by reason.
    pub drops: DropCounts,
}

/// Settings of a [`DeviceSession`].
#[derive(Debug, Clone)]
pub struct DeviceSessionConfig {
    /// Name used in log lines (endpoint name).
    pub name: String,
    /// Capabilities announced in CONFIG.
    pub caps: Caps,
    /// What CONFIG announces.
    pub device: DeviceConfig,
    /// Our instance number (random per process).
    pub instance: u64,
    /// Protocol timing.
    pub timing: Timing,
}

/// The device side of the protocol for one endpoint. See the module docs.
#[derive(Debug)]
pub struct DeviceSession {
    cfg: DeviceSessionConfig,
    state: DeviceState,
    liveness: Liveness,
    /// MMIO reads received and not yet answered.
    reads: HashSet<u32>,
    /// DMA reads sent and not yet completed.
    dma_reads: HashSet<u32>,
    last_refusal: Option<Instant>,
    events: std::collections::VecDeque<DeviceEvent>,
    stats: DeviceSessionStats,
    drop_log: DropLog,
}

impl DeviceSession {
    /// A device waiting for INIT.
    pub fn new(cfg: DeviceSessionConfig) -> Self {
        let liveness = Liveness::with_timing(cfg.timing.heartbeat, cfg.timing.liveness_timeout);
        Self {
            cfg,
            state: DeviceState::Waiting,
            liveness,
            reads: HashSet::new(),
            dma_reads: HashSet::new(),
            last_refusal: None,
            events: Default::default(),
            stats: DeviceSessionStats::default(),
            drop_log: DropLog::default(),
        }
    }

    /// Current state.
    pub fn state(&self) -> DeviceState {
        self.state
    }

    /// The session number, if one is up.
    pub fn session(&self) -> Option<u64> {
        match self.state {
            DeviceState::Up { session, .. } => Some(session),
            DeviceState::Waiting => None,
        }
    }

    /// Counters.
    pub fn stats(&self) -> DeviceSessionStats {
        self.stats
    }

    /// What CONFIG announces.
    pub fn config(&self) -> &DeviceSessionConfig {
        &self.cfg
    }

    /// The next queued event.
    pub fn poll_event(&mut self) -> Option<DeviceEvent> {
        self.events.pop_front()
    }

    /// When [`DeviceSession::handle_timeout`] should run next.
    pub fn next_timeout(&self, now: Instant) -> Instant {
        now + self.cfg.timing.heartbeat / 2
    }

    /// Timers: heartbeats and the host's liveness.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.liveness.heartbeat_due(now) {
            let session = self.session().unwrap_or(0);
            self.events.push_back(DeviceEvent::Send(Message::Heartbeat(Heartbeat { instance: self.cfg.instance, session })));
        }
        if self.liveness.poll(now) == PeerEvent::Lost {
            if let DeviceState::Up { session, host_alive: true } = self.state {
                tracing::warn!(target: LOG_TARGET,
                    "{}: host lost: nothing of session {session:#x} for {} ms; simulation continues, waiting for the host",
                    self.cfg.name, self.cfg.timing.liveness_timeout.as_millis());
                self.state = DeviceState::Up { session, host_alive: false };
                self.events.push_back(DeviceEvent::HostLost);
            }
        }
        self.drop_log.flush(now, &self.cfg.name, &self.stats.drops);
    }

    /// Feeds a frame that failed to decode. Before any live session, a frame of another major
    /// version is answered with GOODBYE(Refused) (at most once per INIT retry interval).
    pub fn handle_decode_error(&mut self, now: Instant, e: DecodeError) {
        if let DecodeError::VersionMismatch { ours, theirs } = e {
            if !self.live() {
                let due = self.last_refusal.is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.timing.init_retry);
                if due {
                    tracing::error!(target: LOG_TARGET,
                        "{}: a host speaks protocol {theirs}.x, this device speaks {ours}.x: refusing (GOODBYE Refused)", self.cfg.name);
                    self.last_refusal = Some(now);
                    self.events.push_back(DeviceEvent::Send(Message::Goodbye(Goodbye { reason: GoodbyeReason::Refused, session: 0 })));
                }
                self.stats.drops.bump(DropKind::Version);
                return;
            }
            self.dropped(now, DropKind::Version, &e);
            return;
        }
        self.dropped(now, DropKind::Malformed, &e);
    }

    /// Feeds a received message.
    pub fn handle_message(&mut self, now: Instant, msg: Message) {
        match msg {
            Message::Init(i) => self.on_init(now, i),
            Message::Heartbeat(h) => match self.session() {
                Some(s) if h.session == s => self.heard(now, Some(h.instance)),
                // A host without a session (another host waiting for its turn): claims nothing.
                Some(_) if h.session == 0 => {}
                Some(_) => self.dropped(now, DropKind::Foreign, &format_args!("HEARTBEAT of session {:#x}", h.session)),
                None => {}
            },
            Message::Goodbye(g) => match self.state {
                DeviceState::Up { session, .. } if g.session == session => {
                    tracing::info!(target: LOG_TARGET, "{}: host ended session {session:#x} ({:?})", self.cfg.name, g.reason);
                    self.liveness.on_goodbye();
                    self.end_session();
                    self.events.push_back(DeviceEvent::SessionEnded(g.reason));
                }
                _ => self.dropped(now, DropKind::Foreign, &format_args!("GOODBYE({:?}) of session {:#x}", g.reason, g.session)),
            },
            m @ (Message::MmioRead(_)
            | Message::MmioWrite(_)
            | Message::DmaReadResp(_)
            | Message::NicFrame(_)
            | Message::Serial(_)
            | Message::Reset) => {
                if self.session().is_none() {
                    self.stats.discarded_before_init += 1;
                    tracing::debug!(target: LOG_TARGET, "{}: {:?} before INIT discarded", self.cfg.name, m.opcode());
                    return;
                }
                let refused = match &m {
                    Message::MmioRead(r) => (!self.reads.insert(r.tag)).then_some((DropKind::Duplicate, "MMIO read", r.tag)),
                    Message::DmaReadResp(r) => (!self.dma_reads.remove(&r.tag)).then_some((DropKind::Stale, "DMA completion", r.tag)),
                    Message::Reset => {
                        self.dma_reads.clear();
                        None
                    }
                    _ => None,
                };
                if let Some((kind, what, tag)) = refused {
                    self.dropped(now, kind, &format_args!("{what} with tag {tag}"));
                    return;
                }
                self.heard(now, None);
                self.events.push_back(DeviceEvent::Deliver(m));
            }
            m @ (Message::Config(_)
            | Message::MmioReadResp(_)
            | Message::DmaRead(_)
            | Message::DmaWrite(_)
            | Message::Msix(_)) => {
                self.dropped(now, DropKind::WrongDirection, &format_args!("{:?}", m.opcode()));
            }
        }
    }

    /// Queues a device-started message of the session (MMIO_READ_RESP of an outstanding read,
    /// DMA_READ, DMA_WRITE, MSIX, NIC_FRAME, SERIAL). Returns false (and queues nothing)
    /// without a session, for a completion of a read that is not outstanding, or for a
    /// host-to-device message.
    pub fn send(&mut self, msg: Message) -> bool {
        let ok = self.session().is_some()
            && match &msg {
                Message::MmioReadResp(r) => self.reads.remove(&r.tag),
                Message::DmaRead(r) => {
                    self.dma_reads.insert(r.tag);
                    true
                }
                Message::DmaWrite(_) | Message::Msix(_) | Message::NicFrame(_) | Message::Serial(_) => true,
                _ => false,
            };
        if ok {
            self.events.push_back(DeviceEvent::Send(msg));
        } else {
            self.stats.unsent += 1;
        }
        ok
    }

    /// The device leaves: queues GOODBYE(Shutdown) for the current session (if any).
    pub fn close(&mut self) {
        if let Some(session) = self.session() {
            self.events.push_back(DeviceEvent::Send(Message::Goodbye(Goodbye { reason: GoodbyeReason::Shutdown, session })));
        }
        self.end_session();
    }

    fn live(&self) -> bool {
        matches!(self.state, DeviceState::Up { host_alive: true, .. })
    }

    fn on_init(&mut self, now: Instant, i: Init) {
        if i.session == 0 {
            self.dropped(now, DropKind::Foreign, &"INIT with session number 0");
            return;
        }
        if i.major != VERSION_MAJOR {
            if self.live() {
                self.dropped(now, DropKind::Version, &format_args!("INIT of protocol {}.{}", i.major, i.minor));
                return;
            }
            tracing::error!(target: LOG_TARGET,
                "{}: host INIT has protocol {}.{}, this device speaks {VERSION_MAJOR}.{VERSION_MINOR}: refusing",
                self.cfg.name, i.major, i.minor);
            self.events.push_back(DeviceEvent::Send(Message::Goodbye(Goodbye { reason: GoodbyeReason::Refused, session: i.session })));
            return;
        }
        let current = self.session();
        if current == Some(i.session) {
            // The host repeats INIT until CONFIG arrives: answer again, same session.
            self.heard(now, None);
            self.send_config(&i);
            return;
        }
        if self.live() && current != Some(i.prev_session) {
            self.dropped(
                now,
                DropKind::Foreign,
                &format_args!("INIT of session {:#x} from another host while session {:#x} is live", i.session, current.unwrap_or(0)),
            );
            return;
        }
        self.end_session();
        self.state = DeviceState::Up { session: i.session, host_alive: true };
        self.liveness.on_goodbye();
        self.liveness.on_receive(now, None);
        self.stats.sessions += 1;
        tracing::info!(target: LOG_TARGET, "{}: host session {:#x} started", self.cfg.name, i.session);
        self.send_config(&i);
        self.events.push_back(DeviceEvent::SessionStarted { session: i.session, caps: i.caps });
    }

    fn send_config(&mut self, i: &Init) {
        self.stats.inits += 1;
        let mut device = self.cfg.device.clone();
        if i.minor < 1 {
            // A 2.0 host decodes CONFIG at its 2.0 length only (docs/protocol.md, CONFIG).
            device.clock_hz = 0;
        }
        self.events.push_back(DeviceEvent::Send(Message::Config(Config {
            major: VERSION_MAJOR,
            minor: VERSION_MINOR,
            caps: self.cfg.caps,
            session: i.session,
            device,
        })));
    }

    fn heard(&mut self, now: Instant, instance: Option<u64>) {
        self.liveness.on_receive(now, instance);
        if let DeviceState::Up { session, host_alive: false } = self.state {
            tracing::info!(target: LOG_TARGET, "{}: host of session {session:#x} is back", self.cfg.name);
            self.state = DeviceState::Up { session, host_alive: true };
            self.events.push_back(DeviceEvent::HostBack);
        }
    }

    fn end_session(&mut self) {
        self.state = DeviceState::Waiting;
        self.reads.clear();
        self.dma_reads.clear();
    }

    fn dropped(&mut self, now: Instant, kind: DropKind, detail: &dyn std::fmt::Display) {
        self.stats.drops.bump(kind);
        self.drop_log.drop_frame(now, &self.cfg.name, kind, detail, &self.stats.drops);
    }
}

/// Frames a stray or hostile local process might push into a channel, for fault-injection
/// tests (the launcher's `--inject-stray`, the qtest and protocol tests): malformed bytes,
/// frames of other protocol versions, session messages of made-up sessions, and completions
/// for requests nobody made. None of them may disturb a live session.
pub mod stray {
    use crate::{
        Caps, Config, DeviceConfig, DmaReadResp, Goodbye, GoodbyeReason, Heartbeat, Init, Message, MmioReadResp, Status,
        BarDesc, VERSION_MAJOR,
    };

    /// Which channel the frame is pushed into.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Toward {
        /// Into `h2d`: the device receives it.
        Device,
        /// Into `d2h`: the host receives it.
        Host,
    }

    /// The `n`-th stray frame of a deterministic sequence that cycles through every kind.
    /// Session numbers and tags have their top bit set, so they never equal a real peer's.
    pub fn frame(toward: Toward, n: u64) -> Vec<u8> {
        let mix = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (n >> 7);
        let session = mix | 1 << 63;
        let tag = (mix >> 32) as u32 | 1 << 31;
        let mut dev = DeviceConfig { vendor_id: 0x1ded, device_id: 0xbad, ..DeviceConfig::default() };
        dev.bars[0] = BarDesc::mem32(0x1000);
        let other_version = |m: Message| {
            let mut f = m.encode_to_vec();
            f[2] = if n.is_multiple_of(2) { VERSION_MAJOR + 1 } else { VERSION_MAJOR.wrapping_sub(1) };
            f
        };
        let msg = match (toward, n % 8) {
            (_, 0) => return other_version(Message::Heartbeat(Heartbeat { instance: mix, session })),
            (_, 1) => return mix.to_le_bytes()[..(n % 9) as usize].to_vec(),
            (_, 2) => Message::Goodbye(Goodbye { reason: GoodbyeReason::Shutdown, session }),
            (_, 3) => Message::Heartbeat(Heartbeat { instance: mix, session }),
            (Toward::Device, 4) => Message::Init(Init { major: VERSION_MAJOR, minor: 0, caps: Caps::all(), session, prev_session: session ^ 1 }),
            (Toward::Device, 5) => Message::DmaReadResp(DmaReadResp { tag, status: Status::Ok, data: vec![0xee; 64] }),
            (Toward::Device, 6) => return other_version(Message::Init(Init { major: VERSION_MAJOR + 1, minor: 0, caps: Caps::all(), session, prev_session: 0 })),
            (Toward::Device, _) => Message::Config(Config { major: VERSION_MAJOR, minor: 0, caps: Caps::all(), session, device: dev }),
            (Toward::Host, 4) => Message::Config(Config { major: VERSION_MAJOR, minor: 0, caps: Caps::all(), session, device: dev }),
            (Toward::Host, 5) => Message::MmioReadResp(MmioReadResp { tag, status: Status::Ok, data: mix }),
            (Toward::Host, 6) => Message::Goodbye(Goodbye { reason: GoodbyeReason::Refused, session }),
            (Toward::Host, _) => Message::Init(Init { major: VERSION_MAJOR, minor: 0, caps: Caps::all(), session, prev_session: 0 }),
        };
        msg.encode_to_vec()
    }
}
