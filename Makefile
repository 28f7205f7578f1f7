# pflow-explore: every target sets up .venv when it is missing or pyproject.toml changed.
#   make serve   the chapters as Voila dashboards on http://127.0.0.1:8866
#   make test    everything the tests need (incl. headless Chromium), then the whole suite
#   make lab     JupyterLab on notebooks/
#
# torch: pip installs $(TORCH) first. On the CI machine torch==2.13.0 resolves to a local
# CPU wheel; from PyPI on Linux it is the CUDA build, so a GPU machine gets CUDA as is.
# CPU-only laptop (avoid ~3 GB of CUDA wheels):
#   make serve TORCH_INDEX=https://download.pytorch.org/whl/cpu
# A specific CUDA build:  make serve TORCH_INDEX=https://download.pytorch.org/whl/cu128

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
PORT ?= 8866
SCALE ?=
STAMP := $(VENV)/.installed

.PHONY: setup serve lab test lint format browser clean-cache benchmarks

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@

# Debian's chromium for the browser tests (playwright cannot download browsers here).
browser:
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || { \
	  echo "installing chromium (Debian package) for the browser tests"; \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

serve: $(STAMP)
	$(BIN)/pflow-explore serve --port $(PORT) $(if $(SCALE),--scale $(SCALE))

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: $(STAMP) browser lint
	$(BIN)/python -m pytest -p no:cacheprovider --durations=15

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/notebook_timings.py
	$(BIN)/python benchmarks/explorer_latency.py

clean-cache:
	rm -rf data/cache
