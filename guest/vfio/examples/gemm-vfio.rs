//! The GEMM example accelerator driven through VFIO instead of its kernel module: one 8x8x8
//! int8 GEMM with DMA and an MSI-X interrupt, checked against the CPU (register map:
//! docs/register-map.md). The GEMM driver claims the device, so name it for VFIO:
//! `cosim-launch --iommu --append cosim.vfio=0000:00:10.0 --guest-add gemm-vfio --run sh:gemm-vfio`.
//! Usage: gemm-vfio [BDF]
use std::time::Duration;

use cosim_vfio::{find, Device};

const ID: usize = 0x000;
const CTRL: usize = 0x010;
const STATUS: usize = 0x014;
const ERROR: usize = 0x018;
const M: usize = 0x020;
const A_LO: usize = 0x038;
const CYCLES_LO: usize = 0x050;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bdf = match std::env::args().nth(1) {
        Some(b) => b,
        None => find(0x1ded, 0xacc1)?.into_iter().next().ok_or("no GEMM accelerator (1ded:acc1)")?,
    };
    let mut dev = Device::open(&bdf)?;
    let bar0 = dev.bar(0)?;
    let id = bar0.read32(ID);
    if id != 0x4745_4d4d {
        return Err(format!("{bdf}: ID {id:#x}, expected 0x47454d4d").into());
    }
    let n = 8usize;
    let (a, b): (Vec<i8>, Vec<i8>) =
        ((0..n * n).map(|i| (i % 7) as i8 - 3).collect(), (0..n * n).map(|i| (i % 5) as i8 - 2).collect());
    let buf = dev.dma_buffer(3 * 4096)?;
    buf.write(0, &a.iter().map(|&x| x as u8).collect::<Vec<_>>());
    buf.write(4096, &b.iter().map(|&x| x as u8).collect::<Vec<_>>());
    let irqs = dev.enable_msix(1)?;
    for (i, v) in [n, n, n, 0, 0, 0].into_iter().enumerate() {
        bar0.write32(M + 4 * i, v as u32);
    }
    for (i, off) in [0u64, 4096, 8192].into_iter().enumerate() {
        let addr = buf.iova() + off;
        bar0.write32(A_LO + 8 * i, addr as u32);
        bar0.write32(A_LO + 8 * i + 4, (addr >> 32) as u32);
    }
    bar0.write32(CTRL, 0b100); // CLEAR
    bar0.write32(CTRL, 0b011); // START | IRQ_EN
    let count = irqs[0].wait(Duration::from_secs(30))?;
    let (status, error) = (bar0.read32(STATUS), bar0.read32(ERROR));
    if status & 0b110 != 0b010 {
        return Err(format!("STATUS {status:#x} ERROR {error}").into());
    }
    let mut mismatches = 0;
    for i in 0..n {
        for j in 0..n {
            let want: i32 = (0..n).map(|k| a[i * n + k] as i32 * b[k * n + j] as i32).sum();
            let mut c = [0u8; 4];
            buf.read(8192 + 4 * (i * n + j), &mut c);
            mismatches += usize::from(i32::from_le_bytes(c) != want);
        }
    }
    println!(
        "gemm-vfio {bdf}: {n}x{n}x{n} {} cycles {} irqs {count} iova {:#x}",
        if mismatches == 0 { "pass" } else { "FAIL" },
        bar0.read32(CYCLES_LO),
        buf.iova()
    );
    if mismatches != 0 {
        return Err(format!("{mismatches} of {} results differ", n * n).into());
    }
    Ok(())
}
