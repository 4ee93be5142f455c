# Two entry points, both from a fresh clone:
#   make up    installs the local stack into .venv (the lean `local` extra) and runs it
#              with a demo file
#   make test  installs the development toolchain into .venv (`dev`, which includes
#              `local`) and runs lint, types and the whole test suite
PYTHON ?= python3
VENV   := .venv
# bash, for pipefail: an install that fails fails make, though its output is filtered
# (pip's errors go to stderr, unfiltered)
SHELL  := /bin/bash
.SHELLFLAGS := -o pipefail -c
BIN    := $(VENV)/bin
LOCAL  := $(VENV)/.installed-local
DEV    := $(VENV)/.installed-dev

.PHONY: install up test lint clean

$(BIN)/python:
	@echo "make: creating the virtualenv $(VENV) with $(PYTHON) ..."
	$(PYTHON) -m venv $(VENV)

# --no-compile: byte-compiling every installed file (awscli and kubernetes alone have
# thousands) took longer than the download; Python compiles what it imports instead.
# What it does as it goes: a line per package pip collects (a fresh machine: a few
# minutes, once), not minutes of silence; filtered by the venv's Python, which passes
# each line on as it comes (mawk and sed hold a pipe's lines back until a buffer fills).
$(LOCAL): pyproject.toml | $(BIN)/python
	@echo "make: installing the local stack into $(VENV) (once; a few minutes on a fresh machine) ..."
	@PYTHONUNBUFFERED=1 $(BIN)/pip install --no-compile --progress-bar off -e '.[local]' \
	    | $(BIN)/python -uc 'import sys; [print("  collecting", line[11:], end="") \
	        for line in sys.stdin if line.startswith("Collecting ")]'
	@touch $(LOCAL)
	@echo "make: installed; starting the local stack ..."

# dev includes local: a venv made by `make test` runs `make up` without installing
$(DEV): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(DEV) $(LOCAL)

install: $(DEV)

up: $(LOCAL)
	$(BIN)/scorefleet up --demo

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .scorefleet .pytest_cache .mypy_cache .ruff_cache
