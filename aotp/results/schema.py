"""The typed run record (``result.json``), its JSON Schema and the migration of older records.

:class:`RunRecord` is the one form of a run's record: :func:`aotp.results.record.write_record` writes
``RunRecord.to_dict()`` and :func:`aotp.results.record.read_record` returns a ``RunRecord`` (through
:func:`migrate`, so a record of any earlier schema reads the same way). The JSON Schema
``run_record.schema.json`` beside this file is generated from the dataclasses (:func:`json_schema`);
a test keeps the committed file equal to the generated one.

Schema versions:

* 1 (issues 1-15): the blocks of a success record, some absent (``init_from``, ``truncation``,
  ``trainable_weights``, ``selection.skipped_steps`` came later; a failed record has ``error`` and
  ``traceback`` instead of the result blocks). Records without ``schema_version`` (hand-written) read
  as version 1, their identity taken from ``config`` where absent.
* 2: every key of :class:`RunRecord` is present (``null`` where it does not apply, e.g. ``metrics`` of
  a failed run), ``status`` is ``success`` or ``failed``, and ``env.git`` has ``dirty_paths``. The
  benchmark (:mod:`aotp.bench`) writes the same ``env`` block (:class:`Environment`).
* 3 (issue 26): ``execution`` (how the run executed, none of it in the run id: precision and TF32, micro-batch and accumulation, peak device memory of training and of evaluation,
  the budget's GPU-memory estimate beside them) and ``inference.check_precision`` (the numeric settings
  the inference-form check ran under). A version-2 record reads with both ``null``.

Unknown keys are refused (a misspelt key is an error, not a silently missing value), except in the
blocks that carry open-ended facts: ``env`` (a tool's own facts, e.g. the benchmark's load average) and
``inference`` (the method's facts from ``prepare_for_inference``).
"""

from __future__ import annotations

import dataclasses
import json
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args, get_origin, get_type_hints

from aotp.cli import Refusal

SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
SCHEMA_FILE = Path(__file__).with_name("run_record.schema.json")
EXTRA = "extra"  # the field that holds a block's open-ended keys, written flat beside the typed ones


class RecordError(Refusal, ValueError):
    """A record that does not fit the schema; the message names the file and the key (a command refuses it
    in one line, as any bad input file)."""


# ------------------------------------------------------------------------------------------- the blocks


class Block:
    """A part of a record: ``to_dict()`` gives its JSON form (see :func:`to_dict`)."""

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


@dataclass(kw_only=True)
class GitState(Block):
    """The commit a run's code came from. ``dirty``: tracked files differed from it (the benchmark: only
    its benched code, see ``aotp.bench.inference.BENCHED_CODE``); ``dirty_paths``: which."""

    sha: Optional[str] = None
    dirty: Optional[bool] = None
    dirty_paths: Optional[list[str]] = None


@dataclass(kw_only=True)
class Environment(Block):
    """Where a run (or a benchmark) ran; ``extra``: a tool's own facts (written flat beside these)."""

    git: GitState = field(default_factory=GitState)
    python: Optional[str] = None
    platform: Optional[str] = None
    packages: Optional[dict[str, Optional[str]]] = None
    torch: Optional[str] = None
    cuda: Optional[str] = None
    cuda_available: Optional[bool] = None
    device: Optional[str] = None
    device_name: Optional[str] = None
    cpu_count: Optional[int] = None
    threads: Optional[int] = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class Selection(Block):
    """How the kept (best) state was chosen during training."""

    best_step: Optional[int] = None
    best_main_during_training: Optional[float] = None
    stopped_early: Optional[bool] = None
    total_steps: Optional[int] = None
    steps_done: Optional[int] = None
    skipped_steps: Optional[int] = None  # absent before mixed precision: None = not recorded
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per evaluation: step, main, metrics


@dataclass(kw_only=True)
class Params(Block):
    trainable: Optional[int] = None
    total: Optional[int] = None
    expected_trainable: Optional[int] = None  # the method's formula (aotp/methods/*)
    share: Optional[float] = None


@dataclass(kw_only=True)
class WarmStart(Block):
    """``method.init_from``: the run whose trained weights this run started from."""

    run_dir: Optional[str] = None
    run_id: Optional[str] = None
    task: Optional[str] = None
    tensors: Optional[int] = None
    parameters: Optional[int] = None


