//! Streams: NIC frames (64-bit AXI-Stream beats with byte keeps) and UART bytes, both ways.
//! Frames and bytes from the host wait here for the shell's pops; the RTL's are collected into
//! NIC_FRAME and SERIAL messages.

use std::collections::VecDeque;

use cosim_protocol::{Message, MAX_FRAME_LEN, MAX_SERIAL_LEN};

use super::{EpCore, PEND_NIC_RX, PEND_UART_RX};
use crate::link::SharedStats;

/// The stream state of one endpoint.
#[derive(Debug, Default)]
pub(super) struct Streams {
    /// The frame the RTL is transmitting.
    nic_tx: Vec<u8>,
    /// That frame grew beyond [`MAX_FRAME_LEN`]: it is dropped at its last beat.
    nic_tx_drop: bool,
    /// Frames from the host, oldest first; the first may be partly given out.
    nic_rx: VecDeque<Vec<u8>>,
    /// Bytes of the first frame of `nic_rx` already given out.
    nic_rx_pos: usize,
    /// Bytes from the RTL's UART, sent at the next tick.
    uart_tx: Vec<u8>,
    /// Bytes from the host for the RTL's UART.
    uart_rx: VecDeque<u8>,
}

impl Streams {
    /// A frame waits for [`EpCore::nic_rx`] (the `PEND_NIC_RX` bit).
    #[inline]
    pub(super) fn has_nic_rx(&self) -> bool {
        !self.nic_rx.is_empty()
    }

    /// A byte waits for [`EpCore::uart_rx`] (the `PEND_UART_RX` bit).
    #[inline]
    pub(super) fn has_uart_rx(&self) -> bool {
        !self.uart_rx.is_empty()
    }

    /// The RTL's UART produced bytes that are not sent yet.
    #[inline]
    pub(super) fn has_uart_tx(&self) -> bool {
        !self.uart_tx.is_empty()
    }

    /// Device reset: the frame being transmitted and the rest of a frame being received are
    /// dropped (whole frames still queued and serial bytes are kept).
    pub(super) fn drop_partial_frames(&mut self) {
        self.nic_tx.clear();
        self.nic_tx_drop = false;
        if self.nic_rx_pos != 0 {
            self.nic_rx.pop_front();
            self.nic_rx_pos = 0;
        }
    }
}

impl EpCore {
    pub(super) fn on_nic_frame(&mut self, f: Vec<u8>) {
        SharedStats::add(&self.stats.frames_rx, 1);
        if f.is_empty() {
            tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, "empty NIC frame from the host dropped");
        } else {
            self.streams.nic_rx.push_back(f);
        }
    }

    pub(super) fn on_serial(&mut self, b: Vec<u8>) {
        SharedStats::add(&self.stats.serial_rx, b.len() as u64);
        self.streams.uart_rx.extend(b);
    }

    /// One beat of the NIC transmit stream (user -> network).
    pub fn nic_tx(&mut self, data: u64, keep: u8, last: bool) {
        let bytes = data.to_le_bytes();
        for (j, b) in bytes.iter().enumerate() {
            if keep & (1 << j) != 0 {
                if self.streams.nic_tx.len() >= MAX_FRAME_LEN {
                    self.streams.nic_tx_drop = true;
                } else {
                    self.streams.nic_tx.push(*b);
                }
            }
        }
        if last {
            let f = std::mem::take(&mut self.streams.nic_tx);
            if self.streams.nic_tx_drop || f.is_empty() {
                tracing::warn!(target: "cosim::dpi", ep = %self.cfg.name, len = f.len(), max = MAX_FRAME_LEN,
                    "NIC frame from the RTL is empty or too long; dropped");
            } else {
                SharedStats::add(&self.stats.frames_tx, 1);
                self.send(Message::NicFrame(f));
            }
            self.streams.nic_tx_drop = false;
        }
    }

    /// Next beat of the NIC receive stream (network -> user): `(data, keep, last)`. Allowed once
    /// per tick that reported [`PEND_NIC_RX`]; otherwise refused (`None`, nothing taken).
    pub fn nic_rx(&mut self) -> Option<(u64, u8, bool)> {
        if !self.take_pending(PEND_NIC_RX, "cosim_ep_nic_rx") {
            return None;
        }
        let s = &mut self.streams;
        let f = s.nic_rx.front()?;
        let end = (s.nic_rx_pos + 8).min(f.len());
        let chunk = &f[s.nic_rx_pos..end];
        let mut v = [0u8; 8];
        v[..chunk.len()].copy_from_slice(chunk);
        let keep = ((1u32 << chunk.len()) - 1) as u8;
        let last = end == f.len();
        if last {
            s.nic_rx.pop_front();
            s.nic_rx_pos = 0;
        } else {
            s.nic_rx_pos = end;
        }
        Some((u64::from_le_bytes(v), keep, last))
    }

    /// One byte from the RTL's UART (batched, sent at the next tick).
    pub fn uart_tx(&mut self, b: u8) {
        self.streams.uart_tx.push(b);
    }

    pub(super) fn flush_uart(&mut self) {
        if self.streams.uart_tx.is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut self.streams.uart_tx);
        SharedStats::add(&self.stats.serial_tx, bytes.len() as u64);
        for c in bytes.chunks(MAX_SERIAL_LEN) {
            self.send(Message::Serial(c.to_vec()));
        }
    }

    /// Next byte for the RTL's UART receiver. Allowed once per tick that reported
    /// [`PEND_UART_RX`]; otherwise refused (`None`, nothing taken).
    pub fn uart_rx(&mut self) -> Option<u8> {
        if !self.take_pending(PEND_UART_RX, "cosim_ep_uart_rx") {
            return None;
        }
        self.streams.uart_rx.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{core, sent};
    use super::*;
    use crate::link::ToSim;

    #[test]
    fn nic_and_uart_streams() {
        let (mut c, io) = core();
        c.nic_tx(0x0807_0605_0403_0201, 0xff, false);
        c.nic_tx(0x000b_0a09, 0x07, true);
        c.uart_tx(b'h');
        c.uart_tx(b'i');
        c.tick();
        assert_eq!(
            sent(&io),
            vec![Message::NicFrame((1..=11).collect()), Message::Serial(b"hi".to_vec())]
        );
        io.to_sim(ToSim::Msg(Message::NicFrame((1..=9).collect())));
        io.to_sim(ToSim::Msg(Message::Serial(b"ok".to_vec())));
        let (mut nic, mut uart) = (Vec::new(), Vec::new());
        loop {
            let m = c.tick();
            if m & (PEND_NIC_RX | PEND_UART_RX) == 0 {
                break;
            }
            if m & PEND_NIC_RX != 0 {
                nic.push(c.nic_rx().unwrap());
            }
            if m & PEND_UART_RX != 0 {
                uart.push(c.uart_rx().unwrap());
            }
        }
        assert_eq!(nic, [(0x0807_0605_0403_0201, 0xff, false), (9, 0x01, true)]);
        assert_eq!(uart, b"ok");
        assert_eq!(c.refused_pops(), 0);
    }
}
