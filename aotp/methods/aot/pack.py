"""On-disk task pack of a finished AoT run: what multi-task inference loads per task.

Layout (``run_dir/inference/``, written by ``AoTMethod.prepare_for_inference``)::

    pack.json               format, method + options, head type/size, table shape/dtype, file names
    aot_reparam.safetensors the reparametrization's parameters: what reproduces the table (always; MBs)
    aot_table.safetensors   tensor "table" (|V|, L, d) in fp32/fp16/bf16  (only with save_table: true; GBs)
    head.safetensors        the task head's state dict (dense.*, out_proj.*), fp32

Without the table file, :mod:`aotp.inference` materialises the table from the reparametrization
when it loads the pack (``AoTMethod.load_bias``).

The run's identity (backbone, task spec, method) is in ``run_dir/result.json`` (key ``config``),
written by the runner; :mod:`aotp.inference` reads both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from aotp.models.task_model import TaskHead

PACK_FORMAT = "aotp.aot_pack/1"
PACK_FILE = "pack.json"
TABLE_FILE = "aot_table.safetensors"
REPARAM_FILE = "aot_reparam.safetensors"
HEAD_FILE = "head.safetensors"
TABLE_TENSOR = "table"


def head_info(head: TaskHead) -> dict[str, Any]:
    return {"hidden_size": head.dense.in_features, "num_outputs": head.out_proj.out_features,
            "dropout": float(head.dropout.p)}


def save_head(head: TaskHead, path: Path) -> None:
    save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in head.state_dict().items()}, str(path))


def load_head(path: Path, hidden_size: int, num_outputs: int, dropout: float = 0.0) -> TaskHead:
    head = TaskHead(hidden_size, num_outputs, dropout)
    head.load_state_dict(load_file(str(path)))
    return head.eval()


def write_pack_json(pack_dir: Path, info: dict[str, Any]) -> Path:
    path = pack_dir / PACK_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"format": PACK_FORMAT, **info}, indent=2, sort_keys=True))
    tmp.replace(path)
    return path


def read_pack_json(pack_dir: Path) -> dict[str, Any]:
    path = Path(pack_dir) / PACK_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no AoT task pack at {path}: the run has not been prepared for inference "
                                "(AoTMethod.prepare_for_inference writes it after training)")
    info = json.loads(path.read_text())
    if info.get("format") != PACK_FORMAT:
        raise ValueError(f"{path}: unsupported pack format {info.get('format')!r}, expected {PACK_FORMAT!r}")
    return info
