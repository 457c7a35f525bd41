"""Packed sweeps (``make reproduce PACK=K``, aotp/sweep_pack.py): the sweep of ``aotp.run -m``, AoT runs packed.

The ``smoke_tiny`` experiment narrowed to RTE (fixture data), AoT FC and BitFit, 2 seeds x 2 learning-rate
indices, dropout 0: with K=4 the four AoT runs train as one pack and the four BitFit runs alone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import FIXTURE_DATA, REPO_ROOT, compose, key_tree

SWEEP = ["experiment=smoke_tiny", "hydra/launcher=basic", "task=glue/rte", "seed=1,2", "experiment.lr_index=0,1",
         "+model.dropout=0.0", f"data.root={FIXTURE_DATA}", "trainer.batch_size=4", "trainer.eval_every=2",
         "trainer.warmup_steps=1", "trainer.device=cpu"]


def arguments(root: Path, methods: str = "aot_fc,bitfit", steps: int = 6) -> list[str]:
    return [*SWEEP, f"method={methods}", f"trainer.max_steps={steps}", f"paths.results={root / 'runs'}",
            f"paths.cache={root.parent / 'cache'}"]


def records(root: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted((root / "runs").glob("*/result.json"))}


def weights(record: dict) -> dict[str, torch.Tensor]:
    return load_file(f"{record['run_dir']}/trainable.safetensors")


def test_a_packed_sweep_writes_the_records_of_the_sweep_alone_and_skips_them_on_a_rerun(tmp_path, capsys):
    from aotp.estimate import sweep_override_lists
    from aotp.results.record import run_id
    from aotp.run import to_container
    from aotp.sweep_pack import main

    assert main(["pack=4", *arguments(tmp_path / "packed")]) == 0
    output = capsys.readouterr().out
    assert "8 runs: 0 already succeeded, 4 in 1 pack(s) (sizes [4]), 4 alone" in output
    assert main(["pack=1", *arguments(tmp_path / "alone")]) == 0
    assert "0 in 0 pack(s) (sizes []), 8 alone" in capsys.readouterr().out
    packed, alone = records(tmp_path / "packed"), records(tmp_path / "alone")
    assert set(packed) == set(alone) and len(packed) == 8  # same run folders (names carry the run ids)
    assert all(r["status"] == "success" for r in packed.values())

    # each record is the run its Hydra job would compose: same config (experiment.lr_index included), same id
    runs, plain = sweep_override_lists(arguments(tmp_path / "packed"))
    composed = {run_id(c): c for c in (to_container(compose([*plain, *run])) for run in runs)}
    assert {r["run_id"] for r in packed.values()} == set(composed)
    for name, record in packed.items():
        assert record["config"] == composed[record["run_id"]], name
        assert key_tree(record) == key_tree(alone[name]), name  # the same record form
        if record["method"] == "bitfit":  # trained alone in both sweeps: bitwise the same
            assert record["metrics"] == alone[name]["metrics"]
            for key, value in weights(alone[name]).items():
                assert torch.equal(weights(record)[key], value), (name, key)
            continue
        for key, value in alone[name]["metrics"].items():
            assert record["metrics"][key] == pytest.approx(value, abs=1e-5), (name, key)
        for key, value in weights(alone[name]).items():
            torch.testing.assert_close(weights(record)[key], value, atol=1e-5, rtol=0, msg=f"{name} {key}")
    lrs = {(r["seed"], r["config"]["method"]["lr"]) for r in packed.values() if r["method"] == "aot_fc"}
    assert lrs == {(s, lr) for s in (1, 2) for lr in (3e-4, 1e-3)}  # the pack really spans seeds x lrs

    # a rerun trains nothing, packed or not: the records stay byte for byte
    before = {p: p.read_bytes() for p in (tmp_path / "packed" / "runs").glob("*/result.json")}
    assert main(["pack=4", *arguments(tmp_path / "packed")]) == 0
    output = capsys.readouterr().out
    assert "8 runs: 8 already succeeded, 0 in 0 pack(s)" in output and output.count("already succeeded") == 9
    assert all(path.read_bytes() == content for path, content in before.items())


# The killed sweep runs in a child process that SIGKILLs itself at a fixed point, the same on every machine:
# "training": in the first forward after the pack's fourth checkpoint save (all four runs checkpointed at step 2,
# the pack one forward into step 3); "checkpointing": right after the sixth save, between two runs' saves of
# step 4 (two runs checkpointed at step 4, two at step 2).
KILLER = """
import os, signal, sys
sys.path.insert(0, {root!r})
import aotp.trainer.packed as packed

