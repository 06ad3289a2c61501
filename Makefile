# The two commands: `make run` (set up, migrate, serve) and `make test` (set up, lint, type-check, test).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest fuzz migrate setup clean test-tools browser-tools

# The stamp holds a checksum of the requirements, not just a date: a fresh checkout or a
# branch switch touches requirements*.txt without changing them, and must not reinstall a
# venv that is already set up; a changed pin must.
REQUIREMENTS_SUM := $(shell cat requirements.txt requirements-dev.txt | cksum)
ifneq ($(shell cat $(STAMP) 2>/dev/null),$(REQUIREMENTS_SUM))
.PHONY: $(STAMP)
endif

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	echo '$(REQUIREMENTS_SUM)' > $(STAMP)

setup: $(STAMP)

migrate: $(STAMP)
	$(BIN)/alembic upgrade head

# `make run PORT=8080` (HOST=0.0.0.0 to listen on every interface). PUBLIC_URL, the base of
# the token issuer and of the GitHub callback, follows the port unless it is given in the
# environment or on the command line (it then wins over .env's, as every variable does).
HOST ?= 127.0.0.1
PORT ?= 8000
URL_HOST = $(if $(filter 0.0.0.0 ::,$(HOST)),127.0.0.1,$(if $(findstring :,$(HOST)),[$(HOST)],$(HOST)))
PUBLIC_URL ?= http://$(URL_HOST):$(PORT)

run: $(STAMP)
	PUBLIC_URL='$(PUBLIC_URL)' $(BIN)/python -m saas_app serve --host '$(HOST)' --port '$(PORT)'

lint: $(STAMP)
	$(BIN)/ruff check saas_app tests migrations bench
	$(BIN)/ruff format --check saas_app tests migrations bench

typecheck: $(STAMP)
	$(BIN)/mypy saas_app

pytest: $(STAMP) browser-tools
	$(BIN)/pytest $(PYTEST_ARGS)

# jq runs the README walk-through (tests/test_readme_walkthrough.py); installed only where
# apt-get can run as root (CI, containers), never with a password prompt; without it that
# test skips (and fails under CI=true).
CAN_APT = $(shell command -v apt-get >/dev/null && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; } && echo yes)

test-tools:
	@if command -v jq >/dev/null; then :; \
	elif [ "$(CAN_APT)" = yes ]; then $(APT_INSTALL) jq || { $(SUDO) apt-get update && $(APT_INSTALL) jq; }; \
	else echo "jq not found (and no root for apt-get): the README walk-through test will skip"; fi

# Debian's chromium, for the Swagger UI test in a real browser (tests/test_docs_browser.py;
# never a browser download). Installed when missing and we are root or have sudo; outside CI
# a failed install only makes that test skip, under CI=true it fails the build.
browser-tools:
	@test -x /usr/bin/chromium || { \
	  [ "$(CAN_APT)" = yes ] && \
	  { $(APT_INSTALL) chromium || { $(SUDO) apt-get update && $(APT_INSTALL) chromium; }; }; \
	} || { [ "$$CI" != true ] && echo "chromium is not installed: the browser test will skip" >&2; }

test: test-tools lint typecheck pytest

# `make fuzz`: the deep schemathesis profile (many more cases per operation, longer stateful
# runs, more over HTTP); `make test` runs the bounded one. docs/security.md, "Hostile input".
fuzz: $(STAMP)
	FUZZ_PROFILE=deep $(BIN)/pytest tests/fuzz $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache saas_app.db saas_app.db-*

# `make bench`: the load benchmark (bench/run.py; docs/performance.md). It installs what it
# needs: wrk (Debian package) and the peer's own venv (fastapi-users caps SQLAlchemy < 2.1).
# Options go in BENCH_ARGS, e.g. make bench BENCH_ARGS="--quick", "--workload mixed" (the
# many-users reads-and-writes headline alone) or "--rounds 5 --scale".
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
