# The two commands: `make run` (set up, migrate, serve) and `make test` (set up, lint, type-check, test).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest migrate setup clean

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
	$(BIN)/ruff check saas_app tests migrations
	$(BIN)/ruff format --check saas_app tests migrations

typecheck: $(STAMP)
	$(BIN)/mypy saas_app

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache saas_app.db saas_app.db-*
