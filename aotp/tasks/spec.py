"""Tasks are data: a task is one YAML file under ``configs/task/<benchmark>/<name>.yaml``.

A spec carries the fields and how they are joined (``text_fields`` / ``formatter`` +
``format_options``), the label space (or regression), the head type, the metric list and main
metric(s), the train/eval/test splits, a version number recorded in every result, the hub dataset
id with its revision (and split-name mapping where the hub's names differ), the local official
file names and columns, the leaderboard submission format, and for diagnostics (no train split)
which trained tasks may score them.

Field names are the hub's column names (``nyu-mll/glue``, ``aps/super_glue``); ``local.columns``
maps them to the official files' columns, so one formatter reads both sources.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from aotp.models.task_model import HEAD_TYPES
from aotp.paths import config_dir

TASK_CONFIG_DIR = config_dir("task")
SUBMISSION_FORMATS = ("glue_tsv", "superglue_jsonl")
SUBMISSION_LABELS = ("names", "ids", "float", "text")


@dataclass(frozen=True)
class SplitFile:
    """How to read one split's file: name, header or not, field -> column (name or 0-based index)."""

    file: str
    header: bool
    columns: dict[str, Any]
    num_columns: Optional[int] = None


@dataclass(frozen=True)
class LocalFiles:
    """Where the official files live below ``data.root`` and how to read them.

    ``files`` maps a split to a file name, or to ``{file, header, columns, num_columns}`` where that
    split's file differs from the others (CoLA's test file has a header, its train/dev files do not;
    MRPC's test file has an ``index`` column; GLUE AX's labelled file has its own column names).
    """

    dir: str
    format: str  # tsv | jsonl
    files: dict[str, Any]  # split name -> file name | {file, header, columns, num_columns}
    header: bool = True
    # canonical field name -> column name (header=True) or column index (header=False); JSONL ignores it
    columns: dict[str, Any] = field(default_factory=dict)
    # per split, the number of columns a row must have (TSV only); default: the header's length
    num_columns: dict[str, int] = field(default_factory=dict)

    def split_file(self, split: str) -> SplitFile:
        entry = self.files[split]
        if isinstance(entry, str):
            return SplitFile(entry, self.header, dict(self.columns), self.num_columns.get(split))
        entry = dict(entry)
        unknown = set(entry) - {"file", "header", "columns", "num_columns"}
        if unknown or "file" not in entry:
            raise ValueError(f"local.files.{split}: expected a file name or {{file, header, columns, num_columns}}, "
                             f"got {entry}")
        return SplitFile(entry["file"], bool(entry.get("header", self.header)),
                         dict(entry.get("columns") or self.columns),
                         entry.get("num_columns", self.num_columns.get(split)))


