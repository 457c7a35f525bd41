"""End-to-end runs of the CLI on tiny models: records, skipping, failures, kill -9 and resume."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from aotp.results.schema import RunRecord, committed_schema, validate
from tests.helpers import REPO_ROOT, run_cli

FAST = ["task=glue/rte", "trainer.progress=false", "data.max_length=64", "data.max_train_samples=96",
        "data.max_eval_samples=48", "trainer.batch_size=16", "method.lr=1e-3"]


def only_record(results_dir):
    records = list(results_dir.glob("*/result.json"))
    assert len(records) == 1, records
    return json.loads(records[0].read_text()), records[0]


@pytest.mark.parametrize("model", ["tiny_roberta", "tiny_deberta", "tiny_bert"])
def test_tiny_run_writes_a_success_record(model, shared_data, tmp_path):
    result = run_cli([f"model={model}", f"data.root={shared_data}", f"paths.results={tmp_path}", "trainer.max_steps=6",
                      f"paths.cache={tmp_path / 'cache'}", *FAST])
    assert result.returncode == 0, result.stderr[-3000:]
    record, path = only_record(tmp_path)
    assert record["status"] == "success" and record["schema_version"] == 3
    # the written form is the typed record's: every key of RunRecord, in order, valid against the schema file
    assert list(record) == [f.name for f in dataclasses.fields(RunRecord)] and validate(record, committed_schema()) == []
    assert RunRecord.from_dict(record).to_dict() == record
    assert record["task"] == "glue/rte" and record["model"] == model and record["method"] == "full_ft"
    assert path.parent.name.startswith(f"glue-rte__{model}__full_ft__seed42__") and record["run_id"] in path.parent.name
    assert 0.0 <= record["metrics"]["main"] == record["metrics"]["accuracy"] <= 1.0
    assert record["metrics"]["best_step"] == 6 and record["selection"]["steps_done"] == 6
    assert record["params"]["trainable"] == record["params"]["total"] == record["params"]["expected_trainable"]
    assert record["timings"]["train_seconds"] > 0 and record["timings"]["train_examples"] == 6 * 16
    assert {"git", "packages", "torch", "device"} <= set(record["env"]) and record["env"]["device"] == "cpu"
    assert record["config"]["model"]["name"] == model
    assert (path.parent / "metrics.jsonl").is_file() and (path.parent / "predictions" / "validation.jsonl").is_file()
    assert not (path.parent / "checkpoint").exists()  # checkpoints are dropped after success


def test_finished_run_is_skipped_and_failure_is_recorded(shared_data, tmp_path):
    args = ["model=tiny_bert", f"data.root={shared_data}", f"paths.results={tmp_path}", "trainer.max_steps=2", *FAST]
    assert run_cli(args).returncode == 0
    record, path = only_record(tmp_path)
    before = path.stat().st_mtime_ns
    again = run_cli(args)
    assert again.returncode == 0 and "Skipping" in again.stdout and "already succeeded" in again.stdout
    assert path.stat().st_mtime_ns == before

    # A run that crashes mid-way (the tiny model has 254 positions; 400 tokens overflow them) is
    # recorded as failed, with the error, and the process exits non-zero.
    failing = [a for a in args if not a.startswith("data.max_length")] + ["data.max_length=400", "seed=7"]
    crashed = run_cli(failing)
    assert crashed.returncode != 0
    failed = [json.loads(p.read_text()) for p in tmp_path.glob("*seed7*/result.json")]
    assert len(failed) == 1 and failed[0]["status"] == "failed"
    assert failed[0]["error"] and "Traceback" in failed[0]["traceback"]
    assert validate(failed[0], committed_schema()) == [] and failed[0]["metrics"] is None


def test_kill_minus_nine_then_resume_matches_uninterrupted_run(shared_data, tmp_path):
    args = ["model=tiny_bert", f"data.root={shared_data}", "trainer.max_steps=30", "trainer.eval_every=10",
            "trainer.checkpoint_every=2", *FAST]
    reference_dir, resumed_dir = tmp_path / "reference", tmp_path / "resumed"
    assert run_cli(args + [f"paths.results={reference_dir}"]).returncode == 0
    reference, _ = only_record(reference_dir)

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "aotp.run", *args, f"paths.results={resumed_dir}"], cwd=REPO_ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list(resumed_dir.glob("*/checkpoint/state.pt")) and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not list(resumed_dir.glob("*/result.json")), "the run finished before it could be killed"

    resumed = run_cli(args + [f"paths.results={resumed_dir}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from checkpoint at step" in resumed.stdout
    record, _ = only_record(resumed_dir)
    assert record["run_id"] == reference["run_id"]
    assert record["metrics"] == reference["metrics"]
    assert record["selection"]["history"] == reference["selection"]["history"]


def test_record_keeps_the_commit_state_taken_when_the_run_started(shared_data, tmp_path, monkeypatch):
    """A commit or edit made while a long run trains must not be credited with the run's results."""
    from aotp import run as run_module
    from aotp.results import record as record_module
    from tests.helpers import compose

    monkeypatch.setattr(run_module, "git_info", lambda: {"sha": "a" * 40, "dirty": False, "dirty_paths": []})  # at the start
    monkeypatch.setattr(record_module, "git_info", lambda paths=(): {"sha": "b" * 40, "dirty": True,
                                                                    "dirty_paths": ["x.py"]})  # any later call
    cfg = compose(["model=tiny_bert", f"data.root={shared_data}", f"paths.results={tmp_path}", "trainer.max_steps=2",
                   f"paths.cache={tmp_path / 'cache'}", *FAST])
    record = run_module.execute(cfg)
    at_start = {"sha": "a" * 40, "dirty": False, "dirty_paths": []}
    assert record["status"] == "success" and record["env"]["git"] == at_start
    assert only_record(tmp_path)[0]["env"]["git"] == at_start


def test_trainer_adam_betas_and_eps_reach_the_optimizer(shared_data, tmp_path, monkeypatch):
    """fairseq's RoBERTa recipe trains with Adam betas (0.9, 0.98) and eps 1e-6: the trainer options get there."""
    from aotp import run as run_module
    from aotp.trainer import loop
    from tests.helpers import compose

    built = []
    original = loop.build_optimizer

    def spy(*args, **kwargs):
        optimizer = original(*args, **kwargs)
        built.append(optimizer)
        return optimizer

    monkeypatch.setattr(loop, "build_optimizer", spy)
    cfg = compose(["model=tiny_bert", f"data.root={shared_data}", f"paths.results={tmp_path}", "trainer.max_steps=1",
                   f"paths.cache={tmp_path / 'cache'}", "trainer.adam_betas=[0.9,0.98]", "trainer.adam_eps=1e-6", *FAST])
    assert run_module.execute(cfg)["status"] == "success"
    (optimizer,) = built
    assert all(group["betas"] == (0.9, 0.98) and group["eps"] == 1e-6 for group in optimizer.param_groups)
