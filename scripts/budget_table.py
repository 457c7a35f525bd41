"""The disk and memory budget of every paper experiment, as one Markdown table (README "Running on a GPU box").

    python scripts/budget_table.py output=results/budget/paper_experiments.md [experiment=[paper_glue_roberta_base,...]]
    python scripts/budget_table.py inputs=results/budget/downloads.md [data.root=../shared/data]

``inputs=`` writes instead what a GPU box downloads: each hub model's parameter count (counted on the
meta device from ``model.architecture``) and its size at 4 B (fp32) per parameter, and each task's
example counts (the specs' ``official_sizes``) with the bytes of its official files under ``data.root``.

Each row is ``python -m aotp.estimate budget=true experiment=<name>`` (:mod:`aotp.budget`): runs, disk kept
after the sweep, the largest checkpoint during training, the disk a one-job sweep needs, and the largest
GPU-memory and host-RAM peak of any of its runs. No weights are loaded; nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

from aotp.cli import KeyValueParser, Option, UsageError, guarded
from aotp.paths import config_dir

REPO_ROOT = Path(__file__).resolve().parents[1]  # for the default data.root (../shared/data beside the checkout)


@guarded
def main() -> int:
    from aotp.budget import human, sweep_budget

    values, _ = KeyValueParser("scripts/budget_table.py", __doc__.split("\n\n")[0], [
        Option("output", "Markdown file; a .json beside it holds the figures", None, Path, metavar="FILE",
               flags=("--out",)),
        Option("inputs", "write the downloads table (models, datasets) here instead", None, Path, metavar="FILE"),
        Option("data.root", "official-layout GLUE/SuperGLUE files whose sizes inputs= reports",
               REPO_ROOT.parent / "shared" / "data", Path, metavar="DIR", flags=("--data",)),
        Option("experiment", "default: every configs/experiment/paper_*.yaml", None, many=True),
    ]).parse(sys.argv[1:])
    args = SimpleNamespace(out=values["output"], inputs=values["inputs"], data=values["data.root"],
                           experiments=values["experiment"])
    if args.inputs is not None:
        return write_inputs(args.inputs, args.data)
    if args.out is None:
        raise UsageError("give output= (the experiments table) or inputs= (the downloads table)")
    names = args.experiments or sorted(p.stem for p in config_dir("experiment").glob("paper_*.yaml"))
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


def write_inputs(out: Path, data_root: Path) -> int:
    from omegaconf import OmegaConf

    from aotp.budget import count_parameters, human
    from aotp.run import compose
    from aotp.tasks.spec import TaskSpec

    lines = ["| model | hub id | parameters (counted) | checkpoint at 4 B/parameter | vocabulary x layers x width | AoT table fp32 |",
             "|---|---|---:|---:|---|---:|"]
    for path in sorted(config_dir("model").glob("*.yaml")):
        model = OmegaConf.load(path)
        if model.get("source") != "hub":
            continue
        cfg = compose([f"model={path.stem}", "method=full_ft", "task=glue/rte"])
        counts = count_parameters(cfg, "classification", 2)
        table = counts.vocab_size * counts.num_layers * counts.hidden_size * 4
        lines.append(f"| {path.stem} | `{model.hub_id}` | {counts.backbone:,} | {human(4 * counts.backbone)} | "
                     f"{counts.vocab_size:,} x {counts.num_layers} x {counts.hidden_size} | {human(table)} |")
    lines += ["", "| task | hub dataset | train | eval splits | test splits | official files here |",
              "|---|---|---:|---:|---:|---:|"]

    def examples(splits) -> str:
        counts = [spec.official_sizes.get(s) for s in splits]
        return "-" if not counts or None in counts else f"{sum(counts):,}"

    for benchmark in ("glue", "superglue"):
        for path in sorted(config_dir("task", benchmark).glob("*.yaml")):
            spec = TaskSpec.from_config(OmegaConf.load(path))
            folder = data_root / spec.local.dir if spec.local is not None else None
            local = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) \
                if folder is not None and folder.is_dir() else 0
            lines.append(f"| {spec.full_name} | `{spec.hub.get('path')}` `{spec.hub.get('name')}` | "
                         f"{examples([spec.train_split] if spec.train_split else [])} | {examples(spec.eval_splits)} | "
                         f"{examples(spec.test_splits)} | {human(local) if local else 'not here'} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
