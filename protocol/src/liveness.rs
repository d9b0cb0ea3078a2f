//! Peer liveness bookkeeping, shared by both sides. Pure: the caller passes the time in.
//!
//! Rule (docs/protocol.md, "Liveness"): each side sends a HEARTBEAT every
//! [`HEARTBEAT_INTERVAL_MS`](crate::HEARTBEAT_INTERVAL_MS); a peer from which *nothing* arrived
//! for [`LIVENESS_TIMEOUT_MS`](crate::LIVENESS_TIMEOUT_MS) is dead. A heartbeat with a new
//! instance number means the peer restarted.

use std::time::{Duration, Instant};

/// What an event did to our view of the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    /// Nothing changed.
    None,
    /// First sign of life from a peer we considered absent.
    Appeared,
    /// The peer's instance number changed: it restarted.
    Restarted,
    /// Nothing arrived within the timeout: the peer is gone.
    Lost,
}

/// Tracks whether the peer is alive and when we owe it a heartbeat.
#[derive(Debug, Clone)]
pub struct Liveness {
    timeout: Duration,
    interval: Duration,
    last_rx: Option<Instant>,
    last_tx: Option<Instant>,
    instance: Option<u64>,
}

impl Liveness {
    /// With the protocol's default interval and timeout.
    pub fn new() -> Self {
        Self::with_timing(
            Duration::from_millis(crate::HEARTBEAT_INTERVAL_MS),
            Duration::from_millis(crate::LIVENESS_TIMEOUT_MS),
        )
    }

    /// With explicit timing.
    pub fn with_timing(interval: Duration, timeout: Duration) -> Self {
        Self { timeout, interval, last_rx: None, last_tx: None, instance: None }
    }

    /// True while the peer is considered alive.
    pub fn alive(&self) -> bool {
        self.last_rx.is_some()
    }

    /// Records that any message arrived at `now`. Heartbeats pass their instance number.
    pub fn on_receive(&mut self, now: Instant, heartbeat_instance: Option<u64>) -> PeerEvent {
        let was_alive = self.last_rx.is_some();
        self.last_rx = Some(now);
        if let Some(inst) = heartbeat_instance {
            let prev = self.instance.replace(inst);
            if matches!(prev, Some(p) if p != inst) {
                return PeerEvent::Restarted;
            }
        }
        if was_alive {
            PeerEvent::None
        } else {
            PeerEvent::Appeared
        }
    }

    /// Records a GOODBYE (or any other sign that the peer left).
    pub fn on_goodbye(&mut self) {
        self.last_rx = None;
        self.instance = None;
    }

    /// Checks the timeout at `now`.
    pub fn poll(&mut self, now: Instant) -> PeerEvent {
        match self.last_rx {
            Some(t) if now.saturating_duration_since(t) > self.timeout => {
                self.on_goodbye();
                PeerEvent::Lost
            }
            _ => PeerEvent::None,
        }
    }

    /// True if a heartbeat is due at `now`; if so, records it as sent.
    pub fn heartbeat_due(&mut self, now: Instant) -> bool {
        match self.last_tx {
            Some(t) if now.saturating_duration_since(t) < self.interval => false,
            _ => {
                self.last_tx = Some(now);
                true
            }
        }
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new()
    }
}

/// A random 64-bit number for [`crate::Heartbeat::instance`] or [`crate::Init::session`]
/// (seeded by the standard library's per-process random hash keys).
pub fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appear_restart_lose() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut l = Liveness::with_timing(ms(100), ms(1000));
        assert!(!l.alive());
        assert_eq!(l.on_receive(t0, Some(7)), PeerEvent::Appeared);
        assert_eq!(l.on_receive(t0 + ms(50), None), PeerEvent::None);
        assert_eq!(l.on_receive(t0 + ms(60), Some(7)), PeerEvent::None);
        assert_eq!(l.on_receive(t0 + ms(70), Some(8)), PeerEvent::Restarted);
        assert_eq!(l.poll(t0 + ms(900)), PeerEvent::None);
        assert_eq!(l.poll(t0 + ms(1071)), PeerEvent::Lost);
        assert!(!l.alive());
        assert_eq!(l.on_receive(t0 + ms(2000), Some(9)), PeerEvent::Appeared);
    }

    #[test]
    fn heartbeat_schedule() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut l = Liveness::with_timing(ms(100), ms(1000));
        assert!(l.heartbeat_due(t0));
        assert!(!l.heartbeat_due(t0 + ms(99)));
        assert!(l.heartbeat_due(t0 + ms(100)));
    }
}
