#!/usr/bin/env bash
# The GPU check (README "The GPU check"): on a bare CUDA machine with its own Python 3.12 + CUDA torch, no package
# registry and no hub, given the git working tree and the bundle of `make gpu-bundle` (.gpu-bundle/), in under
# 8 minutes on one H100:
#   install  the bundle's wheels with pip --no-index --no-deps --target beside the machine's torch (never replaced;
#            its version is recorded), after `sha256sum -c`; env: what is imported from where, requirements met
#   standin  a full-size RoBERTa-large stand-in (config.json dimensions, random weights; python -m aotp.standin)
#   1 pytest_gpu    pytest -m gpu tests/gpu
#   2 methods       each of the 8 methods (configs/method), model=roberta_large, bf16, 40 steps of 32 x 128 tokens
#   3 full_ft_fp16  full fine-tuning in fp16 with the loss scaler, 40 steps
#   4 packed_alone / packed_packed  4 AoT runs (2 seeds x 2 lrs) alone, then packed: training-time ratio
#   5 bench         the inference benchmark at 32 x 128, bf16: AoT materialised / on the fly vs the backbone,
#                   4-task mixed batch vs single task, LoRA merged, Houlsby
#   6 table         RoBERTa-large's full fp32 AoT table (4.9 GB) materialised on the GPU: time and memory
# A failed step is recorded and the next one runs; the exit status is 1 if any step or any check failed.
# Writes to OUT: gpu_check.tar.gz (records/: summary.json, params, env, steps, every step's log, every run's
# result.json + metrics.jsonl + run.log, the benchmark's records, the table's record, pytest's junit XML),
# summary.json (the same summary) and gpu_check.log (this console output): 3 files.
#
#   scripts/gpu_check.sh OUT                           # on the GPU machine (python3 = the machine's python)
#   GPU_CHECK_DEVICE=cpu PY=.venv/bin/python scripts/gpu_check.sh OUT   # CPU rehearsal, reduced sizes
# Env: GPU_CHECK_DEVICE (cuda | cpu), PY (default python3), GPU_BUNDLE (default .gpu-bundle), GPU_CHECK_WORK (the
# scratch folder; default a new one under TMPDIR), GPU_CHECK_BUDGET_S (whole check, default 460 on cuda: each step
# is cut to what is left), GPU_CHECK_STEPS / GPU_CHECK_BATCH / GPU_CHECK_LEN (training shape).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
[ $# -eq 1 ] || { echo "usage: scripts/gpu_check.sh OUT" >&2; exit 2; }
mkdir -p "$1" && OUT=$(cd "$1" && pwd)
DEVICE=${GPU_CHECK_DEVICE:-cuda}
PY=${PY:-python3}
BUNDLE=$(cd "${GPU_BUNDLE:-$ROOT/.gpu-bundle}" 2>/dev/null && pwd) || BUNDLE=${GPU_BUNDLE:-$ROOT/.gpu-bundle}
WORK=${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/aotp-gpu-check.XXXXXX")}
mkdir -p "$WORK" && WORK=$(cd "$WORK" && pwd)
REC=$WORK/records
SITE=$WORK/site
mkdir -p "$REC/logs"
LOG=$OUT/gpu_check.log
: >"$LOG"
say() { echo "$*" | tee -a "$LOG"; }

case "$DEVICE" in
  cuda) SIZE=full; STEPS=${GPU_CHECK_STEPS:-40}; BATCH=${GPU_CHECK_BATCH:-32}; LEN=${GPU_CHECK_LEN:-128}
        EVAL=256; EVAL_BATCH=128; BENCH_ROUNDS=20; BENCH_WARMUP=3; BENCH_THREADS=4; BUDGET=${GPU_CHECK_BUDGET_S:-460}
        THREADS=(); CAP_SCALE=1 ;;
  cpu)  SIZE=small; STEPS=${GPU_CHECK_STEPS:-3}; BATCH=${GPU_CHECK_BATCH:-4}; LEN=${GPU_CHECK_LEN:-32}
        EVAL=16; EVAL_BATCH=16; BENCH_ROUNDS=1; BENCH_WARMUP=0; BENCH_THREADS=1; BUDGET=${GPU_CHECK_BUDGET_S:-2400}
        THREADS=(trainer.threads=1); CAP_SCALE=4; export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} ;;
  *) echo "GPU_CHECK_DEVICE=$DEVICE: valid choices are cuda, cpu" >&2; exit 2 ;;
