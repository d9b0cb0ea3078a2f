//! The guest's `/init` (guest/initramfs/init) reads its parameters from the kernel command line
//! with its `param` function: run here with busybox's shell, the one the guest runs it with
//! (`make deps` installs busybox-static), against command lines as the launcher builds them.

use std::path::Path;
use std::process::Command;

/// The `param` function of the guest's `/init`, as text.
fn param_function() -> String {
    let init = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/initramfs/init");
    let text = std::fs::read_to_string(&init).unwrap_or_else(|e| panic!("{}: {e}", init.display()));
    let start = text.find("\nparam() {").expect("a param() function in /init") + 1;
    let end = start + text[start..].find("\n}\n").expect("the end of param()") + 3;
    text[start..end].to_string()
}

/// `param NAME` with `cmdline` as /proc/cmdline.
fn param(cmdline: &str, name: &str) -> String {
    let script = format!("{}\nCMDLINE=\"$1\"\nparam \"$2\"", param_function());
    let out = Command::new("busybox")
        .args(["sh", "-c", &script, "init", cmdline, name])
        .output()
        .unwrap_or_else(|e| panic!("cannot run busybox (make deps installs busybox-static): {e}"));
    assert!(out.status.success(), "busybox sh: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_parameter_is_read_as_the_kernel_splits_the_command_line() {
    let launcher = r#"console=ttyS0 panic=-1 cosim.run="info;gemm --m 4 --n 4 --k 4 --check" cosim.net=1"#;
    assert_eq!(param(launcher, "cosim.run"), "info;gemm --m 4 --n 4 --k 4 --check");
    assert_eq!(param(launcher, "cosim.net"), "1");
    assert_eq!(param(launcher, "cosim.shell"), "", "absent");
    // A name inside another parameter's quoted value, or as part of a longer name, is not it.
    assert_eq!(param(r#"cosim.run="sh:echo cosim.net=2" xcosim.net=3 cosim.netx=4"#, "cosim.net"), "");
    assert_eq!(param(r#"cosim.run="sh:echo cosim.net=2" cosim.net=1"#, "cosim.net"), "1");
    // Quotes around the whole parameter, tabs, an empty value.
    assert_eq!(param("a=1\t\"cosim.run=info;gemm --m 4\"\tb=2", "cosim.run"), "info;gemm --m 4");
    assert_eq!(param("cosim.run= cosim.net=1", "cosim.run"), "");
    assert_eq!(param("cosim.run= cosim.net=1", "cosim.net"), "1");
    // The end of the line ends an unclosed quote, as in the kernel.
    assert_eq!(param(r#"a=1 cosim.run="echo hi"#, "cosim.run"), "echo hi");
    assert_eq!(param(r#"cosim.run=info cosim.run="info;gemm"#, "cosim.run"), "info;gemm");
}

#[test]
fn the_last_one_wins_quoted_or_not() {
    // What --append adds comes after what the launcher set.
    assert_eq!(param(r#"cosim.run="info;gemm --m 4" cosim.timeout=9 cosim.run=info"#, "cosim.run"), "info");
    assert_eq!(param(r#"cosim.run=info cosim.run="a b""#, "cosim.run"), "a b");
    assert_eq!(param("cosim.timeout=30 cosim.timeout=5", "cosim.timeout"), "5");
    // A line break counts as a space (one value, not one per line).
    assert_eq!(param("cosim.timeout=30\ncosim.timeout=5\n", "cosim.timeout"), "5");
}
