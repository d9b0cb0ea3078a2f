# Foundation tier: the MSRV check, the protocol codec (golden bytes, malformed input, property
# tests) and the ZeroMQ transport between two real processes (ipc and tcp, both start orders,
# restarts).

.PHONY: test-msrv test-protocol bench-transport fuzz fuzz-smoke
TEST_TIERS += test-msrv test-protocol fuzz-smoke
BENCHES    += bench-transport

# The MSRV in Cargo.toml is true: inherited by every crate, no locked dependency needs a newer
# Rust, no std API newer than it in our code (clippy::incompatible_msrv, tests included).
test-msrv: deps
	CARGO=$(CARGO) $(ROOT)/scripts/check-msrv.sh

# The two-process peer tests run over the shared-memory link (the default) and over ZeroMQ only.
test-protocol: deps
	$(CARGO) test --release -p cosim-protocol -p cosim-transport -p cosim-test-peers
	COSIM_SHM=0 $(CARGO) test --release -p cosim-test-peers --test zmq_two_process

# Transport vs raw ZeroMQ (spawns cosim-zmq-peer, so it lives in test-peers), then keyed vs unkeyed tcp.
bench-transport: deps
	$(CARGO) bench -p cosim-test-peers --bench transport
	$(CARGO) bench -p cosim-transport --bench access
	$(CARGO) bench -p cosim-transport --bench shm

# Coverage-guided fuzzing of Message::decode (cargo-fuzz, libFuzzer). FUZZ_SECONDS to taste.
FUZZ_SECONDS ?= 60
fuzz: deps
	@command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	cd $(ROOT)/protocol/fuzz && mkdir -p corpus/decode && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run decode corpus/decode seeds -- -max_total_time=$(FUZZ_SECONDS)

# A short fuzzing run as part of `make test`: any crash fails the tier.
fuzz-smoke:
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=20
