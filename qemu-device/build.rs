//! Generates the C header `cosim_qemu_device.h` with cbindgen into `<target>/cosim-qemu-device/`
//! (scripts/build-qemu.sh copies it next to the device's C file).

use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    // OUT_DIR = <target>/<profile>/build/<pkg>-<hash>/out
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let target_dir = out_dir.ancestors().nth(4).expect("OUT_DIR layout").to_path_buf();
    let header_dir = target_dir.join("cosim-qemu-device");
    std::fs::create_dir_all(&header_dir).expect("create header dir");
    println!("cargo:rerun-if-changed=src/ffi.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen failed to generate cosim_qemu_device.h")
        .write_to_file(header_dir.join("cosim_qemu_device.h"));
}
