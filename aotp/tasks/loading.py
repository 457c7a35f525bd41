"""Reading a task's raw records from local official files or from the hub.

Local files follow the official layouts (GLUE's ``download_glue_data.py`` TSVs, SuperGLUE's JSONL):
TSVs are read without quote handling (quotes are literal in GLUE) and a UTF-8 BOM is tolerated.
Every record remembers where it came from (``_where`` = ``file:line``) so later errors can name it.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any, Optional

from aotp.tasks.spec import TaskSpec

log = logging.getLogger(__name__)

csv.field_size_limit(1 << 24)  # ReCoRD/MultiRC passages and QNLI sentences exceed the 128 KiB default


class DataFileError(ValueError):
    """A missing, empty or malformed data file; the message names the file (and line)."""


def local_path(spec: TaskSpec, split: str, root: Path) -> Path:
    if spec.local is None:
        raise DataFileError(f"task {spec.full_name} has no local file layout; unset data.root to use the hub")
    try:
        name = spec.local.files[split]
    except KeyError:
        raise DataFileError(f"task {spec.full_name} has no local file for split {split!r}; "
                            f"known splits: {', '.join(spec.local.files)}") from None
    return Path(root) / spec.local.dir / name


def check_local_files(spec: TaskSpec, root: Path, splits: list[str]) -> None:
    """Fail before any model is loaded if an expected file is missing."""
    for split in splits:
        path = local_path(spec, split, root)
        if not path.is_file():
            raise DataFileError(f"Missing data file for task {spec.full_name}, split {split!r}: expected {path} "
                                f"(data.root={root}; official layout {spec.local.dir}/{spec.local.files[split]})")


def read_tsv(spec: TaskSpec, split: str, path: Path) -> list[dict[str, Any]]:
    local = spec.local
    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header: Optional[list[str]] = None
        expected = local.num_columns.get(split)
        for line_number, row in enumerate(reader, start=1):
            if not row or row == [""]:
                continue
            if local.header and header is None:
                header = row
                expected = expected or len(header)
                # Test files carry no label column and some files no index column (idx falls back to the
                # row position); every other mapped column must be there.
                required = {f: c for f, c in local.columns.items()
                            if f != "idx" and not (f == "label" and split in spec.test_splits)}
                missing = [c for c in required.values() if c not in header]
                if missing:
                    raise DataFileError(f"{path}:1: header lacks columns {missing}; found {header}")
                continue
            if expected is not None and len(row) != expected:
                raise DataFileError(f"{path}:{line_number}: expected {expected} tab-separated columns, found {len(row)}")
            record: dict[str, Any] = {"_where": f"{path}:{line_number}"}
            for field_name, column in local.columns.items():
                if local.header:
                    if column in header:
                        record[field_name] = row[header.index(column)]
                else:
                    if int(column) < len(row):
                        record[field_name] = row[int(column)]
            records.append(record)
    return records


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    with open(path, encoding="utf-8-sig") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFileError(f"{path}:{line_number}: not valid JSON ({error.msg} at column {error.colno})") from None
            if not isinstance(record, dict):
                raise DataFileError(f"{path}:{line_number}: expected a JSON object, found {type(record).__name__}")
            record["_where"] = f"{path}:{line_number}"
            records.append(record)
    return records


def load_raw_records(spec: TaskSpec, split: str, root: Optional[Path]) -> list[dict[str, Any]]:
    """Raw records of one split: from ``root`` (official layout) when given, else from the hub."""
    if root is not None:
        path = local_path(spec, split, root)
        if not path.is_file():
            check_local_files(spec, root, [split])
        records = read_tsv(spec, split, path) if spec.local.format == "tsv" else read_jsonl(path)
        if not records:
            raise DataFileError(f"{path}: split {split!r} of task {spec.full_name} is empty")
        return records
    return load_hub_records(spec, split)


def load_hub_records(spec: TaskSpec, split: str) -> list[dict[str, Any]]:
    import datasets

    hub = spec.hub
    try:
        dataset = datasets.load_dataset(hub["path"], hub.get("name"), revision=hub.get("revision"), split=split)
    except Exception as error:  # datasets raises many types (ConnectionError, FileNotFoundError, ...)
        raise DataFileError(
            f"Could not load {hub.get('path')}/{hub.get('name')} split {split!r} from the hub ({type(error).__name__}: "
            f"{error}). Offline, pass data.root=DIR with the official files (e.g. data.root=../shared/data)."
        ) from error
    split_names = dict(hub.get("split_names") or {})
    records = []
    for index, row in enumerate(dataset):
        record = dict(row)
        record["_where"] = f"{hub['path']}/{hub.get('name')}[{split_names.get(split, split)}]#{index}"
        records.append(record)
    return records