where, saves, forwards = {where!r}, [0], [0]
save, logits = packed.PackedRun.checkpoint, packed.packed_logits

def counted_save(self):
    save(self)
    saves[0] += 1
    if where == "checkpointing" and saves[0] == 6:
        os.kill(os.getpid(), signal.SIGKILL)

def killing_logits(*args, **kwargs):
    if where == "training" and saves[0] >= 4:
        forwards[0] += 1
        if forwards[0] == 1:
            os.kill(os.getpid(), signal.SIGKILL)
    return logits(*args, **kwargs)

packed.PackedRun.checkpoint, packed.packed_logits = counted_save, killing_logits
from aotp.sweep_pack import main
sys.exit(main({arguments!r}))
"""


@pytest.mark.parametrize("where", ["training", pytest.param("checkpointing", marks=pytest.mark.slow)])
def test_a_packed_sweep_killed_mid_training_resumes_to_the_same_records(where, tmp_path, capsys):
    """``kill -9`` during a pack's training, then the same command again: each run resumes from its own
    checkpoint and the records (metrics, selection) and trained weights equal an uninterrupted sweep's, exactly
    when the runs resume at one step. A kill between two runs' checkpoint saves resumes them at different steps:
    later packed batches then hold other companions, which may move float rounding (tolerance 1e-6)."""
    from aotp.sweep_pack import main

    assert main(["pack=4", *arguments(tmp_path / "reference", methods="aot_fc")]) == 0
    reference = records(tmp_path / "reference")
    capsys.readouterr()

    killed = arguments(tmp_path / "resumed", methods="aot_fc")
    script = KILLER.format(root=str(REPO_ROOT), where=where, arguments=["pack=4", *killed])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled",
           "OMP_NUM_THREADS": "1"}
    child = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                           timeout=600)
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    runs = sorted((tmp_path / "resumed" / "runs").iterdir())
    assert len(runs) == 4 and not list((tmp_path / "resumed" / "runs").glob("*/result.json"))
    steps = sorted(json.loads((run / "checkpoint" / "complete.json").read_text())["step"] for run in runs)
    assert steps == ([2, 2, 2, 2] if where == "training" else [2, 2, 4, 4])
    assert all((run / "run.lock").exists() for run in runs)  # left by the killed process (its pid is gone)

    assert main(["pack=4", *killed]) == 0
    output = capsys.readouterr().out
    assert output.count("Resuming ") == 4 and "from checkpoint at step 2/6" in output
    resumed = records(tmp_path / "resumed")
    assert set(resumed) == set(reference)
    exact = where == "training"
    for name, want in reference.items():
        got = resumed[name]
        assert got["status"] == "success" and got["run_id"] == want["run_id"]
        assert got["selection"]["steps_done"] == 6
        assert got["metrics"] == (want["metrics"] if exact else pytest.approx(want["metrics"], abs=1e-6)), name
        assert [h["main"] for h in got["selection"]["history"]] == [h["main"] for h in want["selection"]["history"]]
        for key, value in weights(want).items():
            if exact:
                assert torch.equal(weights(got)[key], value), (name, key)
            else:
                torch.testing.assert_close(weights(got)[key], value, atol=1e-6, rtol=0, msg=f"{name} {key}")
        assert not (Path(got["run_dir"]) / "checkpoint").exists() and not (Path(got["run_dir"]) / "run.lock").exists()


def test_a_packed_sweep_refuses_a_parallel_launcher_and_a_bad_pack(tmp_path, capsys):
    from aotp.sweep_pack import main

    with pytest.raises(SystemExit) as refused:
        main(["pack=4", *[a for a in arguments(tmp_path) if a != "hydra/launcher=basic"], "hydra/launcher=slurm"])
    assert refused.value.code == 2
    assert ("hydra/launcher=slurm: a packed sweep runs its jobs in this process (LAUNCHER=basic) or one per local GPU "
            "(LAUNCHER=local_gpus); run PACK=1 for the slurm launcher") in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        main(["pack=0", *arguments(tmp_path)])
    assert refused.value.code == 2 and "pack='0'" in capsys.readouterr().err


def test_the_plan_packs_runs_that_differ_only_in_seed_and_lr(tmp_path):
    """Groups are per (task, method, ...); each is cut in sweep order into packs of up to K; a pack of one and
    runs whose config rules packing out (here fp16, a warm start, BitFit) train alone; finished runs are not
    planned; AdamW's betas/eps pack (each run builds its optimizer from its own trainer options)."""
    from aotp.sweep_pack import plan

    def jobs(extra: list[str], pack: int = 3):
        sweep = [a for a in arguments(tmp_path, methods="aot_fc,aot_kron,bitfit") if a != "task=glue/rte"]
        plain, planned, done = plan([*sweep, "task=glue/rte,glue/mrpc", *extra], pack)
        return [(len(j.runs), j.names[0].split("__")[0], j.names[0].split("__")[2]) for j in planned], done

    planned, done = jobs([])
    assert sorted(planned) == sorted([(3, task, m) for task in ("glue-rte", "glue-mrpc") for m in ("aot_fc", "aot_kron")]
                                     + [(1, task, m) for task in ("glue-rte", "glue-mrpc") for m in ("aot_fc", "aot_kron")]
                                     + [(1, task, "bitfit") for task in ("glue-rte", "glue-mrpc") for _ in range(4)])
    assert done == []
    planned, _ = jobs(["trainer.precision=fp16"])
    assert all(size == 1 for size, _, _ in planned) and len(planned) == 24
    planned, _ = jobs(["trainer.adam_eps=1e-6"])
    assert sorted(size for size, _, _ in planned) == [1] * 12 + [3] * 4
    planned, _ = jobs(["method.init_from=task:glue/mnli"], pack=4)
    assert all(size == 1 for size, _, _ in planned)
    # a finished run is left out of the plan; the other three of its group still make a pack
    from aotp.results.record import run_dir_name, run_id
    from aotp.run import compose, to_container

    one = [a for a in arguments(tmp_path, methods="aot_fc") if not a.startswith(("seed=", "experiment.lr_index="))]
    config = to_container(compose([*one, "seed=1", "experiment.lr_index=0"]))
    folder = tmp_path / "runs" / run_dir_name(config, run_id(config))
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({"status": "success", "metrics": {"main": 0.5}}))
    planned, done = jobs([], pack=4)
    assert done == [folder.name]
    assert sorted(size for size, task, m in planned if (task, m) == ("glue-rte", "aot_fc")) == [3]


