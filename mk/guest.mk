# Guest image (kernel, cosim_accel.ko, accel-tool, busybox initramfs) and the launcher.
# Owner: guest/launcher part. See docs/guest.md.

GUEST_DIR := $(BUILD)/guest

.PHONY: guest launcher test-guest
guest: deps
	@BUILD=$(BUILD) COSIM_CACHE=$(COSIM_CACHE) CARGO=$(CARGO) $(ROOT)/scripts/build-guest.sh

launcher:
	$(CARGO) build --release -p cosim-launch

# Unit tests of the tool and the launcher are in test-unit (cargo test --workspace).
