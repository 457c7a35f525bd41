"""aotp.assembly: a run built from its config (build_run) is the trained one up to its trainable state, and a
finished run reopened from its directory (load_run) reproduces the predictions it recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aotp.assembly import RunError, build_run, finished_record, load_run
from aotp.run import compose, execute
from aotp.tasks.formatting import FORMATTERS
from aotp.trainer.loop import predict_scores
from tests.helpers import FIXTURE_DATA


def overrides(tmp_path):
    return ["model=tiny_bert", "method=lora", "task=glue/rte", f"data.root={FIXTURE_DATA}", "trainer.max_steps=3",
            "trainer.batch_size=4", "trainer.progress=false", "trainer.device=cpu", "logger=none",
            "data.max_length=32",
            f"paths.results={tmp_path / 'runs'}", f"paths.cache={tmp_path / 'cache'}"]


def test_build_run_and_load_run_assemble_the_same_run(tmp_path):
    cfg = compose(overrides(tmp_path))
    record = execute(cfg)
    built = build_run(cfg)  # untrained: what the run started from
    assert built.spec.full_name == "glue/rte" and built.device == torch.device("cpu") and built.run_dir is None
    assert sorted(built.data.splits) == ["train", "validation"] and built.collator.label_dtype == torch.long
    again = build_run(cfg, data=False)  # seeded: the same initial state every time
    assert again.data is None
    first, second = built.method.trainable_state_dict(built.model), again.method.trainable_state_dict(again.model)
    assert all(torch.equal(first[name], second[name]) for name in first)

    loaded = load_run(record["run_dir"], device="cpu")
    assert loaded.record.to_dict() == json.loads((loaded.run_dir / "result.json").read_text()) and loaded.data is None
    assert loaded.config == record["config"] and not loaded.model.training
    # the same model (frozen weights included) with the trained state loaded
    built_state, loaded_state = built.model.state_dict(), loaded.model.state_dict()
    assert built_state.keys() == loaded_state.keys()
    trained = set(loaded.method.trainable_state_dict(loaded.model))
    assert all(torch.equal(built_state[name], loaded_state[name]) for name in built_state if name not in trained)
    assert any(not torch.equal(built_state[name], loaded_state[name]) for name in trained)
    # ... which predicts what the run recorded (the inference form's predictions, the same up to the tolerance)
    dev = built.data["validation"]
    scores = predict_scores(loaded.model, dev, loaded.collator, 8, loaded.device)
    formatted = FORMATTERS.get(loaded.spec.formatter).predictions(loaded.spec, dev.examples, scores)
    recorded = [json.loads(line) for line in (loaded.run_dir / "predictions" / "validation.jsonl").open()]
    assert [line["prediction"] for line in recorded] == np.asarray(formatted["predictions"]).tolist()


def test_only_a_finished_run_is_reopened(tmp_path):
    with pytest.raises(RunError, match="is not a run directory: .*result.json does not exist"):
        finished_record(tmp_path)
    (tmp_path / "result.json").write_text("{not json")
    with pytest.raises(RunError, match="result.json: not JSON"):
        finished_record(tmp_path)
    (tmp_path / "result.json").write_text(json.dumps({"status": "running"}))  # no writer produces it
    with pytest.raises(RunError, match=r"result.json.status: 'running'; valid: 'success', 'failed'"):
        finished_record(tmp_path)
    (tmp_path / "result.json").write_text(json.dumps({"status": "failed", "error": "boom", "config": {}}))
    with pytest.raises(RunError, match=r"has status 'failed'; only a finished \(success\) run can be served: boom$"):
        finished_record(tmp_path, use="served")
    (tmp_path / "result.json").write_text(json.dumps({"status": "success", "config": {}}))
    with pytest.raises(RunError, match="has no trained weights: .*trainable.safetensors does not exist"):
        load_run(tmp_path)
