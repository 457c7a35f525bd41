"""What a finished run leaves on disk: an AoT run keeps what reproduces its table, not the table, and
its runs are served from that (the table materialised at load) exactly as the run computed them."""

from __future__ import annotations

import json

import pytest
import torch

from omegaconf import OmegaConf

from aotp.budget import run_budget
from tests.helpers import FIXTURE_DATA, run_cli

# MiniLM (the offline pretrained BERT) has a real vocabulary: its fp32 table is
# 30,522 x 6 x 384 x 4 B = 281 MB, so "a run dir holds < 5% of its table" is a real bound.
ARGS = ["model=minilm", "task=glue/rte", f"data.root={FIXTURE_DATA}", "trainer.max_steps=3", "trainer.batch_size=8",
        "data.max_length=64", "trainer.progress=false", "trainer.eval_batch_size=16", "method.lr=1e-2"]


def dir_bytes(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_aot_runs_keep_reparametrizations_and_serve_a_mixed_batch_as_per_task(tmp_path):
    result = run_cli(["-m", "method=aot_fc,aot_kron", f"paths.results={tmp_path / 'runs'}",
                      f"paths.cache={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'multirun'}", *ARGS], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dirs = sorted(p.parent for p in (tmp_path / "runs").glob("*/result.json"))
    assert len(run_dirs) == 2
    for run_dir in run_dirs:
        record = json.loads((run_dir / "result.json").read_text())
        assert record["status"] == "success", record.get("error")
        facts = record["inference"]
        assert facts["table_bytes"] == 30522 * 6 * 384 * 4 and facts["table_path"] is None
        assert facts["max_abs_logit_diff"] <= facts["tolerance"]
        # The check held only the rows of the dev tokens, never the whole table.
        assert 0 < facts["table_bytes_in_memory"] < facts["table_bytes"] / 4
        assert not list(run_dir.rglob("aot_table.safetensors")) and not (run_dir / "checkpoint").exists()
        assert dir_bytes(run_dir) < 0.05 * facts["table_bytes"], (run_dir, dir_bytes(run_dir))
        # aotp.budget's formulas against the files: weights to the byte (+ the safetensors header), the
        # whole run dir within its "kept" figure.
        budget = run_budget(OmegaConf.create(record["config"]))["disk"]
        weights = (run_dir / "trainable.safetensors").stat().st_size
        pack = sum((run_dir / "inference" / name).stat().st_size for name in ("aot_reparam.safetensors", "head.safetensors"))
        assert 0 < weights - budget["trainable_weights"] < 20_000 and 0 < pack - budget["inference_pack"] < 20_000
        assert dir_bytes(run_dir) <= budget["kept"]

    from aotp.inference import MultiTaskModel
    from aotp.inference.model import _read_run

    torch.set_num_threads(1)
    names = ["fc", "kron"]
    multi = MultiTaskModel.from_runs(run_dirs, names=names)
    assert all(source.materialized and source.table.shape[0] == 30522 for source in multi.sources)
    singles = [MultiTaskModel.from_runs([run_dir], names=[name]) for run_dir, name in zip(run_dirs, names)]
    pairs = [("The cat sat on the mat.", "A cat is sitting."), ("Paris is in France.", "Paris is in Spain."),
             ("He did not come back.", "He came back home after many years of travelling abroad.")]
    records = [{"task": name, "sentence1": a, "sentence2": b} for a, b in pairs for name in names]
    mixed = multi.predict(records)
    for record, prediction in zip(records, mixed):
        alone = singles[names.index(record["task"])].predict([record])[0]
        assert prediction["logits"] == pytest.approx(alone["logits"], abs=1e-5)
    # The tables served from the runs' files are the runs' own: each run's dev predictions come back.
    from aotp.tasks import TaskSpec
    from aotp.tasks.loading import load_raw_records

    for run_dir, name, single in zip(run_dirs, names, singles):
        _, config = _read_run(run_dir)
        assert config["method"]["options"]["save_table"] is False
        spec = TaskSpec.from_config(config["task"])
        dev = load_raw_records(spec, "validation", FIXTURE_DATA)
        recorded = [json.loads(line)["prediction"] for line in (run_dir / "predictions" / "validation.jsonl").open()]
        served = single.predict([{**example, "task": name} for example in dev])
        assert [spec.label_names.index(p["prediction"]) for p in served] == recorded and len(recorded) == len(dev) > 0


def test_keep_weights_false_deletes_the_trained_weights_after_success_only(tmp_path):
    args = ["model=tiny_bert", "method=full_ft", "task=glue/rte", f"data.root={FIXTURE_DATA}", "trainer.max_steps=2",
            "trainer.progress=false", "data.max_length=64", f"paths.cache={tmp_path / 'cache'}"]
    kept = run_cli([*args, f"paths.results={tmp_path / 'kept'}"])
    dropped = run_cli([*args, f"paths.results={tmp_path / 'dropped'}", "trainer.keep_weights=false"])
    assert kept.returncode == 0 and dropped.returncode == 0, dropped.stderr[-2000:]
    (kept_dir,) = [p.parent for p in (tmp_path / "kept").glob("*/result.json")]
    (dropped_dir,) = [p.parent for p in (tmp_path / "dropped").glob("*/result.json")]
    assert kept_dir.name == dropped_dir.name  # the option is not part of the run id
    record = json.loads((dropped_dir / "result.json").read_text())
    assert record["status"] == "success" and record["trainable_weights"].startswith("deleted after success")
    assert (kept_dir / "trainable.safetensors").is_file() and not (dropped_dir / "trainable.safetensors").exists()
    budget = run_budget(OmegaConf.create(record["config"]))["disk"]
    assert budget["trainable_weights"] == 0 and dir_bytes(dropped_dir) <= budget["kept"]
