# Serve mode (issue 12): `accel-tool serve` in the guest, `cosim-launch --serve`, and the analytic
# performance models (crate perf-model/) in every reply. Docs: docs/serve-protocol.md,
# docs/guest.md ("Serve mode"), docs/benchmarks.md ("Analytic models against the RTL").
#   make serve        boot a guest with the server and keep it up until Ctrl-C; prints
#                     COSIM-SERVE {"host":"127.0.0.1","port":P,"devices":N} (SERVE_ARGS, e.g.
#                     SERVE_ARGS="--devices 2 --serve-port 7070")
#   make test-serve   the models against the GEMM simulation (perf-model/tests/against_rtl.rs,
#                     prints the table of docs/benchmarks.md) and serve mode end to end
#                     (launcher/tests/serve.rs; also through the stock QEMU in vfio-user mode)

.PHONY: serve test-serve
SERVE_ARGS ?= --devices 1

serve: e2e-artifacts
	COSIM_BUILD=$(BUILD) $(ROOT)/target/release/cosim-launch --serve $(SERVE_ARGS)

test-serve: e2e-artifacts qemu-stock
	COSIM_BUILD=$(BUILD) $(CARGO) test --release -p cosim-perf-model --test against_rtl -- --include-ignored --nocapture
	COSIM_BUILD=$(BUILD) $(CARGO) test --release -p cosim-launch --test serve -- --include-ignored --test-threads 1

TEST_TIERS += test-serve
