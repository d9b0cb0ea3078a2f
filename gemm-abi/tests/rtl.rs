//! The RTL (`hdl/gemm_accel/*.sv`) against gemm-abi, by reading its source: the register block's
//! offset localparams, fixed values and field positions, which registers its read and write
//! decoders serve (against each register's access), the engine's error codes, the UART banner, the
//! PCI identity that `gemm_top` gives the endpoint shell and its default array size. Behaviour
//! (what a register does) is tested against the simulation by host-model/tests/gemm.rs, which
//! uses this crate's constants.

mod common;

use std::collections::BTreeMap;

use common::{read, strip_comments, Mismatches};
use cosim_gemm_abi::{defaults, pci, regs, ErrorCode, UART_BANNER};

const REGS_SV: &str = "hdl/gemm_accel/gemm_regs.sv";
const ENGINE_SV: &str = "hdl/gemm_accel/gemm_engine.sv";
const UART_SV: &str = "hdl/gemm_accel/gemm_uart.sv";
const TOP_SV: &str = "hdl/gemm_accel/gemm_top.sv";
const ACCEL_SV: &str = "hdl/gemm_accel/gemm_accel.sv";

/// A constant value in SystemVerilog source.
#[derive(Clone, Debug, PartialEq, Eq)]
enum SvValue {
    Int(u64),
    Str(Vec<u8>),
}


/// A literal: `12`, `12'h0_1c`, `'h2000`, `8'd5`, `1'b1`, `"text\r\n"`; None for expressions.
fn sv_literal(s: &str) -> Option<SvValue> {
    let s = s.trim();
    if let Some(body) = s.strip_prefix('"').and_then(|b| b.strip_suffix('"')) {
        let mut out = Vec::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next()? {
                    'n' => out.push(b'\n'),
                    'r' => out.push(b'\r'),
                    't' => out.push(b'\t'),
                    c => out.push(c as u8),
                }
            } else {
                out.push(c as u8);
            }
        }
        return Some(SvValue::Str(out));
    }
    let digits = |t: &str, radix| u64::from_str_radix(&t.replace('_', ""), radix).ok();
    match s.split_once('\'') {
        None => digits(s, 10),
        Some((width, rest)) if width.chars().all(|c| c.is_ascii_digit()) => {
            let rest = rest.strip_prefix(['s', 'S']).unwrap_or(rest);
            let radix = match rest.chars().next()? {
                'h' | 'H' => 16,
                'd' | 'D' => 10,
                'b' | 'B' => 2,
                'o' | 'O' => 8,
                _ => return None,
            };
            digits(&rest[1..], radix)
        }
        _ => None,
    }
    .map(SvValue::Int)
}

/// Splits at commas outside parentheses, brackets and braces.
fn split_top(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// The name being assigned in `<type> NAME = value` (the last identifier before `=`).
fn assigned_name(lhs: &str) -> String {
    let lhs = lhs.trim_end();
    let start = lhs.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
    lhs[start..].to_string()
}

/// Every `localparam` with a literal value: name -> value.
fn localparams(src: &str) -> BTreeMap<String, SvValue> {
    let src = strip_comments(src);
    let mut out = BTreeMap::new();
    for stmt in src.split("localparam").skip(1) {
        let stmt = stmt.split(';').next().unwrap_or("");
        for decl in split_top(stmt) {
            let Some((lhs, rhs)) = decl.split_once('=') else { continue };
            if let Some(v) = sv_literal(rhs) {
                out.insert(assigned_name(lhs), v);
            }
        }
    }
    out
}

/// Default of the module parameter `name` (`parameter int NAME = 4`).
fn parameter_default(src: &str, name: &str) -> Option<SvValue> {
    let src = strip_comments(src);
    src.split("parameter").skip(1).find_map(|decl| {
        let decl = decl.split([',', ')', ';']).next()?;
        let (lhs, rhs) = decl.split_once('=')?;
        (assigned_name(lhs) == name).then(|| sv_literal(rhs)).flatten()
    })
}

/// Parameter overrides `.NAME (value)` of the instance of `module` (`module #( ... )`).
fn instance_parameters(src: &str, module: &str) -> BTreeMap<String, Option<SvValue>> {
    let src = strip_comments(src);
    let start =
        src.find(&format!("{module} #(")).unwrap_or_else(|| panic!("no `{module} #(` instance")) + module.len() + 3;
    let mut depth = 1;
    let end = start
        + src[start..]
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .expect("instance parameter list closed")
            .0;
    split_top(&src[start..end])
        .into_iter()
        .filter_map(|p| {
            let p = p.trim().strip_prefix('.')?;
            let (name, value) = p.split_once('(')?;
            Some((name.trim().to_string(), sv_literal(value.trim_end().strip_suffix(')')?)))
        })
        .collect()
}

/// Case items (`LABEL:` at the start of a line) between `from` and the next `endcase`.
fn case_items(src: &str, from: &str) -> Vec<String> {
    let src = strip_comments(src);
    let start = src.find(from).unwrap_or_else(|| panic!("`{from}` not found"));
    let body = &src[start..];
    let body = &body[..body.find("endcase").expect("endcase")];
    body.lines()
        .skip(1)
        .filter_map(|l| {
            let (label, _) = l.split_once(':')?;
            let label = label.trim();
            let simple = !label.is_empty() && label.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '\'');
            (simple && label != "default").then(|| label.to_string())
        })
        .collect()
}

