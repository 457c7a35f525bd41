"""Constant-prediction baselines of a task's eval split(s), from their label distributions.

    python -m aotp.tasks.baselines task=glue/rte [task=...|task=[glue/rte,glue/mrpc]] data.root=../shared/data

For every label k, the "always predict k" scores (one-hot in column k; for multiple choice, always
choice k; for ReCoRD, every candidate scores the same, so each query answers with its first entity)
go through the task's own formatter and metrics, exactly as a model's scores would. A regression
task's constant prediction has an undefined correlation, scored 0 (the metrics' convention). The
majority-class baseline is the constant with the best main metric, which is what a trained model
must beat (MRPC: always "equivalent", F1 0.81 / accuracy 0.68).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

from aotp.cli import KeyValueParser, Option, guarded
from aotp.metrics import is_improvement, main_metric_higher_is_better
from aotp.tasks.formatting import FORMATTERS
from aotp.tasks.loading import load_raw_records
from aotp.tasks.scoring import score_splits
from aotp.tasks.spec import TaskSpec, load_spec


def constant_scores(spec: TaskSpec, examples: list[dict[str, Any]], k: int) -> np.ndarray:
    n = len(examples)
    if spec.head == "regression":
        return np.full(n, float(k))
    width = len(examples[0]["choices"]) if spec.head == "multiple_choice" else spec.num_labels
    scores = np.zeros((n, width))
    scores[:, k] = 1.0
    return scores


def constant_choices(spec: TaskSpec, choices: int) -> tuple[list[int], list[str]]:
    """The constant predictions of a task: (values k, names). ``choices``: options per multiple-choice example."""
    if spec.head == "regression":
        return [0], ["constant"]
    if spec.head == "multiple_choice":
        return list(range(choices)), [f"choice {k}" for k in range(choices)]
    return list(range(spec.num_labels)), list(spec.label_names)


def best_constant_predictions(spec: TaskSpec, splits: dict[str, dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The best constant as *predictions* (what a run's ``predictions/<split>.jsonl`` holds), for scoring a
    run's saved predictions against it without reloading the data: ``{"name", "formatted": {split: {...}},
    "metrics"}``, or None where a constant is not a prediction value (ReCoRD answers with entity strings).

    ``splits``: split -> ``{"references", "groups"}``. A constant label (class k, choice k, or 0 for a
    regression, whose correlation is then undefined and scored 0) is the prediction for every row.
    """
    if spec.formatter == "record":
        return None
    choices = len(spec.label_names) if spec.head == "multiple_choice" else 0
    best = None
    higher = main_metric_higher_is_better(spec.main_metric)
    for k, name in zip(*constant_choices(spec, choices)):
        value = float(k) if spec.head == "regression" else k
        formatted = {split: {"predictions": np.full(len(rows["references"]), value), "references": rows["references"],
                             "groups": rows.get("groups")} for split, rows in splits.items()}
        metrics = score_splits(spec, formatted)
        if is_improvement(metrics["main"], None if best is None else best["metrics"]["main"], higher):
            best = {"name": name, "formatted": formatted, "metrics": metrics}
    return best


def constant_baselines(spec: TaskSpec, root: Optional[Path], splits: Optional[dict[str, list]] = None) -> dict[str, Any]:
    """``{"constants": {label: metrics}, "best": label, "best_index": k, "best_metrics": metrics}`` over the
    eval split(s); ``constant_scores(spec, examples, best_index)`` reproduces the best constant's scores.

    ``splits`` (split -> formatted examples) skips loading; otherwise the eval splits are read from ``root``.
    """
    formatter = FORMATTERS.get(spec.formatter)
    if splits is None:
        splits = {s: formatter.format(spec, load_raw_records(spec, s, root), True) for s in spec.eval_splits}
    choices = len(next(iter(splits.values()))[0]["choices"]) if spec.head == "multiple_choice" else 0
    labels, names = constant_choices(spec, choices)
    constants, best = {}, None
    higher = main_metric_higher_is_better(spec.main_metric)
    for k, name in zip(labels, names):
        constants[name] = score_splits(spec, {split: formatter.predictions(spec, rows, constant_scores(spec, rows, k))
                                              for split, rows in splits.items()})
        if is_improvement(constants[name]["main"], None if best is None else constants[best]["main"], higher):
            best = name
    return {"task": spec.full_name, "constants": constants, "best": best, "best_index": labels[names.index(best)],
            "best_metrics": constants[best],
            "sizes": {split: len(examples) for split, examples in splits.items()}}


@guarded
def main(argv: Optional[list[str]] = None) -> int:
    args, _ = KeyValueParser("python -m aotp.tasks.baselines", __doc__.split("\n\n")[0], [
        Option("task", "the tasks (repeat task= or give a list)", required=True, many=True, metavar="BENCHMARK/TASK"),
        Option("data.root", "folder of the GLUE/SuperGLUE files (default: the hub)", metavar="DIR"),
    ], examples=["python -m aotp.tasks.baselines task=[glue/rte,glue/mrpc] data.root=../shared/data"]).parse(
        sys.argv[1:] if argv is None else argv)
    root = Path(args["data.root"]) if args["data.root"] else None
    for task in args["task"]:
        result = constant_baselines(load_spec(task), root)
        best = result["best_metrics"]
        print(f"{task} {result['sizes']}: majority/constant baseline = always {result['best']!r}: main={best['main']:.4f} ("
              + ", ".join(f"{k}={v:.4f}" for k, v in best.items() if k != "main") + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