@dataclass(frozen=True)
class TaskSpec:
    name: str
    benchmark: str
    version: int
    head: str
    metrics: list[str]
    main_metric: list[str]
    splits: dict[str, Any]
    text_fields: list[str] = field(default_factory=list)
    label_names: Optional[list[str]] = None
    hub: dict[str, Any] = field(default_factory=dict)
    local: Optional[LocalFiles] = None
    formatter: str = "fields"
    format_options: dict[str, Any] = field(default_factory=dict)
    submission: Optional[dict[str, Any]] = None
    diagnostic: Optional[dict[str, Any]] = None
    max_length: int = 256
    description: str = ""
    # Examples per split in the official release, as the formatter counts them (MultiRC: answer
    # options); checked against the files by the real-data tests, used by ``aotp.estimate`` without data.
    official_sizes: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        return f"{self.benchmark}/{self.name}"

    @property
    def config_file(self) -> str:
        return f"configs/task/{self.full_name}.yaml"

    @property
    def num_labels(self) -> int:
        """Outputs of the head: 1 for regression and multiple choice (one score per choice)."""
        if self.head in ("regression", "multiple_choice"):
            return 1
        return len(self.label_names or [])

    @property
    def train_split(self) -> Optional[str]:
        return self.splits.get("train")

    @property
    def eval_splits(self) -> list[str]:
        return list(self.splits.get("eval") or [])

    @property
    def test_splits(self) -> list[str]:
        return list(self.splits.get("test") or [])

    @property
    def all_splits(self) -> list[str]:
        names = [self.train_split, *self.eval_splits, *self.test_splits]
        return list(dict.fromkeys(n for n in names if n))

    @property
    def is_diagnostic(self) -> bool:
        return self.diagnostic is not None

    def not_trainable_message(self) -> str:
        scored_with = ", ".join((self.diagnostic or {}).get("scored_with") or [])
        return (f"task {self.full_name} is a diagnostic set without a train split: it is not trained, it is scored "
                f"with a finished run of {scored_with}: python -m aotp.evaluate run=<run dir> task={self.full_name} "
                f"[data.root=DIR]")

    def fingerprint(self) -> str:
        """Hash of everything in the spec (formatting options included): part of the tokenisation cache key."""
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:16]

    @classmethod
    def from_config(cls, cfg) -> "TaskSpec":
        data = {k: _plain(v) for k, v in dict(cfg).items()}
        known = set(cls.__dataclass_fields__)
        extra = {k: data.pop(k) for k in list(data) if k not in known}
        if data.get("local") is not None:
            data["local"] = LocalFiles(**data["local"])
        for key in ("text_fields", "metrics", "main_metric", "label_names"):
            if data.get(key) is not None:
                data[key] = [str(v) for v in data[key]]
        data["splits"] = {k: (v if isinstance(v, str) or v is None else list(v)) for k, v in dict(data["splits"]).items()}
        for key in ("hub", "format_options", "official_sizes"):
            data[key] = dict(data.get(key) or {})
        spec = cls(**data, extra={**extra, **dict(data.pop("extra", {}) or {})})
        spec.validate()
        return spec

    def validate(self) -> None:
        where = f"task {self.full_name} ({self.config_file})"
        if self.head not in HEAD_TYPES:
            raise ValueError(f"{where}: head {self.head!r} is not one of {', '.join(HEAD_TYPES)}")
        if self.head == "classification" and not self.label_names:
            raise ValueError(f"{where}: a classification task needs label_names")
        stray = set(self.official_sizes) - set(self.all_splits)
        if stray:
            raise ValueError(f"{where}: official_sizes names splits {sorted(stray)} the task does not have; "
                             f"its splits: {self.all_splits}")
        unknown_splits = set(self.splits) - {"train", "eval", "test"}
        if unknown_splits:
            raise ValueError(f"{where}: splits has unknown keys {sorted(unknown_splits)}; valid: train, eval, test")
        if not self.eval_splits:
            raise ValueError(f"{where}: splits.eval must name at least one labelled split")
        if self.train_split is None and self.diagnostic is None:
            raise ValueError(f"{where}: splits.train is null; only a diagnostic task (with a `diagnostic:` block "
                             f"naming the tasks that score it) may lack a train split")
        if self.diagnostic is not None and not (self.diagnostic.get("scored_with") or []):
            raise ValueError(f"{where}: diagnostic.scored_with must list the trained tasks that score it")
        for entry in self.main_metric:  # "metric" or "<eval split>/metric"
            split, _, metric = entry.rpartition("/")
            if metric not in self.metrics or (split and split not in self.eval_splits):
                raise ValueError(f"{where}: main_metric entry {entry!r} must be one of metrics {self.metrics}, "
                                 f"optionally prefixed by an eval split of {self.eval_splits}")
        if self.local is not None:
            if self.local.format not in ("tsv", "jsonl"):
                raise ValueError(f"{where}: local.format {self.local.format!r} is not one of tsv, jsonl")
            missing = [s for s in self.all_splits if s not in self.local.files]
            if missing:
                raise ValueError(f"{where}: local.files has no file for splits {missing}")
            for split in self.local.files:
                self.local.split_file(split)
        if self.submission is not None:
            self._validate_submission(where)
        from aotp.metrics import METRICS  # local imports: metrics and formatters register on import
        from aotp.tasks.formatting import FORMATTERS

        for metric in self.metrics:
            METRICS.get(metric)  # raises with the valid choices
        FORMATTERS.get(self.formatter)

    def _validate_submission(self, where: str) -> None:
        sub = self.submission
        if sub.get("format") not in SUBMISSION_FORMATS:
            raise ValueError(f"{where}: submission.format {sub.get('format')!r} is not one of {SUBMISSION_FORMATS}")
        files = dict(sub.get("files") or {})
        if set(files) != set(self.test_splits):
            raise ValueError(f"{where}: submission.files must name one file per test split {self.test_splits}, "
                             f"got {sorted(files)}")
        labels = sub.get("labels", "names")
        if isinstance(labels, list):
            if len(labels) != len(self.label_names or []):
                raise ValueError(f"{where}: submission.labels lists {len(labels)} strings for "
                                 f"{len(self.label_names or [])} labels")
        elif labels not in SUBMISSION_LABELS:
            raise ValueError(f"{where}: submission.labels {labels!r} is not one of {SUBMISSION_LABELS} or a list")


def _plain(value: Any) -> Any:
    """OmegaConf containers -> plain dicts/lists (so specs hash and compare as data)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return value


def task_names() -> list[str]:
    """Every task with a YAML under configs/task (``glue/rte``, ``superglue/copa``, ...)."""
    return sorted(str(p.relative_to(TASK_CONFIG_DIR).with_suffix("")) for p in TASK_CONFIG_DIR.glob("*/*.yaml"))


def load_spec(name: str) -> TaskSpec:
    """The spec of a task by name (``glue/rte``), read from ``configs/task/<name>.yaml``."""
    from omegaconf import OmegaConf

    path = TASK_CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        from aotp.registry import UnknownChoiceError, unknown_choice_message

        raise UnknownChoiceError(unknown_choice_message("task", name, task_names(), "task"))
    return TaskSpec.from_config(OmegaConf.load(path))
