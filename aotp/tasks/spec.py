"""Tasks are data: a task is one YAML file under ``configs/task/<benchmark>/<name>.yaml``.

A spec carries the fields and how they are joined, the label space (or regression), the head
type, the metric list and main metric(s), the eval/test splits, a version number recorded in every
result, the hub dataset id with its revision, and the local file names and columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from aotp.models.task_model import HEAD_TYPES


@dataclass(frozen=True)
class LocalFiles:
    """Where the official files live below ``data.root`` and how to read them."""

    dir: str
    format: str  # tsv | jsonl
    files: dict[str, str]  # split name -> file name
    header: bool = True
    # canonical field name -> column name (header=True) or column index (header=False); JSONL ignores it
    columns: dict[str, Any] = field(default_factory=dict)
    # per split, the number of columns a row must have (TSV only); default: the header's length
    num_columns: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    benchmark: str
    version: int
    head: str
    text_fields: list[str]
    metrics: list[str]
    main_metric: list[str]
    splits: dict[str, Any]
    label_names: Optional[list[str]] = None
    hub: dict[str, Any] = field(default_factory=dict)
    local: Optional[LocalFiles] = None
    formatter: str = "fields"
    max_length: int = 256
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        return f"{self.benchmark}/{self.name}"

    @property
    def num_labels(self) -> int:
        if self.head == "regression":
            return 1
        if self.head == "multiple_choice":
            return 1
        return len(self.label_names or [])

    @property
    def train_split(self) -> str:
        return self.splits["train"]

    @property
    def eval_splits(self) -> list[str]:
        return list(self.splits.get("eval") or [])

    @property
    def test_splits(self) -> list[str]:
        return list(self.splits.get("test") or [])

    @classmethod
    def from_config(cls, cfg) -> "TaskSpec":
        data = {k: v for k, v in dict(cfg).items()}
        known = set(cls.__dataclass_fields__)
        extra = {k: data.pop(k) for k in list(data) if k not in known}
        if data.get("local") is not None:
            data["local"] = LocalFiles(**dict(data["local"]))
        for key in ("text_fields", "metrics", "main_metric", "label_names"):
            if data.get(key) is not None:
                data[key] = list(data[key])
        data["splits"] = {k: (v if isinstance(v, str) or v is None else list(v)) for k, v in dict(data["splits"]).items()}
        data["hub"] = dict(data.get("hub") or {})
        spec = cls(**data, extra={**extra, **dict(data.pop("extra", {}) or {})})
        spec.validate()
        return spec

    def validate(self) -> None:
        where = f"task {self.full_name} (configs/task/{self.full_name}.yaml)"
        if self.head not in HEAD_TYPES:
            raise ValueError(f"{where}: head {self.head!r} is not one of {', '.join(HEAD_TYPES)}")
        if self.head == "classification" and not self.label_names:
            raise ValueError(f"{where}: a classification task needs label_names")
        for entry in self.main_metric:  # "metric" or "<eval split>/metric"
            split, _, metric = entry.rpartition("/")
            if metric not in self.metrics or (split and split not in self.eval_splits):
                raise ValueError(f"{where}: main_metric entry {entry!r} must be one of metrics {self.metrics}, "
                                 f"optionally prefixed by an eval split of {self.eval_splits}")
        from aotp.metrics import METRICS  # local import: metrics register on import

        for metric in self.metrics:
            METRICS.get(metric)  # raises with the valid choices
