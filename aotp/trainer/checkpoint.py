"""Resumable checkpoints: trainable weights (safetensors) + optimizer, scheduler, RNG and loop state.

A checkpoint is the folder ``<run_dir>/checkpoint``. Saves and deletions are atomic under a kill at
any instruction: whatever a kill leaves behind, :func:`recover` turns it back into one complete
checkpoint (the newest one that was completely written) or none, and the next save succeeds.

Save protocol (each file and folder is fsynced before the next step, so "written" means on disk):

1. :func:`recover` the leftovers of an earlier kill (below);
2. write ``trainable.safetensors``, ``best.safetensors`` (when there is a best state) and ``state.pt``
   into ``checkpoint.tmp-<pid>/``, then the marker ``complete.json`` = ``{"step": N}`` last;
3. delete ``checkpoint/`` (``state.pt`` first, so a half-deleted folder is never taken as complete);
4. rename ``checkpoint.tmp-<pid>/`` to ``checkpoint/``.

Recovery rule, for any combination of ``checkpoint/``, ``checkpoint.old/`` and ``checkpoint.tmp*/``:
a folder is *complete* when it holds ``state.pt`` and ``trainable.safetensors`` and the marker (the
marker is not required of ``checkpoint/`` and ``checkpoint.old/``, which the earlier two-rename
protocol wrote without one);
the complete folder with the highest marker step wins (a marker-less one counts as step -1; ties:
``checkpoint/`` > ``checkpoint.tmp*`` > ``checkpoint.old/``); every other folder is deleted and the
winner is renamed to ``checkpoint/``. Every step of the recovery is itself a state the rule maps to
the same winner, so a kill during recovery is recovered by the next one.

Only one process may write a run's checkpoint at a time; the per-run lock
(:mod:`aotp.results.lock`) guarantees it, which is why leftover temporary folders of any pid are
garbage.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file

MARKER = "complete.json"  # written last into a new checkpoint
REQUIRED = ("state.pt", "trainable.safetensors")  # what every complete checkpoint holds; state.pt is deleted first


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.random.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


# The filesystem steps of the protocol. Each is one name so that a test can kill the protocol
# between any two of them (tests/unit/test_checkpoint_atomic.py).

def _fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entry list to disk (a rename is durable once its folder is synced)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_file(path: Path, write) -> None:
    """``write(path)`` creates the file; then it is fsynced."""
    write(path)
    _fsync_path(path)


def _make_dir(path: Path) -> None:
    path.mkdir(parents=True)


def _rename(source: Path, target: Path) -> None:
    os.replace(source, target)
    _fsync_path(target.parent)


def _remove_file(path: Path) -> None:
    path.unlink(missing_ok=True)
    _fsync_path(path.parent)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _delete_checkpoint(path: Path) -> None:
    """``state.pt`` first: from that instruction on, ``path`` is no longer complete, under either rule."""
    _remove_file(path / "state.pt")
    _remove_tree(path)


def _leftovers(directory: Path) -> list[Path]:
    """``checkpoint.old`` and every ``checkpoint.tmp*`` beside ``directory``, in a fixed order."""
    old = directory.with_name(directory.name + ".old")
    temporaries = sorted(directory.parent.glob(directory.name + ".tmp*")) if directory.parent.is_dir() else []
    return ([old] if old.exists() else []) + [t for t in temporaries if t.is_dir()]


def _completeness(path: Path, temporary: bool) -> Optional[int]:
    """The step of a complete checkpoint folder, -1 for a complete earlier-protocol one, None if not complete."""
    if not path.is_dir():
        return None
    if not all((path / name).is_file() for name in REQUIRED):
        return None  # a deletion started (it removes state.pt first), or a save that did not get that far
    marker = path / MARKER
    if marker.is_file():
        try:
            return int(json.loads(marker.read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a marker is written whole before it is fsynced; unreadable means not ours
    return None if temporary else -1  # a temporary folder without a marker is a save that did not finish


def recover(directory: Path) -> Optional[Path]:
    """Turn whatever a killed save or deletion left into ``directory`` (complete) or nothing.

    Returns ``directory`` if a complete checkpoint is there afterwards, else None. See the module
    docstring for the rule.
    """
    directory = Path(directory)
    old = directory.with_name(directory.name + ".old")
    candidates = [directory] + _leftovers(directory)
    rank = {path: 2 if path == directory else 0 if path == old else 1 for path in candidates}  # the tie-break
    complete = [(step, rank[path], path) for path in candidates
                if (step := _completeness(path, temporary=rank[path] == 1)) is not None]
    winner = max(complete, key=lambda item: item[:2])[2] if complete else None
    for path in candidates:
        if path != winner and path.exists():
            _delete_checkpoint(path)
    if winner is not None and winner != directory:
        _rename(winner, directory)
    return directory if winner is not None else None


def save_checkpoint(directory: Path, trainable: dict[str, torch.Tensor], best: Optional[dict[str, torch.Tensor]],
                    loop_state: dict[str, Any]) -> None:
    directory = Path(directory)
    recover(directory)
    temporary = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    _make_dir(temporary)
    _write_file(temporary / "trainable.safetensors", lambda path: save_tensors(trainable, path))
    if best is not None:
        _write_file(temporary / "best.safetensors", lambda path: save_tensors(best, path))
    _write_file(temporary / "state.pt", lambda path: torch.save({**loop_state, "rng": rng_state()}, path))
    step = int(loop_state.get("loop", {}).get("step", 0))
    _write_file(temporary / MARKER, lambda path: path.write_text(json.dumps({"step": step})))
    _fsync_path(temporary)
    if directory.exists():
        _delete_checkpoint(directory)
    _rename(temporary, directory)


def delete_checkpoint(directory: Path) -> None:
    """Remove a run's checkpoint and every leftover of it; safe under a kill (see the module docstring)."""
    directory = Path(directory)
    for path in [*_leftovers(directory), directory]:
        if path.exists():
            _delete_checkpoint(path)


def load_checkpoint(directory: Path) -> Optional[dict[str, Any]]:
    directory = recover(directory)
    if directory is None:
        return None
    state = torch.load(directory / "state.pt", weights_only=False)
    state["trainable"] = load_file(str(directory / "trainable.safetensors"))
    best = directory / "best.safetensors"
    state["best"] = load_file(str(best)) if best.is_file() else None
    return state
