//! How a program starts a simulation built by `verilator-tb`: one rule, used by the host model,
//! `cosim-launch` and `cosim-share`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The bridge library a simulation built by `verilator-tb` loads from its own directory.
pub const BRIDGE_LIB: &str = "libcosim_dpi_bridge.so";

/// A simulation with the bridge library beside it (RUNPATH `$ORIGIN`) must load that copy, the
/// one it was linked against. `cargo test` and `cargo run` put their target directories into
/// `LD_LIBRARY_PATH`, which wins over RUNPATH and may hold another build of the library: drop
/// the entries that contain one (the others stay). A binary without the library beside it is
/// left alone.
pub fn keep_bridge_beside(cmd: &mut Command, binary: &Path) {
    if !binary.with_file_name(BRIDGE_LIB).is_file() {
        return;
    }
    let Some(v) = std::env::var_os("LD_LIBRARY_PATH") else { return };
    if let Some(kept) = without_bridge(&v) {
        match kept {
            Some(p) => cmd.env("LD_LIBRARY_PATH", p),
            None => cmd.env_remove("LD_LIBRARY_PATH"),
        };
    }
}

/// `LD_LIBRARY_PATH` without its directories that hold [`BRIDGE_LIB`]: None if nothing changes,
/// Some(None) if nothing is left.
fn without_bridge(v: &std::ffi::OsStr) -> Option<Option<std::ffi::OsString>> {
    let dirs: Vec<PathBuf> = std::env::split_paths(v).collect();
    let kept: Vec<&PathBuf> = dirs.iter().filter(|d| !d.join(BRIDGE_LIB).is_file()).collect();
    if kept.len() == dirs.len() {
        return None;
    }
    if kept.is_empty() {
        return Some(None);
    }
    Some(std::env::join_paths(kept).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_directories_with_a_bridge_library_go() {
        let base = std::env::temp_dir().join(format!("cosim-sim-process-{}", std::process::id()));
        let (with, other) = (base.join("with"), base.join("other"));
        std::fs::create_dir_all(&with).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(with.join(BRIDGE_LIB), b"").unwrap();
        let v = std::env::join_paths([&with, &other]).unwrap();
        assert_eq!(without_bridge(&v), Some(Some(other.clone().into_os_string())));
        assert_eq!(without_bridge(with.as_os_str()), Some(None));
        assert_eq!(without_bridge(other.as_os_str()), None);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
