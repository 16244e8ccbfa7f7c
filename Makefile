# visit-share: `make run` and `make test` are all a newcomer needs; `make help` lists the rest.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## Create .venv and install the pinned environment (run/test do this)

run: $(STAMP) ## Run the main job on the embedded stack (Tansu broker, SQLite, ./var)
	$(BIN)/visitshare run

test: $(STAMP) ## Run the test suite (real broker and databases)
	$(BIN)/python -m pytest

lint: $(STAMP) ## Ruff: lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

up: $(STAMP) ## Start the embedded stack in the background: broker, landing service, Airflow
	$(BIN)/visitshare up

down: $(STAMP) ## Stop what `up` started (only our own processes)
	$(BIN)/visitshare down

clean: ## Stop the broker, remove ./var and the virtualenv
	-@test -x $(BIN)/visitshare && $(BIN)/visitshare down
	rm -rf var $(VENV) .pytest_cache .ruff_cache

lock: ## Re-resolve dependencies and rewrite constraints.txt
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	.lockenv/bin/python -m pip freeze --exclude-editable | grep -v '^#' > constraints.txt
	rm -rf .lockenv

.PHONY: help install run test lint up down clean lock
