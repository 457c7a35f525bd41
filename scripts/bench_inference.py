#!/usr/bin/env python
"""Inference overhead of AoT P-Tuning vs the frozen backbone, multi-task inference, and the
training-step cost of aot_fc vs full_ft (see aotp/bench/inference.py for the method).

    python scripts/bench_inference.py                     # minilm, CPU, 1 thread, batch 32 x 128
    python scripts/bench_inference.py --threads 4 --rounds 30 --device cuda

Writes a JSON list of records to results/bench/ and prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv=None) -> int:
    from aotp.bench.inference import BenchConfig, run_benchmarks, summary

    defaults = BenchConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=defaults.model, help="minilm (offline); others need --hub-id")
    parser.add_argument("--hub-id", help="a hub checkpoint for --model (model.source=hub)")
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--seq-len", type=int, default=defaults.seq_len)
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument("--lookup-repeats", type=int, default=defaults.lookup_repeats)
    parser.add_argument("--train-rounds", type=int, default=defaults.train_rounds, help="0 skips the training benchmark")
    parser.add_argument("--train-batch-size", type=int, default=None)
    parser.add_argument("--tasks", type=int, default=defaults.num_tasks, help="task packs in the multi-task variant; 0 skips it")
    parser.add_argument("--out-dir", default=defaults.out_dir)
    args = parser.parse_args(argv)
    model_config = {"name": args.model, "source": "hub", "hub_id": args.hub_id} if args.hub_id else {}
    cfg = BenchConfig(model=args.model, device=args.device, threads=args.threads, batch_size=args.batch_size,
                      seq_len=args.seq_len, rounds=args.rounds, warmup=args.warmup, lookup_repeats=args.lookup_repeats,
                      train_rounds=args.train_rounds, train_batch_size=args.train_batch_size, num_tasks=args.tasks,
                      out_dir=args.out_dir, model_config=model_config)
    records, path = run_benchmarks(cfg, log=lambda message: print(message, flush=True))
    print(summary(records))
    print(f"Records: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
