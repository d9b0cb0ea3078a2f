# QEMU side (issue 5): patched qemu-system-x86_64 with the accelerator-pcie device, qtest tests,
# and the MMIO round-trip benchmark. Owner: QEMU device part. Docs: docs/qemu-device.md.
#
#   make qemu         build (or relink) $(BUILD)/qemu/qemu-system-x86_64 (cached in $(COSIM_CACHE)/qemu)
#   make qemu-stock   the same QEMU source without cosim's device: $(BUILD)/qemu-stock/qemu-system-x86_64
#                     (the vfio-user mode's QEMU; cached separately)
#   make test-qemu    unit tests of the device logic + qtest tests against a scripted fake HDL peer
#   make bench-qemu   MMIO read round trip through QEMU (qtest and QEMU's own statistics) vs the raw
#                     ping-pong, over ZeroMQ and the shared-memory link

QEMU_BIN := $(BUILD)/qemu/qemu-system-x86_64
# Firmware directories for running the self-built QEMU (seabios, qemu-system-data, ipxe-qemu).
QEMU_FIRMWARE := /usr/share/seabios /usr/share/qemu /usr/lib/ipxe/qemu
export COSIM_QEMU := $(QEMU_BIN)
QEMU_STOCK_BIN := $(BUILD)/qemu-stock/qemu-system-x86_64
# vfio-user mode's QEMU: yours if COSIM_QEMU_STOCK is set (any QEMU 10.1+), else the one built here.
COSIM_QEMU_STOCK ?= $(QEMU_STOCK_BIN)
export COSIM_QEMU_STOCK

.PHONY: qemu qemu-stock test-qemu bench-qemu
TEST_TIERS += test-qemu
BENCHES    += bench-qemu

# Always runs the script: it is incremental (cargo + ninja), a no-op rebuild takes seconds.
qemu: deps
	$(ROOT)/scripts/build-qemu.sh --out $(BUILD)/qemu

qemu-stock: deps
	$(ROOT)/scripts/build-qemu.sh --stock --out $(BUILD)/qemu-stock

# The qtest suite runs twice: over the shared-memory link (the default) and over ZeroMQ only.
test-qemu: qemu
	$(CARGO) test --release -p cosim-qemu-device -- --include-ignored --test-threads=2
	COSIM_SHM=0 $(CARGO) test --release -p cosim-qemu-device --test qtest -- --include-ignored --test-threads=2

bench-qemu: qemu
	$(CARGO) bench -p cosim-qemu-device --bench qemu_mmio
