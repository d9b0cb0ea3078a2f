//! GEMM accelerator benchmark (`make bench-gemm`): cycles of each job against the ideal
//! M*N*K / MACs, the share of cycles waiting for DMA, wall time per job and simulated cycles per
//! second, host model against the Verilator simulation of `gemm_top` over ZeroMQ (ipc).
//! Prints a Markdown table for docs/benchmarks.md. Results are checked bit-exactly as well.
//! `GEMM_BENCH_SIZES="64x64x64,256x256x256"` overrides the sizes.

use std::time::{Duration, Instant};

use accel_tool::gemm::{compare, reference, Rng};
use anyhow::{ensure, Context, Result};
use cosim_gemm_abi::{array, ctrl, field_get, regs, status, ErrorCode};
use cosim_host_model::{sim_binary, temp_endpoint, HostModel, SimProcess};

#[test]
#[ignore = "benchmark: run with `make bench-gemm`"]
fn gemm_bench() -> Result<()> {
    let sizes: Vec<(u32, u32, u32)> = std::env::var("GEMM_BENCH_SIZES")
        .unwrap_or_else(|_| {
            "4x4x4,16x16x16,17x33x9,64x64x64,100x100x100,128x128x128,256x256x256,512x512x512,64x1024x64,1024x16x256"
                .into()
        })
        .split(',')
        .map(|s| {
            let v: Vec<u32> = s.split('x').map(|x| x.trim().parse().expect("size MxNxK")).collect();
            (v[0], v[1], v[2])
        })
        .collect();
    let seed: u64 = std::env::var("COSIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(42);
    println!("gemm_bench: seed {seed}");
    let mut rng = Rng::new(seed);

    let bin = sim_binary("gemm_top", "sim-gemm")?;
    let (_dir, ep) = temp_endpoint("gemm-bench")?;
    // GEMM_BENCH_SIM_ARGS: extra simulation arguments, e.g. "+cosim_dma_latency=0" (free-running).
    let extra = std::env::var("GEMM_BENCH_SIM_ARGS").unwrap_or_default();
    let mut args = vec!["--stats"];
    args.extend(extra.split_whitespace());
    let sim = SimProcess::spawn(&bin, &ep, &args, Duration::from_secs(60))?;
    let mut host = HostModel::connect(&ep, Duration::from_secs(30)).with_context(|| sim.log())?;
    let size = host.read(0, regs::ARRAY, 4)? as u32;
    let macs = u64::from(field_get(size, array::ROWS) * field_get(size, array::COLS));

    println!();
    println!("| M x N x K | cycles | ideal (M*N*K/{macs}) | efficiency | DMA wait | wall per job | sim cycles/s | DMA reads | DMA writes |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let (a, b, c) = (0x1000_0000u64, 0x2000_0000u64, 0x3000_0000u64);
    for (m, n, k) in sizes {
        let mut av = vec![0i8; (m * k) as usize];
        let mut bv = vec![0i8; (k * n) as usize];
        rng.fill_i8(&mut av);
        rng.fill_i8(&mut bv);
        host.mem().write_bytes(a, &av.iter().map(|&x| x as u8).collect::<Vec<_>>());
        host.mem().write_bytes(b, &bv.iter().map(|&x| x as u8).collect::<Vec<_>>());
        for (off, v) in [(regs::M, m), (regs::N, n), (regs::K, k), (regs::LDA, 0), (regs::LDB, 0), (regs::LDC, 0)] {
            host.write(0, off, 4, u64::from(v))?;
        }
        host.write(0, regs::A_ADDR_LO, 8, a)?;
        host.write(0, regs::B_ADDR_LO, 8, b)?;
        host.write(0, regs::C_ADDR_LO, 8, c)?;
        host.write(0, regs::MSIX_VECTOR, 4, 0)?;
        let before = host.stats();
        let busy0 = host.read(0, regs::BUSY_CYCLES_LO, 8)? + host.read(0, regs::IDLE_CYCLES_LO, 8)?;
        let t0 = Instant::now();
        host.write(0, regs::CTRL, 4, u64::from(ctrl::START | ctrl::IRQ_EN))?;
        // Wait for the interrupt in 1 ms slices of serving the device (HostModel::wait_irq
        // checks every 50 ms), so the wall time is exact to about 1 ms and the job runs without
        // MMIO traffic, as under an interrupt-driven driver.
        while host.pending_irqs(0) == 0 {
            host.poll(Duration::from_millis(1))?;
            ensure!(t0.elapsed() < Duration::from_secs(1800), "job {m}x{n}x{k}: no interrupt");
        }
        let wall = t0.elapsed();
        host.wait_irq(0, Duration::ZERO)?;
        let total = host.read(0, regs::BUSY_CYCLES_LO, 8)? + host.read(0, regs::IDLE_CYCLES_LO, 8)? - busy0;
        ensure!(
            host.read(0, regs::STATUS, 4)? == u64::from(status::DONE)
                && host.read(0, regs::ERROR, 4)? == u64::from(ErrorCode::Ok.code()),
            "job {m}x{n}x{k} failed"
        );
        let after = host.stats();
        let cycles = host.read(0, regs::CYCLES_LO, 8)?;
        let wait = host.read(0, regs::DMA_WAIT_LO, 8)?;
        // Bit-exact check.
        let got: Vec<i32> = host
            .mem()
            .read_bytes(c, (m * n * 4) as usize)
            .chunks_exact(4)
            .map(|w| i32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let (mu, nu, ku) = (m as usize, n as usize, k as usize);
        if let Some(x) = compare(nu, &reference(mu, nu, ku, &av, &bv), &got) {
            anyhow::bail!(
                "{m}x{n}x{k}: {} elements of C differ, first C[{}][{}] = {}, want {}",
                x.count,
                x.row,
                x.col,
                x.got,
                x.expected
            );
        }
        let ideal = u64::from(m) * u64::from(n) * u64::from(k) / macs;
        println!(
            "| {m} x {n} x {k} | {cycles} | {ideal} | {:.1}% | {:.1}% | {:.3} s | {:.2} M | {} | {} |",
            100.0 * ideal as f64 / cycles as f64,
            100.0 * wait as f64 / cycles as f64,
            wall.as_secs_f64(),
            total as f64 / wall.as_secs_f64() / 1e6,
            after.dma_reads - before.dma_reads,
            after.dma_writes - before.dma_writes,
        );
    }
    host.goodbye()?;
    let mut sim = sim;
    let _ = sim.wait_exit(Duration::from_secs(10));
    println!();
    println!("simulation statistics (--stats):");
    for line in sim.log().lines().filter(|l| !l.contains("ready endpoint")) {
        println!("    {line}");
    }
    Ok(())
}
