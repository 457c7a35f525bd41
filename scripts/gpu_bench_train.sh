#!/usr/bin/env bash
# Training benchmark on a CUDA GPU (bf16), a few minutes: the GPU tests of the training benchmark, then minilm
# on 8,192 SST-2 examples, batch 32, aotp's loop (length grouping, 2 collation workers, pinned memory) vs the
# HF Trainer, every method vs full fine-tuning, 3 interleaved rounds.
#   scripts/gpu_bench_train.sh          # results/bench/train_minilm_cuda_bf16.json + README_train_cuda_bf16.md
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-results/bench}
DATA_ROOT=${DATA_ROOT:-../shared/data}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu_bench_train.sh: no CUDA device visible to torch')"
"$PY" -c "import accelerate" 2>/dev/null || "$PY" -m pip install --quiet 'accelerate>=0.26'
"$PY" -m pytest -q -m gpu tests/gpu/test_gpu_bench_train.py
"$PY" -m aotp.bench.train device=cuda precision=bf16 threads=4 data.root="$DATA_ROOT" \
  train_examples=8192 batch_size=32 rounds=3 method_steps=50 \
  output="$OUT/train_minilm_cuda_bf16.json" readme="$OUT/README_train_cuda_bf16.md"
