//! The models against the RTL: GEMM jobs of several shapes on the Verilator simulation of
//! `gemm_top` (driven by the host model, packed page-aligned buffers, as the guest driver
//! allocates them) with the shell's default modelled DMA read latency (the bridge's
//! `DEFAULT_DMA_LATENCY`), CYCLES against each model's prediction.
//! Fails when the best model (tiled) is more than 10% off for a job of at least 64 x 64 x 64,
//! or when a result is not bit-exact. Prints the Markdown table of docs/benchmarks.md
//! ("Analytic models against the RTL"). Run by `make test-serve` (needs `make sim-gemm`).
//!
//! `PERF_MODEL_SIZES="64x64x64,..."` picks other shapes, `PERF_MODEL_LATENCY` another latency
//! (passed to the simulation as `+cosim_dma_latency`; without it the simulation runs with its
//! default).

use std::time::{Duration, Instant};

use accel_tool::gemm::{compare, reference, Rng};
use anyhow::{ensure, Context, Result};
use cosim_gemm_abi::{array, ctrl, field_get, regs, status, ErrorCode};
use cosim_host_model::{sim_binary, temp_endpoint, HostModel, SimProcess};
use cosim_perf_model::{error_percent, predict, Engine, Gemm, Model};

const SIZES: &str = "4x4x4,16x16x16,17x33x9,32x256x128,64x64x1,64x64x64,65x65x65,100x100x100,\
128x128x128,96x32x64,360x64x64,360x10x64,64x1024x64,1024x16x256,256x256x256,512x512x512";

/// The models' clock (gemm-abi, which has no dependencies) is the simulation's default clock.
#[test]
fn the_models_clock_is_the_simulations_default() {
    assert_eq!(cosim_gemm_abi::defaults::CLOCK_HZ, cosim_dpi_bridge::DEFAULT_CLOCK_HZ);
}

#[test]
#[ignore = "needs make sim-gemm: run by make test-serve"]
fn models_against_the_rtl() -> Result<()> {
    let sizes: Vec<Gemm> = std::env::var("PERF_MODEL_SIZES")
        .unwrap_or_else(|_| SIZES.into())
        .split(',')
        .map(|s| {
            let v: Vec<u32> = s
                .split('x')
                .map(|x| x.trim().parse().expect("size MxNxK"))
                .collect();
            Gemm::new(v[0], v[1], v[2])
        })
        .collect();
    let chosen: Option<u32> = std::env::var("PERF_MODEL_LATENCY")
        .ok()
        .map(|s| s.parse().expect("PERF_MODEL_LATENCY: clocks"));
    let latency = chosen.unwrap_or(cosim_dpi_bridge::DEFAULT_DMA_LATENCY as u32);
    let mut rng = Rng::new(12);

    let bin = sim_binary("gemm_top", "sim-gemm")?;
    let (_dir, ep) = temp_endpoint("perf-model")?;
    let lat_arg = chosen.map(|l| format!("+cosim_dma_latency={l}"));
    let args: Vec<&str> = lat_arg.iter().map(String::as_str).collect();
    let sim = SimProcess::spawn(&bin, &ep, &args, Duration::from_secs(60))?;
    let mut host = HostModel::connect(&ep, Duration::from_secs(30)).with_context(|| sim.log())?;
    let arr = host.read(0, regs::ARRAY, 4)? as u32;
    let max_dim = host.read(0, regs::MAX_DIM, 4)? as u32;
    let engine = Engine::reported(
        field_get(arr, array::ROWS),
        field_get(arr, array::COLS),
        max_dim,
        latency,
    );

    println!("\nengine: {engine:?}\n");
    println!("| M x N x K | RTL cycles | roofline | error | tiled | error | systolic | error |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let (a, b, c) = (0x1000_0000u64, 0x2000_0000u64, 0x3000_0000u64);
    let mut failures = Vec::new();
    for job in sizes {
        let (m, n, k) = (job.m, job.n, job.k);
        let mut av = vec![0i8; (m * k) as usize];
        let mut bv = vec![0i8; (k * n) as usize];
        rng.fill_i8(&mut av);
        rng.fill_i8(&mut bv);
        host.mem()
            .write_bytes(a, &av.iter().map(|&x| x as u8).collect::<Vec<_>>());
        host.mem()
            .write_bytes(b, &bv.iter().map(|&x| x as u8).collect::<Vec<_>>());
        for (off, v) in [
            (regs::M, m),
            (regs::N, n),
            (regs::K, k),
            (regs::LDA, 0),
            (regs::LDB, 0),
            (regs::LDC, 0),
        ] {
            host.write(0, off, 4, u64::from(v))?;
        }
        host.write(0, regs::A_ADDR_LO, 8, a)?;
        host.write(0, regs::B_ADDR_LO, 8, b)?;
        host.write(0, regs::C_ADDR_LO, 8, c)?;
        host.write(0, regs::MSIX_VECTOR, 4, 0)?;
        let t0 = Instant::now();
        host.write(0, regs::CTRL, 4, u64::from(ctrl::START | ctrl::IRQ_EN))?;
        while host.pending_irqs(0) == 0 {
            host.poll(Duration::from_millis(1))?;
            ensure!(
                t0.elapsed() < Duration::from_secs(1800),
                "job {m}x{n}x{k}: no interrupt after 1800 s"
            );
        }
        host.wait_irq(0, Duration::ZERO)?;
        ensure!(
            host.read(0, regs::STATUS, 4)? == u64::from(status::DONE)
                && host.read(0, regs::ERROR, 4)? == u64::from(ErrorCode::Ok.code()),
            "job {m}x{n}x{k} failed"
        );
        let cycles = host.read(0, regs::CYCLES_LO, 8)?;
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
        let p = predict(&engine, job);
        let mut row = format!("| {m} x {n} x {k} | {cycles} |");
        for model in Model::ALL {
            let v = p.get(model);
            row.push_str(&format!(" {v} | {:+.1}% |", error_percent(v, cycles)));
        }
        println!("{row}");
        let big = m >= 64 && n >= 64 && k >= 64;
        let err = error_percent(p.tiled, cycles).abs();
        if big && err > 10.0 {
            failures.push(format!(
                "{m}x{n}x{k}: tiled {} against {cycles} cycles ({err:.1}%)",
                p.tiled
            ));
        }
    }
    host.goodbye()?;
    let mut sim = sim;
    let _ = sim.wait_exit(Duration::from_secs(10));
    ensure!(
        failures.is_empty(),
        "the best model is more than 10% off: {failures:?}"
    );
    Ok(())
}
