//! The two session engines against each other with simulated time (no sleeps, no sockets):
//! frames go through the real codec on two simulated channels that can drop, duplicate, delay,
//! and carry foreign frames; either side can restart. Invariants are checked after every step.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use cosim_protocol::session::*;
use cosim_protocol::*;
use proptest::prelude::*;

fn device_config() -> DeviceConfig {
    let mut d = DeviceConfig { vendor_id: 0x1ded, device_id: 0x7e57, class_code: 0x120000, ..Default::default() };
    d.bars[0] = BarDesc::mem32(0x1000);
    d
}

fn expected_data(offset: u64) -> u64 {
    offset.wrapping_mul(3) ^ 0x5a
}

struct World {
    t0: Instant,
    now: Instant,
    host: HostSession,
    dev: DeviceSession,
    h2d: VecDeque<Vec<u8>>,
    d2h: VecDeque<Vec<u8>>,
    /// Reads the host logic started and not yet finished (tag -> offset).
    host_reads: HashMap<u32, u64>,
    /// Tags finished (done or aborted) in the current host incarnation.
    host_finished: HashSet<u32>,
    reads_ok: u64,
    reads_failed: u64,
    host_ups: u64,
    host_downs: u64,
    dev_sessions: u64,
    /// DMA reads the device logic issued and not yet completed.
    dev_dma: HashSet<u32>,
    next_dma_tag: u32,
    instance_seed: u64,
    /// The INIT sessions the current host sent, so CONFIG matching can be checked.
    inits_sent: HashSet<u64>,
    host_failed: bool,
}

impl World {
    fn new() -> Self {
        let t0 = Instant::now();
        let mut w = Self {
            t0,
            now: t0,
            host: new_host(t0, 1),
            dev: new_device(1),
            h2d: VecDeque::new(),
            d2h: VecDeque::new(),
            host_reads: HashMap::new(),
            host_finished: HashSet::new(),
            reads_ok: 0,
            reads_failed: 0,
            host_ups: 0,
            host_downs: 0,
            dev_sessions: 0,
            dev_dma: HashSet::new(),
            next_dma_tag: 1,
            instance_seed: 10,
            inits_sent: HashSet::new(),
            host_failed: false,
        };
        w.pump();
        w
    }

    fn ms(&self) -> u128 {
        self.now.duration_since(self.t0).as_millis()
    }

    /// Carries out every queued event of both engines and checks the invariants.
    fn pump(&mut self) {
        loop {
            let mut any = false;
            while let Some(ev) = self.host.poll_event() {
                any = true;
                self.on_host_event(ev);
            }
            while let Some(ev) = self.dev.poll_event() {
                any = true;
                self.on_device_event(ev);
            }
            if !any {
                break;
            }
        }
    }

    fn on_host_event(&mut self, ev: HostEvent) {
        match ev {
            HostEvent::Send(m) => {
                match &m {
                    Message::Init(i) => {
                        assert_ne!(i.session, 0);
                        self.inits_sent.insert(i.session);
                    }
                    Message::MmioRead(_) | Message::MmioWrite(_) | Message::DmaReadResp(_) | Message::Reset => {
                        assert!(self.host.is_up(), "host sent {:?} outside a session", m.opcode());
                    }
                    _ => {}
                }
                self.h2d.push_back(m.encode_to_vec());
            }
            HostEvent::Up(c) => {
                assert!(self.inits_sent.contains(&c.session), "CONFIG session {:#x} matches no INIT of ours", c.session);
                assert_eq!(self.host.session(), Some(c.session));
                self.host_ups += 1;
            }
            HostEvent::ReadDone(r) => {
                let off = self.host_reads.remove(&r.tag).unwrap_or_else(|| panic!("completion for tag {} not outstanding", r.tag));
                assert!(self.host_finished.insert(r.tag), "tag {} finished twice", r.tag);
                assert_eq!(r.status, Status::Ok);
                assert_eq!(r.data, expected_data(off), "read of offset {off:#x} got wrong data");
                self.reads_ok += 1;
            }
            HostEvent::ReadAborted { tag } => {
                assert!(self.host_reads.remove(&tag).is_some(), "abort of tag {tag} not outstanding");
                assert!(self.host_finished.insert(tag), "tag {tag} finished twice");
                self.reads_failed += 1;
            }
            HostEvent::Deliver(m) => {
                assert!(self.host.is_up(), "host delivered {:?} outside a session", m.opcode());
                if let Message::DmaRead(r) = m {
                    // Answer at once from a fake memory.
                    let data = vec![(r.tag & 0xff) as u8; r.len as usize];
                    assert!(self.host.send(Message::DmaReadResp(DmaReadResp { tag: r.tag, status: Status::Ok, data })));
                }
            }
            HostEvent::Down(_) => {
                assert!(!self.host.is_up());
                assert!(self.host_reads.is_empty(), "reads outstanding after Down: {:?}", self.host_reads);
                self.host_downs += 1;
            }
            HostEvent::Failed(e) => {
                // Only a standing refusal may fail the first handshake (stray frames of another
                // version can do that before any session exists, by design): start over.
                assert!(matches!(e, HandshakeError::Version { .. } | HandshakeError::Refused), "{e}");
                self.host_failed = true;
            }
        }
    }

