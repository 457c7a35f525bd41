"""The record's ``execution`` block (issue 26, item 4): precision, TF32, micro-batch and, on CUDA, the peak
device memory of training and evaluation beside the budget's estimate.

The CPU run here has no device memory to read; the CUDA case is faked at the one seam that reads the
allocator (:func:`aotp.accelerator.peak_memory`), so the wiring from measurement to record and note is
what is tested; ``tests/gpu/test_gpu_record.py`` reads a real allocator."""

from __future__ import annotations

import json

import pytest

import aotp.run as run_module
from aotp.run import execute
from tests.helpers import FIXTURE_DATA, compose

ARGS = ["model=tiny_bert", "method=aot_fc", "task=glue/rte", f"data.root={FIXTURE_DATA}", "trainer.batch_size=4",
        "trainer.max_steps=2", "trainer.progress=false", "data.max_length=32", "data.cache=false"]


def run(tmp_path, *extra):
    cfg = compose([*ARGS, f"paths.results={tmp_path}/runs", *extra])
    record = execute(cfg, overrides=[])
    return record, json.loads(next((tmp_path / "runs").glob("*/result.json")).read_text())


def test_a_cpu_record_says_how_it_executed_and_has_no_device_memory(tmp_path):
    record, written = run(tmp_path)
    execution = written["execution"]
    assert execution["precision"] == "fp32" and execution["tf32"] is False
    assert execution["micro_batch_size"] == 4 and execution["accumulation_steps"] == 1
    assert execution["train_memory"] is None and execution["eval_memory"] is None
    assert execution["budget_gpu_bytes"] is None
    assert written["inference"]["check_precision"] == "fp32, tf32 off"
    assert written["env"]["device"] == "cpu" and written["schema_version"] == 3


def test_on_cuda_the_peaks_of_training_and_evaluation_are_recorded_beside_the_budget(tmp_path, monkeypatch, capsys):
    readings = iter([{"peak_allocated_bytes": 3_000_000_000, "peak_reserved_bytes": 3_500_000_000},
                     {"peak_allocated_bytes": 1_000_000_000, "peak_reserved_bytes": 1_200_000_000}])
    monkeypatch.setattr(run_module, "peak_memory", lambda device: next(readings))
    monkeypatch.setattr(run_module, "budget_gpu_estimate", lambda cfg: 2_750_000_000)
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 (faked)")
    _, written = run(tmp_path)
    execution = written["execution"]
    assert execution["train_memory"] == {"peak_allocated_bytes": 3_000_000_000, "peak_reserved_bytes": 3_500_000_000}
    assert execution["eval_memory"] == {"peak_allocated_bytes": 1_000_000_000, "peak_reserved_bytes": 1_200_000_000}
    assert execution["budget_gpu_bytes"] == 2_750_000_000
    out = capsys.readouterr().out
    assert "GPU memory (NVIDIA H100 (faked)): training peak 3 GB allocated / 3.5 GB reserved" in out
    assert "budget estimate 2.75 GB" in out


def test_the_budget_estimate_of_a_run_is_the_budgets_own_figure():
    from aotp.budget import run_budget

    cfg = compose(["model=roberta_large", "method=lora", "task=glue/rte"])
    assert run_module.budget_gpu_estimate(cfg) == run_budget(cfg)["gpu"]["peak"] > 1e9


def test_a_budget_that_cannot_be_computed_leaves_the_figure_out_without_failing(monkeypatch):
    import aotp.budget

    def broken(cfg):
        raise KeyError("architecture")

    monkeypatch.setattr(aotp.budget, "run_budget", broken)
    assert run_module.budget_gpu_estimate(compose(ARGS)) is None


@pytest.mark.parametrize("precision", ["bf16"])
def test_mixed_precision_is_recorded(tmp_path, precision):
    _, written = run(tmp_path, f"trainer.precision={precision}")
    assert written["execution"]["precision"] == precision
    assert written["inference"]["check_precision"] == "fp32, tf32 off"
