"""Helpers shared by tests: compose configs in process and run the CLI in a subprocess."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE_DATA = REPO_ROOT / "tests" / "fixtures" / "data"


def compose(overrides: list[str]):
    from aotp.run import compose as run_compose

    return run_compose(overrides)


def run_cli(args: list[str], timeout: int = 300, module: str = "aotp.run",
            env_overrides: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for key, value in (env_overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def read_wandb_records(path: Path):
    """The protobuf records of an offline W&B run file (``run-<id>.wandb``): W&B's header (":W&B", magic,
    version) and then LevelDB-log framing, 32 KiB blocks of chunks (crc32, length, type: 1 full, 2 first,
    3 middle, 4 last) that join into serialised ``wandb_internal_pb2.Record`` messages."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    block, header = 32768, 7
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    position, pending = 7, b""
    while position + header <= len(data):
        left = block - position % block
        if left < header:  # a block's tail too short for a chunk header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + header])
        if kind == 0 and length == 0:  # zero fill
            position += left
            continue
        pending += data[position + header:position + header + length]
        position += header + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def key_tree(value):
    """A record's form: its nested keys and value types (lists by their first entry), not its values."""
    if isinstance(value, dict):
        return {k: key_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [key_tree(value[0])] if value else []
    return type(value).__name__


def round_to_tf32(tensor):
    """``tensor`` (fp32) rounded to TF32's 10-bit mantissa (round to nearest on the 13 dropped bits), as
    an Ampere+ tensor core reads a matmul's fp32 inputs when TF32 is allowed."""
    import torch

    bits = tensor.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


class EmulatedTF32:
    """While active, every ``torch.nn.functional.linear`` on fp32 inputs computes as a CUDA GPU does under
    TF32 *when TF32 is allowed* (``torch.backends.cuda.matmul.allow_tf32``, the flag CUDA reads):
    inputs rounded to TF32, products accumulated in fp32. With the flag off it is the plain fp32 linear,
    as on the GPU. ``with EmulatedTF32(allowed=True): ...`` also sets the flag (the state
    ``trainer.tf32=true`` leaves on CUDA) and restores both after."""

    def __init__(self, allowed: bool = True):
        self.allowed = allowed

    def __enter__(self):
        import torch
        import torch.nn.functional as F

        self.original, self.flag = F.linear, torch.backends.cuda.matmul.allow_tf32
        original = self.original

        def linear(x, weight, bias=None):
            if torch.backends.cuda.matmul.allow_tf32 and x.dtype == torch.float32 and weight.dtype == torch.float32:
                return original(round_to_tf32(x), round_to_tf32(weight), bias)
            return original(x, weight, bias)

        F.linear = linear
        torch.backends.cuda.matmul.allow_tf32 = self.allowed
        return self

    def __exit__(self, *exc):
        import torch
        import torch.nn.functional as F

        F.linear = self.original
        torch.backends.cuda.matmul.allow_tf32 = self.flag
        return False


def fake_venv(folder: Path, python_script: str) -> Path:
    """A venv folder whose ``bin/python`` is ``python_script`` (a shell script) and whose ``.installed`` stamp is
    newer than pyproject.toml, so ``make ... VENV=<it>`` runs its recipes with that python and installs nothing."""
    venv = Path(folder) / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(python_script)
    python.chmod(0o755)
    stamp = venv / ".installed"
    stamp.touch()
    later = (REPO_ROOT / "pyproject.toml").stat().st_mtime + 3600
    os.utime(stamp, (later, later))
    return venv


class RecordingLoggers:
    """A loop's loggers that keep every event: ``(kind, step, values)``; ``losses()`` the train losses."""

    def __init__(self):
        self.events = []

    def log(self, kind, step, values):
        self.events.append((kind, step, dict(values)))

    def start_at(self, step):
        assert step == 0

    def losses(self):
        return [values["loss"] for kind, _, values in self.events if kind == "train"]
