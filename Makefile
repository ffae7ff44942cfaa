# Relink: `make run` and `make test` set themselves up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup browser run test soak bench lint format clean

CHROMIUM ?= /usr/bin/chromium
TEST_WORKERS ?= 3

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Relink needs Python 3.11 or newer (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,sandbox]'
	@touch $(STAMP)

## run: everything locally: demo account, sandbox provider, Prefect server + UI, served deployments, web pages (Ctrl-C stops all)
run: setup
	$(BIN)/relink run $(RUN_ARGS)

## browser: Debian's Chromium for the browser tests (installed when missing and running as root)
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium missing: browser tests skip (and fail under CI=true); apt-get install chromium"; \
	  fi; \
	fi

## test: lint (ruff, the import layers) and the whole suite on TEST_WORKERS processes (PostgreSQL and MariaDB on loopback when reachable)
test: setup browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

## soak: the reliability and security promises with many trials; writes docs/reliability.md
soak: setup browser
	RELINK_SOAK=1 $(BIN)/python -m pytest tests -m promise --reliability-report=docs/reliability.md

## bench: the benchmarks (never part of make test); writes docs/benchmarks.md
bench: setup
	$(BIN)/python -m bench $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
