"""The inference benchmark on tiny models: complete records, every method's outputs produced and
checked (not just timed), mixed batches that really route, paired ratios that survive a load change."""

from __future__ import annotations

import json

import pytest
import torch

from aotp.bench import report, timing
from aotp.bench.inference import BenchConfig, OutputCheck, run_benchmarks, summary
from aotp.bench.multitask import RoutedLoRAServer, form_of
from aotp.bench.variants import default_variants, resolve
from aotp.methods import METHODS
from aotp.results.schema import json_schema, validate

TINY = {"source": "tiny", "name": "tiny_bert", "family": "bert"}
REQUIRED = {"model", "device", "threads", "dtype", "method", "variant", "tasks", "batch_size", "seq_len",
            "latency_ms_median", "latency_ms_p90", "throughput_examples_per_s", "peak_memory_bytes",
            "overhead_vs_backbone", "outputs_checked", "env"}
# the run record's env block (aotp.results.schema.Environment) + the benchmark's own facts
ENV = {"git", "torch", "packages", "threads", "loadavg_start", "loadavg_end", "cpu", "dtype", "config"}
# P-Tuning v2 with short prefixes: the tiny model is small, the code path is the same.
VARIANTS = tuple(v.replace("prefix16", "prefix4").replace("prefix64", "prefix8") for v in default_variants())
MULTI = ("aot_fc/materialized", "lora/unmerged", "lora/merged", "adapter_houlsby/adapters",
         "adapter_pfeiffer/adapters", "ptuning_v2/prefix4")


def tiny_config(tmp_path, **overrides) -> BenchConfig:
    options = dict(model="tiny_bert", model_config=TINY, batch_sizes=(4,), seq_lens=(16, 24), variants=VARIANTS,
                   rounds=2, warmup=1, lookup_repeats=2, headline=(4, 24), headline_rounds=2, tasks=(1, 2, 4),
                   multitask_variants=MULTI, multitask_batch_size=8, multitask_seq_len=16, out_dir=str(tmp_path),
                   command="pytest")
    options.update(overrides)
    return BenchConfig(**options)


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    records, path = run_benchmarks(tiny_config(out), log=lambda message: None)
    return records, path


def test_records_are_complete_and_written(bench_run):
    records, path = bench_run
    data = json.loads(path.read_text())
    assert data["schema_version"] == 3 and data["records"] == json.loads(json.dumps(records))
    timed = [r for r in records if r["kind"] in ("single_task", "headline", "multi_task") and r.get("serving") != "not_timed"]
    for record in timed:
        assert REQUIRED <= set(record), REQUIRED - set(record)
        assert ENV <= set(record["env"])
        assert record["latency_ms_p90"] >= record["latency_ms_median"] > 0
        assert record["peak_memory_bytes"] >= record["weights_bytes"] > 0
        assert record["activation_peak_bytes"] > 0
    assert data["env"]["threads"] == 1 and data["env"]["command"] == "pytest"
    assert set(data["env"]["git"]) == {"sha", "dirty", "dirty_paths"} and "git_sha" not in data["env"]
    assert validate(data["env"], {**json_schema(), "$ref": "#/$defs/Environment"}) == []
    env = report.load(path)["env"]  # the typed block the report reads
    assert env.git.sha == data["env"]["git"]["sha"] and env.extra["command"] == "pytest"
    assert "vs bb" in summary(records) and "aot_fc" in summary(records)


def test_every_registered_method_is_benchmarked_with_outputs_checked(bench_run):
    records, _ = bench_run
    single = [r for r in records if r["kind"] == "single_task"]
    assert {r["method"] for r in single} == set(METHODS.names()) | {"backbone"}
    for batch, length in ((4, 16), (4, 24)):
        at = {(r["method"], r["variant"]) for r in single if (r["batch_size"], r["seq_len"]) == (batch, length)}
        assert at == {("backbone", "frozen")} | {(m, form.name) for m, form in map(resolve, VARIANTS)}
    for record in single:
        check = record["outputs_checked"]
        assert check["shape"] == [record["batch_size"], 2] and check["finite"] is True
        assert check["calls_checked"] == record["rounds"] + 1 or record["method"] == "backbone"  # + the warm-up round
        if record["method"] != "backbone":
            assert check["differs_from_backbone"] and check["max_abs_diff_vs_backbone"] > 1e-3
    backbone = next(r for r in single if r["method"] == "backbone")
    assert backbone["overhead_vs_backbone"] == 1.0
    assert backbone["outputs_checked"]["calls_checked"] > backbone["rounds"]  # it runs between the variants
    lora = {r["variant"]: r for r in single if r["method"] == "lora" and r["seq_len"] == 16}
    assert lora["merged"]["facts"]["lora_merged_modules"] > 0 and lora["unmerged"]["facts"]["prepare_for_inference"] == "skipped"
    aot = next(r for r in single if r["method"] == "aot_fc" and r["variant"] == "materialized_bf16")
    assert aot["facts"]["table_dtype_in_memory"] == "bfloat16"


