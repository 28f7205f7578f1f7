# pflow-explore: every target sets up .venv when it is missing or pyproject.toml changed.
#   make serve   the chapters as Voila dashboards on http://127.0.0.1:8866
#   make test    everything the tests need (incl. headless Chromium), then the whole suite
#   make lab     JupyterLab on notebooks/
#   make student the student release of the notebooks (no answers) in release/
#   make site    the course as a static website in site/html (no kernel needed to read it)
#   make hub     JupyterHub for a class: a server per student (deploy/jupyterhub/README.md)
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
# the versions CI tested (`make lock` refreshes them); CONSTRAINTS= installs the newest
# versions pyproject.toml's ranges allow instead
CONSTRAINTS ?= constraints.txt

.PHONY: setup serve hub student site lab test lint format browser node bundle bundle-if-npm clean-cache benchmarks lock

setup: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[dev,hub,teach,site]"
	@# rfc3987-syntax (jsonschema's optional "iri" format check, pulled in by jupyter-events)
	@# compiles 38 grammars on import: 0.9 s in every kernel, which imports it through
	@# plotly -> nbformat -> jsonschema. jsonschema works without it (no "iri" check), and
	@# no schema here uses that format (benchmarks/results/kernel_imports_before.md, _after.md).
	$(BIN)/python -m pip uninstall -q -y rfc3987-syntax
	@touch $@

# Re-resolve: a scratch venv gets the newest versions within pyproject.toml's ranges, and
# constraints.txt becomes its `pip freeze` (torch stays $(TORCH): CPU or CUDA is the
# machine's choice). Then run `make test` and commit constraints.txt with what it changed.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	.lock-venv/bin/python -m pip install -q -e ".[dev,hub,teach,site]"
	{ echo "# pip constraints: the versions \`make test\` passed with ($$(date +%Y-%m-%d), Python $$(.lock-venv/bin/python -c 'import platform; print(platform.python_version())')). Refresh: make lock"; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^torch=='; } > constraints.txt
	rm -rf .lock-venv
	@echo "constraints.txt rewritten; run make test before committing it"

# Node.js and npm: JupyterHub's proxy (configurable-http-proxy) comes from the npm registry
node:
	@command -v npm >/dev/null 2>&1 || { \
	  echo "installing nodejs and npm (Debian packages) for JupyterHub's proxy"; \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq nodejs npm >/dev/null; }

# plotly's FigureWidget bundle with a plotly.js of only the trace types the course draws
# (js/plotly-bundle/traces.json): 1.6 MB instead of 5 MB, about 0.8 s less main-thread work
# per dashboard page (benchmarks/results/plotly_bundle.md). LiveFigure serves it while it
# matches the installed plotly; rebuilt when plotly or the list changes.
LEAN_BUNDLE := build/plotly/widgetbundle-lean.js
bundle: $(LEAN_BUNDLE)

$(LEAN_BUNDLE): $(STAMP) js/plotly-bundle/build.js js/plotly-bundle/package-lock.json js/plotly-bundle/traces.json | node
	npm ci --prefix js/plotly-bundle --no-audit --no-fund --loglevel=error
	node js/plotly-bundle/build.js "$$($(BIN)/python -c 'from pflow_explore.widgets.live_figure import plotly_own_bundle as b; print(b())')" build/plotly

# serve, lab, site and hub: the lean bundle where npm is at hand, else plotly's own
bundle-if-npm: $(STAMP)
	@if command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory bundle || \
	  echo "the lean plotly bundle did not build: pages load plotly's full bundle"; \
	else echo "no npm: pages load plotly's full bundle (make bundle builds the lean one)"; fi

# Debian's chromium for the browser tests (playwright cannot download browsers here).
browser:
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || { \
	  echo "installing chromium (Debian package) for the browser tests"; \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

serve: $(STAMP) bundle-if-npm
	$(BIN)/pflow-explore serve --port $(PORT) $(if $(SCALE),--scale $(SCALE))

# The student release (nbgrader): notebooks without answers or hidden tests, in release/
student: $(STAMP)
	$(BIN)/pflow-explore student --out release

# JupyterHub for a class on this machine: a server per student (shared password, printed;
# env PFLOW_HUB_PASSWORD sets it), the dashboards as landing page; deploy/jupyterhub/README.md
HUB_PORT ?= 8000
hub: $(STAMP) node bundle-if-npm
	$(BIN)/pflow-explore hub --port $(HUB_PORT) $(if $(SCALE),--scale $(SCALE))

# JUPYTER_PATH: the Voila server extension of JupyterLab then serves the pflow template's
# static plotly bundle, which LiveFigure loads (elsewhere the kernel sends it)
# The course as a static website in site/html (every chapter executed at scale cpu from the
# shipped artifacts; no kernel needed to read it): open site/html/index.html
site: $(STAMP) bundle-if-npm
	$(BIN)/pflow-explore site --out site $(if $(SCALE),--scale $(SCALE))

lab: $(STAMP) bundle-if-npm
	$(BIN)/python -c "from pflow_explore.cli import prepare_voila_template as p; p()"
	JUPYTER_PATH=$(CURDIR)/share/jupyter $(BIN)/jupyter lab notebooks/

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: $(STAMP) browser node bundle lint
	$(BIN)/python -m pytest -p no:cacheprovider --durations=15

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/notebook_timings.py
	$(BIN)/python benchmarks/explorer_latency.py

clean-cache:
	rm -rf data/cache
