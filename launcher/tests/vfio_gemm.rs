//! The GEMM example through VFIO instead of its kernel module (guest/vfio/examples/gemm-vfio.rs):
//! the guest boots with --iommu and `cosim.vfio=0000:00:10.0`, so /init takes the function from
//! the GEMM driver and binds it to vfio-pci; the example runs one 8x8x8 GEMM with DMA and an MSI-X
//! interrupt and checks it against the CPU.
//!
//! Artefacts (`make test-template-guest` builds them): QEMU, the guest image, the launcher,
//! `$GEMM_SIM` (default `$COSIM_BUILD/sim/gemm_top/sim`) and `$GEMM_VFIO` (default the static
//! example in `target/x86_64-unknown-linux-gnu/release/examples/gemm-vfio`).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{build_dir, run_json, LAUNCH};

fn artefact(env: &str, default: PathBuf) -> PathBuf {
    let p = std::env::var_os(env).map(PathBuf::from).unwrap_or(default);
    assert!(p.is_file(), "{} missing (${env}): run `make test-template-guest`", p.display());
    p
}

#[test]
#[ignore = "needs make test-template-guest: QEMU, the guest image, the GEMM simulation and the gemm-vfio example"]
fn the_gemm_example_runs_through_vfio_instead_of_its_driver() {
    let sim = artefact("GEMM_SIM", build_dir().join("sim/gemm_top/sim"));
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/x86_64-unknown-linux-gnu/release/examples");
    let exe = artefact("GEMM_VFIO", target.join("gemm-vfio"));
    let add = format!("{}:/usr/local/bin/gemm-vfio", exe.display());
    let run = run_json(
        LAUNCH,
        "gemm-vfio",
        &[
            "--sim",
            sim.to_str().unwrap(),
            "--iommu",
            "--append",
            "cosim.vfio=0000:00:10.0",
            "--guest-add",
            &add,
            "--run",
            "sh:gemm-vfio",
        ],
        &["--timeout-boot", "180", "--timeout-workload", "120"],
        Duration::from_secs(400),
        Duration::from_secs(20),
    );
    let v = &run.json;
    assert_eq!(run.code, 0, "launcher failed: {v:#}\n{}", run.stderr);
    let boot = &v["guest"]["boot"];
    assert_eq!(boot["devices"], 1, "{boot}");
    assert_eq!(boot["gemm"], 0, "the GEMM driver let go of the function: {boot}");
    assert_eq!(boot["vfio"], serde_json::json!(["0000:00:10.0"]), "{boot}");
    let out = v["guest"]["output"].as_array().cloned().unwrap_or_default();
    let lines: Vec<&str> = out.iter().filter_map(|o| o["line"].as_str()).collect();
    let line =
        lines.iter().find(|l| l.starts_with("gemm-vfio ")).unwrap_or_else(|| panic!("no result line: {lines:?}"));
    assert!(line.starts_with("gemm-vfio 0000:00:10.0: 8x8x8 pass cycles "), "{line}");
    let irqs: u64 =
        line.split(" irqs ").nth(1).and_then(|s| s.split(' ').next()).and_then(|s| s.parse().ok()).unwrap_or(0);
    assert!(irqs >= 1, "no interrupt counted: {line}");
}
