//! Shared by the checks: paths into the repository, the list of mismatches a check collects, and
//! the C macros derived from the crate (the generated header and the ioctl header's constants).
#![allow(dead_code)] // each test binary uses part of this module

use std::fmt::Write as _;
use std::path::PathBuf;

use cosim_gemm_abi::{ioctl, pci, regs, ErrorCode, UART_BANNER};

/// The repository's root (this crate is `<root>/gemm-abi`).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("gemm-abi has a parent").to_path_buf()
}

/// Contents of `rel` (relative to the repository root); panics naming the file.
pub fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// Mismatches found by one check; `finish` fails the test listing all of them.
#[derive(Default)]
pub struct Mismatches(Vec<String>);

impl Mismatches {
    pub fn push(&mut self, msg: impl Into<String>) {
        self.0.push(msg.into());
    }

    /// Records `what` unless `got == want`.
    pub fn eq<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, got: T, want: T) {
        if got != want {
            self.0.push(format!("{what}: {got:?}, gemm-abi says {want:?}"));
        }
    }

    /// Records `what` unless it is the literal `want` (`got` None: missing or not a literal).
    pub fn int(&mut self, what: &str, got: Option<u64>, want: u64) {
        let show = |v: u64| if v < 10 { v.to_string() } else { format!("{v:#x}") };
        match got {
            Some(g) if g == want => {}
            Some(g) => self.0.push(format!("{what} = {}, gemm-abi says {}", show(g), show(want))),
            None => self.0.push(format!("{what}: missing (or not a literal), gemm-abi says {}", show(want))),
        }
    }

    pub fn finish(self, check: &str) {
        if !self.0.is_empty() {
            let mut s = format!("{check}: {} mismatch(es) with gemm-abi/src/lib.rs:\n", self.0.len());
            for m in &self.0 {
                let _ = writeln!(s, "  - {m}");
            }
            panic!("{s}");
        }
    }
}

/// One numeric C macro: name, value, comment.
pub struct CDefine {
    pub name: String,
    pub value: u64,
    /// How to print the value (`0x000`, `0x47454d4du`, `1`).
    pub literal: String,
    pub comment: String,
}

fn define(name: impl Into<String>, value: u64, literal: String, comment: impl Into<String>) -> CDefine {
    CDefine { name: name.into(), value, literal, comment: comment.into() }
}

/// Sections of `guest/driver/cosim_accel_regs.h`, each a title and its numeric macros.
pub fn regs_header_sections() -> Vec<(&'static str, Vec<CDefine>)> {
    let pci = vec![
        define("GEMM_PCI_VENDOR_ID", pci::VENDOR_ID.into(), format!("0x{:04x}", pci::VENDOR_ID), "vendor ID"),
        define("GEMM_PCI_DEVICE_ID", pci::DEVICE_ID.into(), format!("0x{:04x}", pci::DEVICE_ID), "device ID"),
        define(
            "GEMM_PCI_SUBSYSTEM_VENDOR_ID",
            pci::SUBSYSTEM_VENDOR_ID.into(),
            format!("0x{:04x}", pci::SUBSYSTEM_VENDOR_ID),
            "subsystem vendor ID",
        ),
        define(
            "GEMM_PCI_SUBSYSTEM_ID",
            pci::SUBSYSTEM_ID.into(),
            format!("0x{:04x}", pci::SUBSYSTEM_ID),
            "subsystem ID",
        ),
        define("GEMM_PCI_CLASS_CODE", pci::CLASS_CODE.into(), format!("0x{:06x}", pci::CLASS_CODE), "class code"),
        define("GEMM_PCI_REVISION", pci::REVISION.into(), pci::REVISION.to_string(), "revision ID"),
        define("GEMM_REGS_BAR", pci::REGS_BAR.into(), pci::REGS_BAR.to_string(), "BAR of the registers"),
        define("GEMM_BAR0_SIZE", pci::BAR0_SIZE, format!("0x{:x}", pci::BAR0_SIZE), "bytes"),
        define("GEMM_BAR2_SIZE", pci::BAR2_SIZE, format!("0x{:x}", pci::BAR2_SIZE), "bytes: MSI-X table and PBA"),
        define("GEMM_MSIX_VECTORS", pci::MSIX_VECTORS.into(), pci::MSIX_VECTORS.to_string(), "MSI-X vectors"),
    ];
    let offsets = regs::REGISTERS
        .iter()
        .map(|r| {
            define(
                format!("GEMM_REG_{}", r.name),
                r.offset,
                format!("0x{:03x}", r.offset),
                format!("{}: {}", r.access.as_str(), r.doc.trim()),
            )
        })
        .collect();
    let mut values = Vec::new();
    let mut fields = Vec::new();
    for r in regs::REGISTERS {
        if let Some(v) = r.value {
            values.push(define(
                format!("GEMM_{}_VALUE", r.name),
                v.into(),
                format!("0x{v:08x}u"),
                format!("what {} reads", r.name),
            ));
        }
        for f in r.fields {
            let name = format!("GEMM_{}_{}", r.name, f.name);
            let bits = if f.width() == 1 { format!("bit {}", f.lo()) } else { format!("bits {}:{}", f.hi(), f.lo()) };
            fields.push(define(
                name.clone(),
                f.mask.into(),
                format!("0x{:08x}u", f.mask),
                format!("{bits}: {}", f.doc.trim()),
            ));
            if f.width() > 1 {
                fields.push(define(format!("{name}_SHIFT"), f.lo().into(), f.lo().to_string(), String::new()));
            }
            for v in f.values {
                fields.push(define(
                    format!("{name}_{}", v.name),
                    v.value.into(),
                    v.value.to_string(),
                    format!("value: {}", v.doc.trim()),
                ));
            }
        }
    }
    vec![
        ("PCI identity, BARs and MSI-X", pci),
        ("BAR0 registers: byte offsets (docs/register-map.md, \"Registers\")", offsets),
        ("Fixed register values", values),
        ("Register fields: masks, the shift of multi-bit fields, named values (not shifted)", fields),
    ]
}

/// The UART banner as a C string literal.
pub fn banner_c_literal() -> String {
    let mut s = String::from("\"");
    for &b in UART_BANNER {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s.push('"');
    s
}

/// Values the hand-written `guest/driver/cosim_accel_ioctl.h` must define (object-like numeric
/// macros; the header must define no others).
pub fn ioctl_header_defines() -> Vec<(String, u64)> {
    let mut v = vec![
        ("COSIM_ACCEL_ABI_VERSION".to_string(), u64::from(ioctl::ABI_VERSION)),
        ("COSIM_ACCEL_IOC_MAGIC".to_string(), u64::from(ioctl::MAGIC)),
        ("COSIM_ACCEL_IOC_INFO".to_string(), u64::from(ioctl::INFO)),
        ("COSIM_ACCEL_IOC_GEMM".to_string(), u64::from(ioctl::GEMM)),
        ("COSIM_ACCEL_IOC_RESET".to_string(), u64::from(ioctl::RESET)),
    ];
    for e in ErrorCode::ALL {
        v.push((format!("COSIM_ACCEL_ERR_{}", e.name()), u64::from(e.code())));
    }
    v
}

/// Source without `/* ... */` and `// ...` comments (C and SystemVerilog; the string literals
/// read here hold no comment markers).
pub fn strip_comments(src: &str) -> String {
    let mut out = String::new();
    let mut rest = src;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        rest = rest[i..].find("*/").map_or("", |j| &rest[i + j + 2..]);
    }
    out.push_str(rest);
    out.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}
