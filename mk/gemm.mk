# GEMM example accelerator (hdl/gemm_accel): simulation, tests, benchmarks.
# Owner: GEMM accelerator part. Register map: docs/register-map.md.
#
#   make sim-gemm     builds $(BUILD)/sim/gemm_top/sim (endpoint shell + gemm_accel, shared verilator-tb)
#   make sim          builds it and starts it in the foreground; it prints the endpoint to give QEMU
#                     (`cosim-sim: ready endpoint=...`; also for `cosim-launch --connect E`); it ends on
#                     Ctrl-C or when QEMU quits (GOODBYE). SIM_ENDPOINT=E picks the
#                     endpoint (default: a private ipc one), SIM_ARGS passes options (e.g. --stats)
#   make test-gemm    register map and ioctl ABI against gemm-abi, lint (-Wall), C++ unit testbench of
#                     gemm_accel, host-model tests against the sim
#   make bench-gemm   GEMM cycle and wall-time benchmarks (table for docs/benchmarks.md)
#   make gen-gemm-abi rewrites the files generated from gemm-abi/src/lib.rs (the one definition of
#                     the register map and the ioctl ABI): guest/driver/cosim_accel_regs.h and the
#                     tables of docs/register-map.md

GEMM_DIR      := $(ROOT)/hdl/gemm_accel
# Leaf modules first, gemm_top last.
GEMM_CORE_SRC := $(addprefix $(GEMM_DIR)/,gemm_mac.sv gemm_mac_array.sv gemm_dma_rd.sv gemm_rd_mux.sv gemm_dma_wr.sv \
                   gemm_engine.sv gemm_regs.sv gemm_uart.sv gemm_nic_echo.sv gemm_accel.sv)
GEMM_TOP_SRC  := $(GEMM_DIR)/gemm_top.sv
# The endpoint shell (hdl/ep): package first, then the shell's modules.
GEMM_EP_SRC   := $(ROOT)/hdl/ep/cosim_dpi_pkg.sv $(filter-out %/cosim_dpi_pkg.sv,$(sort $(wildcard $(ROOT)/hdl/ep/*.sv)))
GEMM_SIM_DIR  := $(BUILD)/sim/gemm_top
GEMM_TB_DIR   := $(BUILD)/tb_gemm_accel
GEMM_CARGO_TEST := $(CARGO) test --release -p cosim-host-model
# C headers of the register map (generated) and the ioctl ABI; the testbench includes both.
GEMM_C_HEADERS  := $(ROOT)/guest/driver/cosim_accel_regs.h $(ROOT)/guest/driver/cosim_accel_ioctl.h

.PHONY: sim sim-gemm lint-gemm tb-gemm test-gemm bench-gemm abi-gemm gen-gemm-abi

sim-gemm: $(GEMM_SIM_DIR)/sim

# verilator-tb adds the endpoint shell's sources itself.
$(GEMM_SIM_DIR)/sim: $(GEMM_EP_SRC) $(GEMM_CORE_SRC) $(GEMM_TOP_SRC) $(wildcard $(ROOT)/verilator-tb/*) \
                     $(wildcard $(ROOT)/dpi-bridge/src/*.rs $(ROOT)/dpi-bridge/src/*/*.rs $(ROOT)/protocol/src/*.rs $(ROOT)/transport/src/*.rs) $(ROOT)/dpi-bridge/build.rs
	$(MAKE) -C $(ROOT)/verilator-tb STRICT=1 TOP=gemm_top SOURCES="$(GEMM_CORE_SRC) $(GEMM_TOP_SRC)" OUT=$(GEMM_SIM_DIR)

SIM_ENDPOINT ?=
SIM_ARGS     ?=
sim: sim-gemm
	@case "$(SIM_ENDPOINT)" in ipc://*) mkdir -p -m 700 "$$(dirname "$(patsubst ipc://%,%,$(SIM_ENDPOINT))")";; esac
	@echo "make sim: starting $(GEMM_SIM_DIR)/sim (the GEMM example); connect QEMU with"
	@echo "  -device accelerator-pcie,endpoint=<the endpoint on the ready line below>, or boot the guest against it with"
	@echo "  target/release/cosim-launch --connect <that endpoint> --run info   (it ends on Ctrl-C or when QEMU quits)"
	$(GEMM_SIM_DIR)/sim $(if $(SIM_ENDPOINT),--endpoint $(SIM_ENDPOINT)) $(SIM_ARGS)

# Lint: the accelerator alone (-Wall, no waivers), and gemm_top with the shell, where only
# warnings in hdl/gemm_accel count (the shell is linted by its own part).
lint-gemm:
	verilator --lint-only -Wall --top-module gemm_accel $(GEMM_CORE_SRC)
	@out=$$(verilator --lint-only -Wall -Wno-fatal --top-module gemm_top $(GEMM_EP_SRC) $(GEMM_CORE_SRC) \
	    $(GEMM_TOP_SRC) 2>&1); if echo "$$out" | grep -E '^%(Warning|Error)' | grep -q 'hdl/gemm_accel/'; then \
	    echo "$$out"; echo "lint-gemm: warnings in hdl/gemm_accel"; exit 1; fi
	@echo "lint-gemm: verilator --lint-only -Wall clean (gemm_accel, gemm_top)"

# Unit testbench: gemm_accel alone with a C++ AXI memory model (random latencies, out-of-order
# read IDs, back-pressure, error responses). GEMM_TB_SEED picks the seed.
GEMM_TB_SEED ?= 1
$(GEMM_TB_DIR)/tb_gemm_accel: $(GEMM_CORE_SRC) $(GEMM_DIR)/tb/tb_gemm_accel.cpp $(GEMM_C_HEADERS)
	@mkdir -p $(GEMM_TB_DIR)
	verilator --cc --exe --build -O2 -j 2 --top-module gemm_accel -Mdir $(GEMM_TB_DIR) \
	    -CFLAGS -I$(ROOT)/guest/driver \
	    $(GEMM_CORE_SRC) $(GEMM_DIR)/tb/tb_gemm_accel.cpp -o tb_gemm_accel >$(GEMM_TB_DIR).log 2>&1 \
	    || { tail -40 $(GEMM_TB_DIR).log; exit 1; }

tb-gemm: $(GEMM_TB_DIR)/tb_gemm_accel
	set -o pipefail; $(GEMM_TB_DIR)/tb_gemm_accel $(GEMM_TB_SEED) 20 | tail -3
	set -o pipefail; $(GEMM_TB_DIR)/tb_gemm_accel $(GEMM_TB_SEED) 400 | tail -3

# The register map and the ioctl ABI against their one definition (gemm-abi): generated files
# current, RTL localparams and decoders, C headers compiled with gcc. Seconds; no simulation.
abi-gemm: deps
	$(CARGO) test --release -p cosim-gemm-abi

gen-gemm-abi:
	GEMM_ABI_BLESS=1 $(CARGO) test --release -p cosim-gemm-abi --test generated

test-gemm: deps abi-gemm lint-gemm tb-gemm sim-gemm
	$(GEMM_CARGO_TEST) --test gemm -- --include-ignored --test-threads=1 --nocapture

bench-gemm: deps sim-gemm
	$(GEMM_CARGO_TEST) --test gemm_bench -- --ignored --nocapture --test-threads=1

TEST_TIERS += test-gemm
BENCHES    += bench-gemm