    fn on_device_event(&mut self, ev: DeviceEvent) {
        match ev {
            DeviceEvent::Send(m) => {
                if let Message::Config(c) = &m {
                    assert_eq!(self.dev.session(), Some(c.session), "CONFIG for a session the device is not in");
                }
                self.d2h.push_back(m.encode_to_vec());
            }
            DeviceEvent::SessionStarted { .. } => {
                self.dev_sessions += 1;
                self.dev_dma.clear();
            }
            DeviceEvent::Deliver(m) => {
                assert!(self.dev.session().is_some(), "device delivered {:?} outside a session", m.opcode());
                match m {
                    Message::MmioRead(r) => {
                        let resp = MmioReadResp { tag: r.tag, status: Status::Ok, data: expected_data(r.offset) };
                        assert!(self.dev.send(Message::MmioReadResp(resp)));
                        // A second answer for the same read must be refused.
                        assert!(!self.dev.send(Message::MmioReadResp(resp)), "a read was answered twice");
                    }
                    Message::DmaReadResp(r) => {
                        assert!(self.dev_dma.remove(&r.tag), "DMA completion {} delivered but not outstanding", r.tag);
                    }
                    _ => {}
                }
            }
            DeviceEvent::HostLost | DeviceEvent::HostBack | DeviceEvent::SessionEnded(_) => {}
        }
    }

    fn advance(&mut self, ms: u64) {
        // Advance in steps of at most 20 ms so timers run as a real loop would run them.
        let mut left = ms;
        while left > 0 {
            let step = left.min(20);
            left -= step;
            self.now += Duration::from_millis(step);
            self.host.handle_timeout(self.now);
            self.dev.handle_timeout(self.now);
            self.pump();
        }
    }

    fn deliver_h2d(&mut self) {
        if let Some(f) = self.h2d.pop_front() {
            match Message::decode(&f) {
                Ok(m) => self.dev.handle_message(self.now, m),
                Err(e) => self.dev.handle_decode_error(self.now, e),
            }
            self.pump();
        }
    }

    fn deliver_d2h(&mut self) {
        if let Some(f) = self.d2h.pop_front() {
            match Message::decode(&f) {
                Ok(m) => self.host.handle_message(self.now, m),
                Err(e) => self.host.handle_decode_error(self.now, e),
            }
            self.pump();
        }
    }

    fn deliver_all(&mut self) {
        for _ in 0..10_000 {
            if self.h2d.is_empty() && self.d2h.is_empty() {
                return;
            }
            self.deliver_h2d();
            self.deliver_d2h();
        }
        panic!("traffic does not settle");
    }

    fn host_read(&mut self, offset: u64) {
        if let Some(tag) = self.host.mmio_read(BarIndex::new(0).unwrap(), offset, AccessSize::B4) {
            assert!(self.host_reads.insert(tag, offset).is_none(), "tag {tag} reused while outstanding");
        }
        self.pump();
    }