fn int(v: Option<&SvValue>) -> Option<u64> {
    match v {
        Some(SvValue::Int(i)) => Some(*i),
        _ => None,
    }
}

#[test]
fn register_block_follows_the_map() {
    let src = read(REGS_SV);
    let lp = localparams(&src);
    let mut m = Mismatches::default();

    // Offsets: one REG_<NAME> localparam per register, no others.
    for r in regs::REGISTERS {
        let name = format!("REG_{}", r.name);
        match int(lp.get(&name)) {
            None => m.push(format!("{REGS_SV}: no `localparam logic [11:0] {name} = 12'h{:03x};`", r.offset)),
            Some(v) if v != r.offset => {
                m.push(format!("{REGS_SV}: {name} = 0x{v:03x}, gemm-abi says 0x{:03x}", r.offset))
            }
            Some(_) => {}
        }
        if let Some(want) = r.value {
            let vname = format!("{}_VALUE", r.name);
            m.int(&format!("{REGS_SV}: {vname}"), int(lp.get(&vname)), u64::from(want));
        } else {
            for f in r.fields {
                let base = format!("{}_{}", r.name, f.name);
                if f.width() == 1 {
                    m.int(&format!("{REGS_SV}: {base} (bit)"), int(lp.get(&base)), f.lo().into());
                } else {
                    m.int(&format!("{REGS_SV}: {base}_LSB"), int(lp.get(&format!("{base}_LSB"))), f.lo().into());
                    m.int(&format!("{REGS_SV}: {base}_W"), int(lp.get(&format!("{base}_W"))), f.width().into());
                }
            }
        }
    }
    for name in lp.keys().filter(|n| n.starts_with("REG_")) {
        if regs::REGISTERS.iter().all(|r| format!("REG_{}", r.name) != *name) {
            m.push(format!("{REGS_SV}: {name} is not a register of gemm-abi (add it there first)"));
        }
    }

    // Decoders: the read mux serves the readable registers, the write decoder the writable ones,
    // each by its REG_ name.
    let names = |keep: fn(&&cosim_gemm_abi::Register) -> bool| -> Vec<String> {
        regs::REGISTERS.iter().filter(keep).map(|r| format!("REG_{}", r.name)).collect()
    };
    for (what, from, want) in [
        (
            "read decoder (function reg_value)",
            "function automatic logic [31:0] reg_value",
            names(|r| r.access.readable()),
        ),
        ("write decoder (case on wr_word)", "case ({wr_word", names(|r| r.access.writable())),
    ] {
        let got = case_items(&src, from);
        for item in &got {
            if !item.starts_with("REG_") {
                m.push(format!("{REGS_SV}: {what} has case item `{item}`: use the REG_ localparam"));
            } else if !want.contains(item) {
                let access = regs::REGISTERS
                    .iter()
                    .find(|r| format!("REG_{}", r.name) == *item)
                    .map_or("unknown", |r| r.access.as_str());
                m.push(format!("{REGS_SV}: {what} serves {item}, which gemm-abi makes {access}"));
            }
        }
        for name in &want {
            if !got.contains(name) {
                m.push(format!("{REGS_SV}: {what} does not serve {name}"));
            }
        }
    }
    m.finish(REGS_SV);
}

