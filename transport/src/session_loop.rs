//! The thin loop around a sans-I/O session engine (STYLE.md 10; docs/protocol.md "Session rules").
//!
//! [`SessionLoop`] owns a [`Transport`] and reads the clock; the engine
//! ([`DeviceSession`] or [`HostSession`] from `cosim_protocol::session`) owns every session rule.
//! The loop feeds the engine each received frame (decoded message or decode error) and its timer,
//! sends every message the engine queues, and hands the remaining events (deliveries, session
//! up/down) to the caller's device or host logic, in the engine's order. It adds no rule of its
//! own, so the test doubles (`cosim-zmq-peer`, `cosim-fake-gemm`, qemu-device's fake HDL peer)
//! and the tests' host side all behave as the engine says, from one implementation.
//!
//! The caller owns the thread: [`SessionLoop::poll`] returns within its timeout (plus the
//! handling of one frame).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use cosim_protocol::liveness::random_id;
use cosim_protocol::session::{
    DeviceEvent, DeviceSession, DeviceSessionConfig, HostEvent, HostSession, HostSessionConfig, Timing,
};
use cosim_protocol::{Caps, DecodeError, DeviceConfig, Message};

use crate::{Transport, TransportError};

/// What [`SessionLoop`] needs of a session engine. Implemented for [`DeviceSession`] and
/// [`HostSession`]; each method is the engine's method of the same name.
pub trait SessionEngine {
    /// The engine's event type ([`DeviceEvent`] or [`HostEvent`]).
    type Event;
    /// Feeds a received message.
    fn handle_message(&mut self, now: Instant, msg: Message);
    /// Feeds a frame that failed to decode.
    fn handle_decode_error(&mut self, now: Instant, e: DecodeError);
    /// Runs the timers.
    fn handle_timeout(&mut self, now: Instant);
    /// When the timers should run next.
    fn next_timeout(&self, now: Instant) -> Instant;
    /// The next queued event.
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// `Ok(message)` for a "send this" event, else the event back.
    fn into_send(ev: Self::Event) -> Result<Message, Self::Event>;
    /// Queues a message this side starts; false if the engine refuses it.
    fn send(&mut self, msg: Message) -> bool;
    /// Ends the session (queues GOODBYE if there is one).
    fn close(&mut self);
}

/// Implements [`SessionEngine`] for an engine whose events have a `Send(Message)` variant by
/// calling the engine's own methods.
macro_rules! session_engine {
    ($engine:ident, $event:ident) => {
        impl SessionEngine for $engine {
            type Event = $event;
            fn handle_message(&mut self, now: Instant, msg: Message) {
                $engine::handle_message(self, now, msg);
            }
            fn handle_decode_error(&mut self, now: Instant, e: DecodeError) {
                $engine::handle_decode_error(self, now, e);
            }
            fn handle_timeout(&mut self, now: Instant) {
                $engine::handle_timeout(self, now);
            }
            fn next_timeout(&self, now: Instant) -> Instant {
                $engine::next_timeout(self, now)
            }
            fn poll_event(&mut self) -> Option<$event> {
                $engine::poll_event(self)
            }
            fn into_send(ev: $event) -> Result<Message, $event> {
                match ev {
                    $event::Send(m) => Ok(m),
                    other => Err(other),
                }
            }
            fn send(&mut self, msg: Message) -> bool {
                $engine::send(self, msg)
            }
            fn close(&mut self) {
                $engine::close(self);
            }
        }
    };
}

session_engine!(DeviceSession, DeviceEvent);
session_engine!(HostSession, HostEvent);

/// A session engine driven over a transport. See the module docs.
#[derive(Debug)]
pub struct SessionLoop<E: SessionEngine, T> {
    engine: E,
    transport: T,
    /// Events for the caller, in the engine's order (sends are carried out as they are queued).
    events: VecDeque<E::Event>,
    next_timer: Instant,
}

/// The device side: a [`DeviceSession`] over a transport.
pub type DeviceLoop<T> = SessionLoop<DeviceSession, T>;
/// The host side: a [`HostSession`] over a transport.
pub type HostLoop<T> = SessionLoop<HostSession, T>;

impl<T: Transport> DeviceLoop<T> {
    /// A device that announces `device` and `caps` in CONFIG, with the protocol's timing and a
    /// random instance number; it waits for INIT.
    pub fn device(transport: T, name: impl Into<String>, caps: Caps, device: DeviceConfig) -> Self {
        let cfg = DeviceSessionConfig { name: name.into(), caps, device, instance: random_id(), timing: Timing::default() };
        Self::new(DeviceSession::new(cfg), transport)
    }
}