@dataclass(kw_only=True)
class Inference(Block):
    """The inference-form check; ``extra``: the method's facts (table shape, merged modules, ...)."""

    max_abs_logit_diff: Optional[float] = None
    tolerance: Optional[float] = None
    prepare_seconds: Optional[float] = None
    # the numeric settings both forms were scored under, e.g. "fp32, tf32 off" (aotp.run.exact_precision);
    # None in records before schema 3
    check_precision: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class Truncation(Block):
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> counts (aotp/tasks/truncation.py)
    warnings: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class Timings(Block):
    train_seconds: Optional[float] = None
    eval_seconds: Optional[float] = None
    train_examples_per_second: Optional[float] = None
    train_examples: Optional[int] = None


@dataclass(kw_only=True)
class DeviceMemory(Block):
    """Peak memory of one phase on a CUDA device, from torch's caching allocator (``max_memory_allocated``:
    tensors; ``max_memory_reserved``: what the allocator holds from the driver, the figure an OOM is about)."""

    peak_allocated_bytes: Optional[int] = None
    peak_reserved_bytes: Optional[int] = None


@dataclass(kw_only=True)
class Execution(Block):
    """How a run executed (schema 3; the device and its name are ``env``'s): nothing here is part of the
    run id. ``train_memory`` /
    ``eval_memory``: peak device memory of training (its dev evaluations included) and of the final
    evaluations (inference-form check), on CUDA only (None elsewhere; a packed run's training peak is its
    pack's, K runs on one backbone); ``budget_gpu_bytes``: the budget's
    estimate of the run's GPU peak (:mod:`aotp.budget`), to check it against what ran."""

    precision: Optional[str] = None
    tf32: Optional[bool] = None  # TF32 matmuls allowed while training (CUDA with trainer.tf32=true)
    micro_batch_size: Optional[int] = None  # examples per forward/backward
    micro_batch_source: Optional[str] = None  # "batch_size" (no split), "config" (trainer.micro_batch_size), "auto"
    accumulation_steps: Optional[int] = None  # micro-batches per optimizer step
    train_memory: Optional[DeviceMemory] = None
    eval_memory: Optional[DeviceMemory] = None
    budget_gpu_bytes: Optional[int] = None


Number = Union[int, float]


@dataclass(kw_only=True)
class RunRecord(Block):
    """One run's ``result.json``. Identity (``run_id`` = hash of ``config``, see ``record.run_id``),
    outcome (``status``; ``error``/``traceback`` of a failed run; the result blocks of a finished one)
    and where it ran (``env``)."""

    schema_version: Literal[3] = SCHEMA_VERSION
    run_id: Optional[str] = None
    run_dir: Optional[str] = None
    experiment: Optional[str] = None
    task: Optional[str] = None  # "<benchmark>/<name>"
    task_version: Optional[Union[int, str]] = None
    method: Optional[str] = None
    model: Optional[str] = None
    seed: Optional[int] = None
    config: dict[str, Any] = field(default_factory=dict)  # the resolved config the run id is computed from
    status: Literal["success", "failed"]
    error: Optional[str] = None
    traceback: Optional[str] = None
    wall_seconds: Optional[float] = None
    metrics: Optional[dict[str, Optional[Number]]] = None  # dev metrics of the kept state; "main", "best_step"
    selection: Optional[Selection] = None
    params: Optional[Params] = None
    init_from: Optional[WarmStart] = None
    inference: Optional[Inference] = None
    data: Optional[dict[str, int]] = None  # split -> examples
    truncation: Optional[Truncation] = None
    timings: Optional[Timings] = None
    execution: Optional[Execution] = None
    trainable_weights: Optional[str] = None  # a note when trainable.safetensors was deleted after success
    env: Environment = field(default_factory=Environment)

    @property
    def succeeded(self) -> bool:
        return self.status == "success"

    @property
    def main(self) -> Optional[float]:
        """The dev main metric of a finished run (None for a failed one)."""
        return None if not self.metrics or self.metrics.get("main") is None else float(self.metrics["main"])

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "record") -> "RunRecord":
        """A record of the current schema (every key present); older ones go through :func:`migrate`."""
        return from_dict(cls, data, where)


# ------------------------------------------------------------------------------- dict <-> dataclasses


def to_dict(value: Any) -> Any:
    """The JSON form: fields in declaration order, ``extra`` written flat after the typed keys."""
    if dataclasses.is_dataclass(value):
        out = {}
        for f in dataclasses.fields(value):
            if f.name == EXTRA:
                out.update({k: to_dict(v) for k, v in getattr(value, EXTRA).items()})
            else:
                out[f.name] = to_dict(getattr(value, f.name))
        return out
    if isinstance(value, dict):
        return {str(k): to_dict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_dict(v) for v in value]
    return value


