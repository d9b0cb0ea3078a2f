//! Files generated from gemm-abi: `guest/driver/cosim_accel_regs.h` and the generated blocks of
//! `docs/register-map.md`. Each test fails when the checked-in file differs from what the crate
//! generates; `make gen-gemm-abi` (this test with `GEMM_ABI_BLESS=1`) rewrites them.

mod common;

use std::fmt::Write as _;

use common::{banner_c_literal, read, regs_header_sections, root};
use cosim_gemm_abi::{pci, regs, ErrorCode, Register};

const REGS_HEADER: &str = "guest/driver/cosim_accel_regs.h";
const REGISTER_MAP: &str = "docs/register-map.md";

fn bless() -> bool {
    std::env::var_os("GEMM_ABI_BLESS").is_some_and(|v| v == "1")
}

/// Fails unless `rel` reads `want`; with `GEMM_ABI_BLESS=1` writes it instead.
fn check_or_write(rel: &str, want: &str) {
    let path = root().join(rel);
    let got = std::fs::read_to_string(&path).unwrap_or_default();
    if got == want {
        return;
    }
    if bless() {
        std::fs::write(&path, want).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        eprintln!("gemm-abi: rewrote {rel}");
        return;
    }
    let line = got
        .lines()
        .zip(want.lines())
        .position(|(g, w)| g != w)
        .unwrap_or(got.lines().count().min(want.lines().count()));
    panic!(
        "{rel} is stale: it differs from what gemm-abi generates from line {} on\n  file:      {:?}\n  generated: {:?}\n\
         Edit gemm-abi/src/lib.rs (not this file), then run `make gen-gemm-abi`.",
        line + 1,
        got.lines().nth(line).unwrap_or("<end of file>"),
        want.lines().nth(line).unwrap_or("<end of file>"),
    );
}

fn render_regs_header() -> String {
    let mut s = String::new();
    s.push_str(
        "/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR Apache-2.0 */\n\
         /*\n \
         * GEMM accelerator register map (docs/register-map.md): PCI identity, BAR0 register offsets,\n \
         * fixed values and bit fields.\n \
         *\n \
         * GENERATED from gemm-abi/src/lib.rs by `make gen-gemm-abi`; do not edit. `make test-gemm`\n \
         * fails when this file is stale. Plain integer macros, for the kernel module and user space.\n \
         */\n\
         #ifndef COSIM_ACCEL_REGS_H\n\
         #define COSIM_ACCEL_REGS_H\n",
    );
    for (title, defines) in regs_header_sections() {
        let width = defines.iter().map(|d| d.name.len()).max().unwrap_or(0);
        let _ = write!(s, "\n/* {title} */\n");
        for d in defines {
            let line = format!("#define {:width$} {}", d.name, d.literal);
            if d.comment.is_empty() {
                let _ = writeln!(s, "{line}");
            } else {
                let _ = writeln!(s, "{line:<w$} /* {} */", d.comment, w = width + 20);
            }
        }
    }
    let _ =
        write!(s, "\n/* What the UART sends after every reset */\n#define GEMM_UART_BANNER {}\n", banner_c_literal());
    s.push_str("\n#endif /* COSIM_ACCEL_REGS_H */\n");
    s
}

#[test]
fn c_register_header_is_current() {
    check_or_write(REGS_HEADER, &render_regs_header());
}

/// The docs' text for one register: its fixed value, what it holds, its fields.
fn register_meaning(r: &Register) -> String {
    let mut s = String::new();
    if let Some(v) = r.value {
        let _ = write!(s, "`0x{v:08x}`: ");
    }
    s.push_str(r.doc.trim());
    let fields: Vec<String> = r
        .fields
        .iter()
        .map(|f| {
            let bits = if f.width() == 1 { format!("bit{}", f.lo()) } else { format!("[{}:{}]", f.hi(), f.lo()) };
            match r.value {
                Some(v) => format!("{bits} {} = {}", f.name, cosim_gemm_abi::field_get(v, f.mask)),
                None if f.values.is_empty() => format!("{bits} {} ({})", f.name, f.doc.trim()),
                None => {
                    let values: Vec<String> = f.values.iter().map(|v| format!("{} = {}", v.value, v.name)).collect();
                    format!("{bits} {} ({}: {})", f.name, f.doc.trim(), values.join(", "))
                }
            }
        })
        .collect();
    if !fields.is_empty() {
        let _ = write!(s, ": {}", fields.join(", "));
    }
    s.replace('|', "\\|")
}

fn render_registers_table() -> String {
    let mut s = String::from("| offset | name | access | meaning |\n|---|---|---|---|\n");
    for r in regs::REGISTERS {
        let _ = writeln!(s, "| 0x{:03x} | {} | {} | {} |", r.offset, r.name, r.access.as_str(), register_meaning(r));
    }
    s
}

fn render_errors_table() -> String {
    let mut s = String::from("| code | name | cause |\n|---|---|---|\n");
    for e in ErrorCode::ALL {
        let _ = writeln!(s, "| {} | {} | {} |", e.code(), e.name(), e.cause().replace('|', "\\|"));
    }
    s
}

fn kib(bytes: u64) -> String {
    format!("{} KiB", bytes / 1024)
}

fn render_pci() -> String {
    let bar = |size: u64, is64: bool| format!("{}, {}-bit memory", kib(size), if is64 { 64 } else { 32 });
    format!(
        "PCI identity: vendor `0x{:04x}`, device `0x{:04x}`, subsystem `0x{:04x}:0x{:04x}`, class `0x{:06x}`, revision {}.\n\
         BAR{}: {}, the registers. BAR2: {}. MSI-X: {} vectors, table in BAR{} at 0x{:04x},\n\
         PBA in BAR{} at 0x{:04x}.\n",
        pci::VENDOR_ID,
        pci::DEVICE_ID,
        pci::SUBSYSTEM_VENDOR_ID,
        pci::SUBSYSTEM_ID,
        pci::CLASS_CODE,
        pci::REVISION,
        pci::REGS_BAR,
        bar(pci::BAR0_SIZE, pci::BAR0_64BIT),
        bar(pci::BAR2_SIZE, pci::BAR2_64BIT),
        pci::MSIX_VECTORS,
        pci::MSIX_TABLE_BAR,
        pci::MSIX_TABLE_OFFSET,
        pci::MSIX_PBA_BAR,
        pci::MSIX_PBA_OFFSET,
    )
}

/// `text` with the block between `<!-- gemm-abi:begin NAME ... -->` and `<!-- gemm-abi:end NAME -->`
/// replaced by `body`; panics if the markers are missing.
fn replace_block(text: &str, name: &str, body: &str) -> String {
    let begin = format!("<!-- gemm-abi:begin {name} ");
    let end = format!("<!-- gemm-abi:end {name} -->");
    let b = text.find(&begin).unwrap_or_else(|| panic!("{REGISTER_MAP}: marker `{begin}...-->` missing"));
    let b = b + text[b..].find("-->\n").unwrap_or_else(|| panic!("{REGISTER_MAP}: `{begin}` not closed")) + 4;
    let e = b + text[b..].find(&end).unwrap_or_else(|| panic!("{REGISTER_MAP}: marker `{end}` missing"));
    format!("{}{}{}", &text[..b], body, &text[e..])
}

#[test]
fn docs_register_map_tables_are_current() {
    let text = read(REGISTER_MAP);
    let mut want = replace_block(&text, "pci", &render_pci());
    want = replace_block(&want, "registers", &render_registers_table());
    want = replace_block(&want, "errors", &render_errors_table());
    check_or_write(REGISTER_MAP, &want);
}
