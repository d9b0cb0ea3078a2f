//! The C headers against gemm-abi, through the C compiler: `guest/driver/cosim_accel_ioctl.h`
//! (hand-written) and `guest/driver/cosim_accel_regs.h` (generated) are compiled with gcc into a
//! program that prints every struct field's offset and size (`offsetof`, `sizeof`), every struct's
//! size and every numeric macro's value; each must equal the Rust definition. Needs gcc and the
//! Linux UAPI headers (`linux-libc-dev`); a missing compiler fails the test.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::mem::{offset_of, size_of};
use std::process::Command;

use common::{ioctl_header_defines, read, regs_header_sections, root, strip_comments, Mismatches};
use cosim_gemm_abi::ioctl::{AccelGemm, AccelInfo};

const IOCTL_HEADER: &str = "guest/driver/cosim_accel_ioctl.h";
const REGS_HEADER: &str = "guest/driver/cosim_accel_regs.h";

/// Size of a field, from an accessor (so no value of the struct is needed).
fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// `(field, offset, size)` of every field of a Rust struct, in declaration order. The pattern
/// `let $ty { .. } = ...` lists the fields exhaustively, so a field added to the struct but not
/// here fails to compile.
macro_rules! layout {
    ($ty:ident { $($f:ident),* $(,)? }) => {{
        let $ty { $($f: _),* } = $ty::default();
        vec![$( (stringify!($f).to_string(), offset_of!($ty, $f), field_size(|s: &$ty| &s.$f)) ),*]
    }};
}

/// `(field, offset, size)` of each field, in order.
type Layout = Vec<(String, usize, usize)>;

/// The Rust side: C struct name, Rust struct size, fields.
fn rust_structs() -> Vec<(&'static str, usize, Layout)> {
    vec![
        (
            "cosim_accel_info",
            size_of::<AccelInfo>(),
            layout!(AccelInfo {
                abi_version,
                index,
                vendor,
                device,
                revision,
                pad0,
                id,
                version,
                array_rows,
                array_cols,
                max_dim,
                msix_vectors,
                timeout_ms,
                pad1,
                jobs,
                errors,
                timeouts,
                irqs,
                jobs_done_reg,
                pci_name,
                nic_rx_frames,
                nic_tx_frames,
                uart_rx_bytes,
                pad2,
            }),
        ),
        (
            "cosim_accel_gemm",
            size_of::<AccelGemm>(),
            layout!(AccelGemm {
                m,
                n,
                k,
                timeout_ms,
                a_ptr,
                b_ptr,
                c_ptr,
                cycles,
                dma_wait_cycles,
                device_ns,
                dev_error,
                pad0,
            }),
        ),
    ]
}


/// Field names of every `struct NAME { ... };` in a header, in order.
fn c_structs(src: &str) -> Vec<(String, Vec<String>)> {
    let src = strip_comments(src);
    let mut out = Vec::new();
    let mut rest = src.as_str();
    while let Some(i) = rest.find("struct ") {
        let after = &rest[i + 7..];
        let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let tail = after[name.len()..].trim_start();
        if let (false, Some(body)) = (name.is_empty(), tail.strip_prefix('{')) {
            let end = body.find('}').expect("struct body closed");
            let fields = body[..end]
                .split(';')
                .filter_map(|decl| {
                    let decl = decl.trim();
                    let last = decl.split_whitespace().last()?;
                    Some(last.split('[').next().unwrap_or(last).to_string())
                })
                .collect();
            out.push((name.clone(), fields));
            rest = &body[end..];
        } else {
            rest = after;
        }
    }
    out
}

/// Object-like macros of a header: name and whether the value is a string literal.
fn c_defines(src: &str) -> Vec<(String, bool)> {
    strip_comments(src)
        .lines()
        .filter_map(|l| {
            let l = l.trim().strip_prefix("#define")?.trim_start();
            let name: String = l.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            let value = l[name.len()..].trim();
            // Function-like macros (`NAME(`) and include guards (no value) are not constants.
            if l[name.len()..].starts_with('(') || value.is_empty() {
                return None;
            }
            Some((name, value.starts_with('"')))
        })
        .collect()
}

