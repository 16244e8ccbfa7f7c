# visit-share: `make run` and `make test` are all a newcomer needs; `make help` lists the rest.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
# Debian packages the tests use (installed when missing, if we run as root): libfaketime;
# Chromium and a Japanese font for the pages (dashboard, Data Docs) tested in a real browser.
DEBS := faketime chromium fonts-ipaexfont-gothic

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## Create .venv and install the pinned environment (run/test do this)

debs: ## Install the Debian packages the tests need when missing (as root; else say which)
	@missing=$$(for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		echo "installing $$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; }; \
	else echo "not root: install $$missing yourself to run every test"; fi

run: $(STAMP) ## Run the main job on the embedded stack (Tansu broker, SQLite, ./var)
	$(BIN)/visitshare run

test: $(STAMP) debs ## Run the tests (real broker, databases, Airflow), then the unit tests at other dates
	$(BIN)/python -m pytest --durations=25
	$(MAKE) --no-print-directory test-dates

test-dates: $(STAMP) debs ## The unit tests with the clock a year ahead and a year back (libfaketime), side by side
	@if ! command -v faketime >/dev/null; then \
		if [ "$${CI:-}" = true ]; then echo "faketime is missing (Debian package faketime)"; exit 1; fi; \
		echo "skipping the date tests: faketime is missing (Debian package faketime)"; exit 0; fi; \
	dir=$$(mktemp -d); \
	for shift in +365d -365d; do \
		( faketime -f "$$shift" $(BIN)/python -m pytest -q -p no:cacheprovider tests/unit \
			> $$dir/$$shift.log 2>&1; echo $$? > $$dir/$$shift.rc ) & \
	done; wait; rc=0; \
	for shift in +365d -365d; do \
		echo "unit tests with the clock at $$shift: $$(tail -n 1 $$dir/$$shift.log)"; \
		if [ "$$(cat $$dir/$$shift.rc)" != 0 ]; then cat $$dir/$$shift.log; rc=1; fi; \
	done; rm -rf $$dir; exit $$rc

lint: $(STAMP) ## Ruff (lint and format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

up: $(STAMP) ## Start the embedded stack in the background: broker, landing service, Airflow
	$(BIN)/visitshare up

down: $(STAMP) ## Stop what `up` started (only our own processes)
	$(BIN)/visitshare down

up-cluster: $(STAMP) ## Start the cluster profile: SeaweedFS, Celery workers, Airflow on PostgreSQL/Redis
	VISITSHARE_PROFILE=cluster $(BIN)/visitshare up

run-cluster: $(STAMP) ## Run the main job on the cluster profile (PostgreSQL, Redis, SeaweedFS, Celery)
	VISITSHARE_PROFILE=cluster $(BIN)/visitshare run

down-cluster: $(STAMP) ## Stop what the cluster profile started (only our own processes)
	VISITSHARE_PROFILE=cluster $(BIN)/visitshare down

clean: ## Stop the broker, remove ./var and the virtualenv
	-@test -x $(BIN)/visitshare && $(BIN)/visitshare down
	rm -rf var $(VENV) .pytest_cache .ruff_cache .mypy_cache

lock: ## Re-resolve dependencies and rewrite constraints.txt
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	.lockenv/bin/python -m pip freeze --exclude-editable | grep -v '^#' > constraints.txt
	rm -rf .lockenv

.PHONY: help install debs run test test-dates lint up down up-cluster run-cluster down-cluster clean lock
