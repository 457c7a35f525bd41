"""The disk and memory budget of every paper experiment, as one Markdown table (README "Running on a GPU box").

    python scripts/budget_table.py --out results/budget/paper_experiments.md

Each row is ``python -m aotp.estimate --budget experiment=<name>`` (:mod:`aotp.budget`): runs, disk kept
after the sweep, the largest checkpoint during training, the disk a one-job sweep needs, and the largest
GPU-memory and host-RAM peak of any of its runs. No weights are loaded; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def main() -> int:
    from aotp.budget import human, sweep_budget

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Markdown file; a .json beside it holds the figures")
    parser.add_argument("experiments", nargs="*", help="default: every configs/experiment/paper_*.yaml")
    args = parser.parse_args()
    names = args.experiments or sorted(p.stem for p in (REPO_ROOT / "configs" / "experiment").glob("paper_*.yaml"))
    rows, figures = [], {}
    for name in names:
        budget = sweep_budget([f"experiment={name}"])
        models = {g["model"] for g in budget["groups"]}
        aot_tables = {g["table_if_saved"] for g in budget["groups"] if g["table_if_saved"]}
        full_ft = [g for g in budget["groups"] if g["method"] == "full_ft"]
        figures[name] = {k: v for k, v in budget.items() if k != "per_run"}
        rows.append(f"| {name} | {', '.join(sorted(models))} | {budget['runs']:,} | {human(budget['kept_total'])} | "
                    f"{human(full_ft[0]['kept_total']) if full_ft else '-'} | {human(budget['checkpoint_peak'])} | "
                    f"{human(budget['need'])} | {human(budget['gpu_peak_max'])} | {human(budget['host_peak_max'])} | "
                    f"{', '.join(human(t) for t in sorted(aot_tables)) or '-'} |")
        print(rows[-1], flush=True)
    header = ["| experiment | model | runs | disk kept (all runs) | of which full_ft weights | largest checkpoint "
              "(peak, deleted after success) | disk needed, 1 job | GPU peak per run (max) | host RAM peak (max) | "
              "AoT table per run, only if saved |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(header + rows) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(figures, indent=1) + "\n")
    print(f"Table: {args.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