#[test]
fn engine_error_codes_follow_the_map() {
    let lp = localparams(&read(ENGINE_SV));
    let mut m = Mismatches::default();
    for e in ErrorCode::ALL {
        m.int(&format!("{ENGINE_SV}: E_{}", e.name()), int(lp.get(&format!("E_{}", e.name()))), e.code().into());
    }
    for (name, v) in lp.iter().filter(|(n, _)| n.starts_with("E_")) {
        if ErrorCode::ALL.iter().all(|e| format!("E_{}", e.name()) != *name) {
            m.push(format!("{ENGINE_SV}: {name} = {v:?} is not an ErrorCode of gemm-abi"));
        }
    }
    m.finish(ENGINE_SV);
}

#[test]
fn uart_banner_follows_the_map() {
    let lp = localparams(&read(UART_SV));
    let mut m = Mismatches::default();
    m.eq(&format!("{UART_SV}: BANNER"), lp.get("BANNER").cloned(), Some(SvValue::Str(UART_BANNER.to_vec())));
    m.int(&format!("{UART_SV}: BANNER_LEN"), int(lp.get("BANNER_LEN")), UART_BANNER.len() as u64);
    m.finish(UART_SV);
}

#[test]
fn top_level_pci_identity_and_defaults_follow_the_map() {
    let top = read(TOP_SV);
    let p = instance_parameters(&top, "cosim_pcie_ep");
    let mut m = Mismatches::default();
    let want: [(&str, u64); 15] = [
        ("VENDOR_ID", pci::VENDOR_ID.into()),
        ("DEVICE_ID", pci::DEVICE_ID.into()),
        ("SUBSYS_VENDOR_ID", pci::SUBSYSTEM_VENDOR_ID.into()),
        ("SUBSYS_ID", pci::SUBSYSTEM_ID.into()),
        ("CLASS_CODE", pci::CLASS_CODE.into()),
        ("REVISION", pci::REVISION.into()),
        ("BAR0_SIZE", pci::BAR0_SIZE),
        ("BAR0_64", pci::BAR0_64BIT.into()),
        ("BAR2_SIZE", pci::BAR2_SIZE),
        ("BAR2_64", pci::BAR2_64BIT.into()),
        ("MSIX_VECTORS", pci::MSIX_VECTORS.into()),
        ("MSIX_TABLE_BAR", pci::MSIX_TABLE_BAR.into()),
        ("MSIX_TABLE_OFFSET", pci::MSIX_TABLE_OFFSET.into()),
        ("MSIX_PBA_BAR", pci::MSIX_PBA_BAR.into()),
        ("MSIX_PBA_OFFSET", pci::MSIX_PBA_OFFSET.into()),
    ];
    for (name, v) in want {
        match p.get(name) {
            None => m.push(format!("{TOP_SV}: cosim_pcie_ep has no `.{name}(...)` (pass it explicitly)")),
            Some(got) => m.int(&format!("{TOP_SV}: .{name}"), int(got.as_ref()), v),
        }
    }
    m.int(&format!("{TOP_SV}: parameter ROWS"), int(parameter_default(&top, "ROWS").as_ref()), defaults::ROWS.into());
    m.int(&format!("{TOP_SV}: parameter COLS"), int(parameter_default(&top, "COLS").as_ref()), defaults::COLS.into());
    if top.contains(".MAX_DIM") {
        m.push(format!("{TOP_SV}: passes MAX_DIM; check it against gemm-abi `defaults::MAX_DIM` here"));
    }
    let accel = read(ACCEL_SV);
    m.int(
        &format!("{ACCEL_SV}: parameter MAX_DIM"),
        int(parameter_default(&accel, "MAX_DIM").as_ref()),
        defaults::MAX_DIM.into(),
    );
    m.finish(TOP_SV);
}

