"""The benchmark runs end to end on a tiny model and writes complete records."""

from __future__ import annotations

import json

from aotp.bench.inference import BenchConfig, interleaved, run_benchmarks, summary

REQUIRED = {"model", "device", "threads", "method", "variant", "tasks", "batch_size", "seq_len", "latency_ms_median",
            "latency_ms_p90", "throughput_examples_per_s", "peak_memory_bytes", "env"}


def test_benchmark_records(tmp_path):
    cfg = BenchConfig(model="tiny_bert", model_config={"source": "tiny", "name": "tiny_bert", "family": "bert"},
                      batch_size=4, seq_len=16, rounds=2, warmup=1, lookup_repeats=2, train_rounds=1, num_tasks=2,
                      out_dir=str(tmp_path))
    records, path = run_benchmarks(cfg, log=lambda message: None)
    assert json.loads(path.read_text()) == json.loads(json.dumps(records))
    assert all(REQUIRED <= set(r) for r in records)
    variants = {(r["method"], r["variant"]) for r in records}
    assert variants == {("backbone", "frozen"), ("aot_fc", "materialized"), ("aot_fc", "on_the_fly"),
                        ("aot_fc", "multitask"), ("aot_fc", "bias_lookup_materialized"),
                        ("aot_fc", "bias_lookup_on_the_fly"), ("full_ft", "train_step"), ("aot_fc", "train_step")}
    backbone = next(r for r in records if r["method"] == "backbone")
    assert backbone["ratio_to_backbone_median"] == 1.0 and backbone["peak_memory_bytes"] > 0
    assert all(0 <= r["peak_memory_added_bytes"] <= r["peak_memory_bytes"] for r in records)
    assert next(r for r in records if r["variant"] == "multitask")["tasks"] == 2
    assert "ratio" in summary(records)


def test_interleaved_pairs_rounds_and_rotates_order():
    calls = []
    clock = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls.append(name)
            clock[name] += 1
        return fn

    results = interleaved({"a": make("a"), "b": make("b")}, rounds=3, warmup=1, device=__import__("torch").device("cpu"),
                          baseline="a")
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]  # order rotates each round
    assert len(results["a"]["times"]) == len(results["b"]["times"]) == 3  # warmup round dropped
    assert results["a"]["ratio_median"] == 1.0
