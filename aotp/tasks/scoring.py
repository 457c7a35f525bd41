"""From a task's formatted predictions to its metrics, and to the prediction files a run keeps.

:func:`score_splits` is the one place that knows how a task's score is assembled over its eval
splits: every metric of ``task.metrics`` per split, keys prefixed ``<split>/`` when more than one
split is scored (MNLI matched and mismatched), and ``main``, the mean of ``task.main_metric``
(:func:`aotp.metrics.main_metric_value`). Training's dev evaluation, :mod:`aotp.evaluate` and the
constant baselines all go through it, so a recorded ``main`` and a re-scored one cannot drift apart.

:func:`write_predictions` writes one split's ``{"idx", "prediction", "label"[, "group"]}`` lines
(atomically), the file :func:`aotp.results.aggregate.read_predictions` reads back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from aotp.metrics import compute_metrics, main_metric_value


def score_splits(spec, formatted: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Metrics of ``spec`` (a :class:`aotp.tasks.TaskSpec`) over its scored splits, plus ``main``.

    ``formatted``: split -> ``{"predictions", "references", "groups" (optional)}`` (a formatter's
    ``predictions`` output, or predictions read back from a file), in the order the splits should
    appear. With several splits each key is ``<split>/<metric>``; with one, just ``<metric>``.
    """
    metrics: dict[str, float] = {}
    for split, rows in formatted.items():
        values = compute_metrics(spec.metrics, rows["predictions"], rows["references"], groups=rows.get("groups"))
        prefix = f"{split}/" if len(formatted) > 1 else ""
        metrics.update({prefix + name: float(value) for name, value in values.items()})
    metrics["main"] = float(main_metric_value(metrics, spec.main_metric))
    return metrics


def write_predictions(path: Path, formatted: Mapping[str, Any]) -> None:
    """One line per scored unit: ``idx``, ``prediction``, ``label`` and, for grouped metrics (MultiRC
    exact match, AX-g pairs), ``group``, so the file can be rescored without the data. Written to a
    temporary file and renamed: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    groups = formatted.get("groups")
    try:
        with open(temporary, "w") as handle:
            for i, prediction in enumerate(formatted["predictions"]):
                line = {"idx": _plain(formatted["ids"][i]), "prediction": _plain(prediction),
                        "label": _plain(formatted["references"][i])}
                if groups is not None:
                    line["group"] = _plain(groups[i])
                handle.write(json.dumps(line) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:  # a failed write leaves the earlier file (if any) and no temporary behind
        temporary.unlink(missing_ok=True)


def _plain(value):
    """A JSON-ready value: numpy arrays and tuples as lists, numpy scalars as Python numbers."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return value.item() if hasattr(value, "item") else value
