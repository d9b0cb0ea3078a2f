//! In-memory transport pair for unit tests: frames go through crossbeam channels, so the codec
//! is exercised exactly as on a socket, without sockets or threads of its own.

use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::{Transport, TransportError};

/// One end of an in-memory link.
#[derive(Debug)]
pub struct MemTransport {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
}

/// A connected pair `(host end, device end)`.
pub fn mem_pair() -> (MemTransport, MemTransport) {
    let (a_tx, a_rx) = crossbeam_channel::unbounded();
    let (b_tx, b_rx) = crossbeam_channel::unbounded();
    (MemTransport { tx: a_tx, rx: b_rx }, MemTransport { tx: b_tx, rx: a_rx })
}

impl Transport for MemTransport {
    fn send_frame(&mut self, frame: &[u8]) -> Result<(), TransportError> {
        self.tx.send(frame.to_vec()).map_err(|_| TransportError::Disconnected)
    }

    fn recv_frame(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, TransportError> {
        match self.rx.recv_timeout(timeout) {
            Ok(f) => Ok(Some(f)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(TransportError::Disconnected),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cosim_protocol::{Message, Msix};

    #[test]
    fn pair_carries_messages_and_survives_garbage() {
        let (mut h, mut d) = mem_pair();
        d.send(&Message::Msix(Msix { vector: 3 })).unwrap();
        assert_eq!(h.recv(Duration::ZERO).unwrap(), Some(Message::Msix(Msix { vector: 3 })));
        d.send_frame(b"garbage!").unwrap();
        d.send(&Message::Reset).unwrap();
        assert!(matches!(h.recv(Duration::ZERO), Err(TransportError::Decode(_))));
        assert_eq!(h.recv(Duration::ZERO).unwrap(), Some(Message::Reset));
        assert_eq!(h.recv(Duration::ZERO).unwrap(), None);
        drop(d);
        assert!(matches!(h.recv(Duration::ZERO), Err(TransportError::Disconnected)));
    }
}
