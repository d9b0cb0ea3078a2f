//! A simulation given by path, as a user's crate outside this checkout uses one: `make test-hdl`
//! (`test-out-of-tree` in mk/hdl.mk) builds the test design with `scripts/cosim-build-sim` into a
//! temporary directory outside the checkout, copies the simulation and its library elsewhere,
//! deletes the build, and runs this test with `COSIM_SIM` naming the moved copy.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use cosim_host_model::{sim_from_env, HostModel, SimProcess, SIM_ENV};

/// Registers of hdl/test/cosim_test_dev.sv (BAR0).
const ID: u64 = 0x000;
const SCRATCH0: u64 = 0x008;

#[test]
#[ignore = "needs COSIM_SIM=<a cosim_test_top simulation built out of tree>: run by `make test-hdl`"]
fn a_moved_simulation_answers_and_loads_the_library_beside_it() -> Result<()> {
    ensure!(std::env::var_os(SIM_ENV).is_some(), "set {SIM_ENV} to the simulation to test");
    let path = sim_from_env("")?;
    let dir = path.parent().context("simulation path has no directory")?.canonicalize()?;
    let sim = SimProcess::start(&path)?;
    let mut host = HostModel::connect(sim.endpoint(), Duration::from_secs(10))?;
    ensure!(host.read(0, ID, 8)? == 0x7e57_0001_c051_0001, "ID register");
    host.write(0, SCRATCH0, 8, 0x0123_4567_89ab_cdef)?;
    ensure!(host.read(0, SCRATCH0, 8)? == 0x0123_4567_89ab_cdef, "scratch register did not read back");
    // The bridge library the process mapped is the copy beside the binary (RUNPATH $ORIGIN), not
    // one in a cosim checkout's target/.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", sim.pid()))?;
    let libs: Vec<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.ends_with("/libcosim_dpi_bridge.so"))
        .collect();
    ensure!(!libs.is_empty(), "libcosim_dpi_bridge.so is not mapped by the simulation");
    for l in &libs {
        ensure!(
            Path::new(l).parent() == Some(dir.as_path()),
            "the simulation loaded {l}, not the copy in {}",
            dir.display()
        );
    }
    host.goodbye()?;
    Ok(())
}
