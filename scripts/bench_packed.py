"""Throughput of packed runs: K = |seeds| x |lrs| AoT runs trained packed on one backbone against the same
K runs trained one after another (each through ``aotp.run.execute``), interleaved pair by pair.

    OMP_NUM_THREADS=1 python scripts/bench_packed.py data.root=../shared/data pairs=3

Figures per pair: training seconds (the loop's ``train_seconds``, summed over the K records: for a pack
these are shares of the packed steps, so the sum is the pack's training time) and wall seconds of the
whole K runs (backbone loads, tokenised data from a cache warmed before timing, evaluations, inference check, records).
Reported: the median and range of the paired ratios separate / packed (> 1: packing is faster).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from aotp.cli import KeyValueParser, Option, guarded


@guarded
def main() -> None:
    values, _ = KeyValueParser("scripts/bench_packed.py", __doc__.split("\n\n")[0], [
        Option("data.root", "", "../shared/data", metavar="DIR"),
        Option("model", "", "minilm"),
        Option("method", "", "aot_fc"),
        Option("task", "", "glue/sst2"),
        Option("steps", "", 8, int, minimum=1),
        Option("batch_size", "", 32, int, minimum=1),
        Option("pairs", "", 3, int, minimum=1),
        Option("threads", "", 1, int, minimum=1),
        Option("output", "", "results/bench/packed_cpu_fp32.json", metavar="FILE", flags=("--out",)),
    ]).parse(sys.argv[1:])
    args = SimpleNamespace(**values, data_root=values["data.root"], out=values["output"])

    import torch

    from aotp.results.record import environment
    from aotp.run import compose, execute
    from aotp.trainer.packed import execute_pack, pack_configs

    torch.set_num_threads(args.threads)
    seeds, lrs = [1, 2], [1e-3, 3e-3]
    work = Path(tempfile.mkdtemp(prefix="aotp-bench-packed-"))
    base = [f"model={args.model}", f"method={args.method}", f"task={args.task}", f"data.root={args.data_root}",
            f"trainer.max_steps={args.steps}", f"trainer.batch_size={args.batch_size}", "trainer.progress=false",
            f"trainer.threads={args.threads}", f"data.max_train_samples={args.steps * args.batch_size}",
            "data.max_eval_samples=128", "data.max_length=128", "logger=jsonl", f"paths.cache={work / 'cache'}"]
    # untimed warm-up: the tokenised data lands in the cache, so neither side pays it
    execute(compose(base + ["trainer.max_steps=1", f"seed={seeds[0]}", f"paths.results={work / 'warmup'}"]))
    pairs = []
    for pair in range(args.pairs):
        def separate():
            tick = time.perf_counter()
            records = [execute(compose(base + [f"seed={s}", f"method.lr={lr}", f"paths.results={work / f'separate{pair}'}"]))
                       for s in seeds for lr in lrs]
            return time.perf_counter() - tick, records

        def packed():
            tick = time.perf_counter()
            records = execute_pack(pack_configs(base + [f"paths.results={work / f'packed{pair}'}"], seeds, lrs))
            return time.perf_counter() - tick, records

        order = [("separate", separate), ("packed", packed)]
        result = {}
        for name, function in (order if pair % 2 == 0 else order[::-1]):  # alternate which goes first
            wall, records = function()
            result[name] = {"wall_seconds": wall, "train_seconds": sum(r["timings"]["train_seconds"] for r in records),
                            "train_examples": sum(r["timings"]["train_examples"] for r in records),
                            "dev_main": [r["metrics"]["main"] for r in records]}
        result["train_ratio"] = result["separate"]["train_seconds"] / result["packed"]["train_seconds"]
        result["wall_ratio"] = result["separate"]["wall_seconds"] / result["packed"]["wall_seconds"]
        print(f"pair {pair}: train separate/packed = {result['train_ratio']:.3f}, wall = {result['wall_ratio']:.3f}",
              flush=True)
        pairs.append(result)
    summary = {name: {"median": statistics.median(p[name] for p in pairs), "min": min(p[name] for p in pairs),
                      "max": max(p[name] for p in pairs)} for name in ("train_ratio", "wall_ratio")}
    report = {"what": "K packed AoT runs vs the same K runs one after another (separate/packed > 1: packing faster)",
              "k": len(seeds) * len(lrs), "seeds": seeds, "lrs": lrs, "model": args.model, "method": args.method,
              "task": args.task, "steps": args.steps, "batch_size": args.batch_size, "threads": args.threads,
              "dtype": "fp32", "load_average_at_end": os.getloadavg(), "pairs": pairs, "summary": summary,
              "env": environment(torch.device("cpu")).to_dict()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
