"""No silent CPU fallback (issue 26, item 2): paper experiments require a GPU, ``auto`` says when it falls back.

A fake ``nvidia-smi`` on PATH stands for a GPU box whose torch cannot use its GPUs (this machine's CPU-only
torch build is exactly that case: ``torch.version.cuda is None``)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from aotp import accelerator
from aotp.cli import ConfigError
from aotp.results.record import run_id
from aotp.run import to_container, validate
from tests.helpers import compose, run_cli

FAKE_SMI = """#!/bin/sh
if [ "$1" = "--query-gpu=name,driver_version" ]; then
  echo "NVIDIA H100 80GB HBM3, 580.159.04"
  echo "NVIDIA H100 80GB HBM3, 580.159.04"
  exit 0
fi
echo "| NVIDIA-SMI 580.159.04   Driver Version: 580.159.04   CUDA Version: 13.0     |"
"""
PAPER_RUN = ["experiment=paper_glue_roberta_base", "task=glue/rte", "method=aot_fc", "seed=1"]


@pytest.fixture
def gpu_box_without_cuda_torch(tmp_path, monkeypatch):
    """PATH holds an nvidia-smi listing two H100s; torch (a CPU build here) cannot use them."""
    folder = tmp_path / "bin"
    folder.mkdir()
    smi = folder / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    accelerator.nvidia_smi.cache_clear()
    monkeypatch.setattr(accelerator, "_warned_fallback", False)
    yield folder
    accelerator.nvidia_smi.cache_clear()


def test_paper_experiments_require_a_gpu_and_it_is_not_in_the_run_id():
    cfg = compose(PAPER_RUN)
    assert cfg.trainer.require_gpu is True
    assert compose(["task=glue/rte", "method=aot_fc"]).trainer.require_gpu is False  # a plain run does not
    # nor the CPU smoke sweep that shares the paper grid
    assert compose(["experiment=smoke_tiny", "task=glue/rte", "method=aot_fc"]).trainer.require_gpu is False
    assert run_id(to_container(cfg)) == run_id(to_container(compose([*PAPER_RUN, "trainer.require_gpu=false"])))


def test_a_paper_run_without_usable_cuda_is_refused_naming_build_driver_and_fix(gpu_box_without_cuda_torch, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    cfg = compose([*PAPER_RUN, f"paths.results={tmp_path}/runs", f"paths.cache={tmp_path}/cache"])
    with pytest.raises(ConfigError) as refused:
        validate(cfg)
    message = str(refused.value)
    assert "\n" not in message
    assert f"torch {torch.__version__} (a CPU-only build)" in message
    assert "2 GPU(s): NVIDIA H100 80GB HBM3, driver 580.159.04 (supports CUDA up to 13.0)" in message
    assert "Fix: install torch's CUDA build" in message


def test_a_cuda_build_that_cannot_reach_the_driver_is_told_to_match_it(gpu_box_without_cuda_torch, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.2")
    message = accelerator.gpu_refusal("auto")
    assert "built for CUDA 13.2" in message and "a torch build for CUDA <= 13.0" in message


def test_without_a_driver_the_refusal_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    accelerator.nvidia_smi.cache_clear()
    try:
        message = accelerator.gpu_refusal("auto")
    finally:
        accelerator.nvidia_smi.cache_clear()
    assert "nvidia-smi not found" in message and "trainer.require_gpu=false" in message


def test_require_gpu_with_a_cpu_device_is_refused_and_a_usable_gpu_is_not(monkeypatch):
    assert "trainer.device=cpu" in accelerator.gpu_refusal("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert accelerator.gpu_refusal("auto") is None and accelerator.gpu_refusal("cuda:1") is None


def test_the_cli_refuses_a_paper_sweep_once_before_it_starts(gpu_box_without_cuda_torch, tmp_path):
    """This machine's torch is a CPU build: the real refusal, one line and exit 2, for a run and a multirun."""
    env = {"PATH": os.environ["PATH"]}
    for multirun in ([], ["-m"]):
        result = run_cli([*multirun, *PAPER_RUN, f"paths.results={tmp_path}/runs"], env_overrides=env, timeout=120)
        assert result.returncode == 2, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: trainer.require_gpu=true but torch cannot use CUDA")
        assert "driver 580.159.04" in lines[0]
    assert not Path(tmp_path, "runs").exists()  # nothing ran, nothing recorded


def test_auto_falling_back_to_the_cpu_says_so_once_when_gpus_are_listed(gpu_box_without_cuda_torch, capsys):
    from aotp.trainer.loop import select_device

    assert select_device("auto").type == "cpu"
    assert select_device("auto").type == "cpu"
    err = capsys.readouterr().err
    assert err.count("WARNING: trainer.device=auto is training on the CPU although nvidia-smi lists 2 GPU(s)") == 1


def test_auto_on_a_machine_without_gpus_stays_quiet(tmp_path, monkeypatch, capsys):
    from aotp.trainer.loop import select_device

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(accelerator, "_warned_fallback", False)
    accelerator.nvidia_smi.cache_clear()
    try:
        assert select_device("auto").type == "cpu"
    finally:
        accelerator.nvidia_smi.cache_clear()
    assert "WARNING" not in capsys.readouterr().err
