# audience-profiles: every command a developer, CI or an operator needs.
#   make run    set up, generate sample data, run the daily DAG for every sample date, show results
#   make test   set up (Python packages, and Azurite from npm) and run the whole test suite;
#               PostgreSQL 15 and Chromium come from apt (.ci/run installs them)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt pyproject.toml | sha1sum | cut -c1-12)

export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export PATH := $(BIN):$(PATH)

# The suite in one pytest process per core (pytest-xdist; 4 at most: each starts the services its
# tests ask for). A test file stays in one process, in order, so module fixtures are made once;
# files go out in the order they are collected, not xdist's default (most tests first), which left
# the long files of few tests (the backfill, the pandas reference) for last. `make test PARALLEL=`
# runs it all in one process.
PARALLEL ?= -n auto --maxprocesses=4 --dist loadfile --no-loadscope-reorder

.PHONY: install run test test-fast lint format bench bench-full ui pools env clean

install: $(STAMP)

# uv when it can be had (10-20 s), plain pip otherwise (about a minute). Bytecode is compiled at
# install time: without it every Airflow task process pays ~0.6 s.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install -q uv || true
	@if command -v uv >/dev/null 2>&1; then \
	  uv venv -q --allow-existing --python $(PYTHON) $(VENV) && \
	  uv pip install -q --compile-bytecode --python $(BIN)/python -r requirements.txt -r requirements-dev.txt && \
	  uv pip install -q --compile-bytecode --python $(BIN)/python --no-deps -e . ; \
	else \
	  $(PYTHON) -m venv $(VENV) && $(BIN)/pip install -q -r requirements.txt -r requirements-dev.txt && \
	  $(BIN)/pip install -q --no-deps -e . ; \
	fi
	@rm -f $(VENV)/.installed-* && touch $@

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --silent --no-audit --no-fund

$(AIRFLOW_HOME)/airflow.db: | $(STAMP)
	@mkdir -p $(AIRFLOW_HOME)
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (cat $(AIRFLOW_HOME)/db-migrate.log; exit 1)

run: install $(AIRFLOW_HOME)/airflow.db
	$(BIN)/audience-profiles generate
	$(BIN)/audience-profiles run

test: install node_modules/.package-lock.json
	$(BIN)/python -m pytest $(PARALLEL)

test-fast: install
	$(BIN)/python -m pytest $(PARALLEL) -m "not scheduler and not services"

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

bench: install
	$(BIN)/python bench/bench_build.py

# The issue's figures: 1M and 10M interactions, each compared with pandas row for row, daily build
# and lower bound medians of three (~35 min; ~10 GiB of RAM to generate 10M, 15 GiB for pandas
# at 10M), then the stream latency through a real scheduler (~3 min).
bench-full: install
	$(BIN)/python bench/bench_build.py --sizes 1000000 10000000 --pandas-max 10000000 --verify --repeat 3
	$(BIN)/python bench/bench_stream_latency.py

pools: install $(AIRFLOW_HOME)/airflow.db
	$(BIN)/airflow pools set audience_profiles_warehouse 1 "DuckDB allows one writer: warehouse tasks take turns"

ui: pools
	$(BIN)/airflow standalone

# The settings above, for a shell: eval "$$(make -s env)", then airflow and audience-profiles
# commands use the project's Airflow home, DAGs and plugins.
env:
	@echo 'export AIRFLOW_HOME="$(AIRFLOW_HOME)" AIRFLOW__CORE__DAGS_FOLDER="$(AIRFLOW__CORE__DAGS_FOLDER)"'
	@echo 'export AIRFLOW__CORE__PLUGINS_FOLDER="$(AIRFLOW__CORE__PLUGINS_FOLDER)" AIRFLOW__CORE__LOAD_EXAMPLES=False'
	@echo 'export PATH="$(BIN):$$PATH"'

clean:
	rm -rf data .airflow
