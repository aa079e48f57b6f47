# Imagineer's single entry point. `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: help setup run test test-fast lint bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## Create .venv and install requirements and front-end packages
	scripts/setup.sh

run: ## Set up, then run Imagineer on 127.0.0.1:8000 (SQLite, embedded Redis if none)
	scripts/setup.sh
	DEBUG=$${DEBUG:-1} $(PY) manage.py serve

test: ## Set up (test packages too), then run the whole test suite
	scripts/setup.sh --test
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: ## Run the tests without the slow ones (no setup)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: ## ruff
	$(PY) -m ruff check .

bench: ## Run every benchmark and write bench/results.md
	scripts/setup.sh --test
	$(PY) bench/run.py

clean: ## Remove the local data dir (database, media, models)
	rm -rf var
