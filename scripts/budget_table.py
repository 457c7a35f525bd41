"""The disk and memory budget of every paper experiment, as one Markdown table (README "Running on a GPU box").

    python scripts/budget_table.py output=results/budget/paper_experiments.md [experiment=[paper_glue_roberta_base,...]]
    python scripts/budget_table.py inputs=results/budget/downloads.md [data.root=../shared/data]
    python scripts/budget_table.py compute=results/budget/expected_compute.md [throughput=h100-sxm-assumed]

``compute=`` writes instead the expected GPU-hours of every paper experiment (README "Expected compute"):
``python -m aotp.estimate experiment=<name> throughput=<preset>`` (:func:`aotp.estimate.analytic_estimate`) for each,
every run's batches built by the loop's code over the committed length table (no data.root: the same figures on
any machine), FLOPs at the assumed rate. Minutes on one CPU core; no weights loaded.

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
        Option("compute", "write the expected-compute table (GPU-hours per experiment) here instead", None, Path,
               metavar="FILE"),
        Option("throughput", "the throughput compute= assumes (aotp.estimate.THROUGHPUT_PRESETS or a file)",
               "h100-sxm-assumed", str, metavar="PRESET|FILE"),
    ]).parse(sys.argv[1:])
    args = SimpleNamespace(out=values["output"], inputs=values["inputs"], data=values["data.root"],
                           experiments=values["experiment"])
    if args.inputs is not None:
        return write_inputs(args.inputs, args.data)
    if values["compute"] is not None:
        return write_compute(values["compute"], args.experiments, values["throughput"])
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


def write_compute(out: Path, experiments, throughput_name: str) -> int:
    """GPU-hours per paper experiment at a stated throughput (module docstring), as Markdown + a .json beside it."""
    from aotp.estimate import analytic_estimate, load_throughput

    throughput = load_throughput(throughput_name)
    names = experiments or sorted(p.stem for p in config_dir("experiment").glob("paper_*.yaml"))
    rows, figures, sources = [], {}, {}
    for name in names:
        result = analytic_estimate([f"experiment={name}"], throughput, quiet=True)
        tasks = result["tasks"]
        record = tasks.get("superglue/record", {}).get("hours", 0.0)
        bound = sum(t["hours"] for t in tasks.values() if t["lengths_from"] == "max_length bound")
        rates = sorted({g["rate"] for g in result["groups"]})
        padded = sum(t["train_tokens_padded"] for t in tasks.values())
        # padding is priced where lengths are known (files or the length table); a task at the max_length bound
        # has none by construction, so it is left out of the share
        known = [t for t in tasks.values() if t["lengths_from"] != "max_length bound"]
        known_padded = sum(t["train_tokens_padded"] for t in known)
        padded_share = 1.0 - sum(t["train_tokens_real"] for t in known) / known_padded if known_padded else 0.0
        figures[name] = {"runs": sum(t["runs"] for t in tasks.values()), "runs_in_sweep": result["runs_in_sweep"],
                         "hours": result["hours"], "hours_bf16": result["hours_bf16"], "hours_record": record,
                         "hours_at_max_length_bound": bound, "train_tokens_padded": padded,
                         "padded_share": padded_share, "rates": rates, "tasks": tasks,
                         "groups": [{k: v for k, v in g.items() if k != "lengths_from"} for g in result["groups"]],
                         "warnings": result["warnings"]}
        for task, entry in tasks.items():
            sources.setdefault(entry["lengths_from"], set()).add(task)
        record_text = f"{record:,.0f} ({record / result['hours']:.0%})" if record else "-"
        rows.append(f"| {name} | {figures[name]['runs']:,} | {padded / 1e9:,.1f} | {padded_share:.3f} | "
                    f"{result['hours']:,.0f} | {result['hours_bf16']:,.0f} | {record_text} | "
                    f"{bound / result['hours']:.1%} | {', '.join(rates)} |")
        print(rows[-1], flush=True)
    total = {k: sum(f[k] for f in figures.values()) for k in ("runs", "hours", "hours_bf16", "hours_record")}
    header = ["| experiment | runs | train tokens priced, padded (10^9) | padded share priced (tasks with lengths) | GPU-h estimate, "
              "as configured (fp32, TF32 matmuls) | GPU-h estimate if trainer.precision=bf16 | of which ReCoRD | "
              "share priced at the max_length bound | throughput assumed |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    rows.append(f"| **all {len(figures)}** | **{total['runs']:,}** | | | **{total['hours']:,.0f}** | "
                f"**{total['hours_bf16']:,.0f}** | {total['hours_record']:,.0f} | | |")
    notes = ["", f"Every GPU-hour figure is an **estimate (assumed throughput {throughput['name']})**, not a measurement: "
             f"{throughput.get('rates_source', '')}; peaks: " + ", ".join(
                 f"{k} {v:g}" for k, v in throughput["peak_tflops"].items()) + f" TFLOP/s ({throughput.get('peak_source', '')}); "
             f"+{throughput.get('run_overhead_seconds', 0)} s per run (assumed: load, build, write). FLOPs: "
             "aotp.estimate.run_flops (6 N or 4 N per padded training token + the attention term, Kaplan et al. 2020; "
             "Korthikanti et al. 2022), over the batches the loop builds (trainer.group_by_length, seeds, epochs, "
             "gradient accumulation as configured).",
             "Lengths priced from: " + "; ".join(f"{source}: {', '.join(sorted(tasks))}"
                                                  for source, tasks in sorted(sources.items())) + "."]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(header + rows + notes) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"throughput": throughput, "experiments": figures}, indent=1) + "\n")
    print("\n".join(notes))
    print(f"Table: {out}")
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
