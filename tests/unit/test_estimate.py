"""aotp.estimate: the sweep's runs, their batches, the interpolation, the offline shape fallback, the report."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from aotp.estimate import (
    Workload,
    bound_batches,
    interpolated,
    length_grid,
    main,
    padded_batches,
    run_workload,
    sweep_override_lists,
)
from aotp.results.record import run_dir_name, run_id
from aotp.run import compose
from aotp.tasks.spec import TaskSpec


def test_sweep_runs_follow_the_experiment_and_the_command_line():
    runs, plain = sweep_override_lists(["experiment=smoke_tiny"])
    assert plain == ["experiment=smoke_tiny"]
    assert len(runs) == 8 * 2 * 2 * 2  # methods x tasks x seeds x lr indices
    assert sorted({r for run in runs for r in run if r.startswith("task=")}) == ["task=glue/rte", "task=glue/sst2"]
    narrowed, _ = sweep_override_lists(["experiment=smoke_tiny", "task=glue/rte", "method=lora,bitfit"])
    assert len(narrowed) == 2 * 2 * 2
    assert all("task=glue/rte" not in run for run in narrowed)  # the plain value replaces the sweep axis
    widened, _ = sweep_override_lists(["experiment=smoke_tiny", "seed=1,2,3,4"])
    assert len(widened) == 8 * 2 * 4 * 2


def test_padded_batches_pad_to_the_longest_sequence_and_count_choices():
    features = [{"input_ids": [1] * n} for n in (3, 9, 4, 2, 5)]
    batches = padded_batches(features, batch_size=2, seed=0)
    assert [rows for rows, _ in batches] == [2, 2, 1]
    assert sorted(length for _, length in batches)[-1] == 9
    assert sum(rows for rows, _ in batches) == 5
    choices = [{"input_ids": [[1] * 3, [1] * 7]}, {"input_ids": [[1] * 2, [1] * 4]}]
    assert padded_batches(choices, batch_size=2, seed=0) == [(4, 7)]
    assert bound_batches(5, 2, 2, 128) == [(4, 128), (4, 128), (2, 128)]


def test_interpolation_is_exact_on_the_grid_and_linear_between():
    grid = length_grid(128)
    assert grid == [16, 32, 64, 128]
    measured = {(8, 16): 1.0, (8, 32): 2.0, (8, 64): 4.0, (8, 128): 10.0}
    measure = lambda rows, length: measured[(rows, length)]  # noqa: E731
    assert interpolated(measure, 8, 64, grid) == 4.0
    assert interpolated(measure, 8, 96, grid) == pytest.approx(7.0)
    assert interpolated(measure, 8, 8, grid) == pytest.approx(0.5)  # below the grid: proportional


def test_workload_without_files_uses_official_sizes_at_max_length():
    cfg = compose(["model=tiny_bert", "task=glue/rte", "trainer.epochs=3", "trainer.batch_size=16",
                       "trainer.eval_batch_size=100", "data.max_length=128"])
    spec = TaskSpec.from_config(cfg.task)
    warnings: list[str] = []
    workload = run_workload(cfg, spec, tokenizer=None, uses_token_type_ids=True, warnings=warnings)
    assert isinstance(workload, Workload) and warnings == []
    assert len(workload.train_batches) == 3 * 156 and workload.train_examples == 3 * 2490
    assert {length for _, length in workload.train_batches} == {128}
    assert workload.eval_batches == [(100, 128)] * 2 + [(77, 128)]
    assert workload.evaluations == 3 + 1 and workload.lengths_from == "max_length bound"
    copa = compose(["model=tiny_bert", "task=superglue/copa", "trainer.batch_size=16", "data.max_length=64"])
    copa_workload = run_workload(copa, TaskSpec.from_config(copa.task), None, True, warnings)
    assert copa_workload.train_batches[0] == (32, 64)  # 16 examples x 2 choices, each a sequence
    record = compose(["model=tiny_bert", "task=superglue/record"])
    assert run_workload(record, TaskSpec.from_config(record.task), None, True, warnings) is None
    assert "superglue/record: left out" in warnings[0]


def test_workload_from_files_matches_the_trainers_step_count(shared_data):
    from aotp.models.builders import build_backbone

    cfg = compose(["model=tiny_bert", "task=glue/rte", f"data.root={shared_data}", "data.max_train_samples=50",
                       "data.max_eval_samples=30", "trainer.batch_size=8", "trainer.epochs=2", "data.cache=false"])
    spec = TaskSpec.from_config(cfg.task)
    backbone = build_backbone(cfg.model)
    workload = run_workload(cfg, spec, backbone.tokenizer, backbone.uses_token_type_ids, [])
    assert workload.lengths_from == "files"
    assert len(workload.train_batches) == 2 * 7 and workload.train_examples == 100
    assert max(length for _, length in workload.train_batches) <= spec.max_length
    assert sum(rows for rows, _ in workload.eval_batches) == 30


def test_an_offline_hub_model_is_timed_with_random_weights_of_its_shape(monkeypatch):
    from aotp.models.builders import build_for_timing

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_cfg = OmegaConf.create({"name": "shape_only", "source": "hub", "hub_id": "no-such-org/no-such-model",
                                  "architecture": {"family": "roberta", "vocab_size": 120, "hidden_size": 32,
                                                   "num_hidden_layers": 1, "num_attention_heads": 2,
                                                   "intermediate_size": 64, "max_position_embeddings": 66}})
    backbone, weights = build_for_timing(model_cfg)
    assert weights == "random weights, same shape" and backbone.tokenizer is None
    assert backbone.model.config.hidden_size == 32 and backbone.model.config.vocab_size == 120
    with pytest.raises(RuntimeError, match="Could not load the hub checkpoint"):
        build_for_timing(OmegaConf.create({"name": "x", "source": "hub", "hub_id": "no-such-org/no-such-model"}))


def test_estimate_reports_per_group_and_compares_with_records(tmp_path, shared_data, capsys):
    overrides = ["experiment=smoke_tiny", "task=glue/rte", "method=bitfit", "seed=1", "experiment.lr_index=0",
                 f"data.root={shared_data}", "data.cache=false"]
    config = OmegaConf.to_container(compose(overrides), resolve=True)
    record_dir = tmp_path / "runs" / run_dir_name(config, run_id(config))
    record_dir.mkdir(parents=True)
    (record_dir / "result.json").write_text(json.dumps({"status": "success", "wall_seconds": 12.0}))
    out = tmp_path / "estimate.json"
    assert main([*overrides, "repeats=1", f"compare={tmp_path / 'runs'}", f"output={out}"]) == 0
    result = json.loads(out.read_text())
    assert [(g["model"], g["method"], g["runs"]) for g in result["groups"]] == [("tiny_bert", "bitfit", 1)]
    (run,) = result["runs"]
    assert run["run_dir"] == record_dir.name and run["train_examples"] == 10 * 16  # smoke_tiny: 10 steps of 16
    assert run["estimated_seconds"] == pytest.approx(run["estimated_train_seconds"] + run["estimated_eval_seconds"]
                                                     + result["groups"][0]["build_hours"] * 3600)
    assert result["comparison"]["records"] == 1
    assert result["comparison"]["median_measured_over_estimated"] == pytest.approx(12.0 / run["estimated_seconds"])
    assert "| tiny_bert | bitfit | 1 |" in capsys.readouterr().out


def test_bad_command_lines_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["task=glue/rte"])
    assert exit_info.value.code == 2
    assert "expected experiment=<name>" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["experiment=smoke_tiny", "--repeats", "0"])
