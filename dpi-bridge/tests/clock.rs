//! The design clock an endpoint reports in CONFIG (docs/protocol.md): the bridge's default equals
//! the shell's `CLOCK_HZ` default, and the shell's setting reaches the configuration.

use cosim_dpi_bridge::{EpBuilder, DEFAULT_CLOCK_HZ};

#[test]
fn the_shell_and_the_bridge_default_to_the_same_clock() {
    let sv = include_str!("../../hdl/ep/cosim_pcie_ep.sv");
    let defaults: Vec<u64> = sv
        .lines()
        .filter_map(|l| l.trim().strip_prefix("parameter longint unsigned CLOCK_HZ ="))
        .map(|v| {
            v.trim().trim_end_matches(',').replace('_', "").parse().expect("CLOCK_HZ's default is a decimal number")
        })
        .collect();
    assert_eq!(defaults, [DEFAULT_CLOCK_HZ], "one CLOCK_HZ parameter in the shell, default {DEFAULT_CLOCK_HZ}");
    assert_eq!(DEFAULT_CLOCK_HZ, 100_000_000, "the documented default, 100 MHz");
}

#[test]
fn the_clock_set_by_the_shell_is_what_config_carries() {
    let mut b = EpBuilder::new("t", "");
    assert_eq!(b.device().clock_hz, DEFAULT_CLOCK_HZ);
    b.clock_hz(250_000_000);
    assert_eq!(b.device().clock_hz, 250_000_000);
}
