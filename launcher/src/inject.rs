//! Fault injection for tests (`cosim-launch --inject-stray RATE`): a separate process-local
//! ZeroMQ socket, not a session peer, pushes stray frames (`cosim_protocol::session::stray`)
//! into every simulation's `h2d` channel and into QEMU's `d2h` channel while the workload runs,
//! as a stray or hostile local process could. The session rules must drop every one of them
//! without disturbing the guest's jobs (docs/protocol.md, "Session rules").
//!
//! Works where the channels admit this user: ipc endpoints (same uid). Over tcp the link key
//! keeps the injector out, which is the point of it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cosim_protocol::session::stray::{frame, Toward};
use cosim_transport::Endpoint;

use crate::Error;

fn inject_err(what: impl Into<String>) -> impl FnOnce(zmq::Error) -> Error {
    let what = what.into();
    move |e| Error::Inject { what, source: Box::new(e) }
}

/// A running injector; [`Injector::stop`] ends it and says how many frames it pushed.
pub struct Injector {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<u64>>,
}

/// Connects to every endpoint's two channels and starts pushing `rate` frames per second into
/// each channel.
pub fn start(endpoints: &[String], rate: u32) -> Result<Injector, Error> {
    let ctx = zmq::Context::new();
    let mut socks = Vec::new();
    for ep in endpoints {
        let e =
            Endpoint::parse(ep).map_err(|e| Error::Inject { what: format!("endpoint {ep}"), source: Box::new(e) })?;
        for (addr, toward) in [(e.h2d(), Toward::Device), (e.d2h(), Toward::Host)] {
            let s = ctx.socket(zmq::PUSH).map_err(inject_err("socket"))?;
            s.set_linger(0).map_err(inject_err("socket options"))?;
            s.set_sndhwm(1000).map_err(inject_err("socket options"))?;
            s.connect(&addr).map_err(inject_err(format!("connect {addr}")))?;
            socks.push((s, toward));
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let handle = std::thread::Builder::new().name("cosim-inject".into()).spawn(move || {
        let _ctx = ctx;
        let t0 = Instant::now();
        let mut n = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            let due = (t0.elapsed().as_secs_f64() * f64::from(rate)) as u64;
            while n < due {
                for (s, toward) in &socks {
                    // Never block: a full queue just skips the frame.
                    let _ = s.send(frame(*toward, n), zmq::DONTWAIT);
                }
                n += 1;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        n * socks.len() as u64
    });
    let handle = handle.map_err(|e| Error::Inject { what: "thread".into(), source: Box::new(e) })?;
    Ok(Injector { stop, handle: Some(handle) })
}

impl Injector {
    /// Stops pushing; returns the number of frames offered to the channels.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().and_then(|h| h.join().ok()).unwrap_or(0)
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
