//! Generates `include/cosim_dpi_bridge.h` with cbindgen. The Verilator testbench compiles it in
//! one translation unit with `V<top>__Dpi.h`, so a prototype mismatch fails the build.

fn main() {
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=src/ffi.rs");
    println!("cargo:rerun-if-changed=src/registry.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let config = cbindgen::Config::from_file(format!("{crate_dir}/cbindgen.toml")).expect("cbindgen.toml");
    let header = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the DPI header");
    let dir = std::path::Path::new(&crate_dir).join("include");
    std::fs::create_dir_all(&dir).expect("create include/");
    // write_to_file leaves the file untouched when the content is unchanged (no needless rebuilds).
    header.write_to_file(dir.join("cosim_dpi_bridge.h"));
}