impl<T: Transport> HostLoop<T> {
    /// A host that announces `caps` in INIT, with the protocol's timing and random instance and
    /// session numbers. Its first INIT goes out at the first [`SessionLoop::poll`]; the first
    /// handshake fails ([`HostEvent::Failed`]) after `handshake_timeout`.
    pub fn host(transport: T, name: impl Into<String>, caps: Caps, handshake_timeout: Duration) -> Self {
        let cfg = HostSessionConfig {
            name: name.into(),
            caps,
            instance: random_id(),
            seed: random_id(),
            handshake_timeout,
            timing: Timing::default(),
        };
        Self::new(HostSession::new(cfg, Instant::now()), transport)
    }
}

impl<E: SessionEngine, T: Transport> SessionLoop<E, T> {
    /// Binds `engine` to `transport`. Nothing is sent before the first [`Self::poll`] or
    /// [`Self::act`].
    pub fn new(engine: E, transport: T) -> Self {
        Self { engine, transport, events: VecDeque::new(), next_timer: Instant::now() }
    }

    /// The engine (state, session number, counters).
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// The transport, for tests that send raw (malformed or hostile) frames past the engine.
    pub fn transport(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Runs the timers when due, carries out the engine's sends, and returns the next event for
    /// the caller's logic (never a send). Without one, waits up to `timeout` for frames and feeds
    /// them to the engine. `Ok(None)`: `timeout` passed without an event (frames that give the
    /// logic nothing, such as heartbeats, may have been handled). Errors are the transport's:
    /// a frame that does not decode is the engine's business, never an error here.
    pub fn poll(&mut self, timeout: Duration) -> Result<Option<E::Event>, TransportError> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            if now >= self.next_timer {
                self.engine.handle_timeout(now);
                self.next_timer = self.engine.next_timeout(now);
            }
            self.flush()?;
            if let Some(ev) = self.events.pop_front() {
                return Ok(Some(ev));
            }
            let now = Instant::now();
            let wait = deadline.min(self.next_timer).saturating_duration_since(now);
            if let Some(frame) = self.transport.recv_frame(wait)? {
                let now = Instant::now();
                match Message::decode_vec(frame) {
                    Ok(m) => self.engine.handle_message(now, m),
                    Err(e) => self.engine.handle_decode_error(now, e),
                }
                self.flush()?;
                if let Some(ev) = self.events.pop_front() {
                    return Ok(Some(ev));
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// Calls `f` on the engine (to start a read, send, close, ...) and carries out the sends it
    /// queued; other events it queued wait for [`Self::poll`].
    pub fn act<R>(&mut self, f: impl FnOnce(&mut E) -> R) -> Result<R, TransportError> {
        let r = f(&mut self.engine);
        self.flush()?;
        Ok(r)
    }

    /// Sends a message this side starts, through the engine: `Ok(false)` if the engine refused
    /// it (no session, a completion for nothing outstanding, a message of the other direction).
    pub fn send(&mut self, msg: Message) -> Result<bool, TransportError> {
        self.act(|e| e.send(msg))
    }

    /// Ends the session: GOODBYE for it, if there is one.
    pub fn close(&mut self) -> Result<(), TransportError> {
        self.act(E::close)
    }

    fn flush(&mut self) -> Result<(), TransportError> {
        while let Some(ev) = self.engine.poll_event() {
            match E::into_send(ev) {
                Ok(msg) => self.transport.send(&msg)?,
                Err(ev) => self.events.push_back(ev),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{mem_pair, MemTransport};
    use cosim_protocol::session::HostState;
    use cosim_protocol::{AccessSize, BarDesc, BarIndex, DmaWrite, GoodbyeReason, GuestAddr, Status};

    fn device_config() -> DeviceConfig {
        let mut d = DeviceConfig { vendor_id: 0x1ded, device_id: 0x7e57, class_code: 0x12_00_00, ..Default::default() };
        d.bars[0] = BarDesc::mem32(0x1000);
        d
    }

    fn pair() -> (HostLoop<MemTransport>, DeviceLoop<MemTransport>) {
        let (h, d) = mem_pair();
        (
            HostLoop::host(h, "host", Caps::all(), Duration::from_secs(5)),
            DeviceLoop::device(d, "dev", Caps::all(), device_config()),
        )
    }

    /// Polls both sides (without waiting) until `done` says so; panics after 2 s.
    fn run_until<R>(
        h: &mut HostLoop<MemTransport>,
        d: &mut DeviceLoop<MemTransport>,
        mut done: impl FnMut(Option<&HostEvent>, Option<&DeviceEvent>) -> Option<R>,
    ) -> R {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let he = h.poll(Duration::ZERO).unwrap();
            let de = d.poll(Duration::ZERO).unwrap();
            if let Some(r) = done(he.as_ref(), de.as_ref()) {
                return r;
            }
            if let Some(DeviceEvent::Deliver(Message::MmioRead(r))) = de {
                let resp = cosim_protocol::MmioReadResp { tag: r.tag, status: Status::Ok, data: r.offset ^ 0x55 };
                assert!(d.send(Message::MmioReadResp(resp)).unwrap());
            }
        }
        panic!("the two loops did not get there within 2 s");
    }

    #[test]
    fn handshake_read_dma_and_goodbye_through_the_loops() {
        let (mut h, mut d) = pair();
        let session = run_until(&mut h, &mut d, |he, _| match he {
            Some(HostEvent::Up(c)) => Some(c.session),
            _ => None,
        });
        assert_eq!(h.engine().session(), Some(session));
        assert_eq!(d.engine().session(), Some(session));
        // Outside a session the engine refuses device traffic; inside it goes through.
        let tag = h.act(|s| s.mmio_read(BarIndex::new(0).unwrap(), 0x40, AccessSize::B4)).unwrap().expect("session up");
        let data = run_until(&mut h, &mut d, |he, _| match he {
            Some(HostEvent::ReadDone(r)) if r.tag == tag => Some(r.data),
            _ => None,
        });
        assert_eq!(data, 0x40 ^ 0x55);
        assert!(d.send(Message::DmaWrite(DmaWrite { addr: GuestAddr(0x1000), data: vec![7; 8] })).unwrap());
        run_until(&mut h, &mut d, |he, _| matches!(he, Some(HostEvent::Deliver(Message::DmaWrite(_)))).then_some(()));
        h.close().unwrap();
        assert_eq!(*h.engine().state(), HostState::Down(cosim_protocol::session::DownReason::Closed));
        let reason = run_until(&mut h, &mut d, |_, de| match de {
            Some(DeviceEvent::SessionEnded(r)) => Some(*r),
            _ => None,
        });
        assert_eq!(reason, GoodbyeReason::Shutdown);
        assert_eq!(d.engine().session(), None);
        assert!(!d.send(Message::DmaWrite(DmaWrite { addr: GuestAddr(0), data: vec![1] })).unwrap(), "no session, not sent");
    }

    #[test]
    fn a_malformed_frame_goes_to_the_engine_and_the_loop_keeps_running() {
        let (mut h, mut d) = pair();
        run_until(&mut h, &mut d, |he, _| matches!(he, Some(HostEvent::Up(_))).then_some(()));
        h.transport().send_frame(b"garbage!").unwrap();
        h.transport().send_frame(&[b'C', b'S', cosim_protocol::VERSION_MAJOR, 0x7f, 0, 0, 0, 0]).unwrap();
        assert!(h.send(Message::Serial(b"hi".to_vec())).unwrap());
        let got = run_until(&mut h, &mut d, |_, de| match de {
            Some(DeviceEvent::Deliver(Message::Serial(b))) => Some(b.clone()),
            _ => None,
        });
        assert_eq!(got, b"hi");
        assert_eq!(d.engine().stats().drops.malformed, 2);
    }

    #[test]
    fn poll_waits_its_timeout_and_keeps_the_heartbeats_going() {
        let (mut h, d) = mem_pair();
        let mut dev = DeviceLoop::device(d, "dev", Caps::empty(), device_config());
        let t0 = Instant::now();
        assert!(dev.poll(Duration::from_millis(250)).unwrap().is_none(), "no host, no event");
        assert!(t0.elapsed() >= Duration::from_millis(250));
        let mut beats = 0;
        while let Some(f) = h.recv_frame(Duration::ZERO).unwrap() {
            match Message::decode_vec(f).unwrap() {
                Message::Heartbeat(hb) => {
                    assert_eq!(hb.session, 0, "no session yet");
                    beats += 1;
                }
                other => panic!("a device without a session sent {other:?}"),
            }
        }
        assert!((2..=4).contains(&beats), "{beats} heartbeats in 250 ms (one per 100 ms)");
    }
}
