# Guest image (kernel, cosim_accel.ko, accel-tool, busybox initramfs) and the launcher.
# Owner: guest/launcher part. See docs/guest.md.
#   make guest        build/guest/{bzImage,initramfs.cpio.gz} (scripts/build-guest.sh)
#   make launcher     target/release/cosim-launch and cosim-dual (crate launcher/), and cosim-fake-gemm,
#                     the software device model (test-peers/src/bin/, crate cosim-test-peers)
#   make test-guest   launcher stage handling (stand-in processes) and one boot of the guest image
#                     under Debian's QEMU without an accelerator

GUEST_DIR := $(BUILD)/guest

.PHONY: guest launcher test-guest
guest: deps
	@BUILD=$(BUILD) COSIM_CACHE=$(COSIM_CACHE) CARGO=$(CARGO) $(ROOT)/scripts/build-guest.sh

launcher:
	$(CARGO) build --release -p cosim-launch -p cosim-test-peers --bins

test-guest: guest
	COSIM_BUILD=$(BUILD) $(CARGO) test --release -p cosim-launch --test stages -- --include-ignored

TEST_TIERS += test-guest
