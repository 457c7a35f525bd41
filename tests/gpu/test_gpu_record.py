"""A run on CUDA (``make test-gpu``; skipped without CUDA): the record holds the GPU's name and the peak memory
of training and evaluation, LoRA's inference check passes after TF32 training, and TF32 is restored."""

from __future__ import annotations

import json

import pytest
import torch

from aotp.run import execute
from tests.helpers import FIXTURE_DATA, compose

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("method,precision", [("lora", "fp32"), ("lora", "bf16"), ("aot_fc", "bf16")])
def test_a_cuda_run_records_its_gpu_and_memory(tmp_path, method, precision):
    cfg = compose(["model=tiny_roberta", "model.hidden_size=512", "model.num_layers=4", "model.num_heads=8",
                   f"method={method}", "task=glue/rte", f"data.root={FIXTURE_DATA}", "trainer.device=cuda",
                   f"trainer.precision={precision}", "trainer.max_steps=5", "trainer.batch_size=4",
                   "trainer.progress=false", f"paths.results={tmp_path}/runs", "data.cache=false"])
    execute(cfg, overrides=[])
    written = json.loads(next((tmp_path / "runs").glob("*/result.json")).read_text())
    assert written["status"] == "success"
    assert written["env"]["device_name"] == torch.cuda.get_device_name(0)
    execution = written["execution"]
    assert execution["tf32"] is True and torch.backends.cuda.matmul.allow_tf32  # trained under TF32, restored after
    for phase in ("train_memory", "eval_memory"):
        peaks = execution[phase]
        assert 0 < peaks["peak_allocated_bytes"] <= peaks["peak_reserved_bytes"]
    assert written["inference"]["check_precision"] == "fp32, tf32 off"
    assert written["inference"]["max_abs_logit_diff"] <= written["inference"]["tolerance"]