    fn device_dma(&mut self) {
        if self.dev.session().is_some() {
            let tag = self.next_dma_tag;
            self.next_dma_tag += 1;
            if self.dev.send(Message::DmaRead(DmaRead { tag, addr: GuestAddr(0x1000), len: 8 })) {
                self.dev_dma.insert(tag);
            }
        }
        self.pump();
    }

    fn restart_device(&mut self) {
        self.instance_seed += 1;
        self.dev = new_device(self.instance_seed);
        self.dev_dma.clear();
        self.h2d.clear(); // a new process starts with empty sockets
    }

    fn restart_host(&mut self) {
        self.instance_seed += 1;
        self.host = new_host(self.now, self.instance_seed);
        self.host_reads.clear();
        self.host_finished.clear();
        self.inits_sent.clear();
        self.host_failed = false;
        self.d2h.clear();
        self.pump();
    }
}

fn new_host(now: Instant, seed: u64) -> HostSession {
    HostSession::new(
        HostSessionConfig {
            name: "host".into(),
            caps: Caps::MSIX,
            instance: 1000 + seed,
            seed,
            handshake_timeout: Duration::from_secs(3600),
            timing: Timing::default(),
        },
        now,
    )
}

fn new_device(seed: u64) -> DeviceSession {
    DeviceSession::new(DeviceSessionConfig {
        name: "dev".into(),
        caps: Caps::MSIX,
        device: device_config(),
        instance: 2000 + seed,
        timing: Timing::default(),
    })
}

