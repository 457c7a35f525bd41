"""Reading a task's raw records from local official files or from the hub.

Local files follow the official layouts (GLUE's ``download_glue_data.py`` TSVs, SuperGLUE's JSONL):
TSVs are read without quote handling (quotes are literal in GLUE) and a UTF-8 BOM is tolerated.
Every record remembers where it came from (``_where`` = ``file:line``) so later errors can name it.
Blank lines are the only rows skipped; their number is logged. Integer-like ``idx`` values
(GLUE's ``index`` column, AX-b's ``"0"``) become ints; a file without an index column numbers
its rows from 0 in file order.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path
from typing import Any, Iterator, Optional

from aotp.cli import Refusal
from aotp.tasks.spec import SplitFile, TaskSpec

log = logging.getLogger(__name__)

csv.field_size_limit(1 << 24)  # ReCoRD/MultiRC passages and QNLI sentences exceed the 128 KiB default

_INTEGER = re.compile(r"^-?\d+$")


class DataFileError(Refusal, ValueError):
    """A missing, empty or malformed data file; the message names the file (and line)."""


def local_path(spec: TaskSpec, split: str, root: Path) -> Path:
    if spec.local is None:
        raise DataFileError(f"task {spec.full_name} has no local file layout; unset data.root to use the hub")
    if split not in spec.local.files:
        raise DataFileError(f"task {spec.full_name} has no local file for split {split!r}; "
                            f"known splits: {', '.join(spec.local.files)}")
    return Path(root) / spec.local.dir / spec.local.split_file(split).file


def check_local_files(spec: TaskSpec, root: Path, splits: list[str]) -> None:
    """Fail before any model is loaded if an expected file is missing."""
    for split in splits:
        path = local_path(spec, split, root)
        if path.is_dir():
            raise DataFileError(f"{path} is a directory, not the data file of task {spec.full_name}, split {split!r} "
                                f"(data.root={root}; official layout {spec.local.dir}/"
                                f"{spec.local.split_file(split).file})")
        if not path.is_file():
            raise DataFileError(f"Missing data file for task {spec.full_name}, split {split!r}: expected {path} "
                                f"(data.root={root}; official layout {spec.local.dir}/"
                                f"{spec.local.split_file(split).file})")


def normalize_idx(value: Any) -> Any:
    """``"17"`` -> 17 (GLUE index columns, AX-b ids); anything else unchanged."""
    if isinstance(value, str) and _INTEGER.match(value.strip()):
        return int(value)
    return value


def _describe_columns(split_file: SplitFile) -> str:
    if split_file.header:
        return ", ".join(f"{field}={column!r}" for field, column in split_file.columns.items())
    return ", ".join(f"column {column} = {field}" for field, column in sorted(split_file.columns.items(),
                                                                              key=lambda item: int(item[1])))


def collect_records(path: Path, rows: Iterator[Optional[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The records a reader yields (``None`` = a blank line: counted and logged, never silently dropped),
    with ``idx`` normalised."""
    records: list[dict[str, Any]] = []
    blank = 0
    for record in rows:
        if record is None:
            blank += 1
            continue
        if "idx" in record:
            record["idx"] = normalize_idx(record["idx"])
        records.append(record)
    if blank:
        log.warning("%s: skipped %d blank line(s) (they carry no data)", path, blank)
    return records


def read_tsv(spec: TaskSpec, split: str, path: Path) -> list[dict[str, Any]]:
    return collect_records(path, _tsv_rows(spec, split, path))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return collect_records(path, _jsonl_rows(path))


def _tsv_rows(spec: TaskSpec, split: str, path: Path) -> Iterator[Optional[dict[str, Any]]]:
    split_file = spec.local.split_file(split)
    columns = split_file.columns
    labelled = split not in spec.test_splits
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header: Optional[list[str]] = None
        expected = split_file.num_columns
        if not split_file.header and expected is None:
            expected = max(int(c) for c in columns.values()) + 1
        for line_number, row in enumerate(reader, start=1):
            if not row or row == [""]:
                yield None
                continue
            if split_file.header and header is None:
                header = row
                expected = expected or len(header)
                # Test files carry no label column and some files no index column (idx falls back to the
                # row position); every other mapped column must be there.
                required = {f: c for f, c in columns.items() if f != "idx" and not (f == "label" and not labelled)}
                missing = [c for c in required.values() if c not in header]
                if missing:
                    raise DataFileError(f"{path}:{line_number}: header lacks columns {missing} (task {spec.full_name} "
                                        f"reads {_describe_columns(split_file)}); found {header}")
                continue
            if len(row) != expected:
                layout = f"header {header}" if header is not None else _describe_columns(split_file)
                raise DataFileError(f"{path}:{line_number}: expected {expected} tab-separated columns ({layout}), "
                                    f"found {len(row)}")
            record: dict[str, Any] = {"_where": f"{path}:{line_number}"}
            for field_name, column in columns.items():
                if header is not None:
                    if column in header:
                        record[field_name] = row[header.index(column)]
                elif int(column) < len(row):
                    record[field_name] = row[int(column)]
            if not labelled:
                record.pop("label", None)
            yield record


