# Two commands on a fresh machine: `make demo` and `make test`. Both set themselves up.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup test test-fast demo bench bench-core bench-fetch bench-offline lint clean

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[paddle,test]'
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(BIN)/python -m pytest

# Everything but the tests that import Paddle (seconds instead of minutes).
test-fast: setup
	$(BIN)/python -m pytest -m "not paddle"

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bash tools/demo.sh

# Every benchmark, each against a baseline measured in the same run (docs/performance.md).
bench: bench-core bench-fetch bench-offline

# pack/install against tar | zstd + sha256sum; split volumes against one file; peak RSS.
bench-core: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/bench.py

# fetch of a model with >= 1 GB of weights through a local mirror: peak RSS (docs/fetch.md).
bench-fetch: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/bench_fetch.py

# Offline mode: import cost of bundler.offline, by-name load offline vs online (docs/offline.md).
bench-offline: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/bench_offline.py

lint: setup
	$(BIN)/ruff check bundler tests tools bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) demo-work bench-work .pytest_cache .mypy_cache .ruff_cache