esac
DEADLINE=$((SECONDS + BUDGET))
FAILED=()

# The bundle beside the machine's packages: PYTHONPATH puts the working tree (aotp, tests) and then the bundle's
# --target folder before site-packages, so its transformers 4.57.6 shadows the image's 5.x; torch is the image's.
export PYTHONPATH="$ROOT:$SITE" PYTHONUNBUFFERED=1 PYTHONNOUSERSITE=1
export HF_HOME=$WORK/standin HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled
export PY BUNDLE SITE

now_ms() { echo $(($(date +%s%N) / 1000000)); }
# step NAME LIMIT_S COMMAND...: run it with its output in records/logs/NAME.log, within LIMIT_S (x CAP_SCALE on the
# CPU) and what is left of the budget; record its exit status and seconds in records/steps.jsonl; never stop.
step() {
  local name=$1 limit=$(($2 * CAP_SCALE)); shift 2
  local left=$((DEADLINE - SECONDS - 20)) rc start took
  ((limit > left)) && limit=$left
  ((limit < 0)) && limit=0
  say "---- $name (limit ${limit}s): $*"
  start=$(now_ms)
  if ((limit < 5)); then
    echo "not run: the check's time budget (${BUDGET}s) is spent" >"$REC/logs/$name.log"; rc=124
  else
    timeout -k 10 "$limit" "$@" >"$REC/logs/$name.log" 2>&1; rc=$?
  fi
  took=$(($(now_ms) - start)); took=$((took / 1000)).$(printf %03d $((took % 1000)))
  printf '{"step": "%s", "rc": %d, "seconds": %s, "limit_s": %d, "timed_out": %s, "log": "logs/%s.log"}\n' \
    "$name" "$rc" "$took" "$limit" "$([ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && echo true || echo false)" "$name" \
    >>"$REC/steps.jsonl"
  if [ "$rc" -eq 0 ]; then
    say "ok   $name (${took}s)"
  else
    FAILED+=("$name")
    say "FAIL $name: exit $rc after ${took}s; the end of records/logs/$name.log:"
    tail -n 25 "$REC/logs/$name.log" | sed 's/^/    /' | tee -a "$LOG"
  fi
  return 0
}

cat >"$REC/params.json" <<EOF
{"device": "$DEVICE", "standin_size": "$SIZE", "steps": $STEPS, "batch_size": $BATCH, "max_length": $LEN,
 "eval_samples": $EVAL, "bench_rounds": $BENCH_ROUNDS, "budget_s": $BUDGET, "python": "$PY", "bundle": "$BUNDLE",
 "work": "$WORK", "started": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "host": "$(hostname)"}
EOF
say "aotp GPU check: device=$DEVICE, stand-in $SIZE, $STEPS steps of $BATCH x $LEN; work $WORK; out $OUT"
if command -v nvidia-smi >/dev/null; then
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nvidia-smi; } >"$REC/nvidia-smi.txt" 2>&1
  head -n 2 "$REC/nvidia-smi.txt" | tee -a "$LOG"
else
  say "nvidia-smi: not on PATH" | tee "$REC/nvidia-smi.txt"
fi

