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

# The PostgreSQL cases need CIVITAS_TEST_DATABASE_URL: taken from the environment, else a
# server answering on 127.0.0.1:5432 (database "test", user postgres); with neither, the
# target stops and says so. `make test PG=skip` runs without them, knowingly.
PG_DEFAULT_URL = postgresql+asyncpg://postgres@127.0.0.1:5432/test

test: $(VENV)/.installed-test
	@if [ "$(PG)" = skip ]; then \
	  echo "PG=skip: PostgreSQL cases skipped"; \
	  exec env -u CIVITAS_TEST_DATABASE_URL $(BIN)/pytest; \
	fi; \
	if [ -z "$$CIVITAS_TEST_DATABASE_URL" ]; then \
	  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then \
	    CIVITAS_TEST_DATABASE_URL='$(PG_DEFAULT_URL)'; export CIVITAS_TEST_DATABASE_URL; \
	  else \
	    echo "make test: no PostgreSQL on 127.0.0.1:5432; run CIVITAS_TEST_DATABASE_URL=postgresql+asyncpg://USER@HOST:PORT/DB make test, or make test PG=skip to skip its cases" >&2; \
	    exit 2; \
	  fi; \
	fi; \
	echo "PostgreSQL cases on $$CIVITAS_TEST_DATABASE_URL"; \
	exec $(BIN)/pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy

format: $(VENV)/.installed-test
	$(BIN)/ruff format
	$(BIN)/ruff check --fix

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
