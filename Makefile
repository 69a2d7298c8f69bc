# Two entry points: `make demo` (set up, then reproduce the demo) and `make test` (set up, check the house
# rules, then test).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup demo test lint

setup: $(VENV)/.installed

# requirements.lock pins every package (torch==2.13.0: the CPU wheel here, the CUDA build on a GPU machine).
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint requirements.lock --editable ".[workflow,test,lint]"
	touch $@

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" snakemake --cores all

test: lint
	$(BIN)/python -m pytest

# The house rules: ruff (lint and format), snakefmt, and Snakemake's own linter.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check .
	PATH="$(CURDIR)/$(BIN):$$PATH" snakemake --lint
