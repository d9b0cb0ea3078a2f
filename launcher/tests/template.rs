//! The template device from a guest program (issue 14, item 7, the guest half): cosim-launch
//! boots the guest with the virtual IOMMU against the template's simulation, adds the template's
//! guest program (templates/device/sw, static) with --guest-add and runs it as an "sh:" item.
//! The program opens the device through VFIO, runs one DMA transfer with the interrupt enabled
//! and checks the result; the test checks its line in the launcher's JSON and the boot line (one
//! accelerator, bound to vfio-pci, none for the GEMM driver).
//!
//! Artefacts (`make test-template-guest` builds them): QEMU, the guest image, the launcher,
//! `$TEMPLATE_SIM` and `$TEMPLATE_SW`: make sets them to the simulation and the guest program of a
//! project it has just made from the template in a temporary directory outside the checkout
//! (defaults, for a run by hand: `$COSIM_BUILD/template/sim` and
//! `$COSIM_BUILD/template-sw/x86_64-unknown-linux-gnu/release/template-sw`).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{artefact, build_dir, run_json, run_vfio, sh_output, LAUNCH};

const MAKE: &str = "make test-template-guest";

/// The value of `key=` in a line of `key=value` words.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

fn template_artefacts() -> (PathBuf, PathBuf) {
    let build = build_dir();
    let sim = artefact("TEMPLATE_SIM", build.join("template/sim"), MAKE);
    let sw = artefact("TEMPLATE_SW", build.join("template-sw/x86_64-unknown-linux-gnu/release/template-sw"), MAKE);
    (sim, sw)
}

#[test]
#[ignore = "needs make test-template-guest: QEMU, the guest image, the template's simulation and guest program"]
fn the_template_program_does_a_dma_and_receives_its_interrupt_through_vfio() {
    let (sim, sw) = template_artefacts();
    let add = format!("{}:/usr/local/bin/template-sw", sw.display());
    // A directory overlay in the same boot: its tree appears under DEST.
    let tree = common::fresh_dir("template-overlay");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/marker"), "overlay-marker-7e01\n").unwrap();
    let overlay = format!("{}:/opt/t", tree.display());
    let (run, lines) = run_vfio(
        "template-vfio",
        &[
            "--sim",
            sim.to_str().unwrap(),
            "--guest-add",
            &add,
            "--guest-add",
            &overlay,
            "--run",
            "sh:template-sw",
            "--run",
            "sh:cat /opt/t/etc/marker",
            "--run",
            "sh:printf no-newline-at-end",
        ],
    );
    let v = &run.json;
    let line =
        lines.iter().find(|l| l.starts_with("template-sw ")).unwrap_or_else(|| panic!("no result line: {lines:?}"));
    assert!(line.starts_with("template-sw 0000:00:10.0: pass "), "{line}");
    assert_eq!(field(line, "id"), Some("0x7e010001"), "{line}");
    assert_eq!(field(line, "dma"), Some("ok"), "{line}");
    let irqs: u64 = field(line, "irqs").and_then(|s| s.parse().ok()).unwrap_or(0);
    assert!(irqs >= 1, "no interrupt counted: {line}");
    let cycles: u64 = field(line, "cycles").and_then(|s| s.parse().ok()).unwrap_or(0);
    assert!(cycles > 0, "CYCLES of the transfer: {line}");
    assert!(v["guest"]["failures"].as_array().is_some_and(|f| f.is_empty()), "{v:#}");
    assert!(lines.iter().any(|l| l == "overlay-marker-7e01"), "the overlay's file: {lines:?}");
    // An "sh:" item's last line counts even without a newline.
    assert!(lines.iter().any(|l| l == "no-newline-at-end"), "{lines:?}");
}

#[test]
fn guest_add_refuses_a_missing_source_and_a_relative_destination_as_usage_errors() {
    let d = common::fresh_dir("guest-add-usage");
    let f = d.join("prog");
    std::fs::write(&f, b"").unwrap();
    let missing = d.join("missing");
    for (spec, want) in [
        (missing.display().to_string(), "does not exist"),
        (format!("{}:usr/bin/prog", f.display()), "must be an absolute path"),
    ] {
        let mut cmd = std::process::Command::new(LAUNCH);
        cmd.args(["--guest-add", &spec, "--log-dir"]).arg(d.join("logs"));
        let out = common::run_bounded("cosim-launch --guest-add", cmd, Duration::from_secs(30), Duration::from_secs(5));
        assert_eq!(out.code(), Some(2), "{spec}: {}", out.stderr);
        assert!(out.stderr.contains(want), "{spec}: {}", out.stderr);
    }
}

#[test]
#[ignore = "needs make test-template-guest: QEMU, the guest image, the template's simulation and guest program"]
fn without_the_iommu_the_program_fails_with_a_hint() {
    let (sim, sw) = template_artefacts();
    let run = run_json(
        LAUNCH,
        "template-noiommu",
        &["--sim", sim.to_str().unwrap(), "--guest-add", sw.to_str().unwrap(), "--run", "sh:template-sw"],
        &["--timeout-boot", "180", "--timeout-workload", "120"],
        Duration::from_secs(400),
        Duration::from_secs(20),
    );
    let v = &run.json;
    assert_eq!(run.code, 1, "the item must fail: {v:#}");
    assert_eq!(v["guest"]["boot"]["devices"], 1, "{v:#}");
    let lines = sh_output(v);
    assert!(
        lines.iter().any(|l| l.starts_with("template-sw: FAIL: ") && l.contains("--iommu")),
        "no failure line naming --iommu: {lines:?}"
    );
}
