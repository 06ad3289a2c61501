# The two commands: `make run` (set up, migrate, serve) and `make test` (set up, lint, type-check, test).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest fuzz migrate setup clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

setup: $(STAMP)

migrate: $(STAMP)
	$(BIN)/alembic upgrade head

run: $(STAMP)
	$(BIN)/python -m saas_app serve

lint: $(STAMP)
	$(BIN)/ruff check saas_app tests migrations bench
	$(BIN)/ruff format --check saas_app tests migrations bench

typecheck: $(STAMP)
	$(BIN)/mypy saas_app

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# `make fuzz`: the deep schemathesis profile (many more cases per operation, longer stateful
# runs, more over HTTP); `make test` runs the bounded one. docs/security.md, "Hostile input".
fuzz: $(STAMP)
	FUZZ_PROFILE=deep $(BIN)/pytest tests/fuzz $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache saas_app.db saas_app.db-*

# `make bench`: the load benchmark (bench/run.py; docs/performance.md). It installs what it
# needs: wrk (Debian package) and the peer's own venv (fastapi-users caps SQLAlchemy < 2.1).
# Options go in BENCH_ARGS, e.g. make bench BENCH_ARGS="--quick" or "--rounds 5 --scale".
PEER_VENV := bench/.venv-peer
PEER_STAMP := $(PEER_VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: bench bench-tools

$(PEER_STAMP): bench/requirements-peer.txt
	test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEER_VENV)/bin/python -m pip install --quiet -r bench/requirements-peer.txt
	touch $@

APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y

bench-tools:
	@command -v wrk >/dev/null || $(APT_INSTALL) wrk || { $(SUDO) apt-get update && $(APT_INSTALL) wrk; }

bench: $(STAMP) $(PEER_STAMP) bench-tools
	$(BIN)/python bench/run.py $(BENCH_ARGS)
