"""Run identity and the self-describing run record (``result.json``).

The run id is a short hash of the *semantic* config: what changes the numbers (model, method,
task name and version, data subset, trainer hyperparameters, seed), not where files go, how runs
are logged or which device runs them. One ``result.json`` per run is the source of truth: written by
:func:`write_record` and read by :func:`read_record` only, as a typed :class:`RunRecord`
(:mod:`aotp.results.schema`: the dataclasses, the JSON Schema and the migration of older records).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any, Optional, Sequence

from aotp.paths import config_dir
from aotp.results.schema import SCHEMA_VERSION, Environment, GitState, RecordError, RunRecord, migrate

__all__ = ["SCHEMA_VERSION", "RecordError", "RunRecord", "environment", "failed_record", "git_info", "identity",
           "read_record", "run_dir_name", "run_id", "semantic_config", "succeeded_record", "write_json_atomic",
           "write_record"]
# Config keys that do not change results; everything else is part of the run id.
NON_SEMANTIC = {
    "paths": None,
    "logger": None,
    "experiment": None,
    "experiment_name": None,
    "hydra": None,
    "lock": None,
    # how a run is executed, not what it computes (thread count and device only reorder float sums)
    # (num_workers/pin_memory: where batches are collated; fused_optimizer/compile: which kernels run the same math;
    # micro_batch_size: how many of a step's examples share a forward, each keeping its loss weight: aotp.trainer.loop)
    "trainer": {"device", "threads", "progress", "log_every", "checkpoint_every", "eval_batch_size", "keep_weights",
                "num_workers", "pin_memory", "fused_optimizer", "compile", "micro_batch_size", "require_gpu"},
    "data": {"root", "cache", "truncation_warning", "allow_identical_choices"},
}
# Method options that say which outputs a run keeps, not what it computes (an AoT run's table file).
NON_SEMANTIC_METHOD_OPTIONS = {"save_table"}
# Keys added after runs were recorded, with their defaults: at the default a key is left out of the run
# id, so the ids (and the skip-if-done of sweeps) of earlier runs stay valid.
ADDED_LATER = {
    "data": {"pair_encoding": "cross"},
    "method": {"head_lr": None, "init_from": None},
    "trainer": {"adam_betas": [0.9, 0.999], "adam_eps": 1e-8, "group_by_length": False},
}


# Keys recorded in every run id so far with one value, pinned to it: ``force`` entered the id until it was
# seen to put a forced rerun in a second folder; pinned to its default, earlier ids stay and a forced
# rerun retrains in the same folder.
PINNED = {"force": False}


def semantic_config(config: dict[str, Any]) -> dict[str, Any]:
    semantic = {}
    for key, value in config.items():
        if key in NON_SEMANTIC and NON_SEMANTIC[key] is None:
            continue
        if key in NON_SEMANTIC and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in NON_SEMANTIC[key]}
        semantic[key] = value
    for key, value in PINNED.items():
        if key in semantic:
            semantic[key] = value
    method = semantic.get("method")
    if isinstance(method, dict) and isinstance(method.get("options"), dict):
        semantic["method"] = {**method, "options": {k: v for k, v in method["options"].items()
                                                    if k not in NON_SEMANTIC_METHOD_OPTIONS}}
    for key, defaults in ADDED_LATER.items():
        if isinstance(semantic.get(key), dict):
            semantic[key] = {k: v for k, v in semantic[key].items() if k not in defaults or v != defaults[k]}
    if isinstance(semantic.get("task"), dict):  # a task is identified by name + version, not its file layout
        task = semantic["task"]
        semantic["task"] = {"benchmark": task.get("benchmark"), "name": task.get("name"), "version": task.get("version"),
                            "max_length": task.get("max_length")}
        overrides = task_overrides(task)
        if overrides:
            semantic["task"]["overrides"] = overrides
    return semantic


# Task fields that say where the data comes from or describe it, not what the model sees.
TASK_LAYOUT_FIELDS = {"local", "hub", "description", "max_length", "official_sizes"}


def task_overrides(task: dict[str, Any]) -> dict[str, Any]:
    """Fields of ``task`` that differ from its shipped file ``configs/task/<benchmark>/<name>.yaml``.

    The task version stands for the file's content; a command-line override (e.g.
    ``task.format_options.evidence_words=75``) changes the examples without a new version, so it
    enters the run id. A task without a shipped file contributes all of its fields.
    """
    shipped = shipped_task(str(task.get("benchmark")), str(task.get("name")))
    return {key: value for key, value in sorted(task.items())
            if key not in TASK_LAYOUT_FIELDS and shipped.get(key) != value}


@functools.lru_cache(maxsize=None)
def shipped_task(benchmark: str, name: str) -> dict[str, Any]:
    """The shipped task file as a plain dict (read once per process: sweeps compute many run ids)."""
    from omegaconf import OmegaConf

    path = config_dir("task", benchmark, f"{name}.yaml")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True) if path.is_file() else {}


def run_id(config: dict[str, Any], length: int = 10) -> str:
    canonical = json.dumps(semantic_config(config), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def run_dir_name(config: dict[str, Any], identifier: str) -> str:
    task = config["task"]
    return f"{task['benchmark']}-{task['name']}__{config['model']['name']}__{config['method']['name']}__seed{config['seed']}__{identifier}"


def git_info(paths: Sequence[str] = ()) -> dict[str, Any]:
    """The commit state of the code: ``{"sha", "dirty", "dirty_paths"}`` (``paths``: only changes there count,
    e.g. the benchmark's benched code; default the whole tree; untracked files never count)."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *paths], cwd=root,
                                capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None, "dirty_paths": None}
    if not sha:
        return {"sha": None, "dirty": None, "dirty_paths": None}
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return {"sha": sha, "dirty": bool(changed), "dirty_paths": changed}


