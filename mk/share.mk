# Several VMs on one accelerator (issue 11): cosim-mediator between N QEMU accelerator-pcie
# devices and one GEMM simulation, with a priority scheduler; cosim-share runs it for users
# (docs/user-guide.md, "Several VMs on one accelerator"; the mediator: docs/mediator.md).
#   make share            four guests in two pools with three priorities share one GEMM simulation;
#                         prints the per-VM table and the order in which the jobs ran.
#                         SHARE_ARGS: extra cosim-share options (e.g. SHARE_ARGS=--verbose);
#                         SHARE_VMS: the VMs (cosim-share --vm specs)
#   make test-share       the mediator's tests (cosim-mediator, some against the GEMM simulation),
#                         then the end-to-end test (launcher/tests/share.rs: 4 guests, one simulation)
#   make bench-share      pass-through read vs direct, RTL busy fraction, queue wait per priority
#   make share-artifacts  what both need: QEMU, the GEMM simulation, the guest, the launchers and
#                         cosim-mediator

.PHONY: share-artifacts share test-share
SHARE := $(ROOT)/target/release/cosim-share

share-artifacts: e2e-artifacts
	$(CARGO) build --release -p cosim-mediator

# Pool A: two low-priority VMs (one allowed to ask for medium through JOB_PRIORITY) with long
# series of GEMMs; pool B: a medium one, and a high one that submits three short bursts (1, 3 and
# 5 s after its boot) into the others' queue. About 80 jobs; the job order shows the overtakes.
SHARE_HIGH := sh:sleep 1;gemm --m 32 --n 32 --k 32 --seed 4 --check --repeat 2;sh:sleep 2;gemm --m 32 --n 32 --k 32 --seed 5 --check --repeat 2;sh:sleep 2;gemm --m 32 --n 32 --k 32 --seed 6 --check --repeat 2;info
SHARE_VMS ?= \
	--vm 'name=a0,pool=A,priority=low,run=gemm --m 128 --n 128 --k 128 --seed 1 --check --repeat 24' \
	--vm 'name=a1,pool=A,priority=low,max=medium,run=gemm --m 100 --n 80 --k 128 --seed 2 --check --repeat 24' \
	--vm 'name=b0,pool=B,priority=medium,run=gemm --m 64 --n 64 --k 64 --seed 3 --check --repeat 24' \
	--vm 'name=b1,pool=B,priority=high,run=$(SHARE_HIGH)'

share: share-artifacts
	@echo "== cosim share: four guests share one GEMM simulation through cosim-mediator =="
	COSIM_BUILD=$(BUILD) $(SHARE) $(SHARE_VMS) $(SHARE_ARGS)

test-share: share-artifacts
	COSIM_BUILD=$(BUILD) $(CARGO) test --release -p cosim-mediator -- --include-ignored
	COSIM_BUILD=$(BUILD) $(CARGO) test --release -p cosim-launch --test share -- --include-ignored --test-threads 1

TEST_TIERS += test-share

# Shared-accelerator benchmark (mediator/examples/bench_share.rs): a pass-through MMIO read through
# the mediator against the direct path, the RTL's busy fraction with four VMs submitting back to
# back, and the queue wait per priority, as markdown for docs/benchmarks.md ("Shared accelerator").
# Knobs: BENCH_READS, BENCH_JOBS, BENCH_SIZE.
.PHONY: bench-share
bench-share: deps sim-gemm
	$(CARGO) build --release -p cosim-mediator
	$(CARGO) run --release -p cosim-mediator --example bench_share

BENCHES += bench-share
