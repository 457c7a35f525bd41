"""Formatting raw records into model examples, and model outputs back into predictions.

An example is a dict with ``text`` (a tuple of one or two strings), or ``choices`` (a list of such
tuples, for multiple choice), ``label`` (int, float or None on unlabelled test splits), ``idx`` and
optionally ``group`` (MultiRC question, ReCoRD query) and other fields a formatter needs to turn
scores into predictions. The default ``fields`` formatter joins ``text_fields`` as a sentence
(pair); unusual formats register their own :class:`Formatter` by name (``formatter:`` in the spec).
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np

from aotp.registry import Registry
from aotp.tasks.loading import DataFileError
from aotp.tasks.spec import TaskSpec

log = logging.getLogger(__name__)


def parse_label(spec: TaskSpec, raw: Any, where: str, labelled: bool) -> Optional[float | int]:
    """Map a raw label (name, integer string, bool, float) to the task's label space."""
    if not labelled:
        return None
    if raw is None or raw == "" or raw == -1:
        raise DataFileError(f"{where}: missing label for task {spec.full_name}")
    if spec.head == "regression":
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise DataFileError(f"{where}: label {raw!r} is not a number (task {spec.full_name} is a regression)") from None
    if isinstance(raw, bool):
        raw = str(raw).lower()
    names = spec.label_names or []
    if isinstance(raw, str) and raw in names:
        return names.index(raw)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = None
    if value is not None and 0 <= value < len(names) and str(value) not in names:
        return value
    raise DataFileError(f"{where}: label {raw!r} is not in the label set of {spec.full_name}: {names}")


class Formatter:
    """Turns raw records into examples and (example, score) pairs into predictions."""

    def format(self, spec: TaskSpec, records: list[dict[str, Any]], labelled: bool) -> list[dict[str, Any]]:
        examples = []
        for position, record in enumerate(records):
            where = record.get("_where", f"record {position}")
            try:
                text = tuple(str(record[f]) for f in spec.text_fields)
            except KeyError as error:
                raise DataFileError(f"{where}: missing field {error.args[0]!r} (task {spec.full_name} reads "
                                    f"{spec.text_fields})") from None
            examples.append({"text": text, "label": parse_label(spec, record.get("label"), where, labelled),
                             "idx": record.get("idx", position)})
        return examples

    def predictions(self, spec: TaskSpec, examples: list[dict[str, Any]], scores: np.ndarray) -> dict[str, Any]:
        """Scores (N, k) / (N,) / (N, C) -> predictions, references and groups for the metrics."""
        predictions = scores if spec.head == "regression" else scores.argmax(-1)
        labels = [e["label"] for e in examples]
        return {"predictions": predictions, "references": labels, "groups": None, "ids": [e["idx"] for e in examples]}


FORMATTERS: Registry[Formatter] = Registry("task formatter", option="task.formatter")
FORMATTERS.register("fields")(Formatter())
