"""logger=wandb: W&B's own switches are respected, and the run carries what PEFT readers look for first."""

import json

from tests.helpers import FIXTURE_DATA, REPO_ROOT, read_wandb_records, run_cli

TINY_RUN = ["model=tiny_bert", "task=glue/rte", f"data.root={FIXTURE_DATA}", "trainer.progress=false",
            "trainer.batch_size=2", "data.max_length=32", "logger=wandb", "experiment_name=wandb_test"]


def wandb_contents(run_file):
    """(config, summary, history) of an offline W&B run file: the last value of each key, history by step."""
    config, summary, history = {}, {}, {}

    def key(item):
        return "/".join(item.nested_key) if item.nested_key else item.key

    for record in read_wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            config.update({key(item): json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            config.update({key(item): json.loads(item.value_json) for item in record.config.update})
        elif kind == "summary":
            summary.update({key(item): json.loads(item.value_json) for item in record.summary.update})
        elif kind == "history":
            history[record.history.step.num] = {key(item): json.loads(item.value_json) for item in record.history.item}
    return config, summary, history


def test_offline_run_has_parameters_timings_and_loss_at_every_step(tmp_path):
    result = run_cli([*TINY_RUN, f"paths.results={tmp_path}", "trainer.max_steps=5"],
                     env_overrides={"WANDB_MODE": "offline", "WANDB_API_KEY": None})
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(next(tmp_path.glob("*/result.json")).read_text())
    run_files = list(tmp_path.glob(f"*/wandb/offline-run-*/run-{record['run_id']}.wandb"))
    assert len(run_files) == 1, list(tmp_path.rglob("*"))[:20]
    config, summary, history = wandb_contents(run_files[0])
    params = record["params"]
    assert config["params"] == {**params, "share": params["trainable"] / params["total"]}
    assert summary["params/trainable"] == params["trainable"] and summary["params/total"] == params["total"]
    assert summary["params/share"] == params["share"]
    assert summary["timings/train_seconds"] == record["timings"]["train_seconds"] > 0
    assert summary["timings/wall_seconds"] == record["wall_seconds"]
    assert summary["inference/max_abs_logit_diff"] == record["inference"]["max_abs_logit_diff"]
    assert summary["final/main"] == record["metrics"]["main"] and summary["status"] == "success"
    losses = {step: values["train/loss"] for step, values in history.items() if "train/loss" in values}
    assert sorted(losses) == [1, 2, 3, 4, 5]
    assert all(loss > 0 for loss in losses.values())


def test_disabled_writes_no_wandb_files_and_hydra_no_outputs_folder(tmp_path):
    outputs = REPO_ROOT / "outputs"
    before = set(outputs.rglob("*")) if outputs.exists() else set()
    result = run_cli([*TINY_RUN, f"paths.results={tmp_path}", "trainer.max_steps=1"],
                     env_overrides={"WANDB_MODE": "disabled", "WANDB_API_KEY": None})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "W&B disabled (WANDB_MODE=disabled)" in result.stdout
    record_path = next(tmp_path.glob("*/result.json"))
    assert not list(tmp_path.rglob("wandb*")) and not (REPO_ROOT / "wandb").exists()
    # the run's log sits in the run dir with the result line and the record path; Hydra wrote no folder
    log = (record_path.parent / "run.log").read_text()
    assert "glue/rte tiny_bert full_ft seed=42: dev main=" in log and f"Record: {record_path}" in log
    assert (set(outputs.rglob("*")) if outputs.exists() else set()) == before
