"""Does length grouping (``trainer.group_by_length``, on by default since issue 17) leave dev metrics within
seed noise? Short real runs with and without it, same seeds, interleaved; writes one JSON record.

    OMP_NUM_THREADS=1 python scripts/group_by_length_check.py data.root=../shared/data

Default: MiniLM + AoT FC on SST-2, 1,000 training examples, 1 epoch of batches of 16, the full dev set,
seeds 1-3 (about 1 min per run on one CPU thread).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from aotp.cli import KeyValueParser, Option, guarded


@guarded
def main() -> int:
    parser = KeyValueParser("scripts/group_by_length_check.py", __doc__.split("\n\n")[0], [
        Option("data.root", "", "../shared/data", metavar="DIR"), Option("model", "", "minilm"),
        Option("methods", "", ("aot_fc",), many=True), Option("task", "", "glue/sst2"),
        Option("seeds", "", (1, 2, 3), int, many=True), Option("train_examples", "", 1000, int, minimum=1),
        Option("epochs", "", 1, int, minimum=1), Option("threads", "", 1, int, minimum=1),
        Option("output", "", "results/bench/train_group_by_length_check.json", flags=("--out",))])
    values, _ = parser.parse(sys.argv[1:])
    args = SimpleNamespace(data_root=values["data.root"], out=values["output"],
                           **{k: v for k, v in values.items() if k not in ("data.root", "output")})

    from aotp.results.record import environment, write_json_atomic
    from aotp.run import compose, execute

    work = Path(tempfile.mkdtemp(prefix="aotp-gbl-"))
    runs = []

    def write() -> dict:
        summary = {}
        for method in sorted({r['method'] for r in runs}):
            for grouped in (True, False):
                mains = [r["dev"]["main"] for r in runs if r["method"] == method and r["group_by_length"] == grouped]
                seconds = [r["train_seconds"] for r in runs if r["method"] == method and r["group_by_length"] == grouped]
                if not mains:
                    continue
                summary[f"{method}/group_by_length={str(grouped).lower()}"] = {
                    "dev_main": mains, "mean": statistics.mean(mains), "std": statistics.stdev(mains) if len(mains) > 1 else 0.0,
                    "train_seconds_mean": statistics.mean(seconds)}
            paired = [next(r["dev"]["main"] for r in runs if r["method"] == method and r["seed"] == s and r["group_by_length"])
                      - next(r["dev"]["main"] for r in runs if r["method"] == method and r["seed"] == s and not r["group_by_length"])
                      for s in sorted({r['seed'] for r in runs if r['method'] == method}) if sum(
                      r['method'] == method and r['seed'] == s for r in runs) == 2]
            summary[f"{method}/paired_difference"] = {"per_seed": paired, "mean": statistics.mean(paired) if paired else None}
        write_json_atomic(Path(args.out), {"kind": "group_by_length_check", "args": vars(args), "runs": runs,
                                           "summary": summary, "env": environment().to_dict(),
                                           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return summary

    for method in args.methods:
        for seed in args.seeds:
            for grouped in ((True, False) if seed % 2 else (False, True)):  # alternate which goes first
                cfg = compose([f"model={args.model}", f"method={method}", f"task={args.task}", f"data.root={args.data_root}",
                               f"data.max_train_samples={args.train_examples}", "data.max_eval_samples=null",
                               "data.max_length=128", "trainer.batch_size=16", f"trainer.epochs={args.epochs}",
                               "trainer.progress=false", f"trainer.threads={args.threads}", f"seed={seed}", "logger=jsonl",
                               f"trainer.group_by_length={str(grouped).lower()}", f"paths.results={work / 'runs'}",
                               f"paths.cache={work / 'cache'}", "trainer.keep_weights=false"])
                record = execute(cfg)
                timings = record["timings"]
                runs.append({"method": method, "seed": seed, "group_by_length": grouped, "status": record["status"],
                             "dev": record["metrics"], "train_seconds": timings["train_seconds"],
                             "train_examples": timings["train_examples"]})
                print(f"{method} seed={seed} group_by_length={grouped}: main={record['metrics']['main']:.4f} "
                      f"train {timings['train_seconds']:.1f} s", flush=True)
                write()  # after every run: an interrupted check keeps what it measured
    summary = write()
    for key, value in summary.items():
        print(key, value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
