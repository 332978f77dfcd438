PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-arm64 test-armhf demo lint bench mutate clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[all,dev]"
	touch $(STAMP)

install: $(STAMP)

# Next to the real recordings a run that skipped tests for their absence fails
# (tests/data_skips.py); without them the partial run is reported. Headless Chromium for
# the dashboard's browser test is installed when missing (as root; required then).
test: $(STAMP)
	.ci/ensure_chromium.sh
	ANYECG_REQUIRE_DATA=$$([ -d ../shared/data ] && echo 1 || echo 0) \
	ANYECG_REQUIRE_BROWSER=$$([ "$$(id -u)" = 0 ] && echo 1 || echo 0) \
	$(BIN)/python -m pytest tests -n 2 --dist loadfile

# Device side on an emulated Debian 12 arm64 root (root needed; not part of `make test`).
# ARM64_ROOT=/var/cache/anyecg-arm64 by default; see benchmarks/arm64/run.sh.
test-arm64: $(STAMP)
	PYTHON=$(abspath $(BIN))/python benchmarks/arm64/run.sh

# 32-bit Raspberry Pi OS base (Debian 12 armhf) under emulation, as far as wheels allow:
# numpy/scipy from apt, tflite-runtime, predict on .tflite exports vs the host (root needed).
test-armhf: $(STAMP)
	PYTHON=$(abspath $(BIN))/python benchmarks/arm64/armhf.sh

# Mutation testing (mutmut) of the modules that decide correctness, each against its own
# fast tests, at nice 15 in build/mutate/ (not part of `make test`; ~1-2 h on 2 cores).
# Report: benchmarks/results/mutation.{md,json}; GROUPS="parity manifest" runs only those.
mutate: $(STAMP)
	$(BIN)/python tests/mutate.py $(GROUPS)

demo: $(STAMP)
	$(BIN)/anyecg-edge demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/anyecg-edge bench --json bench_out/bench.json --report bench_out

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
