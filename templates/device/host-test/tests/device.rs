//! The template device against its simulation: registers, transfers of several sizes with exact
//! data and SUM, the MSI-X interrupt, and the two error paths (bad LEN, DMA outside memory).

use std::time::Duration;

use device_host_test::*;

const T: Duration = Duration::from_secs(10);

/// Deterministic test data (SplitMix64).
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn sum32(data: &[u8]) -> u32 {
    data.chunks(4).fold(0u32, |acc, w| acc.wrapping_add(u32::from_le_bytes(w.try_into().unwrap())))
}

#[test]
fn registers() -> anyhow::Result<()> {
    let mut d = Device::open()?;
    assert_eq!(d.read(reg::ID)?, 0x7E01_0001, "ID");
    assert_eq!(d.read(reg::SCRATCH)?, 0, "SCRATCH after reset");
    d.write(reg::SCRATCH, 0xdead_beef)?;
    assert_eq!(d.read(reg::SCRATCH)?, 0xdead_beef);
    d.host.write(0, reg::SCRATCH + 1, 1, 0x55)?; // byte writes reach the right byte
    d.host.write(0, reg::SCRATCH + 2, 2, 0x1234)?;
    assert_eq!(d.read(reg::SCRATCH)?, 0x1234_55ef);
    assert_eq!(d.host.read(0, reg::SCRATCH + 3, 1)?, 0x12);
    d.write(reg::CTRL, CTRL_IRQ_EN)?;
    assert_eq!(d.read(reg::CTRL)?, CTRL_IRQ_EN, "IRQ_EN reads back, START does not");
    d.host.write(0, reg::SRC_LO, 8, 0x1_2345_6780)?;
    assert_eq!((d.read(reg::SRC_LO)?, d.read(reg::SRC_HI)?), (0x2345_6780, 1), "an 8-byte write sets both halves");
    assert_eq!(d.host.read(0, reg::SRC_LO, 8)?, 0x1_2345_6780, "an 8-byte read");
    d.write(reg::LEN, 4096)?;
    assert_eq!(d.read(reg::LEN)?, 4096);
    assert_eq!(d.read(reg::STATUS)?, 0, "idle, nothing done");
    match d.host.read(0, 0x100, 4) {
        Err(HostError::Completion { status: Status::UnsupportedRequest, .. }) => {}
        other => panic!("a read of an unmapped offset should fail with UnsupportedRequest, got {other:?}"),
    }
    Ok(())
}

#[test]
fn transfers_of_several_sizes() -> anyhow::Result<()> {
    let mut d = Device::open()?;
    // (source, destination, length): one word, one short burst, several bursts, the maximum, and
    // both sides crossing a 4 KiB page (the engine splits its bursts there).
    let cases = [
        (0x1_0000, 0x8_0000, 8),
        (0x1_0100, 0x8_1000, 24),
        (0x2_0000, 0x9_0000, 1000),
        (0x3_0000, 0xA_0000, 4096),
        (0x4_0FF8, 0xB_0FD0, 512),
    ];
    for (i, &(src, dst, len)) in cases.iter().enumerate() {
        let data = pattern(i as u64, len as usize);
        d.host.mem().write_bytes(src, &data);
        d.host.mem().fill(dst - 8, len as usize + 16, 0xA5); // guards on both sides of the destination
        let before = d.read(reg::COUNT)?;
        d.start(src, dst, len, false)?;
        let status = d.wait_idle(T)?;
        assert_eq!(status, STATUS_DONE, "transfer {i} ({len} bytes): STATUS");
        let want: Vec<u8> = data.iter().map(|b| !b).collect();
        assert!(
            d.host.mem().read_bytes(dst, len as usize) == want,
            "transfer {i} ({len} bytes): destination != !source"
        );
        assert_eq!(d.host.mem().read_bytes(dst - 8, 8), [0xA5; 8], "transfer {i}: guard before");
        assert_eq!(d.host.mem().read_bytes(dst + u64::from(len), 8), [0xA5; 8], "transfer {i}: guard after");
        assert_eq!(d.read(reg::SUM)?, sum32(&data), "transfer {i}: SUM");
        assert_eq!(d.read(reg::COUNT)?, before + 1, "transfer {i}: COUNT");
        assert!(d.read(reg::CYCLES)? >= len / 8, "transfer {i}: CYCLES at least a clock per word");
    }
    Ok(())
}

#[test]
fn msix_on_completion() -> anyhow::Result<()> {
    let mut d = Device::open()?;
    d.host.mem().write_bytes(0x1000, &pattern(7, 256));
    d.start(0x1000, 0x5000, 256, false)?;
    d.wait_idle(T)?;
    d.host.poll(Duration::from_millis(20))?;
    assert!(d.host.irq_log().is_empty(), "no interrupt without IRQ_EN: {:?}", d.host.irq_log());

    d.start(0x1000, 0x6000, 256, true)?;
    d.host.wait_irq(0, T)?;
    // The interrupt comes after the last write's response: the data is there when it arrives.
    assert_eq!(d.read(reg::STATUS)?, STATUS_DONE);
    assert_eq!(d.host.mem().read_bytes(0x6000, 256), d.host.mem().read_bytes(0x5000, 256));
    assert_eq!(d.host.irq_log(), [0], "one interrupt, vector 0");
    Ok(())
}

#[test]
fn bad_len_sets_err_without_dma() -> anyhow::Result<()> {
    let mut d = Device::open()?;
    d.host.mem().write_bytes(0x1000, &pattern(3, 64));
    for len in [0, 4, 12, 4104, 8192] {
        d.host.mem().fill(0x9000, 64, 0x5A);
        d.start(0x1000, 0x9000, len, true)?;
        d.host.wait_irq(0, T)?; // an error ends the transfer too
        assert_eq!(d.read(reg::STATUS)?, STATUS_ERR, "LEN {len}: STATUS");
        assert_eq!(d.read(reg::COUNT)?, 0, "LEN {len}: COUNT");
        assert_eq!(d.host.mem().read_bytes(0x9000, 64), [0x5A; 64], "LEN {len}: nothing written");
        d.write(reg::STATUS, STATUS_ERR)?; // write 1 to clear
        assert_eq!(d.read(reg::STATUS)?, 0, "LEN {len}: ERR cleared");
    }
    let s = d.host.stats().device;
    assert_eq!((s.dma_reads, s.dma_writes), (0, 0), "no DMA at all");
    // A good transfer afterwards still works.
    d.start(0x1000, 0x9000, 64, false)?;
    assert_eq!(d.wait_idle(T)?, STATUS_DONE);
    Ok(())
}

#[test]
fn dma_outside_memory_sets_err() -> anyhow::Result<()> {
    let mut d = Device::open()?;
    d.host.mem().add_fault(0x10_0000..0x10_1000); // no memory here: DMA reads fail
    d.host.mem().fill(0x2000, 128, 0x5A);
    d.start(0x10_0000, 0x2000, 128, true)?;
    d.host.wait_irq(0, T)?;
    assert_eq!(d.read(reg::STATUS)?, STATUS_ERR, "STATUS after a failed DMA read");
    assert_eq!(d.read(reg::COUNT)?, 0, "COUNT");
    assert_eq!(d.host.mem().read_bytes(0x2000, 128), [0x5A; 128], "nothing written after the failed read");
    Ok(())
}
