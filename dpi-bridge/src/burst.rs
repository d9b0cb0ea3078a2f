//! AXI4 burst address arithmetic (AMBA AXI spec, A3.4.1 "Address structure").

/// AXI burst type (`AxBURST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BurstKind {
    /// Every beat at the same address.
    Fixed,
    /// Incrementing.
    Incr,
    /// Wrapping at `beats * bytes_per_beat`.
    Wrap,
}

impl BurstKind {
    /// Decodes `AxBURST`; the reserved value 3 is treated as INCR (the caller warns).
    pub fn from_axi(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Fixed),
            1 => Some(Self::Incr),
            2 => Some(Self::Wrap),
            _ => None,
        }
    }
}

/// One AXI burst as given on the AW or AR channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Burst {
    /// Start address (`AxADDR`).
    pub addr: u64,
    /// Beats minus one (`AxLEN`).
    pub len: u8,
    /// log2 of bytes per beat (`AxSIZE`), at most 3 on a 64-bit bus.
    pub size: u8,
    /// Burst type.
    pub kind: BurstKind,
}

impl Burst {
    /// Number of beats.
    pub fn beats(&self) -> u32 {
        u32::from(self.len) + 1
    }

    fn bytes_per_beat(&self) -> u64 {
        1u64 << self.size.min(3)
    }

    fn wrap_len(&self) -> u64 {
        self.bytes_per_beat() * u64::from(self.beats())
    }

    /// Address of beat `i` (the first beat may be unaligned; later INCR beats are aligned).
    pub fn beat_addr(&self, i: u32) -> u64 {
        let n = self.bytes_per_beat();
        let aligned = self.addr & !(n - 1);
        match self.kind {
            BurstKind::Fixed => self.addr,
            BurstKind::Incr => {
                if i == 0 {
                    self.addr
                } else {
                    aligned.wrapping_add(u64::from(i) * n)
                }
            }
            BurstKind::Wrap => {
                let w = self.wrap_len();
                let base = aligned & !(w - 1);
                base + ((aligned - base + u64::from(i) * n) % w)
            }
        }
    }

    /// Byte lanes (bit j = lane j of the 64-bit bus) that beat `i` may carry.
    pub fn beat_lanes(&self, i: u32) -> u8 {
        let a = self.beat_addr(i);
        let n = self.bytes_per_beat();
        let lo = (a & 7) as u32;
        let hi = ((a & !(n - 1)) & 7) as u32 + n as u32; // exclusive, <= 8
        let mut m = 0u8;
        for j in lo..hi.min(8) {
            m |= 1 << j;
        }
        m
    }

    /// The guest byte range `[lo, hi)` that covers every beat (what a DMA read must fetch).
    pub fn byte_range(&self) -> (u64, u64) {
        let n = self.bytes_per_beat();
        let aligned = self.addr & !(n - 1);
        match self.kind {
            BurstKind::Fixed => (self.addr, aligned + n),
            BurstKind::Incr => (self.addr, aligned + n * u64::from(self.beats())),
            BurstKind::Wrap => {
                let w = self.wrap_len();
                let base = aligned & !(w - 1);
                (base, base + w)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incr_unaligned_start() {
        let b = Burst { addr: 0x1003, len: 2, size: 3, kind: BurstKind::Incr };
        assert_eq!((b.beat_addr(0), b.beat_addr(1), b.beat_addr(2)), (0x1003, 0x1008, 0x1010));
        assert_eq!(b.beat_lanes(0), 0b1111_1000);
        assert_eq!(b.beat_lanes(1), 0xff);
        assert_eq!(b.byte_range(), (0x1003, 0x1018));
    }

    #[test]
    fn narrow_incr_moves_across_lanes() {
        let b = Burst { addr: 0x2002, len: 3, size: 1, kind: BurstKind::Incr };
        let addrs: Vec<u64> = (0..4).map(|i| b.beat_addr(i)).collect();
        assert_eq!(addrs, vec![0x2002, 0x2004, 0x2006, 0x2008]);
        assert_eq!(b.beat_lanes(0), 0b0000_1100);
        assert_eq!(b.beat_lanes(3), 0b0000_0011);
        assert_eq!(b.byte_range(), (0x2002, 0x200a));
        let odd = Burst { addr: 0x2003, len: 0, size: 1, kind: BurstKind::Incr };
        assert_eq!(odd.beat_lanes(0), 0b0000_1000);
    }

    #[test]
    fn wrap_and_fixed() {
        let b = Burst { addr: 0x1010, len: 3, size: 3, kind: BurstKind::Wrap };
        let addrs: Vec<u64> = (0..4).map(|i| b.beat_addr(i)).collect();
        assert_eq!(addrs, vec![0x1010, 0x1018, 0x1000, 0x1008]);
        assert_eq!(b.byte_range(), (0x1000, 0x1020));
        let f = Burst { addr: 0x3004, len: 5, size: 2, kind: BurstKind::Fixed };
        assert_eq!(f.beat_addr(4), 0x3004);
        assert_eq!(f.beat_lanes(1), 0xf0);
        assert_eq!(f.byte_range(), (0x3004, 0x3008));
    }
}
