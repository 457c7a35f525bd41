"""Packed runs (aotp.trainer.packed): K AoT runs on one backbone equal the K runs trained alone."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import make_tiny_task_model
from tests.helpers import FIXTURE_DATA, compose, key_tree

SEEDS, LRS = [1, 2], [1e-3, 3e-3]


def overrides(method: str, results) -> list[str]:
    # RTE fixture: 10 training examples in batches of 4 (4, 4, 2): 6 steps cross two epoch boundaries
    # and include a short last batch, whose rows get padded to the pack's longest sequence.
    return [f"method={method}", "model=tiny_bert", "+model.dropout=0.0", "method.options.rank=8", "task=glue/rte",
            f"data.root={FIXTURE_DATA}", "data.max_length=64", "trainer.batch_size=4", "trainer.max_steps=6",
            "trainer.eval_every=2", "trainer.warmup_steps=1", "trainer.progress=false", "logger=jsonl",
            f"paths.results={results / 'runs'}", f"paths.cache={results / 'cache'}"]


@pytest.mark.parametrize("method,accumulation,optimizer", [
    ("aot_fc", 1, []),
    ("aot_kron", 2, ["trainer.adam_betas=[0.9,0.98]", "trainer.adam_eps=1e-6"]),  # fairseq's AdamW, as a recipe sets it
])
def test_packed_runs_equal_runs_trained_alone(method, accumulation, optimizer, tmp_path):
    from aotp.run import execute
    from aotp.trainer.packed import execute_pack, pack_configs

    def run_overrides(results):
        return overrides(method, results) + [f"trainer.gradient_accumulation_steps={accumulation}", *optimizer]

    alone = {}
    for seed in SEEDS:
        for lr in LRS:
            record = execute(compose(run_overrides(tmp_path / "alone") + [f"seed={seed}", f"method.lr={lr}"]))
            alone[seed, lr] = record
    packed_records = execute_pack(pack_configs(run_overrides(tmp_path / "packed"), SEEDS, LRS))
    assert len(packed_records) == 4 and all(r["status"] == "success" for r in packed_records)
    packed = {(r["seed"], r["config"]["method"]["lr"]): r for r in packed_records}
    assert set(packed) == set(alone)
    for key, single in alone.items():
        record = packed[key]
        assert record["run_id"] == single["run_id"]  # the same run: same semantic config
        assert key_tree(record) == key_tree(single)
        assert record["selection"]["steps_done"] == 6 and len(record["selection"]["history"]) == 3
        for name, value in single["metrics"].items():
            assert record["metrics"][name] == pytest.approx(value, abs=1e-5), (key, name)
        for got, want in zip(record["selection"]["history"], single["selection"]["history"]):
            assert got["step"] == want["step"] and got["main"] == pytest.approx(want["main"], abs=1e-5)
        assert record["params"] == single["params"]
        weights = load_file(f"{record['run_dir']}/trainable.safetensors")
        reference = load_file(f"{single['run_dir']}/trainable.safetensors")
        assert set(weights) == set(reference) and any(k.startswith("aot.") for k in weights)
        for name in reference:
            torch.testing.assert_close(weights[name], reference[name], atol=1e-5, rtol=0, msg=f"{key} {name}")
    # the four runs really differ (seeds and learning rates act), so equality above is not vacuous
    finals = [load_file(f"{r['run_dir']}/trainable.safetensors")["aot.reparam.up.weight" if method == "aot_fc"
                                                                   else "aot.reparam.proj.weight"] for r in packed_records]
    assert all(f.abs().max() > 0 for f in finals)
    assert all(not torch.equal(finals[i], finals[j]) for i in range(4) for j in range(i + 1, 4))

    # resumable like single runs: a finished pack is skipped run by run
    assert execute_pack(pack_configs(run_overrides(tmp_path / "packed"), SEEDS, LRS)) == []
    written = [json.loads(p.read_text()) for p in (tmp_path / "packed" / "runs").glob("*/result.json")]
    assert sorted(r["run_id"] for r in written) == sorted(r["run_id"] for r in packed_records)


def test_padding_to_the_pack_length_leaves_logits_unchanged():
    """The pack pads every run's rows to the longest sequence of the pack: masked positions must not move
    the logits of the real ones (AoT biases are added to padded positions too)."""
    from aotp.methods import METHODS

    model = make_tiny_task_model("bert", dropout=0.0)
    METHODS.get("aot_fc")(rank=4).apply(model)
    with torch.no_grad():
        model.aot.reparam.up.weight.normal_(0.0, 0.5)
    model.eval()
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 100, (3, 9), generator=generator)
    mask = torch.ones_like(input_ids)
    mask[1, 6:] = 0
    short = model(input_ids=input_ids, attention_mask=mask)
    padded_ids = torch.cat([input_ids, torch.zeros(3, 7, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(3, 7, dtype=torch.long)], dim=1)
    long = model(input_ids=padded_ids, attention_mask=padded_mask)
    assert (short - long).abs().max() <= 1e-6


def test_a_method_that_trains_the_backbone_cannot_be_packed(tmp_path):
    from aotp.run import ConfigError
    from aotp.trainer.packed import pack_configs

    with pytest.raises(ConfigError, match="method=full_ft cannot be packed.*packable: aot_fc, aot_kron"):
        pack_configs(["method=full_ft", "model=tiny_bert", "task=glue/rte"], SEEDS, LRS)


@pytest.mark.slow  # ~70 s here: an in-process reference pack and two CLI processes (startup ~15 s each)
def test_packed_cli_killed_then_resumed_ends_with_the_same_records(tmp_path):
    """``python -m aotp.trainer.packed`` killed (-9) after its first checkpoints, then run again, ends with
    the records and weights of an uninterrupted pack (each run resumes from its own checkpoint)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from aotp.trainer.packed import execute_pack, pack_configs
    from tests.helpers import REPO_ROOT, run_cli

    def arguments(results):
        longer = [a for a in overrides("aot_fc", results) if not a.startswith(("trainer.max_steps", "trainer.eval_every"))]
        return longer + ["trainer.max_steps=30", "trainer.eval_every=10", "trainer.checkpoint_every=2"]

    reference = {(r["seed"], r["config"]["method"]["lr"]): r
                 for r in execute_pack(pack_configs(arguments(tmp_path / "reference"), SEEDS, LRS))}
    pack = ["pack.seeds=[1,2]", "pack.lrs=[0.001,0.003]"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    resumed_root = tmp_path / "resumed"
    process = subprocess.Popen([sys.executable, "-m", "aotp.trainer.packed", *arguments(resumed_root), *pack],
                               cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while (time.time() < deadline and process.poll() is None
           and not list((resumed_root / "runs").glob("*/checkpoint/state.pt"))):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not list((resumed_root / "runs").glob("*/result.json")), "the pack finished before it could be killed"
    again = run_cli([*arguments(resumed_root), *pack], module="aotp.trainer.packed")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Resuming" in again.stdout
    records = [json.loads(p.read_text()) for p in (resumed_root / "runs").glob("*/result.json")]
    assert len(records) == 4
    for record in records:
        want = reference[record["seed"], record["config"]["method"]["lr"]]
        assert record["status"] == "success" and record["run_id"] == want["run_id"]
        assert record["selection"]["steps_done"] == 30
        assert record["metrics"] == pytest.approx(want["metrics"], abs=1e-5)
        weights = load_file(f"{record['run_dir']}/trainable.safetensors")
        for name, value in load_file(f"{want['run_dir']}/trainable.safetensors").items():
            torch.testing.assert_close(weights[name], value, atol=1e-5, rtol=0, msg=name)


def test_pack_arguments_are_parsed_and_required():
    from aotp.cli import UsageError
    from aotp.trainer.packed import split_pack_arguments

    assert split_pack_arguments(["model=tiny_bert", "pack.seeds=[1,2]", "pack.lrs=[1e-3,3e-3]"]) == (
        ["model=tiny_bert"], [1, 2], [1e-3, 3e-3])
    with pytest.raises(UsageError, match="missing pack.lrs="):
        split_pack_arguments(["model=tiny_bert", "pack.seeds=[1,2]"])
    with pytest.raises(UsageError, match=r"pack.seeds='\[a\]': expected an integer"):
        split_pack_arguments(["pack.seeds=[a]", "pack.lrs=[1e-3]"])


@pytest.mark.parametrize("task", ["glue/stsb", "superglue/copa"])  # regression; multiple choice (rows x choices)
def test_packed_regression_and_multiple_choice_runs_equal_runs_alone(task, tmp_path):
    from aotp.run import execute
    from aotp.trainer.packed import execute_pack, pack_configs

    def run_overrides(results):
        return [o for o in overrides("aot_fc", results) if not o.startswith("task=")] + [f"task={task}"]

    alone = {lr: execute(compose(run_overrides(tmp_path / "alone") + ["seed=1", f"method.lr={lr}"])) for lr in LRS}
    packed = {r["config"]["method"]["lr"]: r for r in execute_pack(pack_configs(run_overrides(tmp_path / "packed"), [1], LRS))}
    for lr, single in alone.items():
        assert packed[lr]["status"] == "success" and key_tree(packed[lr]) == key_tree(single)
        assert packed[lr]["metrics"] == pytest.approx(single["metrics"], abs=1e-5)
        weights = load_file(f"{packed[lr]['run_dir']}/trainable.safetensors")
        for name, value in load_file(f"{single['run_dir']}/trainable.safetensors").items():
            torch.testing.assert_close(weights[name], value, atol=1e-5, rtol=0, msg=f"{lr} {name}")


def test_packed_runs_take_their_run_locks(tmp_path, monkeypatch, capsys):
    """A packed run is trained under its ``run.lock``: a run another launch holds is left out of the pack (one
    line naming the holder), and a launch of a run alone while the pack trains it refuses, as for a run alone."""
    import aotp.trainer.packed as packed
    from aotp.results.lock import RunLock, RunLocked
    from aotp.results.record import run_dir_name, run_id
    from aotp.run import execute, to_container

    configs = packed.pack_configs(overrides("aot_fc", tmp_path), [1, 2], [1e-3])
    run_dirs = [tmp_path / "runs" / run_dir_name(to_container(c), run_id(to_container(c))) for c in configs]
    run_dirs[1].mkdir(parents=True)
    refusals = []
    fit = packed.fit_pack

    def fit_checking_locks(runs, provider):  # while the pack trains, launch its run alone
        with pytest.raises(RunLocked) as refused:
            execute(configs[0])
        refusals.append(str(refused.value))
        return fit(runs, provider)

    monkeypatch.setattr(packed, "fit_pack", fit_checking_locks)
    with RunLock(run_dirs[1]):  # another launch trains seed 2
        trained = packed.execute_pack(configs)
    assert [r["seed"] for r in trained] == [1]
    assert "run.lock" in capsys.readouterr().err.split(f"Error: run {run_dirs[1].name} is being trained by pid")[1]
    assert not (run_dirs[1] / "result.json").exists() and not (run_dirs[1] / "metrics.jsonl").exists()
    (refusal,) = refusals
    assert f"run {run_dirs[0].name} is being trained by pid {os.getpid()}" in refusal
    assert not (run_dirs[0] / "run.lock").exists()  # released after the pack
    # the held run is trained by the next launch of the pack, the finished one skipped
    monkeypatch.setattr(packed, "fit_pack", fit)
    assert [r["seed"] for r in packed.execute_pack(configs)] == [2]
    assert not list((tmp_path / "runs").glob("*/run.lock"))


def test_a_packed_run_with_keep_weights_false_deletes_its_weights_after_success(tmp_path):
    """``trainer.keep_weights=false`` means the same in a pack as alone: each record says the weights were
    deleted, and no ``trainable.safetensors`` is left (the budget counts 0 bytes for them)."""
    import aotp.trainer.packed as packed

    configs = packed.pack_configs([*overrides("aot_fc", tmp_path), "trainer.keep_weights=false"], SEEDS, [1e-3])
    trained = packed.execute_pack(configs)
    assert [r["seed"] for r in trained] == SEEDS
    for record in trained:
        assert record["status"] == "success"
        assert record["trainable_weights"] == "deleted after success (trainer.keep_weights=false)"
        assert not (tmp_path / "runs" / os.path.basename(record["run_dir"]) / "trainable.safetensors").exists()


def test_packed_loop_reads_losses_together_and_no_aot_rows_per_step(tmp_path, monkeypatch):
    """Issue 26: the packed loop read every run's logged loss with ``.item()`` at every logged step (a
    host-device sync per run and step on a GPU), and each run's biases went through ``torch.unique`` + two
    ``int()`` reads. Now the logged losses are read together (``tolist``: at most every LOSS_READ_EVERY
    logged steps per run and before a run's evaluation/checkpoint), bitwise the values a per-step ``.item()``
    gives; with the device path (``rows_per_position``, as on a GPU) the AoT module reads nothing. Counted by
    the training benchmark's counter; evaluations are stubbed (they read their scores, by design)."""
    from aotp.bench.train import count_cpu_reads
    from aotp.trainer import loop
    from aotp.trainer.packed import build_pack, fit_pack, pack_configs, release_locks

    six_steps = [o for o in overrides("aot_fc", tmp_path) if not o.startswith("trainer.eval_every")]
    runs, _, _, provider = build_pack(pack_configs([*six_steps, "trainer.eval_every=6", "trainer.log_every=1"],
                                                   SEEDS, LRS))
    monkeypatch.setattr(loop, "LOSS_READ_EVERY", 2)  # with 4 runs: a read per 8 logged steps of the pack
    logged, per_step = {}, {}
    try:
        for index, run in enumerate(runs):
            run.model.aot.rows_per_position = True
            run.trainer._evaluate_and_select = lambda state, best_state: best_state
            run.loggers.log = lambda kind, step, values, index=index: logged.setdefault(index, []).append(
                (step, values["loss"])) if kind == "train" else None
            loss = run.model.loss

            def reading_every_step(logits, labels, loss=loss, index=index):  # the reference: a read per step
                value = loss(logits, labels)
                per_step.setdefault(index, []).append(value.item())
                return value
            run.model.loss = reading_every_step
        with count_cpu_reads() as sites:
            fit_pack(runs, provider)
    finally:
        release_locks(runs)
    in_packed = {site: n for site, n in sites.items() if "aotp/trainer/packed.py" in site}
    in_aot = {site: n for site, n in sites.items() if "aotp/methods/aot/" in site}
    assert in_aot == {}
    assert set(site.split()[0] for site in in_packed) == {"tolist"}
    # 24 logged steps: a read when the pack holds 8 pending (steps 2 and 4) and before each run's last evaluation
    assert sum(in_packed.values()) == 2 + len(runs)
    assert sorted(logged) == sorted(per_step) == list(range(len(runs)))
    for index in logged:  # accumulation 1: the logged loss of step s is the step's loss, read bitwise
        assert logged[index] == list(enumerate(per_step[index], start=1)) and len(logged[index]) == 6
