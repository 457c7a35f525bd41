#!/usr/bin/env python
"""Inference benchmark: every registered method vs the frozen backbone, multi-task serving, and the
AoT bias lookup alone (a thin CLI over aotp/bench; the method is described in aotp/bench/inference.py).

    python scripts/bench_inference.py                      # minilm, CPU, 1 thread, fp32: the committed run
    python scripts/bench_inference.py --batch-sizes 32 --seq-lens 128 --tasks 1 16 --rounds 10
    python scripts/bench_inference.py --device cuda --dtype bf16 --threads 4 --batch-sizes 32 128 --seq-lens 128 512
    python scripts/bench_inference.py --report-only results/bench/minilm_cpu_fp32.json   # redraw README + plots

Writes <out-dir>/<tag>.json (records), <out-dir>/README.md (or --readme) and <tag>_*.png, and prints a table.
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


def parse_args(argv=None) -> argparse.Namespace:
    from aotp.bench.inference import DEFAULT_MULTITASK, BenchConfig

    d = BenchConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=d.model, help="minilm (offline); another name needs --hub-id or --tiny-family")
    p.add_argument("--hub-id", help="a hub checkpoint for --model (model.source=hub)")
    p.add_argument("--tiny-family", choices=["bert", "roberta", "deberta", "deberta_v2"], help="a tiny random model")
    p.add_argument("--device", default=d.device)
    p.add_argument("--threads", type=int, default=d.threads, help="torch intra-op threads (fixed; recorded)")
    p.add_argument("--dtype", default=d.dtype, choices=["fp32", "bf16", "fp16"], help="model and AoT-table dtype")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=list(d.batch_sizes))
    p.add_argument("--seq-lens", type=int, nargs="+", default=list(d.seq_lens))
    p.add_argument("--variants", nargs="+", default=list(d.variants), help="method/variant specs (aotp/bench/variants.py)")
    p.add_argument("--rounds", type=int, default=d.rounds)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--baseline-every", type=int, default=d.baseline_every)
    p.add_argument("--lookup-repeats", type=int, default=d.lookup_repeats)
    p.add_argument("--headline-rounds", type=int, default=d.headline_rounds,
                   help="rounds of a focused backbone / full_ft / aot_fc-materialized comparison at --headline (0: skip)")
    p.add_argument("--headline", type=int, nargs=2, default=list(d.headline), metavar=("BATCH", "SEQ"))
    p.add_argument("--tasks", type=int, nargs="*", default=list(d.tasks), help="tasks mixed per batch; none: skip multi-task")
    p.add_argument("--multitask-variants", nargs="+", default=list(DEFAULT_MULTITASK))
    p.add_argument("--multitask-batch-size", type=int, default=d.multitask_batch_size)
    p.add_argument("--multitask-seq-len", type=int, default=d.multitask_seq_len)
    p.add_argument("--multitask-rounds", type=int, default=None)
    p.add_argument("--no-memory", action="store_true", help="skip the activation-peak pass")
    p.add_argument("--train-rounds", type=int, default=d.train_rounds, help="training-step benchmark rounds (0: skip)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out-dir", default=d.out_dir)
    p.add_argument("--tag", default=None, help="file stem of the records (default <model>_<device>_<dtype>)")
    p.add_argument("--readme", default=None, help="report path (default <out-dir>/README.md)")
    p.add_argument("--no-report", action="store_true", help="records only: no README, no plots")
    p.add_argument("--wait-quiet", type=float, default=None, metavar="LOAD",
                   help="before starting, wait until the 1-min load average is below LOAD (checked every minute)")
    p.add_argument("--max-wait", type=float, default=2400, help="seconds to wait at most for --wait-quiet")
    p.add_argument("--report-only", metavar="JSON", help="only (re)write the report and plots of a records file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from aotp.bench import report, timing
    from aotp.bench.inference import BenchConfig, command_line, run_benchmarks, summary

    args = parse_args(argv)
    if args.report_only:
        print(f"Report: {report.write_report(args.report_only, args.readme)}")
        return 0
    model_config = {}
    if args.hub_id:
        model_config = {"name": args.model, "source": "hub", "hub_id": args.hub_id}
    elif args.tiny_family:
        model_config = {"name": args.model, "source": "tiny", "family": args.tiny_family}
    log = lambda message: print(message, flush=True)  # noqa: E731
    quiet = timing.wait_for_quiet(args.wait_quiet, args.max_wait, log) if args.wait_quiet else {}
    cfg = BenchConfig(
        model=args.model, model_config=model_config, device=args.device, threads=args.threads, dtype=args.dtype,
        batch_sizes=tuple(args.batch_sizes), seq_lens=tuple(args.seq_lens), variants=tuple(args.variants),
        rounds=args.rounds, warmup=args.warmup, headline=tuple(args.headline), headline_rounds=args.headline_rounds, baseline_every=args.baseline_every, lookup_repeats=args.lookup_repeats,
        tasks=tuple(args.tasks), multitask_variants=tuple(args.multitask_variants),
        multitask_batch_size=args.multitask_batch_size, multitask_seq_len=args.multitask_seq_len,
        multitask_rounds=args.multitask_rounds, memory=not args.no_memory, train_rounds=args.train_rounds, seed=args.seed,
        out_dir=args.out_dir, tag=args.tag, command=command_line(), quiet=quiet)
    records, path = run_benchmarks(cfg, log=log)
    print(summary(records))
    print(f"Records: {path}")
    if not args.no_report:
        print(f"Report: {report.write_report(path, args.readme)}")
    for check in report.acceptance(records):
        print(f"target: {check['target']}: {check['measured']} -> {'met' if check['passed'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
