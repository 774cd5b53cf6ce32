# The two commands a newcomer needs: `make up` (run the whole stack here) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        ?= .venv
ENGINE_VENV ?= .venv-engine
PY          := $(VENV)/bin/python
HOST        ?= 127.0.0.1
PORT        ?= 8000
export DEBUG ?= 1

.PHONY: help install install-dev engine up serve migrate test test-fast lint format typecheck check-migrations clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(VENV)/.installed-%: pyproject.toml
	@test -x $(PY) || $$(scripts/find-python.sh 3.12) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $$($(PY) scripts/deps.py $(if $(filter dev,$*),dev,))
	@rm -f $(VENV)/.installed-$* && touch $@

install: $(VENV)/.installed-base ## Create the control plane's Python 3.12 environment

install-dev: $(VENV)/.installed-dev ## The same, with test and lint tools

migrate: install
	$(PY) manage.py migrate --noinput

serve: migrate ## Serve the control plane on http://$(HOST):$(PORT)
	$(PY) manage.py ensure_admin
	$(VENV)/bin/granian --interface asgi --host $(HOST) --port $(PORT) controlplane.asgi:application

up: serve ## Install, migrate, create an admin user and serve

test: install-dev ## Run the test suite
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install-dev ## ruff (lint and format check), mypy, makemigrations --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	$(PY) manage.py makemigrations --check --dry-run

format: install-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean: ## Remove the environments and local state
	rm -rf $(VENV) $(ENGINE_VENV) var

# --- Gateway benchmark --------------------------------------------------------------------
.PHONY: bench-gateway
bench-gateway: install-dev ## Gateway vs direct vLLM throughput (starts a tiny-model worker)
	$(PY) bench/gateway.py
