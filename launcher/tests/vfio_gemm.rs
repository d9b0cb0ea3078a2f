//! The GEMM example through VFIO instead of its kernel module (guest/vfio/examples/gemm-vfio.rs):
//! the guest boots with --iommu and `cosim.vfio=0000:00:10.0`, so /init takes the function from
//! the GEMM driver and binds it to vfio-pci; the example runs one 8x8x8 GEMM with DMA and an MSI-X
//! interrupt and checks it against the CPU.
//!
//! Artefacts (`make test-template-guest` builds them): QEMU, the guest image, the launcher,
//! `$GEMM_SIM` (default `$COSIM_BUILD/sim/gemm_top/sim`) and `$GEMM_VFIO` (default the static
//! example in `target/x86_64-unknown-linux-gnu/release/examples/gemm-vfio`).

mod common;

use std::path::Path;

use common::{artefact, build_dir, run_vfio};

#[test]
#[ignore = "needs make test-template-guest: QEMU, the guest image, the GEMM simulation and the gemm-vfio example"]
fn the_gemm_example_runs_through_vfio_instead_of_its_driver() {
    let make = "make test-template-guest";
    let sim = artefact("GEMM_SIM", build_dir().join("sim/gemm_top/sim"), make);
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/x86_64-unknown-linux-gnu/release/examples");
    let exe = artefact("GEMM_VFIO", target.join("gemm-vfio"), make);
    let add = format!("{}:/usr/local/bin/gemm-vfio", exe.display());
    let (_, lines) = run_vfio(
        "gemm-vfio",
        &[
            "--sim",
            sim.to_str().unwrap(),
            "--append",
            "cosim.vfio=0000:00:10.0",
            "--guest-add",
            &add,
            "--run",
            "sh:gemm-vfio",
        ],
    );
    let line =
        lines.iter().find(|l| l.starts_with("gemm-vfio ")).unwrap_or_else(|| panic!("no result line: {lines:?}"));
    assert!(line.starts_with("gemm-vfio 0000:00:10.0: 8x8x8 pass cycles "), "{line}");
    let irqs: u64 =
        line.split(" irqs ").nth(1).and_then(|s| s.split(' ').next()).and_then(|s| s.parse().ok()).unwrap_or(0);
    assert!(irqs >= 1, "no interrupt counted: {line}");
}
