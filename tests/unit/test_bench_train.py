"""The training benchmark's smoke run (tiny_bert on fixture SST-2, a few steps): every figure the report
needs is recorded, the ratios are computed from the runs of the same round, and length grouping shows
less padding than random batches."""

from __future__ import annotations

import importlib.util
import json

import pytest

from aotp.bench.train import TrainBenchConfig, format_summary, run_benchmark
from tests.helpers import FIXTURE_DATA

HAS_ACCELERATE = importlib.util.find_spec("accelerate") is not None


@pytest.mark.parametrize("arms", [("aotp", "aotp_ungrouped"),
                                  pytest.param(("aotp", "hf", "aotp_ungrouped"), marks=pytest.mark.skipif(
                                      not HAS_ACCELERATE, reason="the HF Trainer needs accelerate"))])
def test_training_benchmark_smoke(arms, tmp_path):
    out = tmp_path / "train.json"
    cfg = TrainBenchConfig(model="tiny_bert", data_root=str(FIXTURE_DATA), train_examples=12, batch_size=4, rounds=2,
                           arms=arms, methods=("full_ft", "aot_fc"), method_steps=2, max_length=64, out=str(out))
    record = run_benchmark(cfg, log=lambda message: None)
    assert json.loads(out.read_text())["summary"] == json.loads(json.dumps(record["summary"]))
    assert [r["order"][0] for r in record["rounds"]] == [arms[0], arms[1]]  # the first arm rotates
    for round_ in record["rounds"]:
        for arm in arms:
            result = round_["arms"][arm]
            assert result["steps"] == 3 and result["examples"] == 12 and result["train_seconds"] > 0
            assert result["cpu_step_ms"] > 0 and 0 <= result["collate_ms_per_step"] < result["step_ms"]
        grouped, plain = round_["arms"]["aotp"], round_["arms"]["aotp_ungrouped"]
        assert grouped["group_by_length"] and not plain["group_by_length"]
        assert grouped["padded_token_share"] < plain["padded_token_share"]
        assert round_["step_vs_full_ft"]["full_ft"] == 1.0 and round_["methods"]["aot_fc"]["steps"] == 2
        assert round_["step_vs_full_ft"]["aot_fc"] == pytest.approx(round_["methods"]["aot_fc"]["step_ms"]
                                                                    / round_["methods"]["full_ft"]["step_ms"])
        if "hf" in arms:
            assert round_["aotp_over_hf"] == pytest.approx(grouped["examples_per_second"]
                                                           / round_["arms"]["hf"]["examples_per_second"])
    ratios = [r["step_vs_full_ft"]["aot_fc"] for r in record["rounds"]]
    assert record["summary"]["step_vs_full_ft"]["aot_fc"]["median"] == pytest.approx(sum(ratios) / 2)
    text = format_summary(record)
    assert "| aot_fc |" in text and "padded-token share" in text
