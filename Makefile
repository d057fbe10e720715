# One-command set-up and checks. Python 3.11; CPU torch from the local wheel index.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint check test-all bench profile

setup:            ## create .venv with every extra except TensorRT (CPU torch)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ".[serve,ui,dev]"

lint:             ## the one lint command CI runs
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test:             ## the default suite (CI)
	$(BIN)/python -m pytest -q

check: lint test

test-all:         ## include slow tests
	$(BIN)/python -m pytest -q -m ""

profile:          ## bench/model_profile.py -> BENCHMARKS.md
	$(BIN)/python bench/model_profile.py
