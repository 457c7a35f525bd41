"""Checkpoint saves under a kill at every step: what is left is recovered to the old or the new checkpoint.

A kill is simulated by raising ``SimulatedKill`` (not an ``Exception``, so nothing catches it) before
each filesystem step of the save protocol, and in the middle of each step that is not atomic (a file
half written, a folder half deleted). Training-level resumes from each of these states are tested in
tests/integration/test_checkpoint_resume.py.
"""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from aotp.trainer import checkpoint as ckpt

@pytest.fixture(autouse=True)
def no_disk_flush(monkeypatch):
    """fsync guards against power loss; a process kill (what is simulated here) leaves the page cache intact."""
    monkeypatch.setattr(ckpt.os, "fsync", lambda descriptor: None)


STEPS = ("_fsync_path", "_write_file", "_make_dir", "_rename", "_remove_file", "_remove_tree")


class SimulatedKill(BaseException):
    """A kill -9 at this instruction: no handler runs."""


class KillAt:
    """Wraps the protocol's filesystem steps; kills before step ``at`` (or half-way through it, ``during``)."""

    def __init__(self, monkeypatch, at: int | None = None, during: bool = False):
        self.at, self.during, self.count, self.names, self.paths = at, during, 0, [], []
        self.armed = True
        for name in STEPS:
            monkeypatch.setattr(ckpt, name, self.wrap(name, getattr(ckpt, name)))

    def wrap(self, name, real):
        def step(*args):
            if not self.armed:
                return real(*args)
            index = self.count
            self.count += 1
            self.names.append(name)
            self.paths.append(args[0])
            if index == self.at:
                if self.during and name == "_write_file":  # a file half written
                    path, write = args
                    write(path)
                    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])
                elif self.during and name == "_remove_tree":  # a folder half deleted
                    files = sorted(p for p in args[0].rglob("*") if p.is_file())
                    for path in files[: max(1, len(files) // 2)]:
                        path.unlink()
                raise SimulatedKill(f"killed at step {index} ({name})")
            return real(*args)
        return step


def tensors(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((3, 2), value), "b": torch.arange(4.0) * value}


def save(directory, step: int) -> None:
    ckpt.save_checkpoint(directory, tensors(step), tensors(-step) if step > 1 else None,
                         {"optimizer": {"lr": 0.1 * step}, "loop": {"step": step}})


def loaded_step(directory) -> int | None:
    """The step of the checkpoint that loads, after checking every part of it belongs to that step."""
    state = ckpt.load_checkpoint(directory)
    if state is None:
        return None
    step = state["loop"]["step"]
    assert state["optimizer"] == {"lr": 0.1 * step}
    assert all(torch.equal(state["trainable"][k], v) for k, v in tensors(step).items())
    if step > 1:
        assert all(torch.equal(state["best"][k], v) for k, v in tensors(-step).items())
    else:
        assert state["best"] is None
    return step


def only_checkpoint_left(run_dir) -> bool:
    return sorted(p.name for p in run_dir.iterdir()) in ([], ["checkpoint"])


def count_steps(tmp_path, monkeypatch) -> list[str]:
    directory = tmp_path / "count" / "checkpoint"
    save(directory, 1)
    with monkeypatch.context() as patch:
        counter = KillAt(patch)
        save(directory, 2)
    return counter.names


def test_a_kill_at_every_step_of_a_save_leaves_the_old_or_the_new_checkpoint(tmp_path, monkeypatch):
    names = count_steps(tmp_path, monkeypatch)
    assert {"_write_file", "_rename", "_remove_tree"} <= set(names), names
    points = [(at, False) for at in range(len(names))]
    points += [(at, True) for at, name in enumerate(names) if name in ("_write_file", "_remove_tree")]
    outcomes = {}
    for at, during in points:
        run_dir = tmp_path / f"kill{at}{'during' if during else ''}"
        directory = run_dir / "checkpoint"
        save(directory, 1)
        with monkeypatch.context() as patch:
            KillAt(patch, at, during)
            with pytest.raises(SimulatedKill):
                save(directory, 2)
        outcomes[(at, during)] = step = loaded_step(directory)  # recovers, then loads
        assert step in (1, 2), (at, names[at], during)
        assert only_checkpoint_left(run_dir), (at, names[at], sorted(p.name for p in run_dir.iterdir()))
        save(directory, 3)  # the next save goes through (the reported bug: Errno 39 here, for good)
        assert loaded_step(directory) == 3 and only_checkpoint_left(run_dir)
    # Before the new checkpoint is complete the old one is kept; once complete, the new one is taken.
    marker_written = max(at for at, name in enumerate(names) if name == "_write_file")
    assert {at: step for (at, during), step in outcomes.items() if not during} == {
        at: 1 if at <= marker_written else 2 for at in range(len(names))}


def test_a_kill_during_the_first_save_leaves_no_checkpoint_or_the_new_one(tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        counter = KillAt(patch)
        save(tmp_path / "count" / "checkpoint", 2)
    marker_written = max(at for at, name in enumerate(counter.names) if name == "_write_file")
    for at in range(len(counter.names)):
        run_dir = tmp_path / f"first{at}"
        with monkeypatch.context() as patch:
            KillAt(patch, at)
            with pytest.raises(SimulatedKill):
                save(run_dir / "checkpoint", 2)
        assert loaded_step(run_dir / "checkpoint") == (None if at <= marker_written else 2)
        save(run_dir / "checkpoint", 3)
        assert loaded_step(run_dir / "checkpoint") == 3 and only_checkpoint_left(run_dir)


def test_a_kill_during_recovery_or_deletion_is_recovered_by_the_next_call(tmp_path, monkeypatch):
    """Recovery and deletion are protocols too: kill them at every step, then call again."""
    def leftover_state(run_dir):  # the reported state: a new checkpoint beside a complete one
        save(run_dir / "checkpoint", 1)
        ckpt.save_checkpoint(run_dir / "spare", tensors(2), tensors(-2), {"optimizer": {"lr": 0.2}, "loop": {"step": 2}})
        (run_dir / "spare").rename(run_dir / "checkpoint.tmp-99")

    for operation, expected in ((ckpt.load_checkpoint, 2), (ckpt.delete_checkpoint, None)):
        probe = tmp_path / f"probe-{operation.__name__}"
        leftover_state(probe)
        with monkeypatch.context() as patch:
            counter = KillAt(patch)
            operation(probe / "checkpoint")
        assert counter.count > 2
        for at in range(counter.count):
            run_dir = tmp_path / f"{operation.__name__}{at}"
            leftover_state(run_dir)
            with monkeypatch.context() as patch:
                KillAt(patch, at)
                with pytest.raises(SimulatedKill):
                    operation(run_dir / "checkpoint")
            if expected is None:  # a half-deleted checkpoint either still loads whole or is gone
                assert loaded_step(run_dir / "checkpoint") in (None, 1, 2)
            else:
                assert loaded_step(run_dir / "checkpoint") == expected
            assert only_checkpoint_left(run_dir)


def write_earlier_protocol(path, step: int) -> None:
    """A checkpoint folder as the two-rename protocol wrote it: no marker."""
    path.mkdir(parents=True)
    ckpt.save_tensors(tensors(step), path / "trainable.safetensors")
    if step > 1:
        ckpt.save_tensors(tensors(-step), path / "best.safetensors")
    torch.save({"optimizer": {"lr": 0.1 * step}, "loop": {"step": step}}, path / "state.pt")


def write_folder(path, kind: str, step: int) -> None:
    if kind == "complete":
        ckpt.save_checkpoint(path.with_name("spare"), tensors(step), tensors(-step),
                             {"optimizer": {"lr": 0.1 * step}, "loop": {"step": step}})
        path.with_name("spare").rename(path)
    elif kind == "earlier":
        write_earlier_protocol(path, step)
    elif kind == "partial":  # a save killed before its marker, or a deletion killed after it
        write_earlier_protocol(path, step)
        (path / "state.pt").unlink()
        if path.name.startswith("checkpoint.tmp"):  # a temporary folder is complete only with a marker
            (path / "state.pt").write_bytes(b"")


@pytest.mark.parametrize("current,old,temporary", list(itertools.product(
    ("absent", "complete", "earlier", "partial"), ("absent", "earlier", "partial"), ("absent", "complete", "partial"))))
def test_every_combination_of_leftover_folders_recovers_to_the_newest_complete_one(tmp_path, current, old,
                                                                                     temporary):
    """checkpoint/ at step 2, checkpoint.old/ (earlier protocol) at 1, checkpoint.tmp-<pid>/ at 3."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name, kind, step in (("checkpoint", current, 2), ("checkpoint.old", old, 1),
                             ("checkpoint.tmp-12345", temporary, 3)):
        if kind != "absent":
            write_folder(run_dir / name, kind, step)
    # the newest complete folder by marker step, marker-less complete folders last (checkpoint/ before .old/)
    expected = (3 if temporary == "complete" else 2 if current == "complete"
                else 2 if current == "earlier" else 1 if old == "earlier" else None)
    assert loaded_step(run_dir / "checkpoint") == expected
    assert only_checkpoint_left(run_dir)
    save(run_dir / "checkpoint", 4)
    assert loaded_step(run_dir / "checkpoint") == 4 and only_checkpoint_left(run_dir)


def test_the_marker_holds_the_step_and_is_the_last_file_written(tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        killer = KillAt(patch)
        save(tmp_path / "checkpoint", 2)
    written = [path.name for name, path in zip(killer.names, killer.paths) if name == "_write_file"]
    assert written == ["trainable.safetensors", "best.safetensors", "state.pt", ckpt.MARKER]
    assert json.loads((tmp_path / "checkpoint" / ckpt.MARKER).read_text()) == {"step": 2}
