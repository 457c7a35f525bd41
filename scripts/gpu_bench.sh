#!/usr/bin/env bash
# Inference benchmark on a CUDA GPU, a few minutes: the GPU tests, then minilm in bf16 and fp32 with
# larger batches and sequences (CUDA events, synchronised; records and a report per dtype).
#   scripts/gpu_bench.sh                 # results/bench/minilm_cuda_{bf16,fp32}.json + README_cuda_*.md + plots
#   OUT=/tmp/bench scripts/gpu_bench.sh  # elsewhere
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-results/bench}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu_bench.sh: no CUDA device visible to torch')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -m pytest -q -m gpu tests/gpu
for dtype in bf16 fp32; do
  "$PY" -m aotp.bench device=cuda dtype="$dtype" threads=4 \
    batch_sizes=[32,128] seq_lens=[128,512] rounds=20 warmup=3 \
    headline=[32,128] headline_rounds=50 \
    tasks=[1,4,16] multitask_batch_size=128 multitask_seq_len=128 \
    output="$OUT" tag="minilm_cuda_$dtype" readme="$OUT/README_cuda_$dtype.md"
done