/// Compiles and runs a program that includes both headers and prints `key value` lines.
fn c_facts(structs: &[(String, Vec<String>)], defines: &[String]) -> BTreeMap<String, u64> {
    let mut prog = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"cosim_accel_ioctl.h\"\n#include \"cosim_accel_regs.h\"\n\
         int main(void) {\n",
    );
    for (s, fields) in structs {
        let _ = writeln!(prog, "  printf(\"sizeof {s} %zu\\n\", sizeof(struct {s}));");
        for f in fields {
            let _ = writeln!(prog, "  printf(\"offsetof {s}.{f} %zu\\n\", offsetof(struct {s}, {f}));");
            let _ = writeln!(prog, "  printf(\"sizeof {s}.{f} %zu\\n\", sizeof(((struct {s} *)0)->{f}));");
        }
    }
    for d in defines {
        let _ = writeln!(prog, "  printf(\"define {d} %llu\\n\", (unsigned long long)({d}));");
    }
    prog.push_str("  return 0;\n}\n");

    let dir = std::env::var_os("CARGO_TARGET_TMPDIR").map_or_else(std::env::temp_dir, Into::into).join("gemm-abi-c");
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let src = dir.join("layout.c");
    let exe = dir.join("layout");
    std::fs::write(&src, prog).expect("write layout.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".into());
    let out = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg("-I")
        .arg(root().join("guest/driver"))
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}` ({e}): install gcc (`make deps`)"));
    assert!(out.status.success(), "{cc} failed on {}:\n{}", src.display(), String::from_utf8_lossy(&out.stderr));
    let run = Command::new(&exe).output().expect("run the layout program");
    assert!(run.status.success(), "{} failed", exe.display());
    String::from_utf8(run.stdout)
        .expect("ASCII output")
        .lines()
        .map(|l| {
            let (kind, rest) = l.split_once(' ').expect("`kind key value`");
            let (key, v) = rest.rsplit_once(' ').expect("`key value`");
            (format!("{kind} {key}"), v.parse().expect("a number"))
        })
        .collect()
}

#[test]
fn c_headers_match_the_rust_definition() {
    let ioctl_src = read(IOCTL_HEADER);
    let regs_src = read(REGS_HEADER);
    let structs = c_structs(&ioctl_src);
    let mut m = Mismatches::default();

    // Numeric macros: the ioctl header's must be exactly the expected set; the generated header's
    // values must be what the generator meant (a formatting slip would show here).
    let mut want: BTreeMap<String, u64> = ioctl_header_defines().into_iter().collect();
    for (_, defines) in regs_header_sections() {
        want.extend(defines.into_iter().map(|d| (d.name, d.value)));
    }
    let mut names = Vec::new();
    for (src, file) in [(&ioctl_src, IOCTL_HEADER), (&regs_src, REGS_HEADER)] {
        for (name, is_string) in c_defines(src) {
            if is_string {
                continue; // GEMM_UART_BANNER: compared as text by tests/generated.rs
            } else if !want.contains_key(&name) {
                m.push(format!("{file}: #define {name} has no counterpart in gemm-abi (add it there, or remove it)"));
            } else {
                names.push(name);
            }
        }
    }
    for name in want.keys() {
        if !names.contains(name) {
            m.push(format!("#define {name} = {} is missing from the C headers", want[name]));
        }
    }

    let facts = c_facts(&structs, &names);
    for name in &names {
        let got = facts[&format!("define {name}")];
        if got != want[name] {
            m.push(format!("#define {name} is {got:#x} in C, gemm-abi says {:#x}", want[name]));
        }
    }

    // Structs: same fields in the same order, each at the same offset with the same size.
    for (cname, rsize, rfields) in rust_structs() {
        let Some((_, cfields)) = structs.iter().find(|(n, _)| n == cname) else {
            m.push(format!("{IOCTL_HEADER}: struct {cname} not found"));
            continue;
        };
        m.eq(&format!("sizeof(struct {cname})"), facts[&format!("sizeof {cname}")] as usize, rsize);
        let rnames: Vec<&str> = rfields.iter().map(|(n, _, _)| n.as_str()).collect();
        let cnames: Vec<&str> = cfields.iter().map(String::as_str).collect();
        let only_c: Vec<&str> = cnames.iter().filter(|n| !rnames.contains(n)).copied().collect();
        let only_rust: Vec<&str> = rnames.iter().filter(|n| !cnames.contains(n)).copied().collect();
        if !only_c.is_empty() || !only_rust.is_empty() {
            m.push(format!("struct {cname}: fields only in C {only_c:?}, only in Rust {only_rust:?}"));
        } else if rnames != cnames {
            m.push(format!("struct {cname}: field order differs: C {cnames:?}, Rust {rnames:?}"));
        }
        for (f, off, size) in &rfields {
            let (Some(&coff), Some(&csize)) =
                (facts.get(&format!("offsetof {cname}.{f}")), facts.get(&format!("sizeof {cname}.{f}")))
            else {
                continue; // reported by the name comparison above
            };
            m.eq(&format!("struct {cname}.{f} (offset, size)"), (coff as usize, csize as usize), (*off, *size));
        }
    }
    m.finish("C headers");
}

#[test]
fn guest_docs_show_the_ioctl_numbers() {
    // docs/guest.md writes the requests as `_IOR('G',1,136)`; the sizes there are the structs'.
    let doc = read("docs/guest.md");
    let mut m = Mismatches::default();
    for want in [
        format!("_IOR('G',1,{})", size_of::<AccelInfo>()),
        format!("_IOWR('G',2,{})", size_of::<AccelGemm>()),
        "_IO('G',3)".to_string(),
    ] {
        if !doc.contains(&want) {
            m.push(format!("docs/guest.md does not show `{want}`"));
        }
    }
    m.finish("docs/guest.md");
}
