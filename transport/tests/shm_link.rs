//! The shared-memory link as the peers use it: a host and a device session loop over
//! `ZmqTransport` on an ipc endpoint, negotiating the rings at INIT (docs/protocol.md,
//! "Shared-memory link"), and falling back to ZeroMQ when either side does not take part.

use std::time::{Duration, Instant};

use cosim_protocol::session::{DeviceEvent, HostEvent};
use cosim_protocol::*;
use cosim_transport::{DeviceLoop, Endpoint, HostLoop, PrivateDir, Side, ZmqOptions, ZmqTransport};

fn device_config() -> DeviceConfig {
    let mut d = DeviceConfig { vendor_id: 0x1ded, device_id: 0x7e57, class_code: 0x12_00_00, ..Default::default() };
    d.bars[0] = BarDesc::mem32(0x1000);
    d.msix = MsixConfig { vectors: 1, table_bar: 0, table_offset: 0x800, pba_bar: 0, pba_offset: 0xc00 };
    d
}

fn open(ep: &Endpoint, side: Side, shm: bool) -> ZmqTransport {
    ZmqTransport::open(ep, side, &ZmqOptions { shm, ..ZmqOptions::default() }).unwrap()
}

struct Pair {
    h: HostLoop<ZmqTransport>,
    d: DeviceLoop<ZmqTransport>,
}

impl Pair {
    fn new(ep: &Endpoint, host_shm: bool, dev_shm: bool) -> Self {
        Self {
            d: DeviceLoop::device(open(ep, Side::Device, dev_shm), "dev", Caps::MSIX, device_config()),
            h: HostLoop::host(open(ep, Side::Host, host_shm), "host", Caps::MSIX, Duration::from_secs(5)),
        }
    }

    /// Polls both loops until `done` says so; the device answers MMIO reads with offset ^ 0x55.
    fn run_until<R>(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(Option<&HostEvent>, Option<&DeviceEvent>) -> Option<R>,
    ) -> R {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let he = self.h.poll(Duration::ZERO).unwrap();
            let de = self.d.poll(Duration::from_micros(200)).unwrap();
            if let Some(r) = done(he.as_ref(), de.as_ref()) {
                return r;
            }
            if let Some(DeviceEvent::Deliver(Message::MmioRead(r))) = de {
                let resp = MmioReadResp { tag: r.tag, status: Status::Ok, data: r.offset ^ 0x55 };
                assert!(self.d.send(Message::MmioReadResp(resp)).unwrap());
            }
        }
        panic!("the loops did not get there within {limit:?}");
    }

    fn up(&mut self) -> u64 {
        self.run_until(Duration::from_secs(5), |he, _| match he {
            Some(HostEvent::Up(c)) => Some(c.session),
            _ => None,
        })
    }

    fn read(&mut self, offset: u64) -> u64 {
        let tag = self.h.act(|s| s.mmio_read(BarIndex::new(0).unwrap(), offset, AccessSize::B4)).unwrap().expect("up");
        self.run_until(Duration::from_secs(2), |he, _| match he {
            Some(HostEvent::ReadDone(r)) if r.tag == tag => Some(r.data),
            _ => None,
        })
    }

    /// 200 DMA writes then an MSI-X: the host sees them in order. (Less than a ring's 1 MiB in
    /// all: this test runs both sides on one thread, so nobody consumes while the device sends.)
    fn dma_then_msix(&mut self) {
        for i in 0..200u64 {
            let w = DmaWrite { addr: GuestAddr(i * 4096), data: vec![i as u8; 1 + (i as usize * 331) % 4096] };
            assert!(self.d.send(Message::DmaWrite(w)).unwrap());
        }
        assert!(self.d.send(Message::Msix(Msix { vector: 0 })).unwrap());
        let mut next = 0u64;
        let at_msix = self.run_until(Duration::from_secs(5), |he, _| match he {
            Some(HostEvent::Deliver(Message::DmaWrite(w))) => {
                assert_eq!(w.addr.0, next * 4096, "DMA writes out of order");
                assert_eq!(w.data.len(), 1 + (next as usize * 331) % 4096);
                next += 1;
                None
            }
            Some(HostEvent::Deliver(Message::Msix(_))) => Some(next),
            _ => None,
        });
        assert_eq!(at_msix, 200, "MSI-X overtook a DMA write");
    }

    fn active(&mut self) -> (bool, bool) {
        (self.h.transport().shm_active(), self.d.transport().shm_active())
    }
}

fn endpoint(d: &PrivateDir) -> Endpoint {
    Endpoint::parse(&d.endpoint("dev")).unwrap()
}

