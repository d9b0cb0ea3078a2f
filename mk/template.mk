# The template device (templates/device) and the 32-bit AXI-Lite adapter it uses (hdl/ep/cosim_axil32.sv).
#
#   make sim-template   builds $(BUILD)/sim/cosim_axil32_top/sim (shell + adapter + a register slave
#                       with random back-pressure)
#   make lint-template  verilator --lint-only -Wall of the adapter, its test top and the template
#   make test-template  lint, the adapter's testbench (hdl/test/cosim_axil32_tb.sv: bursts, W before
#                       AW, held BREADY/RREADY), its host-model test (host-model/tests/axil32.rs).
#                       A project made from the template outside the checkout, built and tested
#                       there, host-model tests and guest included: make test-template-guest (mk/e2e.mk)
#   make new-project DIR=/path   a new project from the template (scripts/new-project.sh)

# verilator-tb adds every file of hdl/ep (the shell and the adapter) to a simulation's sources.
AXIL32_SRC      := $(ROOT)/hdl/ep/cosim_axil32.sv
AXIL32_TEST_SRC := $(ROOT)/hdl/test/cosim_axil32_regs.sv $(ROOT)/hdl/test/cosim_axil32_top.sv
AXIL32_SIM_DIR  := $(BUILD)/sim/cosim_axil32_top
AXIL32_TB_DIR   := $(BUILD)/sim/cosim_axil32_tb
TEMPLATE_DIR    := $(ROOT)/templates/device

.PHONY: sim-template lint-template test-template new-project

sim-template: $(AXIL32_SIM_DIR)/sim

$(AXIL32_SIM_DIR)/sim: $(HDL_EP_SRC) $(AXIL32_SRC) $(AXIL32_TEST_SRC) $(wildcard $(ROOT)/verilator-tb/*) \
                       $(wildcard $(ROOT)/dpi-bridge/src/*.rs $(ROOT)/dpi-bridge/src/*/*.rs $(ROOT)/protocol/src/*.rs $(ROOT)/transport/src/*.rs)
	$(MAKE) -C $(ROOT)/verilator-tb STRICT=1 WAVES=0 TOP=cosim_axil32_top SOURCES="$(AXIL32_TEST_SRC)" OUT=$(AXIL32_SIM_DIR)

# What the shell never sends (bursts, W before AW), in a plain Verilator testbench (-Wall, fatal).
$(AXIL32_TB_DIR)/Vcosim_axil32_tb: $(AXIL32_SRC) $(ROOT)/hdl/test/cosim_axil32_regs.sv $(ROOT)/hdl/test/cosim_axil32_tb.sv
	verilator --binary --timing -Wall --top-module cosim_axil32_tb --Mdir $(AXIL32_TB_DIR) $^

lint-template:
	verilator --lint-only -Wall --top-module cosim_axil32 $(AXIL32_SRC)
	verilator --lint-only -Wall --top-module cosim_axil32_top $(HDL_EP_SRC) $(AXIL32_SRC) $(AXIL32_TEST_SRC)
	$(MAKE) --no-print-directory -C $(TEMPLATE_DIR) lint COSIM=$(ROOT)
	@echo "lint-template: verilator --lint-only -Wall clean (cosim_axil32, cosim_axil32_top, template_top)"

test-template: deps lint-template sim-template $(AXIL32_TB_DIR)/Vcosim_axil32_tb
	$(AXIL32_TB_DIR)/Vcosim_axil32_tb
	$(CARGO) test --release -p cosim-host-model --test axil32 -- --include-ignored

new-project:
	@test -n "$(DIR)" || { echo "usage: make new-project DIR=/path/to/new/project" >&2; exit 2; }
	$(ROOT)/scripts/new-project.sh "$(DIR)"

TEST_TIERS += test-template