def test_headline_and_bias_lookup_records(bench_run):
    records, _ = bench_run
    headline = {r["method"] for r in records if r["kind"] == "headline"}
    assert headline == {"backbone", "full_ft", "aot_fc"}
    previous = next(r for r in records if r["kind"] == "headline" and r["variant"] == "materialized_previous")
    assert previous["outputs_checked"]["differs_from_backbone"] and "as they were before" in previous["note"]
    lookups = {(r["method"], r["variant"], r["tasks"]) for r in records if r["kind"] == "bias_lookup"}
    assert {("aot_fc", "materialized", 1), ("aot_fc", "materialized_previous", 1), ("aot_fc", "on_the_fly", 1),
            ("aot_kron", "on_the_fly", 1), ("aot_fc", "materialized_mixed", 4)} <= lookups
    for record in records:
        if record["kind"] == "bias_lookup":
            assert 0 < record["share_of_backbone"] and record["timed_calls"] == 2 * record["rounds"]


def test_multitask_mixed_batches_equal_per_task_serving(bench_run):
    records, _ = bench_run
    multi = [r for r in records if r["kind"] == "multi_task"]
    mixed = {(r["method"], r["variant"], r["tasks"]): r for r in multi if r["serving"] == "mixed"}
    assert set(mixed) == {(m, v, t) for m, v in (("aot_fc", "materialized"), ("lora", "unmerged"),
                                                   ("adapter_houlsby", "adapters"), ("adapter_pfeiffer", "adapters"),
                                                   ("ptuning_v2", "prefix4")) for t in (2, 4)}
    for record in mixed.values():
        check = record["outputs_checked"]
        assert check["matches_per_task"] and check["max_abs_diff_vs_per_task"] < 1e-4
        assert check["encoder_states_max_abs_diff_other_tasks_vs_task0"] > 1e-3  # rows really took their task's adaptation
        assert check["encoder_states_max_abs_diff_task0_rows_vs_task0"] < 1e-4
        assert record["mixing"].startswith("mixes") and record["tasks_loaded"] == 4
    per_task = {(r["method"], r["variant"], r["tasks"]) for r in multi if r["serving"] == "per_task"}
    assert ("lora", "merged", 4) in per_task and ("lora", "merged", 4) not in mixed  # cannot mix: said, not faked
    merged = next(r for r in multi if r["method"] == "lora" and r["variant"] == "merged" and r["tasks"] == 4)
    assert merged["mixing"].startswith("cannot mix")
    not_timed = {r["method"]: r for r in multi if r["serving"] == "not_timed"}
    assert set(not_timed) == {"full_ft", "bitfit"} and all(r["mixing"].startswith("cannot mix") for r in not_timed.values())
    single = next(r for r in multi if r["method"] == "aot_fc" and r["serving"] == "single")
    assert single["tasks"] == 1 and single["throughput_vs_single_task"] == 1.0
    weights = {r["tasks"]: r["weights_bytes"] for r in multi if r["method"] == "aot_fc" and r["serving"] == "mixed"}
    assert weights[4] > weights[2]  # more task tables resident


