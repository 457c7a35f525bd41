"""aotp.estimate: the sweep's runs, their batches (the loop's own), the length table, ReCoRD's estimated sizes, the
interpolation, the offline shape fallback, the stated-throughput mode, the report."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from aotp.estimate import (
    Workload,
    bound_batches,
    eval_slices,
    interpolated,
    length_grid,
    main,
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


def test_eval_batches_are_consecutive_slices_padded_to_their_longest_and_count_choices():
    import numpy as np

    assert eval_slices(np.array([3, 9, 4, 2, 5]), batch_size=2, rows_per_example=1) == [(2, 9), (2, 4), (1, 5)]
    assert eval_slices(np.array([7, 4]), batch_size=2, rows_per_example=2) == [(4, 7)]  # 2 examples x 2 choices
    assert bound_batches(5, 2, 2, 128) == [(4, 128), (4, 128), (2, 128)]


def test_interpolation_is_exact_on_the_grid_and_linear_between():
    grid = length_grid(128)
    assert grid == [16, 32, 64, 128]
    measured = {(8, 16): 1.0, (8, 32): 2.0, (8, 64): 4.0, (8, 128): 10.0}
    measure = lambda rows, length: measured[(rows, length)]  # noqa: E731
    assert interpolated(measure, 8, 64, grid) == 4.0
    assert interpolated(measure, 8, 96, grid) == pytest.approx(7.0)
    assert interpolated(measure, 8, 8, grid) == pytest.approx(0.5)  # below the grid: proportional


NO_TABLE = {"families": {}}  # a length table without entries: every task at the max_length bound


def test_workload_without_files_or_table_uses_official_sizes_at_max_length():
    cfg = compose(["model=tiny_bert", "task=glue/rte", "trainer.epochs=3", "trainer.batch_size=16",
                       "trainer.eval_batch_size=100", "data.max_length=128"])
    spec = TaskSpec.from_config(cfg.task)
    warnings: list[str] = []
    workload = run_workload(cfg, spec, tokenizer=None, uses_token_type_ids=True, warnings=warnings, table=NO_TABLE)
    assert isinstance(workload, Workload) and warnings == []
    assert len(workload.train_batches) == 3 * 156 and workload.train_examples == 3 * 2490
    assert {length for _, length in workload.train_batches} == {128}
    assert workload.eval_batches == [(100, 128)] * 2 + [(77, 128)]
    assert workload.evaluations == 3 + 1 and workload.lengths_from == "max_length bound"
    assert workload.sizes_from == "official_sizes"
    copa = compose(["model=tiny_bert", "task=superglue/copa", "trainer.batch_size=16", "data.max_length=64"])
    copa_workload = run_workload(copa, TaskSpec.from_config(copa.task), None, True, warnings, table=NO_TABLE)
    assert copa_workload.train_batches[0] == (32, 64)  # 16 examples x 2 choices, each a sequence


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


# ---- issue 26, item 5: price what the loop really does, every task, at a stated throughput ----------------------

def _loop_reference(cfg, shared_data):
    """The loop's own batches for ``cfg``: a real Trainer (tiny model) over the data the run loads, walked epoch by
    epoch with its step rule up to ``total_steps``; returns (its batches in order, the lengths it measured)."""
    import torch

    from aotp.models.builders import build_backbone
    from aotp.tasks import load_task_data
    from aotp.trainer.loop import Trainer
    from tests.conftest import make_tiny_task_model

    spec = TaskSpec.from_config(cfg.task)
    backbone = build_backbone(cfg.model)
    data = load_task_data(spec, backbone.tokenizer, cfg.data, uses_token_type_ids=backbone.uses_token_type_ids,
                          seed=int(cfg.seed), cache_dir=None)
    trainer = Trainer(cfg.trainer, make_tiny_task_model("bert"), None, data, "unused", None, torch.device("cpu"),
                      seed=int(cfg.seed))
    batches, step, epoch = [], 0, 0
    while step < trainer.total_steps:  # Trainer.fit's rule: a step every `accumulation` batches and at epoch end
        epoch_batches = trainer.epoch_batches(epoch)
        for index, batch in enumerate(epoch_batches):
            batches.append(batch)
            if (index + 1) % trainer.accumulation and index != len(epoch_batches) - 1:
                continue
            step += 1
            if step >= trainer.total_steps:
                break
        epoch += 1
    return spec, backbone, batches, trainer.lengths


@pytest.mark.parametrize("group_by_length", [True, False])
@pytest.mark.parametrize("limits", [["trainer.epochs=2"], ["trainer.max_steps=9"]])
def test_priced_padding_is_the_padding_of_the_loops_own_batches(group_by_length, limits, shared_data):
    from aotp.trainer.loop import padded_token_share

    cfg = compose(["model=tiny_bert", "task=glue/rte", f"data.root={shared_data}", "data.max_train_samples=300",
                   "data.max_eval_samples=40", "trainer.batch_size=8", "trainer.gradient_accumulation_steps=2",
                   f"trainer.group_by_length={str(group_by_length).lower()}", "data.cache=false", "seed=3", *limits])
    spec, backbone, batches, lengths = _loop_reference(cfg, shared_data)
    workload = run_workload(cfg, spec, backbone.tokenizer, backbone.uses_token_type_ids, [])
    assert workload.lengths_from == "files"
    # the same micro-batches in the same order: rows and padded length of each
    assert workload.train_batches == [(len(b), max(lengths[i] for i in b)) for b in batches]
    real = sum(lengths[i] for b in batches for i in b)
    priced_share = 1.0 - real / sum(rows * length for rows, length in workload.train_batches)
    assert priced_share == pytest.approx(padded_token_share(batches, lengths), abs=1e-12)
    assert workload.padded_share == pytest.approx(padded_token_share(batches, lengths), abs=1e-12)
    assert workload.train_examples == sum(len(b) for b in batches)
    if group_by_length:  # grouping pads far less than a random order (what the estimate priced before)
        assert workload.padded_share < 0.5 * padded_token_share(
            [list(range(i, min(i + 8, len(lengths)))) for i in range(0, len(lengths), 8)], lengths)


def test_micro_batches_are_priced_as_the_loop_splits_the_steps(shared_data):
    from aotp.trainer import loop

    if not hasattr(loop, "split_step"):
        pytest.skip("this loop has no trainer.micro_batch_size")
    cfg = compose(["model=tiny_bert", "task=glue/rte", f"data.root={shared_data}", "data.max_train_samples=120",
                   "data.max_eval_samples=20", "trainer.batch_size=4", "trainer.gradient_accumulation_steps=4",
                   "trainer.micro_batch_size=16", "trainer.epochs=1", "data.cache=false", "seed=1"])
    spec, backbone, batches, lengths = _loop_reference(cfg, shared_data)
    workload = run_workload(cfg, spec, backbone.tokenizer, backbone.uses_token_type_ids, [], device="cpu")
    forwards = [m.indices for start in range(0, len(batches), 4) for m in loop.split_step(batches[start:start + 4], 16)]
    assert workload.train_batches == [(len(f), max(lengths[i] for i in f)) for f in forwards]
    assert len(workload.train_batches) == len(batches) // 4 + (1 if len(batches) % 4 else 0)


def test_without_files_the_length_table_prices_each_task_and_says_which_source():
    import numpy as np

    from aotp.estimate import drawn_lengths, load_length_table

    table = load_length_table()
    entry = table["families"]["wordpiece_uncased"]["tasks"]["glue/sst2"]
    cfg = compose(["model=roberta_base", "method=bitfit", "task=glue/sst2", "trainer.epochs=1"])
    workload = run_workload(cfg, TaskSpec.from_config(cfg.task), None, False, [])
    assert workload.lengths_from == "length table (wordpiece_uncased, standing in for gpt2_bpe)"
    assert workload.train_examples == 67349 and workload.sizes_from == "official_sizes"
    assert max(workload.train_lengths) < 128  # not every batch at max_length any more
    assert 0.0 < workload.padded_share < 0.2  # grouped by length (trainer.group_by_length=true by default)
    drawn = drawn_lengths(entry["train"], 67349, 128)
    assert np.percentile(drawn, 50) == pytest.approx(entry["train"][50], abs=1)
    assert np.percentile(drawn, 90) == pytest.approx(entry["train"][90], abs=1)
    assert drawn.max() <= 128 and np.array_equal(drawn, drawn_lengths(entry["train"], 67349, 128))  # deterministic
    tiny = compose(["model=tiny_bert", "method=bitfit", "task=glue/sst2", "trainer.epochs=1"])
    assert run_workload(tiny, TaskSpec.from_config(tiny.task), None, False, []).lengths_from \
        == "length table (wordpiece_uncased)"  # the family the table was measured with
    qqp = compose(["model=roberta_base", "method=bitfit", "task=glue/qqp", "trainer.max_steps=3"])
    assert run_workload(qqp, TaskSpec.from_config(qqp.task), None, False, []).lengths_from == "max_length bound"


def test_the_length_table_is_small_names_its_sources_and_is_what_its_script_makes(shared_data):
    import importlib.util

    from omegaconf import OmegaConf

    from aotp.estimate import LENGTH_TABLE, load_length_table
    from aotp.models.builders import build_backbone
    from tests.helpers import REPO_ROOT

    assert LENGTH_TABLE.stat().st_size < 32_000
    table = load_length_table()
    assert "scripts/token_length_table.py" in table["made_by"]
    tasks = table["families"]["wordpiece_uncased"]["tasks"]
    assert {"glue/mnli", "glue/sst2", "superglue/record", "superglue/multirc"} <= set(tasks)
    assert all(len(e["train"]) == 101 and e["train"] == sorted(e["train"]) and e["from"] for e in tasks.values())
    assert "CLUES" in tasks["superglue/record"]["from"]["sample"]
    spec_file = REPO_ROOT / "scripts" / "token_length_table.py"
    module_spec = importlib.util.spec_from_file_location("token_length_table", spec_file)
    script = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(script)
    minilm = build_backbone(OmegaConf.create({"name": "minilm", "source": "package"}))
    made = script.task_entry(TaskSpec.from_config(OmegaConf.load(REPO_ROOT / "configs/task/glue/rte.yaml")),
                             shared_data, None, minilm.tokenizer, minilm.uses_token_type_ids)
    assert made["train"] == tasks["glue/rte"]["train"] and made["eval"] == tasks["glue/rte"]["eval"]


def test_record_has_estimated_sizes_and_is_in_the_compute_and_the_host_memory_budget():
    from aotp.budget import run_budget
    from aotp.estimate import example_counts

    cfg = compose(["model=roberta_large", "method=bitfit", "task=superglue/record", "trainer.epochs=1"])
    spec = TaskSpec.from_config(cfg.task)
    counts, source = example_counts(spec)
    assert counts == {"train": 1173505, "validation": 116500, "test": 116500} and source.startswith("size_estimate")
    assert spec.extra["size_estimate"]["queries"]["train"] * spec.extra["size_estimate"]["candidates_per_query"] \
        == pytest.approx(counts["train"], abs=1)
    warnings: list[str] = []
    workload = run_workload(cfg, spec, None, False, warnings)
    assert workload is not None and warnings == []  # no longer left out
    assert workload.train_examples == 1173505 and workload.sizes_from.startswith("size_estimate")
    assert workload.lengths_from.startswith("length table")  # the CLUES sample's lengths, not max_length
    assert sum(rows for rows, _ in workload.eval_batches) == 116500
    budget = run_budget(cfg)
    assert budget["train_examples"] == 1173505 and budget["eval_examples"] == 116500
    assert "estimated" in budget["warning"]
    tokens = (1173505 + 116500) * 256  # the examples' token positions, bounded at max_length
    assert budget["host_peak"] == 600 * 2**20 + 2 * 4 * budget["counts"]["backbone"] \
        + 4 * budget["counts"]["trainable"] + 72 * tokens


def test_run_flops_is_the_stated_formula():
    import numpy as np

    from aotp.budget import Counts
    from aotp.estimate import run_flops

    counts = Counts(total=0, trainable=0, backbone=0, reparam=0, head=0, vocab_size=10, num_layers=2, hidden_size=4,
                    intermediate_size=16, num_heads=1, family="bert", relative_positions=0, source="test", dense=100)
    workload = Workload(np.array([2, 1]), np.array([3, 5]), [(4, 6)], 2, "files", 3, real_tokens=10,
                        check_batches=[(4, 6)], recheck=False)
    attention_train = 4 * 2 * 4 * (2 * 9 + 1 * 25)
    flops = run_flops(counts, "full", workload)
    assert flops["train"] == 6 * 100 * (2 * 3 + 1 * 5) + 3 * attention_train
    assert run_flops(counts, "frozen", workload)["train"] == 4 * 100 * (2 * 3 + 1 * 5) + 3 * attention_train
    assert flops["eval"] == 2 * (2 * 100 * 4 * 6 + 4 * 2 * 4 * 4 * 36)  # two evaluations of one batch
    deberta = Counts(**{**counts.__dict__, "family": "deberta_v2", "relative_positions": 512})
    assert run_flops(deberta, "full", workload)["train"] == flops["train"] + 3 * 4 * 2 * 4 * 512 * (2 * 3 + 1 * 5)


def test_stated_throughput_mode_prices_gpu_hours_and_marks_every_figure_an_estimate(tmp_path, capsys):
    from aotp.estimate import THROUGHPUT_PRESETS, analytic_estimate, load_throughput

    overrides = ["experiment=smoke_tiny", "task=glue/rte", "method=full_ft,bitfit", "seed=1", "experiment.lr_index=0"]
    preset = load_throughput("h100-sxm-assumed")
    result = analytic_estimate(overrides, preset, quiet=True)
    assert [g["method"] for g in result["groups"]] == ["full_ft", "bitfit"]
    full, frozen = result["runs"]
    peak = THROUGHPUT_PRESETS["h100-sxm-assumed"]["peak_tflops"]["tf32"] * 1e12  # fp32 runs, tf32 on by default
    assert full["precision"] == "tf32" and full["rate"] == "20% of 494.7 TFLOP/s tf32"
    assert full["estimated_seconds"] == pytest.approx((full["train_flops"] + full["eval_flops"]) / (0.2 * peak) + 30)
    assert full["train_flops"] > frozen["train_flops"]  # 6 N against 4 N per token, same batches
    assert full["estimated_seconds_bf16"] < full["estimated_seconds"]
    assert result["label"].startswith("estimate (assumed throughput h100-sxm-assumed")
    custom = tmp_path / "rates.json"
    custom.write_text(json.dumps({"peak_tflops": {"tf32": 100, "bf16": 200},
                                  "rates": [{"method_class": "full", "achieved_tflops": 50}, {"mfu": 0.5}]}))
    priced = analytic_estimate(overrides, load_throughput(str(custom)), quiet=True)["runs"]
    assert priced[0]["rate"] == "50 TFLOP/s tf32" and priced[1]["rate"] == "50% of 100 TFLOP/s tf32"
    out = tmp_path / "estimate.json"
    assert main([*overrides, "throughput=h100-sxm-assumed", f"output={out}"]) == 0
    printed = capsys.readouterr().out
    assert "GPU-hours, estimate (assumed throughput h100-sxm-assumed" in printed and "| tiny_bert | full_ft |" in printed
    assert json.loads(out.read_text())["mode"] == "stated throughput"
    with pytest.raises(SystemExit) as exit_info:
        main([*overrides, "throughput=no-such-preset"])
    assert exit_info.value.code == 2
