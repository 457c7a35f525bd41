"""Resumable checkpoints: trainable weights (safetensors) + optimizer, scheduler, RNG and loop state.

A checkpoint is a directory written under a temporary name and renamed into place, so a process
killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file


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


def save_checkpoint(directory: Path, trainable: dict[str, torch.Tensor], best: Optional[dict[str, torch.Tensor]],
                    loop_state: dict[str, Any]) -> None:
    directory = Path(directory)
    temporary = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    save_tensors(trainable, temporary / "trainable.safetensors")
    if best is not None:
        save_tensors(best, temporary / "best.safetensors")
    torch.save({**loop_state, "rng": rng_state()}, temporary / "state.pt")
    previous = directory.with_name(directory.name + ".old")
    if directory.exists():
        os.replace(directory, previous)
    os.replace(temporary, directory)
    shutil.rmtree(previous, ignore_errors=True)


def load_checkpoint(directory: Path) -> Optional[dict[str, Any]]:
    directory = Path(directory)
    if not (directory / "state.pt").is_file():
        old = directory.with_name(directory.name + ".old")  # killed between the two renames
        if (old / "state.pt").is_file():
            directory = old
        else:
            return None
    state = torch.load(directory / "state.pt", weights_only=False)
    state["trainable"] = load_file(str(directory / "trainable.safetensors"))
    best = directory / "best.safetensors"
    state["best"] = load_file(str(best)) if best.is_file() else None
    return state
