# cosim: the two commands are `make demo` and `make test` (see README.md).
# Each part of the project adds its targets in mk/<part>.mk; this file only ties them together.

SHELL := /bin/bash
.DEFAULT_GOAL := help

ROOT        := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
# Long builds (QEMU, guest kernel) are cached here, outside the work tree, keyed by their inputs.
COSIM_CACHE ?= $(HOME)/.cache/cosim
BUILD       := $(ROOT)/build
CARGO       ?= cargo
export COSIM_CACHE

.PHONY: help deps build test test-unit demo clean
help:
	@echo "cosim — boot a Linux guest in QEMU against your accelerator's RTL in Verilator"
	@echo
	@echo "  make demo    install what is missing, build everything, run GEMMs on the RTL from a guest"
	@echo "  make test    install what is missing, run every test tier (unit, integration, end-to-end)"
	@echo
	@echo "  build:       make deps | build | qemu | qemu-stock | sim-gemm | sim-test | guest | launcher | gen-gemm-abi | clean"
	@echo "  new device:  make new-project DIR=/path (your own project from templates/device, outside this tree)"
	@echo "  test tiers:  make test-unit | test-msrv | test-protocol | fuzz-smoke | test-hdl (test-out-of-tree) | test-template | test-gemm | abi-gemm"
	@echo "               | test-qemu | test-guest | test-e2e | test-vfio-user | test-template-guest | test-share | test-serve | test-ml (test-ml-pure)"
	@echo "               (make test runs them all)"
	@echo "  runs:        make demo | launch-vfio-user (stock QEMU through vfio-user) | dual | share (several VMs, one accelerator) | serve | ml-demo (PyTorch on the RTL) | fuzz"
	@echo "               | sim (build and start the GEMM example's simulation; prints the endpoint for QEMU)"
	@echo "  your design: scripts/cosim-build-sim --help (build its simulation into your directory; docs/user-guide.md)"
	@echo "  benchmarks:  make bench (all) | bench-transport | bench-hdl | bench-gemm | bench-qemu | bench-two-hosts"
	@echo "               | bench-share | bench-guest-mmio | bench-vfio-user"

deps:
	@$(ROOT)/scripts/install-deps.sh

build: deps
	$(CARGO) build --release --workspace

test-unit: deps
	$(CARGO) test --release --workspace --lib --bins

# Parts in dependency order (their test tiers run in this order).
PARTS := foundation hdl template gemm qemu guest e2e vfio-user share serve ml
-include $(foreach p,$(PARTS),$(ROOT)/mk/$(p).mk)

clean:
	rm -rf $(BUILD)
	$(CARGO) clean

# Test tiers: each mk/<part>.mk appends its tier target to TEST_TIERS (in dependency order).
# Tests that need built artefacts (QEMU, simulations, the guest) are #[ignore = "needs make X"],
# so a plain `cargo test --workspace` skips them visibly; every tier that runs them passes
# `--include-ignored`, so `make test` never reports a skipped test as passed.
test: deps test-unit $(TEST_TIERS)
	@echo "make test: all tiers passed: test-unit $(TEST_TIERS)"

# Benchmarks: each part appends its bench target to BENCHES; results go to docs/benchmarks.md.
.PHONY: bench
bench: deps $(BENCHES)
