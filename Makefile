# Two commands on a fresh machine: `make demo` and `make test`. Each sets up .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.qmlops-installed
# Local test/demo clusters run without Ray token auth (see RAY_NOTES); Ray never phones home.
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
export MLFLOW_ALLOW_FILE_STORE ?= true

.PHONY: demo test lint typecheck pytest setup clean-venv bench

setup: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip wheel

# torch first, from the CPU build on disk: any other spec pulls several GB of CUDA wheels.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m jobs.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check qmlops jobs serve_apps tests bench
	$(VENV)/bin/ruff format --check qmlops jobs serve_apps tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(STAMP)
	@for f in bench/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean-venv:
	rm -rf $(VENV)