#[test]
fn both_sides_willing_run_the_session_over_shared_memory() {
    let dir = PrivateDir::new("cosim-shm-link").unwrap();
    let mut p = Pair::new(&endpoint(&dir), true, true);
    let session = p.up();
    assert!(p.h.engine().peer_caps().contains(Caps::SHM), "CONFIG says SHM");
    assert_eq!(p.active(), (true, true));
    assert_eq!(p.read(0x40), 0x40 ^ 0x55);
    p.dma_then_msix();
    // Nothing but heartbeats for 1.5 s (more than the liveness timeout): the session stays.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        p.h.poll(Duration::from_millis(5)).unwrap();
        p.d.poll(Duration::from_millis(5)).unwrap();
    }
    assert_eq!(p.h.engine().session(), Some(session), "heartbeats over the ring keep the session");
    assert_eq!(p.h.engine().stats().losses, 0);
    // The names in the directory are gone once both sides mapped them.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.iter().all(|n| !n.to_string_lossy().contains(".shm-")), "{left:?}");
    p.h.close().unwrap();
    let reason = p.run_until(Duration::from_secs(2), |_, de| match de {
        Some(DeviceEvent::SessionEnded(r)) => Some(*r),
        _ => None,
    });
    assert_eq!(reason, GoodbyeReason::Shutdown, "GOODBYE over the ring");
}

#[test]
fn either_side_unwilling_means_zeromq() {
    for (host_shm, dev_shm) in [(false, true), (true, false)] {
        let dir = PrivateDir::new("cosim-shm-link").unwrap();
        let mut p = Pair::new(&endpoint(&dir), host_shm, dev_shm);
        p.up();
        assert_eq!(p.active(), (false, false), "host {host_shm}, device {dev_shm}");
        assert!(!p.h.engine().peer_caps().contains(Caps::SHM));
        assert_eq!(p.read(0x10), 0x10 ^ 0x55);
        p.dma_then_msix();
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.iter().all(|n| !n.to_string_lossy().contains(".shm-")), "host cleaned up: {left:?}");
    }
}

#[test]
fn tcp_never_offers_shared_memory() {
    let port = cosim_transport::free_port_pair("127.0.0.1").unwrap();
    let ep = Endpoint::parse(&format!("tcp://127.0.0.1:{port}")).unwrap();
    let mut p = Pair::new(&ep, true, true);
    p.up();
    assert_eq!(p.active(), (false, false));
    assert_eq!(p.read(0x20), 0x20 ^ 0x55);
}

#[test]
fn a_restarted_device_gets_a_new_ring() {
    let dir = PrivateDir::new("cosim-shm-link").unwrap();
    let ep = endpoint(&dir);
    let mut p = Pair::new(&ep, true, true);
    let first = p.up();
    assert_eq!(p.active(), (true, true));
    // The device process goes away without a word; a new one starts on the same endpoint.
    let old = std::mem::replace(
        &mut p.d,
        DeviceLoop::device(open(&ep, Side::Device, true), "dev2", Caps::MSIX, device_config()),
    );
    drop(old);
    let second = p.run_until(Duration::from_secs(5), |he, _| match he {
        Some(HostEvent::Up(c)) => Some(c.session),
        _ => None,
    });
    assert_ne!(first, second);
    assert_eq!(p.active(), (true, true));
    assert_eq!(p.read(0x30), 0x30 ^ 0x55);
    assert_eq!(p.h.engine().stats().losses, 1);
}

#[test]
fn each_side_spins_as_its_options_say() {
    let dir = PrivateDir::new("cosim-shm-spin").unwrap();
    let ep = endpoint(&dir);
    let dev_opts = ZmqOptions { shm: true, shm_spin: Duration::from_micros(321), ..ZmqOptions::default() };
    let host_opts = ZmqOptions { shm: true, shm_spin: Duration::from_micros(7), ..ZmqOptions::default() };
    let mut p = Pair {
        d: DeviceLoop::device(ZmqTransport::open(&ep, Side::Device, &dev_opts).unwrap(), "dev", Caps::MSIX, device_config()),
        h: HostLoop::host(ZmqTransport::open(&ep, Side::Host, &host_opts).unwrap(), "host", Caps::MSIX, Duration::from_secs(5)),
    };
    p.up();
    assert_eq!(p.active(), (true, true));
    let spin = |t: &ZmqTransport| t.ring_spin_hint().expect("a ring").0;
    assert_eq!(spin(p.h.transport()), Duration::from_micros(7), "the host's ring");
    assert_eq!(spin(p.d.transport()), Duration::from_micros(321), "the device's ring");
    assert_eq!(p.read(0x8), 0x8 ^ 0x55);
}