#[test]
fn no_other_copy_of_the_map_in_the_rtl_or_its_testbench() {
    let mut m = Mismatches::default();
    let dir = common::root().join("hdl/gemm_accel");
    let mut files: Vec<_> =
        std::fs::read_dir(&dir).expect("hdl/gemm_accel").map(|e| e.expect("dir entry").path()).collect();
    files.sort();
    for path in files.iter().filter(|p| p.extension().is_some_and(|e| e == "sv")) {
        let rel = format!("hdl/gemm_accel/{}", path.file_name().unwrap().to_string_lossy());
        let src = std::fs::read_to_string(path).expect("read .sv");
        for name in localparams(&src).keys() {
            let owner = if name.starts_with("REG_") || name == "ID_VALUE" || name == "VERSION_VALUE" {
                REGS_SV
            } else if name.starts_with("E_") {
                ENGINE_SV
            } else {
                continue;
            };
            if rel != owner {
                m.push(format!("{rel}: localparam {name} copies the register map; it belongs in {owner}"));
            }
        }
        for line in strip_comments(&src).lines() {
            let t = line.trim_start();
            if t.starts_with("12'h") && t.contains(':') {
                m.push(format!(
                    "{rel}: case item `{}` names a register by number: use its REG_ localparam",
                    t.split(':').next().unwrap()
                ));
            }
        }
    }
    // The C++ testbench names registers through cosim_accel_regs.h (generated from gemm-abi).
    let tb = "hdl/gemm_accel/tb/tb_gemm_accel.cpp";
    let src = read(tb);
    for pat in ["reg_read(0", "reg_write(0"] {
        for (i, line) in src.lines().enumerate() {
            if line.contains(pat) {
                m.push(format!("{tb}:{}: `{}`: use a GEMM_REG_ macro of cosim_accel_regs.h", i + 1, line.trim()));
            }
        }
    }
    m.finish("copies of the register map");
}

/// The engine parameters the device does not report (`defaults::NB`, `AM`, `RD_OUT`, the beat
/// width, the largest burst, the clock): what the performance models (`cosim-perf-model`) assume.
#[test]
fn engine_defaults_follow_the_rtl() {
    let mut m = Mismatches::default();
    let accel = read(ACCEL_SV);
    for (name, want) in [("NB", defaults::NB), ("AM", defaults::AM)] {
        let got = int(parameter_default(&accel, name).as_ref());
        m.int(&format!("{ACCEL_SV}: parameter {name}"), got, want.into());
    }
    let top = read(TOP_SV);
    for name in ["NB", "AM"] {
        if strip_comments(&top).contains(&format!(".{name}")) {
            m.push(format!("{TOP_SV}: passes {name}; check it against gemm-abi `defaults::{name}` here"));
        }
    }
    m.int(&format!("{TOP_SV}: parameter RD_OUT"), int(parameter_default(&top, "RD_OUT").as_ref()), defaults::RD_OUT.into());
    // 8-byte beats of at most 256: the data width of the read port and the burst limit of both engines.
    let rd = strip_comments(&read("hdl/gemm_accel/gemm_dma_rd.sv"));
    let width = u64::from(defaults::DMA_BYTES_PER_CYCLE) * 8;
    if !rd.contains(&format!("input  logic [{}:0]     m_axi_rdata", width - 1)) {
        m.push(format!("gemm_dma_rd.sv: m_axi_rdata is not [{}:0]", width - 1));
    }
    let burst_bytes = defaults::DMA_MAX_BURST_BEATS * defaults::DMA_BYTES_PER_CYCLE;
    if !rd.contains(&format!("13'd{burst_bytes}")) {
        m.push(format!("gemm_dma_rd.sv: no burst limit of {burst_bytes} bytes (13'd{burst_bytes})"));
    }
    let tb = read("verilator-tb/sim_main.cpp");
    let mhz = defaults::CLOCK_HZ as f64 / 1e6;
    if !tb.contains(&format!("double clock_mhz = {mhz:.1};")) {
        m.push(format!("verilator-tb/sim_main.cpp: default clock is not `double clock_mhz = {mhz:.1};`"));
    }
    m.finish("engine defaults");
}
