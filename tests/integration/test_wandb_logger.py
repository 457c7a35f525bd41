"""logger=wandb: an offline W&B run is created, tagged and grouped, and finished after the run."""

import json

from tests.helpers import run_cli


def test_wandb_offline_run_is_written_and_finished(shared_data, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    args = ["model=tiny_bert", "task=glue/rte", f"data.root={shared_data}", f"paths.results={tmp_path}",
            "trainer.max_steps=2", "trainer.progress=false", "data.max_train_samples=32", "data.max_eval_samples=16",
            "data.max_length=32", "logger=wandb", "experiment_name=wandb_test"]
    # No API key and no WANDB_MODE: the logger must choose offline by itself.
    result = run_cli(args, env_overrides={"WANDB_MODE": None, "WANDB_API_KEY": None})
    assert result.returncode == 0, result.stderr[-2000:]
    run_dirs = list(tmp_path.glob("*/wandb/offline-run-*"))
    assert len(run_dirs) == 1, list(tmp_path.rglob("*"))[:20]
    record = json.loads(next(tmp_path.glob("*/result.json")).read_text())
    assert record["run_id"] in run_dirs[0].name
    assert (run_dirs[0] / f"run-{record['run_id']}.wandb").is_file()
