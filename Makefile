# Two commands on a fresh machine: `make demo` and `make test`. Both set themselves up.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup test test-fast demo bench lint clean

$(STAMP): pyproject.toml
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

bench: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/bench.py

lint: setup
	$(BIN)/ruff check bundler tests tools bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) demo-work bench-work .pytest_cache .mypy_cache .ruff_cache
