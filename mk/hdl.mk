# HDL bridge (dpi-bridge, hdl/ep, hdl/test, verilator-tb, host-model): simulation, tests, benchmarks.
#
#   make sim-test    builds $(BUILD)/sim/cosim_test_top/sim (endpoint shell + the bridge's test design)
#                    and $(BUILD)/sim/cosim_test_dual/sim (two instances, two endpoints, one simulation)
#   make lint-hdl    verilator --lint-only -Wall of the shell and the test designs
#   make test-hdl    lint, unit tests of dpi-bridge/host-model, host model against the simulations,
#                    the simulation's vfio-user server driven by a vfio-user client, and test-out-of-tree
#   make test-out-of-tree  builds the test design as a user does (scripts/cosim-build-sim, from a copy
#                    of its sources in a temp dir outside the checkout), checks RUNPATH is $ORIGIN,
#                    moves sim + library elsewhere, deletes the build and runs a host-model test on it
#   make bench-hdl   cycles/s with and without the DPI poll, MMIO round trip vs raw ZeroMQ, and
#                    the test design's DMA copies against its bus (both links, latency 0, 1 and 100; store and
#                    forward and streaming)
#   make stress-dma-latency  the read-burst test (modelled DMA read latency) STRESS_RUNS=500 times
#                    under STRESS_HOGS=2 busy loops; not part of make test

HDL_EP_SRC   := $(ROOT)/hdl/ep/cosim_dpi_pkg.sv $(ROOT)/hdl/ep/cosim_pcie_ep.sv $(ROOT)/hdl/ep/cosim_busy.sv
HDL_TEST_SRC := $(ROOT)/hdl/test/cosim_test_dev.sv $(ROOT)/hdl/test/cosim_test_top.sv
HDL_DUAL_SRC := $(HDL_TEST_SRC) $(ROOT)/hdl/test/cosim_test_dual.sv
HDL_SIM_DIR  := $(BUILD)/sim/cosim_test_top
HDL_DUAL_DIR := $(BUILD)/sim/cosim_test_dual

.PHONY: sim-test lint-hdl test-hdl test-out-of-tree bench-hdl

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

test-hdl: deps lint-hdl sim-test test-out-of-tree
	$(CARGO) test --release -p cosim-dpi-bridge -p cosim-host-model --lib
	$(CARGO) test --release -p cosim-dpi-bridge --test session
	$(CARGO) test --release -p cosim-dpi-bridge --test dma_latency
	$(CARGO) test --release -p cosim-dpi-bridge --test idle
	$(CARGO) test --release -p cosim-host-model --test wait_irq
	$(CARGO) test --release -p cosim-host-model --test vfio_user -- --include-ignored --test-threads=2
	$(CARGO) test --release -p cosim-host-model --test hdl_bridge -- --include-ignored --test-threads=2
	@echo "test-hdl: the same hdl_bridge suite over ZeroMQ only (COSIM_SHM=0; above: the shared-memory link)"
	COSIM_SHM=0 $(CARGO) test --release -p cosim-host-model --test hdl_bridge -- --include-ignored --test-threads=2

# The design's sources are copied to $$tmp/proj/rtl and named relative to it, as a user's are.
# No waves: the build is the quickest (about 20 s of Verilator and C++ on two idle cores).
test-out-of-tree: deps
	@set -e; tmp=$$(mktemp -d "$${TMPDIR:-/tmp}/cosim-oot.XXXXXX"); trap 'rm -rf "$$tmp"' EXIT; \
	case "$$tmp/" in "$(ROOT)/"*) echo "test-out-of-tree: $$tmp is inside the checkout" >&2; exit 1;; esac; \
	mkdir -p "$$tmp/proj/rtl" "$$tmp/elsewhere"; cp $(HDL_TEST_SRC) "$$tmp/proj/rtl/"; cd "$$tmp/proj"; \
	$(ROOT)/scripts/cosim-build-sim --strict --no-waves --top cosim_test_top --out build \
	    rtl/cosim_test_dev.sv rtl/cosim_test_top.sv > build.log 2>&1 || { tail -30 build.log; exit 1; }; \
	tail -1 build.log; \
	rp=$$(readelf -d build/sim | sed -n 's/.*(RUNPATH).*\[\(.*\)\]$$/\1/p'); \
	[ "$$rp" = '$$ORIGIN' ] || { echo "test-out-of-tree: RUNPATH of build/sim is '$$rp', not \$$ORIGIN" >&2; exit 1; }; \
	! readelf -d build/sim | grep -q '(RPATH)' || { echo "test-out-of-tree: build/sim has an RPATH entry" >&2; exit 1; }; \
	cp build/sim build/libcosim_dpi_bridge.so "$$tmp/elsewhere/"; rm -rf build; \
	lib=$$(env -u LD_LIBRARY_PATH ldd "$$tmp/elsewhere/sim" | sed -n 's/.*libcosim_dpi_bridge.so => \([^ ]*\) .*/\1/p'); \
	[ "$$lib" = "$$tmp/elsewhere/libcosim_dpi_bridge.so" ] || { echo "test-out-of-tree: the moved sim resolves the bridge to '$$lib'" >&2; exit 1; }; \
	cd $(ROOT) && COSIM_SIM="$$tmp/elsewhere/sim" $(CARGO) test --release -p cosim-host-model --test out_of_tree -- --include-ignored; \
	echo "test-out-of-tree: built outside the checkout, RUNPATH \$$ORIGIN, moved copy answers the host model"

bench-hdl: deps sim-test
	$(CARGO) bench -p cosim-host-model --bench hdl_bridge
	$(CARGO) bench -p cosim-host-model --bench dma_copy

# The modelled DMA read latency under load (issue 15, item 4): the read-burst test
# (narrow_fixed_and_wrap_read_bursts: ten bursts polled by MMIO reads, a simulation per run)
# STRESS_RUNS times while STRESS_HOGS busy loops load the machine. Not part of `make test`
# (which runs it 20 times, unloaded). docs/hdl-endpoint.md, "Modelled read latency".
STRESS_RUNS ?= 500
STRESS_HOGS ?= 2
.PHONY: stress-dma-latency
stress-dma-latency: deps sim-test
	$(CARGO) test --release -p cosim-host-model --test hdl_bridge --no-run
	@set -e; pids=; for i in $$(seq 1 $(STRESS_HOGS)); do (while :; do :; done) & pids="$$pids $$!"; done; \
	trap 'kill $$pids 2>/dev/null' EXIT; echo "stress-dma-latency: $(STRESS_RUNS) runs, $(STRESS_HOGS) busy loops"; \
	COSIM_READ_BURST_RUNS=$(STRESS_RUNS) $(CARGO) test --release -p cosim-host-model --test hdl_bridge -- \
	    --ignored --exact narrow_fixed_and_wrap_read_bursts

TEST_TIERS += test-hdl
BENCHES    += bench-hdl
