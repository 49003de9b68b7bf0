# Two entry points a new machine needs: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit crash-soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/analytics demo --state-dir .demo-state

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check analytics cli tests bench examples
	$(BIN)/ruff format --check analytics cli tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy analytics cli

unit: $(STAMP)
	$(BIN)/pytest

crash-soak: $(STAMP)
	$(BIN)/python bench/crash_soak.py --kills 100

clean:
	rm -rf $(VENV) .demo-state .pytest_cache .mypy_cache .ruff_cache
