# Foundation tier: protocol codec (golden bytes, malformed input, property tests) and the
# ZeroMQ transport between two real processes (ipc and tcp, both start orders, restarts).

.PHONY: test-protocol bench-transport fuzz
TEST_TIERS += test-protocol
BENCHES    += bench-transport

test-protocol: deps
	$(CARGO) test --release -p cosim-protocol -p cosim-transport

bench-transport: deps
	$(CARGO) bench -p cosim-transport

# Coverage-guided fuzzing of Message::decode (cargo-fuzz, libFuzzer). FUZZ_SECONDS to taste.
FUZZ_SECONDS ?= 60
fuzz: deps
	@command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	cd $(ROOT)/protocol/fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run decode -- -max_total_time=$(FUZZ_SECONDS)
