"""Warm start (method.init_from): a LoRA RTE run starts from a finished MNLI run's LoRA weights, as the LoRA
recipes for RTE/MRPC/STS-B do (--lora_path); a missing source is a one-line error before any model is built."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import FIXTURE_DATA, compose, run_cli

TINY = ["model=tiny_roberta", "method=lora", f"data.root={FIXTURE_DATA}", "trainer.progress=false",
        "data.max_length=64", "trainer.batch_size=4", "trainer.max_steps=3", "method.lr=5e-2", "seed=3"]


def overrides(tmp_path, *more):
    return TINY + [f"paths.results={tmp_path / 'runs'}", f"paths.cache={tmp_path / 'cache'}", *more]


def lora_tensors(state):
    return {name: value for name, value in state.items() if "lora" in name}


@pytest.fixture
def mnli_run(tmp_path):
    from aotp.run import execute

    args = overrides(tmp_path, "task=glue/mnli")
    record = execute(compose(args), overrides=args)
    assert record["status"] == "success"
    return record


def test_rte_run_starts_from_the_mnli_runs_lora_weights_and_trains(tmp_path, mnli_run, monkeypatch):
    from aotp import run as run_module
    from aotp.trainer import loop

    source = load_file(f"{mnli_run['run_dir']}/trainable.safetensors")
    trained_lora = lora_tensors(source)
    assert trained_lora and any(name.endswith("lora_B.default.weight") or "lora_B" in name for name in trained_lora)
    assert any(value.abs().sum() > 0 for name, value in trained_lora.items() if "lora_B" in name)  # B starts at 0

    at_step_zero = {}
    original_fit = loop.Trainer.fit

    def fit(self, *args, **kwargs):
        at_step_zero.update({n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad})
        return original_fit(self, *args, **kwargs)

    monkeypatch.setattr(loop.Trainer, "fit", fit)
    args = overrides(tmp_path, "task=glue/rte", "method.init_from=task:glue/mnli")
    record = run_module.execute(compose(args), overrides=args)
    assert record["status"] == "success"
    assert record["init_from"]["run_id"] == mnli_run["run_id"] and record["init_from"]["task"] == "glue/mnli"
    assert set(lora_tensors(at_step_zero)) == set(trained_lora)
    for name, value in trained_lora.items():
        assert torch.equal(at_step_zero[name], value), name  # exactly the source's weights at step 0
    # the head is fresh (MNLI has 3 classes, RTE 2) and the LoRA weights move from there
    assert at_step_zero["head.out_proj.weight"].shape[0] == 2 != source["head.out_proj.weight"].shape[0]
    after = load_file(f"{record['run_dir']}/trainable.safetensors")
    assert record["selection"]["steps_done"] == 3
    assert any(not torch.equal(after[name], value) for name, value in trained_lora.items())
    # a warm-started run is another run than a cold one
    cold = run_module.execute(compose(overrides(tmp_path, "task=glue/rte")), overrides=overrides(tmp_path, "task=glue/rte"))
    assert cold["run_id"] != record["run_id"] and cold["init_from"] is None


def test_init_from_takes_a_run_directory_or_a_run_id(tmp_path, mnli_run):
    from aotp.run import ConfigError, resolve_init_from

    for value in (mnli_run["run_dir"], mnli_run["run_id"]):
        cfg = compose(overrides(tmp_path, "task=glue/rte", f"method.init_from={value}"))
        assert str(resolve_init_from(cfg, None)) == mnli_run["run_dir"]
    other_method = compose(overrides(tmp_path, "task=glue/rte", "method=bitfit", f"method.init_from={mnli_run['run_id']}"))
    with pytest.raises(ConfigError, match="the source run is method=lora, this run method=bitfit"):
        resolve_init_from(other_method, None)


def test_a_missing_source_is_a_one_line_error_before_any_model_is_built(tmp_path, monkeypatch):
    import aotp.models.builders as builders
    from aotp.run import ConfigError, execute

    monkeypatch.setattr(builders, "build_backbone", lambda *a, **k: pytest.fail("a model was built"))
    args = overrides(tmp_path, "task=glue/rte", "method.init_from=task:glue/mnli")
    with pytest.raises(ConfigError) as error:
        execute(compose(args), overrides=args)
    message = str(error.value)
    assert "\n" not in message and message.startswith("method.init_from=task:glue/mnli: no finished run of this config "
                                                      "on glue/mnli at ")
    assert "run it first (task=glue/mnli, same overrides)" in message
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # nothing trained, no record
    with pytest.raises(ConfigError, match=r"no run directory named \*__0123456789 under paths.results"):
        execute(compose(overrides(tmp_path, "task=glue/rte", "method.init_from=0123456789")))
    with pytest.raises(ConfigError, match="method.init_from=task:glue/rte names this run's own task"):
        execute(compose(overrides(tmp_path, "task=glue/rte", "method.init_from=task:glue/rte")), overrides=[])


def test_the_cli_finds_the_source_from_its_own_overrides(tmp_path, mnli_run):
    result = run_cli(overrides(tmp_path, "task=glue/rte", "method.init_from=task:glue/mnli"), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Warm start: " in result.stdout and mnli_run["run_dir"] in result.stdout
    (record_path,) = [p for p in (tmp_path / "runs").glob("glue-rte*/result.json")]
    assert json.loads(record_path.read_text())["init_from"]["run_id"] == mnli_run["run_id"]
    missing = run_cli(overrides(tmp_path, "task=glue/rte", "method.init_from=task:glue/mnli", "seed=4"), timeout=600)
    assert missing.returncode == 2 and "Error: method.init_from=task:glue/mnli: no finished run" in missing.stderr
