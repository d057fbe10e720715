# One-command set-up and checks. Python 3.11; CPU torch from the local wheel index.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup setup-browser test lint check test-all bench bench-quick profile results reliability serve demo gpu-check gpu-wheels

STAMP := $(VENV)/.installed

setup: $(STAMP)   ## create or refresh .venv with every extra except TensorRT (CPU torch)

# The venv is (re)built when the dependency files change, so `make serve` and `make check` work on
# a fresh clone without a separate set-up step.
$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ".[serve,ui,dev]"
	touch $(STAMP)

setup-browser:    ## headless Chromium + chromedriver (Debian packages, as root) for the UI browser test
	apt-get update -qq && apt-get install -y -qq chromium chromium-driver

lint: $(STAMP)    ## the one lint command CI runs
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two pytest-xdist workers, a test file each at a time (its module's server or model is built once);
# TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2

test: $(STAMP)    ## the default suite (CI)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

check: lint test

test-all:         ## include slow tests
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m ""

bench:            ## the whole benchmark suite -> BENCHMARKS.md (make bench-quick: smoke test, < 5 min)
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)

bench-quick:      ## the suite on the tiny model at small sizes (numbers not for comparison)
	$(BIN)/python -m bench.run_all --quick $(BENCH_ARGS)

# The GPU host has its own torch and no package registry: gpu-check runs on the venv's Python when
# there is one, else on the host's, installing what it lacks from WHEELS (made here by gpu-wheels).
GPU_PY := $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PY))
GPU_WHEELS ?= wheels/gpu

gpu-check:        ## one prepared GPU measurement -> BENCHMARKS.md "gpu-check" (DRY_RUN=1: CPU rehearsal, < 2 min)
	$(GPU_PY) -m bench.gpu_check $(if $(DRY_RUN),--dry-run) $(if $(WHEELS),--wheels $(WHEELS))

gpu-wheels: $(STAMP) ## wheels (Python 3.12, no deps) of what gpu-check needs beyond torch, into $(GPU_WHEELS)
	$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
	  -d $(GPU_WHEELS) $$($(BIN)/python -c "from bench.gpu_check import GPU_HOST_PACKAGES as p; print(' '.join(p))")

profile:          ## bench/model_profile.py -> BENCHMARKS.md
	$(BIN)/python -m bench.model_profile

reliability:      ## bad input, load/soak and fault checks on loopback -> RELIABILITY.md
	$(BIN)/python -m reliability

results:          ## the synthetic benchmark -> RESULTS.md (resumable)
	$(BIN)/python -m bench.synthetic_benchmark

serve: $(STAMP)   ## the BentoML service on 127.0.0.1:3000 (API + demo at /ui)
	$(BIN)/bentoml serve deploy.service:SemiDAViLService --host 127.0.0.1 --port 3000 --timeout-graceful-shutdown 3

demo: $(STAMP)    ## the Gradio demo on its own, on 127.0.0.1
	$(BIN)/python -m ui.app