def package_versions(names=("aotp", "torch", "transformers", "adapters", "datasets", "hydra-core", "safetensors",
                            "scikit-learn", "scipy", "numpy", "wandb", "tokenizers", "huggingface-hub")
                     ) -> dict[str, str | None]:
    """Versions of the packages a run's numbers depend on (None: not installed). ``tokenizers`` and
    ``huggingface-hub`` tell the transformers majors' stacks apart (README "Support matrix")."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment(device=None, git: Optional[dict[str, Any]] = None, **extra: Any) -> Environment:
    """Where a run ran (the run record's ``env``; the benchmark's too, with its own facts as ``extra``).
    ``git``: the commit state taken when the run started (default: now)."""
    import torch

    git = git if git is not None else git_info()
    info = Environment(
        git=GitState(**git),
        python=sys.version.split()[0], platform=platform.platform(), packages=package_versions(),
        torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
        device=str(device) if device is not None else None, device_name=None, cpu_count=os.cpu_count(),
        threads=torch.get_num_threads(), extra=dict(extra))
    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        info.device_name = torch.cuda.get_device_name(torch.device(device))
    elif device is not None:
        info.device_name = platform.processor() or platform.machine()
    return info


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to ``path`` via a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(temporary, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=False, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


PREVIOUS_SUFFIX = ".previous"
SET_ASIDE = ("result.json", "metrics.jsonl")  # what a forced rerun replaces and keeps aside until it succeeds


def set_aside_previous(run_dir: Path) -> None:
    """Before a forced rerun: ``result.json`` -> ``result.json.previous`` (and the curves likewise)."""
    for name in SET_ASIDE:
        path = Path(run_dir) / name
        if path.exists():
            os.replace(path, path.with_name(name + PREVIOUS_SUFFIX))


def drop_previous(run_dir: Path) -> None:
    """After a forced rerun succeeded: the set-aside files go."""
    for name in SET_ASIDE:
        (Path(run_dir) / (name + PREVIOUS_SUFFIX)).unlink(missing_ok=True)


# ------------------------------------------------------------------- the one writer and the one reader


def write_record(path: Path, record: RunRecord) -> None:
    """Write ``record`` to ``path`` (``<run dir>/result.json``) atomically, in the current schema."""
    write_json_atomic(path, record.to_dict())


def read_record(path: Path) -> RunRecord | None:
    """The record at ``path`` as a :class:`RunRecord` (older schemas migrated), or None when there is none.

    A file that is not JSON or not a run record raises :class:`RecordError` naming the file and the key:
    records are written atomically, so such a file was edited or written by something else, and is
    reported rather than silently taken for a missing run."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise RecordError(f"{path}: unreadable ({error})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise RecordError(f"{path}: not JSON ({error})") from None
    return migrate(data, str(path))


def identity(cfg, spec, identifier: str, run_dir: Path, config: dict) -> dict[str, Any]:
    """The identity fields of a run's record (success or failure), as keyword arguments of :class:`RunRecord`."""
    return {"run_id": identifier, "run_dir": str(run_dir), "experiment": cfg.get("experiment_name"),
            "task": spec.full_name, "task_version": spec.version, "method": cfg.method.name, "model": cfg.model.name,
            "seed": int(cfg.seed), "config": config}


def failed_record(identity_fields: dict[str, Any], error: BaseException, started: float,
                  git: dict[str, Any]) -> RunRecord:
    """The record of a run that raised ``error`` (call inside the ``except`` block: it keeps the traceback)."""
    return RunRecord(**identity_fields, status="failed", error=f"{type(error).__name__}: {error}",
                     traceback=traceback.format_exc(), wall_seconds=time.time() - started, env=environment(git=git))


def succeeded_record(identity_fields: dict[str, Any], outcome: dict[str, Any], started: float,
                     git: dict[str, Any]) -> RunRecord:
    """A finished run's record: its identity, what it measured and the commit state
    taken when it started (the code that ran), not the one at its end. ``outcome``: the blocks
    :func:`aotp.run.finish_run` measured."""
    outcome["env"].git = GitState(**git)
    return RunRecord(**identity_fields, **outcome, status="success", wall_seconds=time.time() - started)


def drop_weights_unless_kept(cfg, run_dir: Path, record: RunRecord) -> None:
    """With ``trainer.keep_weights=false``, delete a succeeded run's ``trainable.safetensors`` (full_ft: the
    whole model) and say so in its record; the one rule for single and packed runs."""
    if not cfg.trainer.get("keep_weights", True):
        (run_dir / "trainable.safetensors").unlink(missing_ok=True)
        record.trainable_weights = "deleted after success (trainer.keep_weights=false)"
