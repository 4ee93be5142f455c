# Two entry points, both from a fresh clone:
#   make up    installs the local stack into .venv (the lean `local` extra) and runs it
#              with a demo file
#   make test  installs the development toolchain into .venv (`dev`, which includes
#              `local`) and runs lint, types and the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOCAL  := $(VENV)/.installed-local
DEV    := $(VENV)/.installed-dev

.PHONY: install up test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# --no-compile: byte-compiling every installed file (awscli and kubernetes alone have
# thousands) took longer than the download; Python compiles what it imports instead
$(LOCAL): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --no-compile -e '.[local]'
	touch $(LOCAL)

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
