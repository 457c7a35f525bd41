"""``aotp-bench`` (``python -m aotp.bench``): inference benchmark of every registered method vs the frozen
backbone, multi-task serving, and the AoT bias lookup alone (the method is described in aotp/bench/inference.py).

    aotp-bench                                                   # minilm, CPU, 1 thread, fp32: the committed run
    aotp-bench batch_sizes=[32] seq_lens=[128] tasks=[1,16] rounds=10
    aotp-bench device=cuda dtype=bf16 threads=4 batch_sizes=[32,128] seq_lens=[128,512]
    aotp-bench report_only=results/bench/minilm_cpu_fp32.json     # redraw README + plots

Writes <output>/<tag>.json (records), <output>/README.md (or readme=) and <tag>_*.png, and prints a table.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional, Sequence

from aotp.cli import KeyValueParser, Option, guarded

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parser() -> KeyValueParser:
    from aotp.bench.inference import DEFAULT_MULTITASK, BenchConfig

    d = BenchConfig()
    return KeyValueParser("aotp-bench", __doc__.split("\n\n")[0], [
        Option("model", "minilm (offline); another name needs hub_id= or tiny_family=", d.model),
        Option("hub_id", "a hub checkpoint for model= (model.source=hub)", nullable=True),
        Option("tiny_family", "a tiny random model", choices=("bert", "roberta", "deberta", "deberta_v2"), nullable=True),
        Option("device", "", d.device),
        Option("threads", "torch intra-op threads (fixed; recorded)", d.threads, int, minimum=1),
        Option("dtype", "model and AoT-table dtype", d.dtype, choices=("fp32", "bf16", "fp16")),
        Option("batch_sizes", "", d.batch_sizes, int, many=True, minimum=1),
        Option("seq_lens", "", d.seq_lens, int, many=True, minimum=1),
        Option("variants", "method/variant specs (aotp/bench/variants.py)", d.variants, many=True),
        Option("rounds", "", d.rounds, int, minimum=1),
        Option("warmup", "", d.warmup, int, minimum=0),
        Option("baseline_every", "", d.baseline_every, int, minimum=1),
        Option("lookup_repeats", "", d.lookup_repeats, int, minimum=0),
        Option("headline_rounds", "rounds of a focused backbone / full_ft / aot_fc-materialized comparison at "
               "headline= (0: skip)", d.headline_rounds, int, minimum=0),
        Option("headline", "[BATCH,SEQ] of the headline comparison", d.headline, int, many=True, minimum=1),
        Option("tasks", "tasks mixed per batch; []: skip multi-task", d.tasks, int, many=True, minimum=1),
        Option("multitask_variants", "", DEFAULT_MULTITASK, many=True),
        Option("multitask_batch_size", "", d.multitask_batch_size, int, minimum=1),
        Option("multitask_seq_len", "", d.multitask_seq_len, int, minimum=1),
        Option("multitask_rounds", "default: rounds", None, int, nullable=True, minimum=1),
        Option("memory", "the activation-peak pass", True, bool, flags=("--no-memory",), flag_value=False),
        Option("train_rounds", "training-step benchmark rounds (0: skip)", d.train_rounds, int, minimum=0),
        Option("seed", "", d.seed, int),
        Option("output", "folder of the records, report and plots", d.out_dir, metavar="DIR", flags=("--out-dir",)),
        Option("tag", "file stem of the records (default <model>_<device>_<dtype>)", nullable=True),
        Option("readme", "report path (default <output>/README.md)", nullable=True, metavar="FILE"),
        Option("report", "false: records only, no README, no plots", True, bool, flags=("--no-report",),
               flag_value=False),
        Option("wait_quiet", "before starting, wait until the 1-min load average is below this (checked every "
               "minute)", None, float, nullable=True, minimum=0),
        Option("max_wait", "seconds to wait at most for wait_quiet", 2400.0, float, minimum=0),
        Option("report_only", "only (re)write the report and plots of a records file", nullable=True, metavar="JSON"),
    ], examples=[line.strip() for line in __doc__.split("\n\n")[1].splitlines()])


def parse_args(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    args, _ = parser().parse(sys.argv[1:] if argv is None else argv)
    if len(args["headline"]) != 2:
        from aotp.cli import UsageError

        raise UsageError(f"headline={args['headline']}: expected [BATCH,SEQ]")
    return args


@guarded
def main(argv: Optional[Sequence[str]] = None) -> int:
    from aotp.bench import report, timing
    from aotp.bench.inference import BenchConfig, command_line, run_benchmarks, summary

    args = parse_args(argv)
    if args["report_only"]:
        print(f"Report: {report.write_report(args['report_only'], args['readme'])}")
        return 0
    model_config = {}
    if args["hub_id"]:
        model_config = {"name": args["model"], "source": "hub", "hub_id": args["hub_id"]}
    elif args["tiny_family"]:
        model_config = {"name": args["model"], "source": "tiny", "family": args["tiny_family"]}
    log = lambda message: print(message, flush=True)  # noqa: E731
    quiet = timing.wait_for_quiet(args["wait_quiet"], args["max_wait"], log) if args["wait_quiet"] else {}
    cfg = BenchConfig(
        model=args["model"], model_config=model_config, device=args["device"], threads=args["threads"],
        dtype=args["dtype"], batch_sizes=tuple(args["batch_sizes"]), seq_lens=tuple(args["seq_lens"]),
        variants=tuple(args["variants"]), rounds=args["rounds"], warmup=args["warmup"],
        headline=tuple(args["headline"]), headline_rounds=args["headline_rounds"],
        baseline_every=args["baseline_every"], lookup_repeats=args["lookup_repeats"], tasks=tuple(args["tasks"]),
        multitask_variants=tuple(args["multitask_variants"]), multitask_batch_size=args["multitask_batch_size"],
        multitask_seq_len=args["multitask_seq_len"], multitask_rounds=args["multitask_rounds"],
        memory=args["memory"], train_rounds=args["train_rounds"], seed=args["seed"], out_dir=args["output"],
        tag=args["tag"], command=command_line(), quiet=quiet)
    records, path = run_benchmarks(cfg, log=log)
    print(summary(records))
    print(f"Records: {path}")
    if args["report"]:
        print(f"Report: {report.write_report(path, args['readme'])}")
    for check in report.acceptance(records):
        print(f"target: {check['target']}: {check['measured']} -> {'met' if check['passed'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
