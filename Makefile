# Two entry points a new machine needs: `make demo` and `make test`. Both build .venv on first use.
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# A real compose validator that needs no Docker engine, for self-host/ (tests only).
COMPOSE := .tools/compose/bin/docker-compose

.PHONY: demo test lint typecheck unit crash-soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(COMPOSE):
	$(PYTHON) -m venv .tools/compose
	.tools/compose/bin/python -m pip install --quiet --upgrade pip
	# docker-compose 1.29 pins PyYAML 5.4, whose sdist builds only with Cython < 3.
	.tools/compose/bin/python -m pip install --quiet "cython<3" wheel setuptools
	.tools/compose/bin/python -m pip install --quiet --no-build-isolation "pyyaml==5.4.1"
	.tools/compose/bin/python -m pip install --quiet "docker-compose==1.29.2"

demo: $(STAMP)
	$(BIN)/analytics demo --state-dir .demo-state

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check analytics cli tests bench examples
	$(BIN)/ruff format --check analytics cli tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy analytics cli

unit: $(STAMP) $(COMPOSE)
	ANALYTICS_COMPOSE=$(abspath $(COMPOSE)) $(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/run.py

crash-soak: $(STAMP)
	$(BIN)/python bench/crash_soak.py --kills 100

clean:
	rm -rf $(VENV) .tools .demo-state .pytest_cache .mypy_cache .ruff_cache
