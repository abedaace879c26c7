# Quick start: `make lenet` trains LeNet, `make test` runs every test.
# `make setup` installs the system packages (OpenCL loader, PoCL, clinfo,
# Fashion-MNIST) once; every other target depends on it and it is idempotent.

SHELL := /bin/bash
comma := ,
CARGO ?= cargo
SETUP_PACKAGES := ocl-icd-opencl-dev pocl-opencl-icd clinfo dataset-fashion-mnist oclgrind

.PHONY: setup test check-aarch64 test-aarch64 test-oclgrind lenet bench report peers fmt clippy

# Installs the Debian packages $(1) that are missing (apt-get, sudo only
# when not root); idempotent. $(2) says what they are for, where apt-get is missing.
define apt_install
	@missing=""; \
	for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "setup: system packages already installed"; exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "setup: apt-get not found; install these packages by hand:$$missing" >&2; \
	  echo "setup: ($(2))" >&2; \
	  exit 1; \
	fi; \
	if [ "$$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	echo "setup: installing$$missing"; \
	$$SUDO apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing
endef

setup:
	$(call apt_install,$(SETUP_PACKAGES),an OpenCL ICD loader$(comma) an OpenCL driver such as PoCL$(comma) clinfo$(comma) and Fashion-MNIST; or pass --data DIR to lenet)

# Every test on PoCL, the harness's quick run, and the OpenCL unit tests
# under Oclgrind (a second OpenCL implementation, with memory, API and race
# checks): portability is part of the suite.
test: setup
	$(CARGO) test --workspace
	$(CARGO) run --profile test -p harness -- --quick --out target/harness-quick
	CARGO="$(CARGO)" kernels-opencl/scripts/oclgrind.sh
	@$(MAKE) --no-print-directory check-aarch64

# The CPU crates type-checked and linted for aarch64 (no cross linker, no
# emulation; about a minute): x86-only code left outside its cfg breaks the
# aarch64 build, which nothing else in `make test` compiles (it happened
# once, fixed in ce8d215). Skipped with a note where rustup or its target is
# unavailable; `make test-aarch64` runs the tests themselves.
check-aarch64:
	@if ! command -v rustup >/dev/null 2>&1 || ! rustup target add $(AARCH64) >/dev/null 2>&1; then \
	  echo "check-aarch64: skipped (needs rustup and its $(AARCH64) target)"; \
	  exit 0; \
	fi; \
	$(CARGO) clippy --target $(AARCH64) -p kernels-core -p kernels-naive -p kernels-im2col --all-targets -- -D warnings

# The CPU crates' tests built for aarch64 and run under qemu-user: the
# portable paths and matrixmultiply's NEON kernels, checked for correctness
# (not speed) on the next platform users bring. Not part of `make test`
# (about 3 minutes of compile and 2 of emulation on 2 cores).
AARCH64_PACKAGES := qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross
AARCH64 := aarch64-unknown-linux-gnu
test-aarch64:
	$(call apt_install,$(AARCH64_PACKAGES),qemu-user and an aarch64 cross linker with its libc)
	rustup target add $(AARCH64)
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu" \
	$(CARGO) test --target $(AARCH64) -p kernels-core -p kernels-naive -p kernels-im2col

# The kernels-opencl unit tests under Oclgrind (Debian package oclgrind,
# installed by setup): memory, API and data-race checks; fails on any
# Oclgrind report; `make test` runs it too. About 75 s on 2 cores; OCLGRIND_FULL=1 adds the ops suite
# (5-10 min).
test-oclgrind: setup
	CARGO="$(CARGO)" kernels-opencl/scripts/oclgrind.sh

# Criterion benches (harness/benches/ops.rs), 117 of them: about 6-8 minutes.
# Filter with BENCH='conv-fwd/im2col' (criterion's regex over op/backend/shape).
bench: setup
	$(CARGO) bench -p harness --bench ops -- $(BENCH)

# Regenerates reports/ (results.json, SCHEMA.md, README.md, SVG charts):
# every backend, every suite shape, LeNet throughput, and the same-run
# peers: candle-core in process (cargo feature `candle`, compiled here only),
# and PyTorch when target/peers-venv exists (`make peers`) or KERNELS_PYTHON
# names a Python that imports torch; without it the report says the PyTorch
# peer was skipped. Each shape is measured in ROUNDS back-to-back rounds
# (ours and the peers alternating; each row keeps its best round).
# REPORT_OUT and REPORT_ARGS redirect and extend it, e.g. the AVX2-capped run:
#   make report REPORT_OUT=reports/avx2 REPORT_ARGS="--isa avx2"
PEERS_VENV := target/peers-venv
ROUNDS ?= 2
REPORT_OUT ?= reports
REPORT_ARGS ?=
report: setup
	@if [ -z "$$KERNELS_PYTHON" ] && [ -x $(PEERS_VENV)/bin/python ]; then export KERNELS_PYTHON=$(PEERS_VENV)/bin/python; fi; \
	$(CARGO) run --release -p harness --features candle -- --out $(REPORT_OUT) --lenet --rounds $(ROUNDS) $(REPORT_ARGS)

# The same-run peers' Python: a venv under target/ with torch (and numpy)
# from PyPI. Idempotent: does nothing once torch imports. PyPI's Linux wheel
# of torch pulls the CUDA libraries too (measured: about 3 GB downloaded,
# several minutes); the peer runs on the CPU only.
PEERS_PYTHON ?= python3
peers:
	@if [ -x $(PEERS_VENV)/bin/python ] && \
	  have=$$($(PEERS_VENV)/bin/python -c 'import torch, numpy; print("torch", torch.__version__)' 2>/dev/null); then \
	  echo "peers: $$have already in $(PEERS_VENV)"; \
	  exit 0; \
	fi; \
	start=$$(date +%s); \
	$(PEERS_PYTHON) -m venv $(PEERS_VENV) && \
	$(PEERS_VENV)/bin/pip install --quiet --progress-bar off torch numpy && \
	echo "peers: torch installed in $(PEERS_VENV) in $$(( $$(date +%s) - start )) s ($$(du -sh $(PEERS_VENV) | cut -f1) on disk)"

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Trains LeNet on OpenCL (PoCL on this machine: 5 epochs, test accuracy about
# 0.87, under two minutes); LENET_FLAGS sets the run's
# length, LENET_OUT where the checkpoint, metrics and figures go.
LENET_OUT ?= target/lenet
LENET_FLAGS ?= --epochs 5

lenet: setup
	@mkdir -p $(LENET_OUT)
	$(CARGO) run --release -p lenet -- --backend opencl $(LENET_FLAGS) \
	  --save $(LENET_OUT)/lenet.safetensors --metrics $(LENET_OUT)/metrics.json \
	  --plot $(LENET_OUT)/curves.svg --filters $(LENET_OUT)/filters.svg
	@echo "lenet: checkpoint, metrics and figures are in $(LENET_OUT)/"
