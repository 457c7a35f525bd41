"""A run is trained once: concurrent launches are serialised by its lock; force=true retrains in place.

Also: the run ids of the committed records are what the current code computes (what enters the id
changed: ``force`` and ``lock`` do not), so sweeps keep skipping them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from aotp.results.record import run_dir_name, run_id
from tests.helpers import FIXTURE_DATA, REPO_ROOT, compose, run_cli

ARGS = ["model=tiny_bert", "task=glue/rte", f"data.root={FIXTURE_DATA}", "trainer.batch_size=2", "trainer.progress=false",
        "data.max_length=32"]


def cli_env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled",
            "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def events(run_dir: Path) -> list[tuple[str, int]]:
    return [(e["kind"], e["step"]) for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]


def test_two_concurrent_launches_of_one_run_train_it_once(tmp_path):
    args = [*ARGS, "trainer.max_steps=300", "trainer.eval_every=100", f"paths.results={tmp_path / 'runs'}",
            f"paths.cache={tmp_path / 'cache'}", "lock.wait_seconds=600", f"hydra.run.dir={tmp_path / 'hydra'}"]
    launches = [subprocess.Popen([sys.executable, "-m", "aotp.run", *args], cwd=REPO_ROOT, env=cli_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [launch.communicate(timeout=600) for launch in launches]
    assert [launch.returncode for launch in launches] == [0, 0], [err[-2000:] for _, err in outputs]
    trained = [out for out, _ in outputs if "Record:" in out]
    skipped = [out for out, _ in outputs if "Skipping" in out and "already succeeded" in out]
    assert len(trained) == 1 and len(skipped) == 1, outputs
    assert "Waiting up to 600 s for run glue-rte__tiny_bert" in skipped[0]  # it found the other one training
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "result.json").read_text())["status"] == "success"
    logged = events(run_dir)
    assert len(logged) == len(set(logged)) == 300 + 3  # train loss every step (trainer.log_every=null), 3 evaluations: none twice
    assert not (run_dir / "run.lock").exists()


def test_a_launch_of_a_locked_run_exits_2_naming_the_owner_and_writes_nothing(tmp_path):
    args = [*ARGS, "trainer.max_steps=2", f"paths.results={tmp_path}", f"paths.cache={tmp_path / 'cache'}",
            f"hydra.run.dir={tmp_path / 'hydra'}"]
    run_dir = tmp_path / run_dir_name(to_dict(args), run_id(to_dict(args)))
    run_dir.mkdir()
    (run_dir / "run.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                  "started": "2026-12-02T02:00:00+00:00", "token": "test"}))
    result = run_cli(args)
    assert result.returncode == 2, result.stderr[-3000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"Error: run {run_dir.name} is being trained by pid {os.getpid()} on "
                              f"{socket.gethostname()} (since 2026-12-02T02:00:00+00:00)")
    assert "Traceback" not in result.stderr and sorted(p.name for p in run_dir.iterdir()) == ["run.lock"]


def to_dict(args):
    from aotp.run import to_container

    return to_container(compose(args))


def test_force_retrains_in_the_same_run_dir_and_keeps_the_old_record_until_it_succeeds(tmp_path, monkeypatch):
    from aotp import run as run_module
    from aotp.trainer import checkpoint as checkpoint_module

    args = [*ARGS, "trainer.max_steps=4", "trainer.eval_every=2", "trainer.log_every=1", f"paths.results={tmp_path}",
            f"paths.cache={tmp_path / 'cache'}"]
    with monkeypatch.context() as patch:  # killed after writing its record, before deleting its checkpoint
        patch.setattr(checkpoint_module, "delete_checkpoint", lambda directory: None)
        first = run_module.execute(compose(args))
    (run_dir,) = tmp_path.glob("glue-rte*")
    assert (run_dir / "checkpoint" / "state.pt").is_file()
    assert run_id(to_dict([*args, "force=true"])) == first["run_id"]

    def crash(*_, **__):
        raise RuntimeError("out of memory")

    with monkeypatch.context() as patch:  # a forced rerun that fails: the last success stays beside its record
        patch.setattr(run_module, "train_and_record", crash)
        with pytest.raises(RuntimeError, match="out of memory"):
            run_module.execute(compose([*args, "force=true"]))
    assert json.loads((run_dir / "result.json").read_text())["status"] == "failed"
    assert not list(run_dir.glob("checkpoint*"))  # a forced rerun retrains from the start, never resumes
    assert json.loads((run_dir / "result.json.previous").read_text()) == json.loads(json.dumps(first, default=str))
    curves = [("train", 1), ("train", 2), ("eval", 2), ("train", 3), ("train", 4), ("eval", 4)]
    previous_curves = (run_dir / "metrics.jsonl.previous").read_text().splitlines()
    assert [(e["kind"], e["step"]) for e in map(json.loads, previous_curves)] == curves

    run_module.execute(compose(args))  # the failed forced rerun is retried as any failed run
    forced = run_module.execute(compose([*args, "force=true"]))  # and a forced rerun of a success
    assert [p.name for p in tmp_path.glob("glue-rte*")] == [run_dir.name]
    assert forced["status"] == "success" and forced["run_id"] == first["run_id"]
    assert forced["metrics"] == first["metrics"] and forced["wall_seconds"] != first["wall_seconds"]
    assert json.loads((run_dir / "result.json").read_text())["wall_seconds"] == forced["wall_seconds"]
    assert not list(run_dir.glob("*.previous"))
    assert events(run_dir) == curves


def test_committed_records_keep_their_run_ids():
    """Every committed result.json: its recorded config hashes to its recorded id, which names its folder."""
    records = sorted((REPO_ROOT / "results").rglob("result.json"))
    assert len(records) >= 100
    for path in records:
        record = json.loads(path.read_text())
        assert run_id(record["config"]) == record["run_id"], path
        assert path.parent.name == run_dir_name(record["config"], record["run_id"]), path
        forced = {**record["config"], "force": True, "lock": {"wait_seconds": 60}}
        assert run_id(forced) == record["run_id"], path
