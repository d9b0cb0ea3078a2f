# vfio-user mode (issue 13): an unpatched QEMU (10.1 or later; `make qemu-stock` builds the same
# QEMU source as cosim's without its device) drives the GEMM RTL through vfio-user-pci; each
# simulation is a vfio-user server (cosim-launch --mode vfio-user; docs/user-guide.md, "vfio-user
# mode: any QEMU 10.1+").
#   make launch-vfio-user  the demo's GEMMs in vfio-user mode (cosim-launch --mode vfio-user)
#   make test-vfio-user    the stock QEMU under qtest against the test design (host-model/tests/
#                          vfio_user_qemu.rs), then the end-to-end GEMM, driver, MMIO, DMA and MSI-X
#                          checks of test-e2e through it (launcher/tests/vfio_user.rs; 3 guest boots)
# The launcher finds the stock QEMU through $(COSIM_QEMU_STOCK) (mk/qemu.mk).

.PHONY: vfio-user-artifacts launch-vfio-user test-vfio-user bench-vfio-user

vfio-user-artifacts: deps qemu-stock sim-gemm guest launcher

launch-vfio-user: vfio-user-artifacts
	@echo "== cosim demo in vfio-user mode: an unpatched QEMU drives the GEMM RTL through vfio-user-pci =="
	COSIM_BUILD=$(BUILD) $(LAUNCH) --mode vfio-user $(DEMO_RUNS)

test-vfio-user: vfio-user-artifacts sim-test
	$(CARGO) test --release -p cosim-host-model --test vfio_user_qemu -- --include-ignored
	COSIM_BUILD=$(BUILD) $(CARGO) test --release -p cosim-launch --test vfio_user -- --include-ignored --test-threads 1

TEST_TIERS += test-vfio-user

# Patched against vfio-user mode in one run (docs/benchmarks.md, "vfio-user mode"): alternating
# boots of each, guest MMIO reads (mmio-bench, 1 device), a 256^3 GEMM's device time and DMA
# throughput, with the modelled DMA read latency off. Knobs: BENCH_MODES_ROUNDS, MMIO_READS.
BENCH_MODES_ROUNDS ?= 2
bench-vfio-user: vfio-user-artifacts e2e-artifacts
	$(CARGO) run --release -p cosim-launch --example bench_modes -- --rounds $(BENCH_MODES_ROUNDS) --reads $(MMIO_READS)

BENCHES += bench-vfio-user