def from_dict(cls, data: Any, where: str, lenient: bool = False):
    """``cls`` from its JSON form. ``lenient`` (migration of older records): a missing key takes its
    default; otherwise every key must be present. Unknown keys are refused unless ``cls`` has ``extra``."""
    if not isinstance(data, dict):
        raise RecordError(f"{where}: expected an object, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values, extra = {}, {}
    for key, value in data.items():
        if key in names and key != EXTRA:
            values[key] = _convert(value, hints[key], f"{where}.{key}", lenient)
        elif EXTRA in names:
            extra[key] = value
        else:
            raise RecordError(f"{where}: unknown key {key!r} (valid: {', '.join(n for n in names if n != EXTRA)})")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in (required if lenient else names) if n != EXTRA and n not in data]
    if missing:
        raise RecordError(f"{where}: missing key(s) {', '.join(missing)}")
    if EXTRA in names:
        values[EXTRA] = extra
    return cls(**values)


def _convert(value: Any, hint: Any, where: str, lenient: bool) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, where, lenient)
            except RecordError as error:
                errors.append(str(error))
        raise RecordError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {_names(args)}")
    if origin is Literal:
        if value not in args:
            raise RecordError(f"{where}: {value!r}; valid: {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where, lenient)
    if origin is dict:
        if not isinstance(value, dict):
            raise RecordError(f"{where}: expected an object, got {type(value).__name__}")
        return {k: _convert(v, args[1], f"{where}.{k}", lenient) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise RecordError(f"{where}: expected a list, got {type(value).__name__}")
        return [_convert(v, args[0], f"{where}[{i}]", lenient) for i, v in enumerate(value)]
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value  # an integral number written as 12 stays 12: the record reads back as written
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    raise RecordError(f"{where}: expected {_names([hint])}, got {type(value).__name__} {value!r:.60}")


def _names(hints) -> str:
    return " or ".join(getattr(h, "__name__", str(h)) for h in hints if h is not type(None))


# ------------------------------------------------------------------------------------------ migration


def migrate(record: dict[str, Any], where: str = "record") -> RunRecord:
    """Any readable record -> :class:`RunRecord` of the current schema (see the module docstring)."""
    if not isinstance(record, dict):
        raise RecordError(f"{where}: a run record is a JSON object, got {type(record).__name__}")
    version = record.get("schema_version", 1)
    if version == SCHEMA_VERSION:
        return RunRecord.from_dict(record, where)
    if version == 2:  # schema 3 added execution and inference.check_precision: null in a version-2 record
        return from_dict(RunRecord, {**record, "schema_version": SCHEMA_VERSION}, where, lenient=True)
    if version != 1:
        raise RecordError(f"{where}: schema_version {version!r}; this aotp reads versions "
                          f"{', '.join(map(str, READABLE_VERSIONS))}")
    upgraded = {**record, "schema_version": SCHEMA_VERSION}
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    task = config.get("task") if isinstance(config.get("task"), dict) else {}
    # identity a hand-written record may leave to its config (the aggregator's fallbacks until version 2)
    derived = {"task": f"{task['benchmark']}/{task['name']}" if "benchmark" in task and "name" in task else None,
               "task_version": task.get("version"), "method": (config.get("method") or {}).get("name"),
               "model": (config.get("model") or {}).get("name"), "seed": config.get("seed")}
    for key, value in derived.items():
        if upgraded.get(key) is None:
            upgraded[key] = value
    if isinstance(upgraded.get("env"), dict):
        upgraded["env"] = to_dict(migrate_environment(upgraded["env"], f"{where}.env"))
    return from_dict(RunRecord, upgraded, where, lenient=True)


# The benchmark's environment until its schema 3 (aotp/bench/inference.py): git_sha/dirty_paths at the
# top level, library versions as keys of their own, the GPU's name under "gpu".
BENCH_V2_PACKAGES = ("transformers", "adapters")


def migrate_environment(env: dict[str, Any], where: str = "env") -> Environment:
    """A run record's or a benchmark's ``env`` block, of any version, as an :class:`Environment`."""
    if not isinstance(env, dict):
        raise RecordError(f"{where}: expected an object, got {type(env).__name__}")
    env = dict(env)
    if "git_sha" in env or "dirty_paths" in env:  # the benchmark's own block (schema 1-2 of its files)
        paths = env.pop("dirty_paths", None)
        env["git"] = {"sha": env.pop("git_sha", None), "dirty": bool(paths) if paths is not None else None,
                      "dirty_paths": paths}
        packages = {name: env.pop(name) for name in BENCH_V2_PACKAGES if name in env}
        env["packages"] = {**packages, **(env.get("packages") or {})}
        if "gpu" in env:
            env["device_name"] = env.pop("gpu")
    return from_dict(Environment, env, where, lenient=True)


# ---------------------------------------------------------------------------------------- JSON Schema


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of :class:`RunRecord`, generated from the dataclasses."""
    definitions: dict[str, Any] = {}
    root = _schema_of(RunRecord, definitions)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "aotp run record (result.json)",
            "description": f"Schema version {SCHEMA_VERSION}; generated by aotp.results.schema.json_schema(), "
                           "do not edit by hand.",
            "$ref": root["$ref"], "$defs": dict(sorted(definitions.items()))}


def _schema_of(hint: Any, definitions: dict[str, Any]) -> dict[str, Any]:
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return {}
    if origin in (Union, types.UnionType):
        # sorted: typing caches equal unions, so Union[int, str] may come back as Union[str, int] when another
        # module built that one first; the schema must not depend on import order
        options = sorted((_schema_of(a, definitions) for a in args if a is not type(None)),
                         key=lambda option: json.dumps(option, sort_keys=True))
        if type(None) in args:
            options.append({"type": "null"})
        return options[0] if len(options) == 1 else {"anyOf": options}
    if origin is Literal:
        return {"enum": list(args)}
    if dataclasses.is_dataclass(hint):
        name = hint.__name__
        if name not in definitions:
            definitions[name] = {}  # placeholder against recursion
            hints = get_type_hints(hint)
            names = [f.name for f in dataclasses.fields(hint) if f.name != EXTRA]
            definitions[name] = {"type": "object", "description": " ".join((hint.__doc__ or name).split()),
                                 "properties": {n: _schema_of(hints[n], definitions) for n in names},
                                 "required": names,
                                 "additionalProperties": any(f.name == EXTRA for f in dataclasses.fields(hint))}
        return {"$ref": f"#/$defs/{name}"}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema_of(args[1], definitions)}
    if origin is list:
        return {"type": "array", "items": _schema_of(args[0], definitions)}
    return {"type": {int: "integer", float: "number", str: "string", bool: "boolean"}[hint]}


def committed_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text())


def write_schema_file() -> None:
    """Regenerate ``run_record.schema.json`` (after changing a dataclass above):
    ``python -c "from aotp.results.schema import write_schema_file; write_schema_file()"``."""
    SCHEMA_FILE.write_text(json.dumps(json_schema(), indent=2) + "\n")


def validate(instance: Any, schema: Optional[dict[str, Any]] = None) -> list[str]:
    """Errors of ``instance`` against the run-record JSON Schema ([] when it is valid).

    The ``jsonschema`` package is not a dependency of aotp, so this checks the keywords the generated
    schema uses, and only those: ``$ref`` (to ``#/$defs``), ``type``, ``enum``, ``anyOf``,
    ``properties``, ``required``, ``additionalProperties`` and ``items``. A schema with other keywords is
    refused rather than half-checked."""
    schema = schema if schema is not None else json_schema()  # the same as the committed file (a test checks)
    errors: list[str] = []
    _check(instance, schema, schema, "record", errors)
    return errors


KEYWORDS = {"$schema", "$id", "title", "description", "$defs", "$ref", "type", "enum", "anyOf", "properties",
            "required", "additionalProperties", "items"}
JSON_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _check(value: Any, schema: dict, root: dict, where: str, errors: list[str]) -> None:
    unknown = set(schema) - KEYWORDS
    if unknown:
        raise ValueError(f"schema keyword(s) {sorted(unknown)} at {where} are not supported by this checker")
    if "$ref" in schema:
        _check(value, root["$defs"][schema["$ref"].removeprefix("#/$defs/")], root, where, errors)
    if "anyOf" in schema:
        trials = []
        for option in schema["anyOf"]:
            trial: list[str] = []
            _check(value, option, root, where, trial)
            if not trial:
                break
            trials.append(trial)
        else:
            errors.append(f"{where}: fits none of the allowed forms ({'; '.join(t[0] for t in trials)})")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if "type" in schema and not _is_type(value, schema["type"]):
        errors.append(f"{where}: expected {schema['type']}, got {type(value).__name__}")
        return
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{where}: missing key {key!r}")
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                _check(item, properties[key], root, f"{where}.{key}", errors)
            elif schema.get("additionalProperties") is False:
                errors.append(f"{where}: unknown key {key!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                _check(item, schema["additionalProperties"], root, f"{where}.{key}", errors)
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            _check(item, schema["items"], root, f"{where}[{index}]", errors)


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, JSON_TYPES[name])