install_bundle() {
  (cd "$BUNDLE" && sha256sum -c --quiet SHA256SUMS) || return 1
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
    --target "$SITE" "$BUNDLE"/wheels/*.whl
}
export -f install_bundle
step install 90 bash -c install_bundle
step env 60 "$PY" scripts/gpu_check.py env "$REC/env.json" "$SITE" "$BUNDLE"
grep -E "^(python|  )" "$REC/logs/env.log" | tee -a "$LOG"
step standin 120 "$PY" -m aotp.standin models output="$HF_HOME" only=[roberta_large] size=$SIZE

# 1. the GPU tests (skipped, not failed, without CUDA)
step pytest_gpu 150 "$PY" -m pytest -q -m gpu tests/gpu --junitxml="$REC/pytest_gpu.xml"

# 2. every method on the stand-in, bf16. Every batch is BATCH x LEN tokens: the bundle's SST-2 examples are all
# longer than LEN (the records' truncation counts say so). The recipes' micro-batching and warmup are overridden.
RUN=(model=roberta_large task=glue/sst2 "data.root=$BUNDLE/data" "trainer.device=$DEVICE" "trainer.max_steps=$STEPS"
     "trainer.batch_size=$BATCH" trainer.gradient_accumulation_steps=1 trainer.warmup_steps=null
     "trainer.eval_batch_size=$EVAL_BATCH" "data.max_length=$LEN" "data.max_train_samples=$((STEPS * BATCH))"
     "data.max_eval_samples=$EVAL" trainer.progress=false trainer.keep_weights=false logger=jsonl
     "paths.cache=$WORK/cache" "${THREADS[@]}")
METHODS=$(cd configs/method && ls *.yaml | sed 's/\.yaml$//' | paste -sd, -)
step methods 240 "$PY" -m aotp.run -m "${RUN[@]}" "method=$METHODS" trainer.precision=bf16 \
  "paths.results=$WORK/runs/methods" "hydra.sweep.dir=$WORK/multirun/methods"

# 3. full fine-tuning in fp16 with the loss scaler
step full_ft_fp16 90 "$PY" -m aotp.run "${RUN[@]}" method=full_ft trainer.precision=fp16 \
  "paths.results=$WORK/runs/full_ft_fp16"

# 4. 4 AoT runs alone (one sweep process), then the same 4 packed on one backbone
step packed_alone 120 "$PY" -m aotp.run -m "${RUN[@]}" method=aot_fc trainer.precision=bf16 seed=1,2 \
  method.lr=1e-3,3e-3 "paths.results=$WORK/runs/alone" "hydra.sweep.dir=$WORK/multirun/alone"
step packed_packed 90 "$PY" -m aotp.trainer.packed "${RUN[@]}" method=aot_fc trainer.precision=bf16 \
  'pack.seeds=[1,2]' 'pack.lrs=[1e-3,3e-3]' "paths.results=$WORK/runs/packed"

# 5. the inference benchmark on the stand-in (random tokens; CUDA events on a GPU)
step bench 150 "$PY" -m aotp.bench model=roberta_large hub_id=FacebookAI/roberta-large "device=$DEVICE" dtype=bf16 \
  "threads=$BENCH_THREADS" "batch_sizes=[$BATCH]" "seq_lens=[$LEN]" \
  'variants=[aot_fc/materialized,aot_fc/on_the_fly,lora/merged,adapter_houlsby/adapters]' \
  "rounds=$BENCH_ROUNDS" "warmup=$BENCH_WARMUP" headline_rounds=0 'tasks=[1,4]' \
  'multitask_variants=[aot_fc/materialized]' "multitask_batch_size=$BATCH" "multitask_seq_len=$LEN" \
  "output=$WORK/bench" tag=bench report=false

# 6. the full fp32 AoT table on the device
step table 60 "$PY" scripts/gpu_check.py table "$REC/table.json" "$DEVICE" roberta_large

# the records: each run's result.json / metrics.jsonl / run.log (not its weights), the benchmark's records
for group in methods full_ft_fp16 alone packed; do
  for run in "$WORK/runs/$group"/*/; do
    [ -d "$run" ] || continue
    mkdir -p "$REC/runs/$group/$(basename "$run")"
    cp "$run"/result.json "$run"/metrics.jsonl "$run"/run.log "$REC/runs/$group/$(basename "$run")/" 2>/dev/null
  done
done
mkdir -p "$REC/bench" && cp "$WORK"/bench/*.json "$REC/bench/" 2>/dev/null
"$PY" scripts/gpu_check.py summary "$WORK" "$REC/summary.json" 2>&1 | tee -a "$LOG"
summary_rc=${PIPESTATUS[0]}
cp "$REC/summary.json" "$OUT/summary.json" 2>/dev/null || summary_rc=1
tar -czf "$OUT/gpu_check.tar.gz" -C "$WORK" records || summary_rc=1
say "records: $OUT/gpu_check.tar.gz ($(du -h "$OUT/gpu_check.tar.gz" | cut -f1)), $OUT/summary.json, $LOG"
if [ ${#FAILED[@]} -gt 0 ] || [ "$summary_rc" -ne 0 ]; then
  say "GPU check FAILED: steps ${FAILED[*]:-none}; summary exit $summary_rc (${SECONDS}s)"
  exit 1
fi
say "GPU check passed (${SECONDS}s)"
