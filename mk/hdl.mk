# HDL bridge (dpi-bridge, hdl/ep, hdl/test, verilator-tb, host-model): simulation, tests, benchmarks.
#
#   make sim-test    builds $(BUILD)/sim/cosim_test_top/sim (endpoint shell + the bridge's test design)
#                    and $(BUILD)/sim/cosim_test_dual/sim (two instances, two endpoints, one simulation)
#   make lint-hdl    verilator --lint-only -Wall of the shell and the test designs
#   make test-hdl    lint, unit tests of dpi-bridge/host-model, host model against the simulations
#   make bench-hdl   cycles/s with and without the DPI poll, MMIO round trip vs raw ZeroMQ

HDL_EP_SRC   := $(ROOT)/hdl/ep/cosim_dpi_pkg.sv $(ROOT)/hdl/ep/cosim_pcie_ep.sv
HDL_TEST_SRC := $(ROOT)/hdl/test/cosim_test_dev.sv $(ROOT)/hdl/test/cosim_test_top.sv
HDL_DUAL_SRC := $(HDL_TEST_SRC) $(ROOT)/hdl/test/cosim_test_dual.sv
HDL_SIM_DIR  := $(BUILD)/sim/cosim_test_top
HDL_DUAL_DIR := $(BUILD)/sim/cosim_test_dual

.PHONY: sim-test lint-hdl test-hdl bench-hdl

sim-test: $(HDL_SIM_DIR)/sim $(HDL_DUAL_DIR)/sim

$(HDL_SIM_DIR)/sim: $(HDL_EP_SRC) $(HDL_TEST_SRC) $(wildcard $(ROOT)/verilator-tb/*) \
                    $(wildcard $(ROOT)/dpi-bridge/src/*.rs $(ROOT)/dpi-bridge/src/*/*.rs $(ROOT)/protocol/src/*.rs $(ROOT)/transport/src/*.rs) $(ROOT)/dpi-bridge/build.rs
	$(MAKE) -C $(ROOT)/verilator-tb STRICT=1 TOP=cosim_test_top SOURCES="$(HDL_TEST_SRC)" OUT=$(HDL_SIM_DIR)

# Built after the first (they share the Rust library; the machine has two cores).
$(HDL_DUAL_DIR)/sim: $(HDL_SIM_DIR)/sim $(HDL_DUAL_SRC)
	$(MAKE) -C $(ROOT)/verilator-tb STRICT=1 TOP=cosim_test_dual SOURCES="$(HDL_DUAL_SRC)" OUT=$(HDL_DUAL_DIR)

lint-hdl:
	verilator --lint-only -Wall --top-module cosim_pcie_ep $(HDL_EP_SRC)
	verilator --lint-only -Wall --top-module cosim_test_top $(HDL_EP_SRC) $(HDL_TEST_SRC)
	verilator --lint-only -Wall --top-module cosim_test_dual $(HDL_EP_SRC) $(HDL_DUAL_SRC)
	@echo "lint-hdl: verilator --lint-only -Wall clean (cosim_pcie_ep, cosim_test_top, cosim_test_dual)"

test-hdl: deps lint-hdl sim-test
	$(CARGO) test --release -p cosim-dpi-bridge -p cosim-host-model --lib
	$(CARGO) test --release -p cosim-dpi-bridge --test session
	$(CARGO) test --release -p cosim-host-model --test hdl_bridge -- --include-ignored --test-threads=2

bench-hdl: deps sim-test
	$(CARGO) bench -p cosim-host-model --bench hdl_bridge

TEST_TIERS += test-hdl
BENCHES    += bench-hdl
