# Two commands on a fresh machine: `make demo` and `make test`. Both set themselves up.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# A second environment with paddlenlp 2.8.1 (and this package, no extras): offline mode claims
# 2.8.x, and tests/test_offline_compat.py proves it there (docs/offline.md, Versions).
COMPAT_VENV := .venv-pnlp28
COMPAT_BIN := $(COMPAT_VENV)/bin
COMPAT_STAMP := $(COMPAT_VENV)/.installed-stamp
COMPAT_PINS := paddlepaddle==3.3.1 paddlenlp==2.8.1 'huggingface_hub<0.26' 'aistudio-sdk<0.3' \
	'datasets<3' 'pyarrow<17' 'numpy<2'

.PHONY: setup setup-compat setup-nginx test test-compat test-fast demo bench bench-core \
	bench-fetch bench-offline bench-rewrite bench-scale bench-mirror bench-scan lint clean

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[paddle,test]'
	touch $(STAMP)

setup: $(STAMP)

# The fleet mirror's tests and bench start a real nginx (Debian's nginx-light) where missing.
setup-nginx:
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light; }

# One resolve for the pins and the package, so pip cannot swap a pinned version for another.
$(COMPAT_STAMP): pyproject.toml setup.py Makefile
	test -x $(COMPAT_BIN)/python || $(PY) -m venv $(COMPAT_VENV)
	$(COMPAT_BIN)/python -m pip install --quiet --disable-pip-version-check $(COMPAT_PINS) -e .
	touch $(COMPAT_STAMP)

setup-compat: $(COMPAT_STAMP)

test: setup setup-nginx
	$(BIN)/python -m pytest -m "not compat"

# Everything but the tests that import Paddle or sweep faults (seconds instead of minutes).
test-fast: setup setup-nginx
	$(BIN)/python -m pytest -m "not paddle and not compat and not slow"

# Offline mode on paddlenlp 2.8.1: pytest runs in .venv and drives .venv-pnlp28's Python.
# PADDLE_BUNDLE_COMPAT_REQUIRED=1: a missing environment or unshare fails instead of skipping.
test-compat: setup setup-compat
	PADDLE_BUNDLE_COMPAT_REQUIRED=1 $(BIN)/python -m pytest -m compat tests/test_offline_compat.py \
		tests/test_scan_allowlist.py

# nginx for the fleet scene; without it (no root for apt-get) the demo skips that scene.
demo: setup
	-@$(MAKE) --no-print-directory setup-nginx
	PATH="$(CURDIR)/$(BIN):$$PATH" bash tools/demo.sh

# Every benchmark, each against a baseline measured in the same run (docs/performance.md).
bench: bench-core bench-fetch bench-offline bench-rewrite bench-scale bench-mirror bench-scan

# pack/install against tar | zstd + sha256sum; split volumes against one file; peak RSS.
bench-core: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/bench.py

# fetch of a model with >= 1 GB of weights through a local mirror: peak RSS (docs/fetch.md).
bench-fetch: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/bench_fetch.py

# Offline mode: import cost of bundler.offline, by-name load offline vs online (docs/offline.md).
bench-offline: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/bench_offline.py

# rewrite --diff/--check over a tree of 2,565 files (copies of paddlenlp's own sources) against
# the unfiltered single-process rewrite, results compared (docs/performance.md, Rewrite).
bench-rewrite: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/bench_rewrite.py

# install and inspect against the number of models (1k..8k): time per model stays flat.
bench-scale: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/bench_scale.py

# Fleet mirror: 32 clients through nginx against reading the same files from local disk; publish
# of a 512 MiB bundle against install of it (docs/fleet.md).
bench-mirror: setup setup-nginx
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/bench_mirror.py

# The pickle scan in pack/verify against the same with the scan off; paddle.load with offline
# mode's load-time guard against without (docs/performance.md, Scan).
bench-scan: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/bench_scan.py

lint: setup
	$(BIN)/ruff check bundler tests tools bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(COMPAT_VENV) demo-work bench-work .pytest_cache .mypy_cache .ruff_cache