# ----------------------------------------------------------------- one job per GPU (LAUNCHER=local_gpus)

JOBS_LOG = "AOTP_TEST_PACKED_JOBS"  # folder where recording_run_job notes each job (inherited by the workers)


def recording_run_job(job, plain):
    """:func:`aotp.sweep_pack.run_job` as a local_gpus worker runs it, noting the CUDA_VISIBLE_DEVICES it ran
    under, its pid and its start and end times. The first job to start waits (up to 300 s) until a second one has
    started, so that a pool that runs two jobs at once is seen to (one worker alone would time out here)."""
    from aotp.sweep_pack import run_job

    folder = Path(os.environ[JOBS_LOG])
    note = {"names": job.names, "pid": os.getpid(), "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": time.time()}
    (folder / f"{job.position}.start").write_text(json.dumps(note))
    deadline = time.time() + 300
    while len(list(folder.glob("*.start"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    try:
        return run_job(job, plain)
    finally:
        (folder / f"{job.position}.json").write_text(json.dumps({**note, "end": time.time()}))


def test_a_packed_sweep_on_local_gpus_runs_one_job_per_gpu_at_once_and_writes_the_sequential_records(tmp_path,
                                                                                                      monkeypatch):
    """PACK=4 with LAUNCHER=local_gpus on fake GPU ids 0 and 1 (this CPU): the 5 jobs (a pack of the 4 AoT runs,
    4 BitFit runs alone, one of them made to fail) all run, in 2 spawned workers pinned to distinct ids through
    the lock files, two jobs at once; the records equal the sequential packed sweep's (same configs, ids,
    statuses, metrics, selections and weights), the failed run recorded failed in both; a rerun skips every
    finished run."""
    import aotp.sweep_pack as sweep_pack

    # one BitFit run gets 16 positions for 64-token batches: its forward raises, the run is recorded failed
    fail = ["model.max_position_embeddings='${oc.select:\"experiment.fail.${method.name}_${seed}_${experiment.lr_index}\""
            ",256}'", "+experiment.fail.bitfit_2_1=16"]
    assert sweep_pack.main(["pack=4", *arguments(tmp_path / "sequential"), *fail]) == 0
    sequential = records(tmp_path / "sequential")

    log = tmp_path / "jobs"
    log.mkdir()
    monkeypatch.setenv(JOBS_LOG, str(log))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(sweep_pack, "run_job", recording_run_job)  # pickled by name: the workers import it
    pool = ["hydra/launcher=local_gpus", "hydra.launcher.n_jobs=2", "hydra.callbacks.pin_gpu.gpus=[0,1]",
            f"hydra.callbacks.pin_gpu.lock_dir={tmp_path / 'locks'}"]
    parallel_args = [a for a in arguments(tmp_path / "parallel") if a != "hydra/launcher=basic"]
    assert sweep_pack.main(["pack=4", *parallel_args, *pool, *fail]) == 0
    parallel = records(tmp_path / "parallel")

    jobs = sorted((json.loads(p.read_text()) for p in log.glob("*.json")), key=lambda j: j["start"])
    assert len(jobs) == 5 and sorted(len(j["names"]) for j in jobs) == [1, 1, 1, 1, 4]  # every job ran, once
    assert sorted(n for j in jobs for n in j["names"]) == sorted(parallel)
    gpu_of = {}
    for job in jobs:  # each worker process stayed on one GPU id, and no two workers shared one
        assert gpu_of.setdefault(job["pid"], job["gpu"]) == job["gpu"]
    assert sorted(gpu_of.values()) == ["0", "1"]
    first, second = jobs[:2]
    assert first["gpu"] != second["gpu"] and second["start"] < first["end"]  # two jobs at once, on distinct GPUs

    assert set(parallel) == set(sequential) and len(parallel) == 8
    failed = [n for n, r in parallel.items() if r["status"] == "failed"]
    assert failed == [n for n, r in sequential.items() if r["status"] == "failed"] and len(failed) == 1
    assert failed[0].split("__")[2] == "bitfit" and "RuntimeError" in parallel[failed[0]]["error"]
    for name, want in sequential.items():
        got = parallel[name]
        assert (got["run_id"], got["status"]) == (want["run_id"], want["status"]), name
        assert {**got["config"], "paths": None} == {**want["config"], "paths": None}, name  # all but the folders
        if want["status"] != "success":
            continue
        assert got["metrics"] == want["metrics"], name
        assert got["selection"]["history"] == want["selection"]["history"], name
        for key, value in weights(want).items():
            assert torch.equal(weights(got)[key], value), (name, key)

    # a rerun: the 7 finished runs are skipped, the failed one is retried (and fails again) on a GPU of the pool
    before = {p: p.read_bytes() for p in (tmp_path / "parallel" / "runs").glob("*/result.json") if p.parent.name not in failed}
    for path in log.iterdir():
        path.unlink()
    (log / "primer.start").write_text("{}")  # the single job left need not wait for a second one
    assert sweep_pack.main(["pack=4", *parallel_args, *pool, *fail]) == 0
    assert [json.loads(p.read_text())["names"] for p in log.glob("*.json")] == [failed]
    assert all(path.read_bytes() == content for path, content in before.items())


def test_local_gpus_pool_of_a_packed_sweep_is_the_pool_of_single_runs(tmp_path, monkeypatch):
    """hydra.callbacks.pin_gpu.gpus > the CUDA_VISIBLE_DEVICES the sweep started with > 0..n_jobs-1, as the
    local_gpus callback resolves it for single runs; workers = hydra.launcher.n_jobs."""
    from aotp.sweep_pack import local_gpu_pool

    plain = ["experiment=smoke_tiny", "hydra/launcher=local_gpus", "hydra.launcher.n_jobs=2",
             f"hydra.callbacks.pin_gpu.lock_dir={tmp_path}"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert local_gpu_pool(plain) == (["3", "5"], str(tmp_path), 86400.0, 2)
    assert local_gpu_pool([*plain, "hydra.callbacks.pin_gpu.gpus=[0,1]"])[0] == ["0", "1"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert local_gpu_pool([*plain[:2], "hydra.launcher.n_jobs=3"])[0] == ["0", "1", "2"]
