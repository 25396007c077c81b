# ragswap: the two commands a newcomer needs are `make demo` and `make test`. Both set everything up.
SHELL := /bin/bash
RAGSWAP_HOME ?= $(HOME)/.cache/ragswap
export RAGSWAP_HOME
VENV ?= $(RAGSWAP_HOME)/venv
PY := $(VENV)/bin/python
# Offline everywhere: models come from the store, never from a hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAGAS_DO_NOT_TRACK := true
export VLLM_NO_USAGE_STATS := 1
export DO_NOT_TRACK := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup models demo test test-services test-fast lint typecheck check bench lock clean

setup:  ## virtualenv (cached in $(RAGSWAP_HOME)) + project install
	@bash scripts/bootstrap.sh

models: setup  ## convert/copy the offline models into the model store
	@$(VENV)/bin/ragswap models prepare

demo: models  ## the whole flow on the embedded default
	@$(VENV)/bin/ragswap demo

lint: setup
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

typecheck: setup
	@$(VENV)/bin/mypy

check: lint typecheck  ## quality gates CI runs before the tests

test-services:  ## system packages the tests need (Debian's chromium for the browser tests)
	@bash scripts/test_services.sh

test: models test-services  ## the whole test suite (real models, real vLLM engine, PostgreSQL, Chromium)
	@$(PY) -m pytest -ra $(PYTEST_ARGS)

test-fast: models  ## everything that does not start a vLLM engine
	@$(PY) -m pytest -ra -m "not engine" $(PYTEST_ARGS)

bench-%: models  ## bench/<name>.py -> bench/results/<name>.json
	@$(PY) bench/$*.py $(ARGS)

lock:  ## refresh requirements/cpu.lock from the current venv
	@{ head -3 requirements/cpu.lock; $(VENV)/bin/pip freeze --exclude-editable | sort -f; } > requirements/cpu.lock.new
	@mv requirements/cpu.lock.new requirements/cpu.lock

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
