"""A run killed at any step of a checkpoint save resumes to exactly the metrics of an uninterrupted run.

In process, on the fixture STS-B (a regression task, so every evaluation gives new numbers) and a
tiny BERT: the run is killed (``SimulatedKill``, which nothing catches, so no record is written) before
every filesystem step of its second checkpoint save -- which replaces the first and carries a best
state -- and half-way through each step that is not atomic; each distinct leftover state is then
resumed by launching the run again.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from aotp.run import execute
from aotp.trainer import checkpoint as ckpt
from aotp.trainer import loop as loop_module
from tests.helpers import FIXTURE_DATA, compose
from tests.unit.test_checkpoint_atomic import KillAt, SimulatedKill

ARGS = ["model=tiny_bert", "task=glue/stsb", f"data.root={FIXTURE_DATA}", "trainer.max_steps=6", "trainer.eval_every=2",
        "trainer.checkpoint_every=1", "trainer.batch_size=4", "trainer.progress=false", "trainer.log_every=1",
        "data.max_length=32", "method.lr=3e-3"]
KILLED_SAVE = 2  # the save after step 2's evaluation: it replaces step 1's checkpoint and holds a best state


def run(tmp_path, results):
    return execute(compose([*ARGS, f"paths.results={results}", f"paths.cache={tmp_path / 'cache'}"]))


def outcome(record):
    """Everything a resume must reproduce: metrics, the evaluation history, the weights and the curves."""
    run_dir = Path(record["run_dir"])
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"metrics": record["metrics"], "history": record["selection"]["history"],
            "weights": {k: v.tolist() for k, v in load_file(run_dir / "trainable.safetensors").items()},
            "events": [{k: v for k, v in event.items() if k != "time"} for event in events]}


class KillInSave(KillAt):
    """``KillAt`` counting only the steps of the ``KILLED_SAVE``-th checkpoint save of the run."""

    def __init__(self, monkeypatch, at=None, during=False):
        super().__init__(monkeypatch, at, during)
        self.armed, self.saves = False, 0
        real_save = loop_module.save_checkpoint

        def save(*args):
            self.saves += 1
            self.armed = self.saves == KILLED_SAVE
            try:
                real_save(*args)
            finally:
                self.armed = False
        monkeypatch.setattr(loop_module, "save_checkpoint", save)


def leftover_state(run_dir):
    """The checkpoint folders and their files, with sizes: what a resume starts from."""
    return tuple(sorted((str(path.relative_to(run_dir)), path.stat().st_size) for path in run_dir.glob("checkpoint*/*")))


@pytest.mark.slow
def test_a_run_killed_at_any_step_of_a_checkpoint_save_resumes_to_the_uninterrupted_metrics(tmp_path, monkeypatch):
    reference = outcome(run(tmp_path, tmp_path / "reference"))
    assert len({round(entry["main"], 6) for entry in reference["history"]}) > 1  # the evaluations differ

    with monkeypatch.context() as patch:
        counter = KillInSave(patch)
        run(tmp_path, tmp_path / "count")
    steps = counter.names
    assert counter.saves > KILLED_SAVE and "_rename" in steps and "_remove_tree" in steps
    points = [(at, False) for at in range(len(steps))]
    points += [(at, True) for at, name in enumerate(steps) if name in ("_write_file", "_remove_tree")]

    resumed_states = set()
    for at, during in points:
        results = tmp_path / f"kill{at}{'during' if during else ''}"
        with monkeypatch.context() as patch:
            KillInSave(patch, at, during)
            with pytest.raises(SimulatedKill):
                run(tmp_path, results)
        (run_dir,) = results.iterdir()
        assert not (run_dir / "result.json").exists()
        state = leftover_state(run_dir)
        if state in resumed_states:  # the same files as an earlier kill point: the same resume
            continue
        resumed_states.add(state)
        assert outcome(run(tmp_path, results)) == reference, (at, steps[at], during, state)
        assert sorted(p.name for p in run_dir.glob("checkpoint*")) == []  # dropped after success
    assert len(resumed_states) >= 6, resumed_states


def test_the_reported_stuck_states_resume_to_the_uninterrupted_metrics(tmp_path, monkeypatch):
    """Fast cases of the above: killed just before the new checkpoint is renamed into place (the old one
    already deleted), and the two-rename protocol's leftover ``checkpoint/`` + ``checkpoint.old/``, which
    used to fail every later save with ``OSError: [Errno 39] Directory not empty`` for good."""
    reference = outcome(run(tmp_path, tmp_path / "reference"))
    with monkeypatch.context() as patch:
        counter = KillInSave(patch)
        run(tmp_path, tmp_path / "count")
    last_rename = max(at for at, name in enumerate(counter.names) if name == "_rename")
    for case, at in (("before_rename", last_rename), ("earlier_protocol", 0)):
        results = tmp_path / case
        with monkeypatch.context() as patch:
            KillInSave(patch, at)
            with pytest.raises(SimulatedKill):
                run(tmp_path, results)
        (run_dir,) = results.iterdir()
        if case == "before_rename":
            assert sorted(p.name for p in run_dir.glob("checkpoint*")) == [f"checkpoint.tmp-{os.getpid()}"]
        else:  # rewrite the checkpoint as the earlier protocol left it: two marker-less copies
            (run_dir / "checkpoint" / ckpt.MARKER).unlink()
            shutil.copytree(run_dir / "checkpoint", run_dir / "checkpoint.old")
        assert outcome(run(tmp_path, results)) == reference, case
        assert not list(run_dir.glob("checkpoint*"))