def describe_json_error(error: json.JSONDecodeError, line: str, last_line: bool) -> str:
    """What is wrong with one JSON line, in words: a line cut short (the object never closes, typical of a
    partial download or copy) is called truncated; otherwise json's reason and the column."""
    text = line.rstrip("\r\n")
    reason = error.msg.removesuffix(" at").removesuffix(":")  # "Invalid control character at" + " at column"
    cut_short = error.pos >= len(text.rstrip()) or error.msg.startswith("Unterminated string")
    if cut_short:
        where = "the file's last line" if last_line else "the line"
        newline = ", and the file does not end with a newline" if last_line and not line.endswith("\n") else ""
        return (f"truncated JSON: {where} ends at column {len(text) + 1} before its object closes{newline} "
                f"(an incomplete download or copy?)")
    return f"not valid JSON ({reason} at column {error.colno})"


def _jsonl_rows(path: Path) -> Iterator[Optional[dict[str, Any]]]:
    with open(path, encoding="utf-8-sig") as handle:
        lines = iter(enumerate(handle, start=1))
        following = next(lines, None)
        while following is not None:
            line_number, line = following
            following = next(lines, None)
            if not line.strip():
                yield None
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                problem = describe_json_error(error, line, last_line=following is None)
                raise DataFileError(f"{path}:{line_number}: {problem}; expected one JSON object per line") from None
            if not isinstance(record, dict):
                raise DataFileError(f"{path}:{line_number}: expected a JSON object, found {type(record).__name__}")
            record["_where"] = f"{path}:{line_number}"
            yield record


def load_raw_records(spec: TaskSpec, split: str, root: Optional[Path]) -> list[dict[str, Any]]:
    """Raw records of one split: from ``root`` (official layout) when given, else from the hub."""
    if root is not None:
        path = local_path(spec, split, root)
        if not path.is_file():
            check_local_files(spec, root, [split])
        records = read_tsv(spec, split, path) if spec.local.format == "tsv" else read_jsonl(path)
        if not records:
            raise DataFileError(f"{path}: split {split!r} of task {spec.full_name} is empty (no data rows)")
        return records
    return load_hub_records(spec, split)


def hub_split_name(spec: TaskSpec, split: str) -> str:
    """The hub's name for one of our splits (``hub.split_names``; a null entry = not on the hub)."""
    names = dict(spec.hub.get("split_names") or {})
    if split in names and names[split] is None:
        raise DataFileError(f"split {split!r} of task {spec.full_name} is not on the hub "
                            f"({spec.hub.get('path')}/{spec.hub.get('name')}); pass data.root=DIR with the official "
                            f"files (e.g. data.root=../shared/data)")
    return names.get(split, split)


def load_hub_split(spec: TaskSpec, split: str):
    """One split as a ``datasets.Dataset``: ``load_dataset(hub.path, hub.name, revision=hub.revision, split=...)``
    (offline, datasets serves its prepared cache of that config; see ``aotp.standin.datasets``)."""
    import datasets

    hub = spec.hub
    if not hub.get("path"):
        raise DataFileError(f"task {spec.full_name} has no hub dataset; pass data.root=DIR with the official files")
    hub_split = hub_split_name(spec, split)
    try:
        return datasets.load_dataset(hub["path"], hub.get("name"), revision=hub.get("revision"), split=hub_split)
    except Exception as error:  # datasets raises many types (ConnectionError, FileNotFoundError, ...)
        raise DataFileError(
            f"Could not load {hub.get('path')}/{hub.get('name')} split {hub_split!r} from the hub ({type(error).__name__}: "
            f"{error}). Offline, pass data.root=DIR with the official files (e.g. data.root=../shared/data)."
        ) from error


def hub_source_fingerprint(spec: TaskSpec, split: str) -> str:
    """What identifies the hub data a split is read from: the prepared Arrow files (their paths hold the
    commit sha, so a new upstream commit or a rebuilt stand-in changes the key), not the moving ref ``main``."""
    hub = spec.hub
    dataset = load_hub_split(spec, split)
    files = []
    for entry in dataset.cache_files:
        path = Path(entry["filename"])
        stat = path.stat()
        files.append(f"{path}:{stat.st_size}:{stat.st_mtime_ns}")
    return (f"hub:{hub.get('path')}:{hub.get('name')}:{hub.get('revision')}:{hub_split_name(spec, split)}:"
            f"{len(dataset)}:{';'.join(files) or getattr(dataset, '_fingerprint', '')}")


def load_hub_records(spec: TaskSpec, split: str) -> list[dict[str, Any]]:
    hub = spec.hub
    hub_split = hub_split_name(spec, split)
    dataset = load_hub_split(spec, split)
    records = []
    labelled = split not in spec.test_splits
    for index, row in enumerate(dataset):
        record = dict(row)
        record["_where"] = f"{hub['path']}/{hub.get('name')}[{hub_split}]#{index}"
        if not labelled:
            record.pop("label", None)
        records.append(record)
    if not records:
        raise DataFileError(f"{hub['path']}/{hub.get('name')}[{hub_split}]: split {split!r} of task "
                            f"{spec.full_name} is empty")
    return records
