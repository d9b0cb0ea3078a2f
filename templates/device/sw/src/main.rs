//! The template device's guest program (register map: ../README.md). It finds the device
//! (1ded:7e01) bound to vfio-pci, checks its ID, writes SCRATCH, runs one DMA transfer with the
//! interrupt enabled, waits for MSI-X vector 0, checks the destination (the source inverted) and
//! SUM, and prints one line. Exit 0 on success, 1 with a message on any failure.
//!
//! In the cosim guest: `cosim-launch --sim <your sim> --iommu --guest-add target/.../template-sw
//! --run sh:template-sw` (docs/user-guide.md, "Write your driver").
use std::process::ExitCode;
use std::time::Duration;

use cosim_vfio::Device;

const VENDOR: u16 = 0x1ded;
const DEVICE: u16 = 0x7e01;
const ID_VALUE: u32 = 0x7e01_0001;

// BAR0 registers.
const ID: usize = 0x00;
const SCRATCH: usize = 0x04;
const CTRL: usize = 0x08; // bit0 START, bit1 IRQ_EN
const STATUS: usize = 0x0c; // bit0 BUSY, bit1 DONE, bit2 ERR; write 1s to clear DONE/ERR
const SRC_LO: usize = 0x10;
const DST_LO: usize = 0x18;
const LEN: usize = 0x20;
const SUM: usize = 0x24;
const CYCLES: usize = 0x28;
const COUNT: usize = 0x2c;

const START: u32 = 1;
const IRQ_EN: u32 = 2;
const DONE: u32 = 2;
const ERR: u32 = 4;

/// Bytes per transfer (a multiple of 8, 8 to 4096).
const LEN_BYTES: usize = 1024;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn run() -> Result<String> {
    let bdf = cosim_vfio::find(VENDOR, DEVICE)?.into_iter().next().ok_or(
        "no template device (1ded:7e01): is the simulation running and the guest booted with cosim-launch --iommu?",
    )?;
    let mut dev = Device::open(&bdf)?;
    let regs = dev.bar(0)?;

    let id = regs.read32(ID);
    if id != ID_VALUE {
        return Err(format!("ID reads {id:#010x}, expected {ID_VALUE:#010x}").into());
    }
    regs.write32(SCRATCH, 0xc05e_1234);
    if regs.read32(SCRATCH) != 0xc05e_1234 {
        return Err(format!("SCRATCH reads {:#010x} after writing 0xc05e1234", regs.read32(SCRATCH)).into());
    }

    // Source: a pattern of 32-bit words; destination: zeros. SUM is the wrapping sum of the words.
    let src = dev.dma_buffer(LEN_BYTES)?;
    let dst = dev.dma_buffer(LEN_BYTES)?;
    let words: Vec<u32> = (0..LEN_BYTES as u32 / 4).map(|i| i.wrapping_mul(0x9e37_79b9) ^ 0x0123_4567).collect();
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    src.write(0, &bytes);
    let want_sum = words.iter().fold(0u32, |s, w| s.wrapping_add(*w));

    let irq = dev.enable_msix(1)?.remove(0);
    let count_before = regs.read32(COUNT);
    regs.write32(SRC_LO, src.iova() as u32);
    regs.write32(SRC_LO + 4, (src.iova() >> 32) as u32);
    regs.write32(DST_LO, dst.iova() as u32);
    regs.write32(DST_LO + 4, (dst.iova() >> 32) as u32);
    regs.write32(LEN, LEN_BYTES as u32);
    regs.write32(CTRL, IRQ_EN | START);

    let irqs = irq.wait(Duration::from_secs(20))?;
    let status = regs.read32(STATUS);
    if status & (DONE | ERR) != DONE {
        return Err(format!("STATUS {status:#x} after the interrupt (expected DONE without ERR)").into());
    }
    regs.write32(STATUS, DONE);

    let mut out = vec![0u8; LEN_BYTES];
    dst.read(0, &mut out);
    if let Some(i) = (0..LEN_BYTES).find(|&i| out[i] != !bytes[i]) {
        return Err(format!("DST byte {i} is {:#04x}, expected {:#04x} (NOT of the source)", out[i], !bytes[i]).into());
    }
    let sum = regs.read32(SUM);
    if sum != want_sum {
        return Err(format!("SUM {sum:#010x}, expected {want_sum:#010x}").into());
    }
    let count = regs.read32(COUNT);
    if count != count_before.wrapping_add(1) {
        return Err(format!("COUNT went from {count_before} to {count}, expected one more").into());
    }
    Ok(format!(
        "template-sw {bdf}: pass id={id:#010x} len={LEN_BYTES} dma=ok sum={sum:#010x} irqs={irqs} cycles={}",
        regs.read32(CYCLES)
    ))
}

fn main() -> ExitCode {
    match run() {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("template-sw: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}
