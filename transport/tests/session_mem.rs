//! The two session engines against each other over the in-memory transport, with simulated time
//! (the clock is an `Instant` advanced by the test: no sleeps): handshake, a read, the device
//! going silent and coming back, and stray frames on both channels that change nothing.

use std::time::{Duration, Instant};

use cosim_protocol::session::stray::{frame, Toward};
use cosim_protocol::session::*;
use cosim_protocol::*;
use cosim_transport::{mem_pair, MemTransport, Transport, TransportError};

struct Pair {
    now: Instant,
    host: HostSession,
    dev: DeviceSession,
    h: MemTransport,
    d: MemTransport,
    reads: Vec<MmioReadResp>,
    downs: u32,
    ups: u32,
    /// While false, the device's frames are lost (a silent or cut-off device).
    device_speaks: bool,
}

impl Pair {
    fn new() -> Self {
        let now = Instant::now();
        let (h, d) = mem_pair();
        let mut device = DeviceConfig { vendor_id: 0x1ded, device_id: 1, ..Default::default() };
        device.bars[0] = BarDesc::mem32(0x1000);
        let host = HostSession::new(
            HostSessionConfig {
                name: "host".into(),
                caps: Caps::MSIX,
                instance: 1,
                seed: 7,
                handshake_timeout: Duration::from_secs(5),
                timing: Timing::default(),
            },
            now,
        );
        let dev = DeviceSession::new(DeviceSessionConfig {
            name: "dev".into(),
            caps: Caps::MSIX,
            device,
            instance: 2,
            timing: Timing::default(),
        });
        Self { now, host, dev, h, d, reads: Vec::new(), downs: 0, ups: 0, device_speaks: true }
    }

    fn feed<F: FnMut(Result<Message, DecodeError>)>(t: &mut MemTransport, mut f: F) {
        loop {
            match t.recv(Duration::ZERO) {
                Ok(Some(m)) => f(Ok(m)),
                Ok(None) => return,
                Err(TransportError::Decode(e)) => f(Err(e)),
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Runs both engines until nothing moves, then advances the clock by `ms` in 10 ms steps.
    fn run(&mut self, ms: u64) {
        for step in 0..=ms / 10 {
            if step > 0 {
                self.now += Duration::from_millis(10);
            }
            self.host.handle_timeout(self.now);
            self.dev.handle_timeout(self.now);
            for _ in 0..100 {
                let mut moved = false;
                while let Some(ev) = self.host.poll_event() {
                    moved = true;
                    match ev {
                        HostEvent::Send(m) => self.h.send(&m).unwrap(),
                        HostEvent::ReadDone(r) => self.reads.push(r),
                        HostEvent::Up(_) => self.ups += 1,
                        HostEvent::Down(_) => self.downs += 1,
                        HostEvent::Failed(e) => panic!("{e}"),
                        HostEvent::ReadAborted { .. } | HostEvent::Deliver(_) => {}
                    }
                }
                while let Some(ev) = self.dev.poll_event() {
                    moved = true;
                    match ev {
                        DeviceEvent::Send(m) if self.device_speaks => self.d.send(&m).unwrap(),
                        DeviceEvent::Deliver(Message::MmioRead(r)) => {
                            assert!(self.dev.send(Message::MmioReadResp(MmioReadResp { tag: r.tag, status: Status::Ok, data: r.offset })));
                        }
                        _ => {}
                    }
                }
                let now = self.now;
                let dev = &mut self.dev;
                Self::feed(&mut self.d, |r| {
                    moved = true;
                    match r {
                        Ok(m) => dev.handle_message(now, m),
                        Err(e) => dev.handle_decode_error(now, e),
                    }
                });
                let host = &mut self.host;
                Self::feed(&mut self.h, |r| {
                    moved = true;
                    match r {
                        Ok(m) => host.handle_message(now, m),
                        Err(e) => host.handle_decode_error(now, e),
                    }
                });
                if !moved {
                    break;
                }
            }
        }
    }
}

#[test]
fn engines_over_the_mem_transport_with_simulated_time() {
    let mut p = Pair::new();
    p.run(0);
    assert!(p.host.is_up() && p.dev.session() == p.host.session());
    let first = p.host.session().unwrap();

    // A read, with stray frames pushed into both channels around it.
    for n in 0..500 {
        p.h.send_frame(&frame(Toward::Device, n)).unwrap();
        p.d.send_frame(&frame(Toward::Host, n)).unwrap();
    }
    let tag = p.host.mmio_read(BarIndex::new(0).unwrap(), 0x40, AccessSize::B4).unwrap();
    p.run(300);
    assert_eq!(p.reads, vec![MmioReadResp { tag, status: Status::Ok, data: 0x40 }]);
    assert_eq!((p.host.session(), p.downs, p.dev.stats().sessions), (Some(first), 0, 1));
    assert!(p.host.stats().drops.total() >= 500 && p.dev.stats().drops.total() >= 500);

    // The device goes silent for 1.5 s of simulated time: the host declares it lost...
    p.device_speaks = false;
    p.run(1500);
    assert_eq!(p.downs, 1);
    assert!(!p.host.is_up());
    assert_eq!(p.host.mmio_read(BarIndex::new(0).unwrap(), 0, AccessSize::B4), None, "no reads without a session");
    // ...and when it speaks again, the host re-INITs with its previous session and is up again.
    p.device_speaks = true;
    p.run(300);
    assert!(p.host.is_up(), "{:?}", p.host.state());
    assert_ne!(p.host.session(), Some(first));
    assert_eq!(p.dev.session(), p.host.session());
    assert_eq!(p.ups, 2);
}