def test_report_and_plots(bench_run, tmp_path):
    _, path = bench_run
    readme = report.write_report(path, tmp_path / "README.md")
    text = readme.read_text()
    assert "pytest" in text and "| aot_fc | materialized |" in text and "cannot mix" in text
    assert "## Targets" in text and "materialized <= 1.03" in text and "T=4 >= 0.95" in text
    for name in ("throughput", "overhead", "multitask"):
        assert (path.parent / f"{path.stem}_{name}.png").stat().st_size > 1000
    checks = report.acceptance(report.load(path)["records"])
    assert len(checks) == 2 and all(isinstance(c["passed"], bool) for c in checks)
    assert "headline section" in checks[0]["target"]  # the long headline comparison is the one judged


def test_a_method_that_changes_nothing_is_refused(tmp_path):
    cfg = tiny_config(tmp_path, variants=("lora/merged",), scale=0.0, tasks=(), headline_rounds=0, seq_lens=(16,))
    with pytest.raises(RuntimeError, match="did not change the model"):
        run_benchmarks(cfg, log=lambda message: None)


def test_ignored_routing_is_caught(tmp_path, monkeypatch):
    monkeypatch.setattr(RoutedLoRAServer, "encode_mixed", lambda self, inputs, row_tasks: self.encode_single(inputs, 0))
    cfg = tiny_config(tmp_path, variants=("lora/unmerged",), multitask_variants=("lora/unmerged",), tasks=(1, 2),
                      headline_rounds=0, seq_lens=(16,))
    with pytest.raises(RuntimeError, match="differs from per-task serving|routing ignored"):
        run_benchmarks(cfg, log=lambda message: None)


def test_output_check_rejects_wrong_shapes_and_non_finite_outputs():
    check = OutputCheck({"a": (2, 3)})
    check("a", torch.zeros(2, 3))
    assert check.calls["a"] == 1
    with pytest.raises(RuntimeError, match="expected"):
        check("a", torch.zeros(3, 2))
    with pytest.raises(RuntimeError, match="non-finite"):
        check("a", torch.tensor([[0.0, float("nan"), 0.0]] * 2))


def test_interleaving_pairs_each_variant_with_neighbouring_backbone_calls(monkeypatch):
    """A simulated machine whose load doubles half-way: the paired ratio stays the true 1.1 and 1.5."""
    cost = {"base": 1.0, "a": 1.1, "b": 1.5}
    clock = {"calls": 0}
    order = []

    def fake_time_call(fn, device):
        name = fn()
        order.append(name)
        clock["calls"] += 1
        load = 1.0 if clock["calls"] <= 12 else 2.0
        return timing.Sample(cost[name] * load, cpu=cost[name]), name

    monkeypatch.setattr(timing, "time_call", fake_time_call)
    variants = {name: (lambda name=name: name) for name in cost}
    results = timing.interleaved(variants, rounds=4, warmup=1, device=torch.device("cpu"), baseline="base",
                                 baseline_every=1)
    assert order[:5] == ["base", "a", "base", "b", "base"] and order[5:10] == ["base", "b", "base", "a", "base"]
    assert len(results["a"].samples) == len(results["b"].samples) == 4  # the warm-up round is dropped
    summary_a, summary_b = timing.ratio_summary(results["a"], "r"), timing.ratio_summary(results["b"], "r")
    assert summary_a["r"] == pytest.approx(1.1) and summary_a["r_cpu"] == pytest.approx(1.1)
    assert summary_b["r"] == pytest.approx(1.5)
    # b against a, each normalised by its own neighbouring backbone calls (the multi-task "vs single task").
    # (the round where the load steps up between calls is off; the median over rounds is not)
    ratios = timing.normalised_ratios(results["b"], results["a"])
    assert len(ratios) == 4 and sorted(ratios)[1:3] == pytest.approx([1.5 / 1.1] * 2)
    assert results["a"].summary(1)["samples"]["wall"] == [1100.0, 1100.0, 2200.0, 2200.0]
    # Without pairing, the load change would leak into the ratio of medians:
    walls = {name: sorted(s.wall for s in results[name].samples) for name in cost}
    assert walls["a"][-1] / walls["base"][0] > 2


def test_percentile_and_mixing_table_cover_registered_methods():
    assert timing.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert timing.percentile([5.0], 0.9) == 5.0
    for name in METHODS.names():
        for variant in METHODS.get(name).benchmark_variants:
            form = form_of(f"{name}/{variant}")
            assert form.mixing, f"say how {name}/{variant} serves mixed batches"
            assert form.mixing.startswith("mixes") == form.mixes, form