/// Frames a stray or hostile process could push into either channel: session messages with
/// made-up numbers, completions with tags nobody uses, another major version, garbage.
fn foreign_frame(kind: u8, a: u64, b: u64) -> Vec<u8> {
    let a = a | 1 << 63; // never a session number or tag a real peer uses in these tests
    match kind % 10 {
        0 => Message::Init(Init { major: VERSION_MAJOR, minor: 0, caps: Caps::all(), session: a, prev_session: b | 1 << 63 }).encode_to_vec(),
        1 => Message::Config(Config { major: VERSION_MAJOR, minor: 0, caps: Caps::all(), session: a, device: device_config() }).encode_to_vec(),
        2 => Message::Goodbye(Goodbye { reason: GoodbyeReason::Refused, session: a }).encode_to_vec(),
        3 => Message::Goodbye(Goodbye { reason: GoodbyeReason::Shutdown, session: a }).encode_to_vec(),
        4 => Message::Heartbeat(Heartbeat { instance: b, session: a }).encode_to_vec(),
        5 => Message::MmioReadResp(MmioReadResp { tag: (a >> 32) as u32 | 1 << 31, status: Status::Ok, data: b }).encode_to_vec(),
        6 => Message::DmaReadResp(DmaReadResp { tag: (a >> 32) as u32 | 1 << 31, status: Status::Ok, data: vec![1; 8] }).encode_to_vec(),
        7 => {
            let mut f = Message::Init(Init { major: VERSION_MAJOR + 1, minor: 0, caps: Caps::all(), session: a, prev_session: 0 }).encode_to_vec();
            f[2] = VERSION_MAJOR + 1;
            f
        }
        8 => {
            let mut f = Message::Goodbye(Goodbye { reason: GoodbyeReason::Shutdown, session: a }).encode_to_vec();
            f[2] = VERSION_MAJOR.wrapping_sub(1);
            f
        }
        _ => a.to_le_bytes().iter().chain(b.to_le_bytes().iter()).copied().take((b % 16) as usize).collect(),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    DeliverH2d,
    DeliverD2h,
    DropH2d,
    DropD2h,
    DupH2d,
    DupD2h,
    Read(u64),
    Dma,
    ForeignH2d(u8, u64, u64),
    ForeignD2h(u8, u64, u64),
    RestartDevice,
    RestartHost,
}

fn op(chaos: bool) -> impl Strategy<Value = Op> {
    let benign = prop_oneof![
        (1u64..400).prop_map(Op::Advance),
        Just(Op::DeliverH2d),
        Just(Op::DeliverD2h),
        (0u64..0x1000).prop_map(Op::Read),
        Just(Op::Dma),
        (any::<u8>(), any::<u64>(), any::<u64>()).prop_map(|(k, a, b)| Op::ForeignH2d(k, a, b)),
        (any::<u8>(), any::<u64>(), any::<u64>()).prop_map(|(k, a, b)| Op::ForeignD2h(k, a, b)),
    ];
    if chaos {
        prop_oneof![
            8 => benign,
            1 => Just(Op::DropH2d),
            1 => Just(Op::DropD2h),
            1 => Just(Op::DupH2d),
            1 => Just(Op::DupD2h),
            1 => Just(Op::RestartDevice),
            1 => Just(Op::RestartHost),
        ]
        .boxed()
    } else {
        benign.boxed()
    }
}

fn apply(w: &mut World, op: &Op) {
    match *op {
        Op::Advance(ms) => w.advance(ms),
        Op::DeliverH2d => w.deliver_h2d(),
        Op::DeliverD2h => w.deliver_d2h(),
        Op::DropH2d => {
            w.h2d.pop_front();
        }
        Op::DropD2h => {
            w.d2h.pop_front();
        }
        Op::DupH2d => {
            if let Some(f) = w.h2d.front().cloned() {
                w.h2d.push_front(f);
            }
        }
        Op::DupD2h => {
            if let Some(f) = w.d2h.front().cloned() {
                w.d2h.push_front(f);
            }
        }
        Op::Read(off) => w.host_read(off & !3),
        Op::Dma => w.device_dma(),
        Op::ForeignH2d(k, a, b) => w.h2d.push_back(foreign_frame(k, a, b)),
        Op::ForeignD2h(k, a, b) => w.d2h.push_back(foreign_frame(k, a, b)),
        Op::RestartDevice => w.restart_device(),
        Op::RestartHost => w.restart_host(),
    }
}

/// After any history, a quiet period with reliable delivery brings the session up and reads work.
fn settle_and_check(w: &mut World) {
    for _ in 0..40 {
        if w.host_failed {
            w.restart_host();
        }
        w.deliver_all();
        w.advance(100);
        if w.host.is_up() && w.dev.session() == w.host.session() {
            break;
        }
    }
    w.deliver_all();
    assert!(w.host.is_up(), "host not up after a quiet period: {:?} at {} ms", w.host.state(), w.ms());
    assert_eq!(w.dev.session(), w.host.session(), "the two sides disagree on the session");
    let before = w.reads_ok;
    w.host_read(0x40);
    w.deliver_all();
    assert_eq!(w.reads_ok, before + 1, "a read after settling did not complete");
}

#[test]
fn handshake_read_dma_and_goodbye() {
    let mut w = World::new();
    w.deliver_all();
    assert!(w.host.is_up());
    assert_eq!(w.host_ups, 1);
    assert_eq!(w.dev_sessions, 1);
    // The answer to a repeated INIT arriving after the session is up is no stray frame.
    let session = w.host.session().unwrap();
    w.d2h.push_back(
        Message::Config(Config { major: VERSION_MAJOR, minor: 0, caps: Caps::MSIX, session, device: device_config() })
            .encode_to_vec(),
    );
    w.deliver_all();
    assert_eq!(w.host.stats().drops.total(), 0, "{:?}", w.host.stats());
    w.host_read(0x10);
    w.device_dma();
    w.deliver_all();
    assert_eq!(w.reads_ok, 1);
    assert!(w.dev_dma.is_empty());
    w.host.close();
    w.pump();
    w.deliver_all();
    assert_eq!(w.dev.session(), None);
}

#[test]
fn foreign_frames_never_disturb_a_live_session() {
    let mut w = World::new();
    w.deliver_all();
    let session = w.host.session().unwrap();
    for i in 0..2000u64 {
        let k = (i % 10) as u8;
        w.h2d.push_back(foreign_frame(k, i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i));
        w.d2h.push_back(foreign_frame(k, i.wrapping_mul(0xc2b2_ae3d_27d4_eb4f), i));
        w.h2d.push_back(stray::frame(stray::Toward::Device, i));
        w.d2h.push_back(stray::frame(stray::Toward::Host, i));
        if i % 50 == 0 {
            w.host_read(i & 0xffc);
        }
        w.deliver_all();
        if i % 100 == 0 {
            w.advance(50);
        }
    }
    assert_eq!(w.host.session(), Some(session));
    assert_eq!(w.dev.session(), Some(session));
    assert_eq!(w.host_downs, 0);
    assert_eq!(w.dev_sessions, 1);
    assert_eq!(w.reads_ok, 40);
    assert!(w.host.stats().drops.total() >= 3500, "{:?}", w.host.stats());
    assert!(w.dev.stats().drops.total() >= 3500, "{:?}", w.dev.stats());
}

#[test]
fn version_mismatch_refused_before_a_session_only() {
    let t0 = Instant::now();
    let mut dev = new_device(1);
    let mut f = Message::Heartbeat(Heartbeat { instance: 1, session: 0 }).encode_to_vec();
    f[2] = VERSION_MAJOR + 1;
    let e = Message::decode(&f).unwrap_err();
    dev.handle_decode_error(t0, e.clone());
    assert!(matches!(dev.poll_event(), Some(DeviceEvent::Send(Message::Goodbye(Goodbye { reason: GoodbyeReason::Refused, session: 0 })))));
    // Rate-limited: not again within the retry interval.
    dev.handle_decode_error(t0 + Duration::from_millis(10), e.clone());
    assert_eq!(dev.poll_event(), None);
    // With a live session: counted and dropped, never refused.
    dev.handle_message(t0, Message::Init(Init { major: VERSION_MAJOR, minor: 0, caps: Caps::empty(), session: 5, prev_session: 0 }));
    while dev.poll_event().is_some() {}
    dev.handle_decode_error(t0 + Duration::from_secs(1) / 2, e);
    assert_eq!(dev.poll_event(), None);
    assert_eq!(dev.session(), Some(5));

    // The host: another version during the first handshake fails it, naming both versions.
    let mut host = new_host(t0, 1);
    while host.poll_event().is_some() {}
    host.handle_decode_error(t0, DecodeError::VersionMismatch { ours: VERSION_MAJOR, theirs: 7 });
    assert_eq!(host.poll_event(), None, "a refusal must stand for the liveness timeout first");
    host.handle_timeout(t0 + Duration::from_millis(LIVENESS_TIMEOUT_MS));
    let failed = std::iter::from_fn(|| host.poll_event()).find(|e| matches!(e, HostEvent::Failed(_)));
    match failed {
        Some(HostEvent::Failed(HandshakeError::Version { ours, theirs: 7 })) => assert_eq!(ours, VERSION_MAJOR),
        other => panic!("{other:?}"),
    }

    // A stray refusal while the real device answers: the CONFIG wins.
    let mut w = World::new();
    w.d2h.push_front(foreign_frame(8, 1, 1));
    w.d2h.push_front(Message::Goodbye(Goodbye { reason: GoodbyeReason::Refused, session: 0 }).encode_to_vec());
    w.deliver_all();
    w.advance(1500);
    w.deliver_all();
    assert!(w.host.is_up(), "{:?}", w.host.state());
    assert!(!w.host_failed);
}

#[test]
fn a_second_host_waits_until_the_first_is_lost() {
    let mut w = World::new();
    w.deliver_all();
    let first = w.host.session().unwrap();
    // A second host sends INIT (prev_session 0): the live session is kept.
    let mut other = new_host(w.now, 99);
    let Some(HostEvent::Send(init @ Message::Init(_))) = other.poll_event() else { panic!() };
    w.dev.handle_message(w.now, init.clone());
    w.pump();
    assert_eq!(w.dev.session(), Some(first));
    assert_eq!(w.dev.stats().drops.foreign, 1);
    // The first host goes silent: after the liveness timeout the device takes the new INIT.
    w.restart_host(); // the replacement host in the world is the second host's stand-in
    w.advance(1100);
    w.deliver_all();
    assert!(w.host.is_up(), "{:?}", w.host.state());
    assert_ne!(w.dev.session(), Some(first));
}

#[test]
fn host_reinit_of_its_own_session_is_accepted_at_once() {
    let mut w = World::new();
    w.deliver_all();
    let first = w.host.session().unwrap();
    // The host loses the device (e.g. it stalled) while the device still sees the host.
    for _ in 0..12 {
        w.now += Duration::from_millis(100);
        w.host.handle_timeout(w.now);
        w.pump();
    }
    assert!(!w.host.is_up());
    // The device speaks again: the host re-INITs with prev_session = first, accepted at once.
    w.d2h.clear();
    w.h2d.clear();
    w.dev.handle_timeout(w.now);
    w.pump();
    w.deliver_all();
    w.advance(20);
    w.deliver_all();
    assert!(w.host.is_up(), "{:?}", w.host.state());
    assert_ne!(w.host.session(), Some(first));
    assert_eq!(w.dev.session(), w.host.session());
}

#[test]
fn drop_warnings_are_rate_limited_and_counted() {
    let t0 = Instant::now();
    let mut dev = new_device(1);
    for i in 0..20_000u32 {
        dev.handle_decode_error(t0 + Duration::from_micros(u64::from(i)), DecodeError::BadMagic([0, 0]));
    }
    assert_eq!(dev.stats().drops.malformed, 20_000);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Any interleaving with drops, duplicates, restarts and foreign frames keeps the
    /// invariants (checked in `World`), and a quiet period afterwards brings a working session.
    #[test]
    fn chaos_keeps_the_invariants_and_recovers(ops in proptest::collection::vec(op(true), 1..300)) {
        let mut w = World::new();
        for o in &ops {
            apply(&mut w, o);
        }
        settle_and_check(&mut w);
    }

    /// Without drops or restarts, foreign frames never take the session down once it is up.
    #[test]
    fn foreign_frames_only_keep_the_session(ops in proptest::collection::vec(op(false), 1..300)) {
        let mut w = World::new();
        w.deliver_all();
        let session = w.host.session().unwrap();
        for o in &ops {
            // Keep traffic flowing so liveness never expires in this property.
            if let Op::Advance(ms) = o {
                let mut left = *ms;
                while left > 0 {
                    let s = left.min(50);
                    left -= s;
                    w.advance(s);
                    w.deliver_all();
                }
                continue;
            }
            apply(&mut w, o);
        }
        w.deliver_all();
        prop_assert_eq!(w.host.session(), Some(session));
        prop_assert_eq!(w.dev.session(), Some(session));
        prop_assert_eq!(w.host_downs, 0);
        prop_assert_eq!(w.dev_sessions, 1);
        prop_assert!(w.host_reads.is_empty(), "reads left unanswered: {:?}", w.host_reads);
    }
}

#[test]
fn the_design_clock_goes_only_to_hosts_that_decode_it() {
    // Protocol 2.1: CONFIG carries the clock to a host of minor 1 or later, and the 2.0 length
    // (no clock) to a 2.0 host, which decodes CONFIG at that fixed length only.
    let mut cfg = device_config();
    cfg.clock_hz = 250_000_000;
    let mut dev = DeviceSession::new(DeviceSessionConfig {
        name: "dev".into(),
        caps: Caps::MSIX,
        device: cfg,
        instance: 7,
        timing: Timing::default(),
    });
    let now = Instant::now();
    for (session, minor, clock, len) in [(11u64, 0u8, 0u64, 8 + 116), (12, VERSION_MINOR, 250_000_000, 8 + 124)] {
        let init = Init { major: VERSION_MAJOR, minor, caps: Caps::MSIX, session, prev_session: 0 };
        dev.handle_message(now, Message::Init(init));
        // A GOODBYE ends the session, so the next INIT (another host) is answered too.
        let mut config = None;
        while let Some(ev) = dev.poll_event() {
            if let DeviceEvent::Send(m @ Message::Config(_)) = ev {
                config = Some(m);
            }
        }
        let m = config.unwrap_or_else(|| panic!("no CONFIG for the INIT of minor {minor}"));
        let bytes = m.encode_to_vec();
        assert_eq!(bytes.len(), len, "CONFIG length for a host of minor {minor}");
        let Message::Config(c) = Message::decode(&bytes).unwrap() else { unreachable!() };
        assert_eq!((c.session, c.device.clock_hz), (session, clock), "minor {minor}");
        dev.handle_message(now, Message::Goodbye(Goodbye { reason: GoodbyeReason::Shutdown, session }));
    }
}
