"""Shared test fixtures. Tests never touch the network: both HF offline switches are set here."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from aotp.models import TaskModel, build_backbone  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT.parent / "shared" / "data").resolve()
TINY_FAMILIES = ("roberta", "bert", "deberta", "deberta_v2")

torch.set_num_threads(1)  # the machines are 2-core and shared; tests stay single-threaded


def make_tiny_task_model(family: str, head_type: str = "classification", num_labels: int = 2, seed: int = 0,
                         pair_encoding: str = "cross", **sizes) -> TaskModel:
    backbone = build_backbone({"source": "tiny", "name": f"tiny_{family}", "family": family, **sizes})
    return TaskModel(backbone, head_type, num_labels, seed=seed, pair_encoding=pair_encoding)


def tiny_batch(model: TaskModel, texts_a, texts_b=None, tokenizer=None):
    """Tokenise a list of sentence (pairs) with the tiny tokenizer into a padded batch."""
    from aotp.models.tiny_tokenizer import build_tiny_tokenizer

    tokenizer = tokenizer or build_tiny_tokenizer()
    return dict(tokenizer(list(texts_a), None if texts_b is None else list(texts_b), padding=True,
                          return_tensors="pt", return_token_type_ids=model.uses_token_type_ids))


@pytest.fixture(params=TINY_FAMILIES)
def tiny_family(request) -> str:
    return request.param


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real GLUE/SuperGLUE files not found at {SHARED_DATA}")
    return SHARED_DATA
