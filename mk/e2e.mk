# End-to-end: the product as a user meets it. A Linux guest in our QEMU with -device
# accelerator-pcie, its driver and tool, against the GEMM RTL in Verilator, via cosim-launch.
#   make demo       build everything, run GEMMs of several sizes on the RTL from the guest, show results
#   make test-e2e   the end-to-end test tier (launcher/tests/e2e.rs, dual.rs, two_hosts.rs)
#   make bench-two-hosts  MMIO round trip and DMA MB/s across a veth pair next to loopback
#   make dual       accelerator VM and baseline VM side by side, sharing a network
#   make bench-guest-mmio  user-space MMIO from the guest: 1, 2 and 4 devices probed at once, then
#                          4 at once with 1, 2 and 4 vCPUs and QEMU's big lock released or held
#                          during a read's wait (launcher/examples/bench_bql.rs; MMIO_ROUNDS boots each)

.PHONY: e2e-artifacts demo test-e2e dual bench-two-hosts bench-guest-mmio
LAUNCH := $(ROOT)/target/release/cosim-launch

e2e-artifacts: deps qemu sim-gemm guest launcher

DEMO_RUNS := --run "info" \
	--run "gemm --m 16 --n 16 --k 16 --seed 1 --check" \
	--run "gemm --m 17 --n 33 --k 9 --seed 2 --check" \
	--run "gemm --m 64 --n 64 --k 64 --seed 3 --check" \
	--run "gemm --m 128 --n 128 --k 128 --seed 4 --check" \
	--run "gemm --m 200 --n 72 --k 40 --seed 5 --check"

demo: e2e-artifacts
	@echo "== cosim demo: booting a Linux guest in QEMU against the GEMM RTL in Verilator =="
	COSIM_BUILD=$(BUILD) $(LAUNCH) $(DEMO_RUNS)

test-e2e: e2e-artifacts
	COSIM_BUILD=$(BUILD) $(CARGO) test --release -p cosim-launch --test e2e -- --include-ignored --test-threads 1
	COSIM_BUILD=$(BUILD) $(CARGO) test --release -p cosim-launch --test dual -- --include-ignored --test-threads 1
	COSIM_BUILD=$(BUILD) $(CARGO) test --release -p cosim-launch --test two_hosts -- --include-ignored --test-threads 1

TEST_TIERS += test-e2e

# Dual-VM comparative run (launcher/src/bin/cosim-dual.rs; docs/guest.md "Dual-VM comparative run").
# DUAL_ARGS: extra cosim-dual options, e.g. DUAL_ARGS="--sizes 64x64x64,256x256x256 --frames 50".
dual: e2e-artifacts
	COSIM_BUILD=$(BUILD) $(ROOT)/target/release/cosim-dual $(DUAL_ARGS)

# Two hosts (docs/user-guide.md, "Two hosts"): the host model in one network namespace against the
# test design's simulation in another (across a veth pair) and on loopback, in one run, as
# markdown for docs/benchmarks.md. Needs root and iproute2. Knobs: BENCH_READS, BENCH_DMA_MIB.
bench-two-hosts: deps sim-test
	$(CARGO) run --release -p cosim-host-model --example two_hosts

BENCHES += bench-two-hosts

# Guest-side MMIO (docs/benchmarks.md, "Guest MMIO"): one guest with four accelerator-pcie devices,
# accel-tool mmio-bench on 1 device, then 2 and 4 devices probed at the same time (one thread
# each): read latency percentiles, reads/s and posted writes/s per device. Knob: MMIO_READS.
MMIO_READS ?= 10000
MMIO_ROUNDS ?= 3
bench-guest-mmio: e2e-artifacts
	COSIM_BUILD=$(BUILD) $(LAUNCH) --devices 4 \
		--run "mmio-bench --devices 1 --reads $(MMIO_READS) --writes $(MMIO_READS)" \
		--run "mmio-bench --devices 2 --concurrent --reads $(MMIO_READS) --writes $(MMIO_READS)" \
		--run "mmio-bench --devices 4 --concurrent --reads $(MMIO_READS) --writes $(MMIO_READS)"
	$(CARGO) run --release -p cosim-launch --example bench_bql -- --rounds $(MMIO_ROUNDS) --reads $(MMIO_READS)

BENCHES += bench-guest-mmio

# Your own device, the whole path (issue 14, item 7): test-template-guest makes a project from the
# template in a temporary directory outside the checkout (scripts/new-project.sh), builds its
# simulation and its guest program there, runs its host-model tests (make test in the project),
# then launcher/tests/template.rs boots the guest with --iommu against that simulation:
# template-sw (added with --guest-add) does one DMA transfer through VFIO and waits for its MSI-X
# interrupt; a second boot without the IOMMU checks the program's hint. The project's cargo target
# directory is $(BUILD)/template-project, so only the first run compiles the host model.
# launcher/tests/vfio_gemm.rs: the GEMM RTL through VFIO instead of its driver (gemm-vfio example).
#   make test-template-guest   the above (3 boots)
#   make template-sw           templates/device/sw built in place (target dir $(BUILD)/template-sw)
TEMPLATE_PROJECT_TARGET := $(BUILD)/template-project
TEMPLATE_SW_TARGET      := $(BUILD)/template-sw

.PHONY: template-sw gemm-vfio test-template-guest
# The template's guest program, built as a user builds it (its own Cargo project), target dir in build/.
template-sw:
	cd $(ROOT)/templates/device/sw && CARGO_TARGET_DIR=$(TEMPLATE_SW_TARGET) RUSTFLAGS="-C target-feature=+crt-static" \
		$(CARGO) build --release --target x86_64-unknown-linux-gnu

# The GEMM through VFIO (guest/vfio/examples/gemm-vfio.rs), static like accel-tool.
gemm-vfio:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --target x86_64-unknown-linux-gnu \
		-p cosim-vfio --example gemm-vfio

test-template-guest: deps qemu guest launcher sim-gemm gemm-vfio
	@tmp=$$(mktemp -d /tmp/cosim-template-e2e.XXXXXX) && trap 'rm -rf "$$tmp"' EXIT && \
	  proj="$$tmp/my-device" && \
	  $(ROOT)/scripts/new-project.sh "$$proj" && \
	  $(MAKE) -C "$$proj" test sw CARGO="$(CARGO)" CARGO_TARGET_DIR=$(TEMPLATE_PROJECT_TARGET) && \
	  COSIM_BUILD=$(BUILD) TEMPLATE_SIM="$$proj/build/sim/sim" \
	    TEMPLATE_SW=$(TEMPLATE_PROJECT_TARGET)/x86_64-unknown-linux-gnu/release/template-sw \
	    $(CARGO) test --release -p cosim-launch --test template -- --include-ignored --test-threads 1 && \
	  echo "test-template-guest: a project from the template in $$tmp (removed): simulation and guest program built there, host-model tests and the guest's VFIO run passed"
	COSIM_BUILD=$(BUILD) GEMM_VFIO=$${CARGO_TARGET_DIR:-$(ROOT)/target}/x86_64-unknown-linux-gnu/release/examples/gemm-vfio \
		$(CARGO) test --release -p cosim-launch --test vfio_gemm -- --include-ignored

TEST_TIERS += test-template-guest
