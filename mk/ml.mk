# ML: the host Python package (python/, imported as `cosim`; docs/ml.md) that runs PyTorch's matrix
# products on the GEMM RTL through `accel-tool serve` in a guest booted by `cosim-launch --serve`.
# Debian's /usr/bin/python3 with python3-torch (CPU), -numpy, -sklearn, -pytest (scripts/install-deps.sh).
#   make test-ml       pytest, both tiers (a tier of make test): the pure tests (codec golden bytes,
#                      quantisation, integer reference, client and launcher handling against test
#                      doubles) and the guest tests (one guest boot: GEMM 4x8x16, Linear 32x128x256,
#                      the digits MLP on the RTL, bit-exact against the int8 CPU reference)
#   make test-ml-pure  only the pure tests (no artefacts, no guest)
#   make ml-demo       the digits MLP: accuracy float vs RTL, per-layer table of RTL cycles and the
#                      analytic models' errors (python -m cosim.demo)
# Knobs: ML_LAUNCH_ARGS (extra cosim-launch options, e.g. --sim-arg=+cosim_dma_latency=0),
#        ML_DEMO_ARGS (extra cosim.demo options, e.g. --batch 360), PYTEST_ARGS, ML_PYTHON.

.PHONY: test-ml test-ml-pure ml-demo
ML_PYTHON ?= /usr/bin/python3
ML_ENV := PYTHONPATH=$(ROOT)/python PYTHONDONTWRITEBYTECODE=1 COSIM_BUILD=$(BUILD) COSIM_LAUNCH=$(LAUNCH)

test-ml-pure: deps
	cd $(ROOT)/python && $(ML_ENV) $(ML_PYTHON) -m pytest -q $(PYTEST_ARGS)

test-ml: e2e-artifacts
	cd $(ROOT)/python && $(ML_ENV) COSIM_ML_LAUNCH_ARGS="$(ML_LAUNCH_ARGS)" $(ML_PYTHON) -m pytest -q --guest $(PYTEST_ARGS)

ml-demo: e2e-artifacts
	cd $(ROOT)/python && $(ML_ENV) $(ML_PYTHON) -m cosim.demo $(addprefix --launcher-arg=,$(ML_LAUNCH_ARGS)) $(ML_DEMO_ARGS)

TEST_TIERS += test-ml
