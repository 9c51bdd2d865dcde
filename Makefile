# Civitas: `make run` starts a node; `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PIP     = $(BIN)/python -m pip --disable-pip-version-check

.PHONY: run test lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The node alone: no torch, no GPU libraries.
$(VENV)/.installed-run: pyproject.toml setup.py | $(BIN)/python
	$(PIP) install -q -e .
	touch $@

# Everything the tests need. torch goes first, pinned to the CPU build on this machine,
# so that the compute extra does not pull a multi-GB CUDA build.
$(VENV)/.installed-test: pyproject.toml setup.py | $(BIN)/python
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[compute,test]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/civitas init
	$(BIN)/civitas serve

test: $(VENV)/.installed-test
	$(BIN)/pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy

format: $(VENV)/.installed-test
	$(BIN)/ruff format
	$(BIN)/ruff check --fix

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
