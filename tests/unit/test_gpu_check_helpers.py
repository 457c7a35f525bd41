"""scripts/gpu_check.py, the GPU check's helpers: the requirement check that decides what the bundle carries,
the long-sequence data, and the summary's verdicts (a NaN loss, a moved inference form, a missing or failed
run, a failed step each fail the check). The whole check runs in tests/integration/test_gpu_check_rehearsal.py."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from tests.helpers import REPO_ROOT

spec = importlib.util.spec_from_file_location("gpu_check", REPO_ROOT / "scripts" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)

METHODS = sorted(p.stem for p in (REPO_ROOT / "configs" / "method").glob("*.yaml"))


def test_the_images_tokenizers_and_hub_fail_transformers_4_57_and_the_bundles_meet_them():
    needs = {"transformers 4.57.6": ["tokenizers<=0.23.0,>=0.22.0", "huggingface-hub<1.0,>=0.34.0", "numpy>=1.17"]}
    image = {name: (version, "image") for name, version in gpu_check.IMAGE.items() if version}
    verdicts = {row["name"]: row["met"] for row in gpu_check.check_requirements(needs, image)}
    assert verdicts == {"tokenizers": False, "huggingface-hub": False, "numpy": True}
    bundle = {**image, "tokenizers": ("0.22.2", "bundle"), "huggingface-hub": ("0.36.2", "bundle")}
    assert all(row["met"] for row in gpu_check.check_requirements(needs, bundle))
    missing = gpu_check.check_requirements({"x": ["nonexistent-package>=1"]}, bundle)
    assert missing[0]["met"] is False and "missing" in missing[0]["by"]


def test_extras_and_other_platforms_markers_are_not_runtime_requirements():
    needs = {"w": ["torch>=2; extra == 'torch'", "pywin32; sys_platform == 'win32'", "tomli; python_version < '3.11'"]}
    assert gpu_check.check_requirements(needs, {}) == []


def test_the_data_fills_max_length(tmp_path):
    assert gpu_check.cmd_data(str(REPO_ROOT / "data" / "demo"), str(tmp_path), train_rows=20, dev_rows=5) == 0
    for split, count in (("train", 20), ("dev", 5)):
        lines = (tmp_path / "glue" / "SST-2" / f"{split}.tsv").read_text().splitlines()
        assert lines[0] == "sentence\tlabel" and len(lines) == count + 1
        for line in lines[1:]:
            sentence, label = line.split("\t")
            assert len(sentence.split()) >= 160 and label in ("0", "1")


def write_run(folder, method, losses, diff=0.0, status="success", steps=3):
    run = folder / f"glue-sst2__roberta_large__{method}"
    run.mkdir(parents=True)
    record = {"method": method, "status": status, "config": {"trainer": {"precision": "bf16", "batch_size": 4},
                                                               "data": {"max_length": 32}},
              "selection": {"steps_done": steps, "skipped_steps": 0}, "timings": {"train_seconds": 0.3},
              "inference": {"max_abs_logit_diff": diff, "tolerance": 1e-4},
              "execution": {"train_memory": {"peak_allocated_bytes": 2**30, "peak_reserved_bytes": 2**31}},
              "truncation": {"splits": {"train": {"examples": 12, "truncated": 12}}}}
    (run / "result.json").write_text(json.dumps(record))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"kind": "train", "step": i + 1, "time": 100.0 + i,
                                                           "loss": loss}) + "\n" for i, loss in enumerate(losses)))


def test_run_figures_read_step_time_memory_losses_and_the_inference_check(tmp_path):
    write_run(tmp_path, "lora", [0.7, 0.6, 0.5])
    record = gpu_check._records(tmp_path)[0]
    figures = gpu_check.run_figures(record)
    assert figures["ok"] and figures["step_seconds"] == pytest.approx(0.1)
    assert figures["train_peak_allocated_bytes"] == 2**30 and figures["memory_in_record"]
    assert figures["loss_first"] == 0.7 and figures["loss_last"] == 0.5 and figures["train_examples_at_max_length"] == (12, 12)


def test_a_record_without_gpu_memory_is_read_as_none(tmp_path):
    write_run(tmp_path, "bitfit", [0.7])
    path = tmp_path / "glue-sst2__roberta_large__bitfit" / "result.json"
    record = json.loads(path.read_text())
    del record["execution"]
    path.write_text(json.dumps(record))
    figures = gpu_check.run_figures(gpu_check._records(tmp_path)[0])
    assert figures["train_peak_allocated_bytes"] is None and not figures["memory_in_record"] and figures["ok"]


def make_work(tmp_path, broken: dict):
    work = tmp_path / "work"
    (work / "records").mkdir(parents=True)
    steps = ["install", "env", "standin", "pytest_gpu", "methods", "full_ft_fp16", "packed_alone", "packed_packed",
             "bench", "table"]
    (work / "records" / "steps.jsonl").write_text("".join(
        json.dumps({"step": s, "rc": broken.get(s, 0), "seconds": 1.0}) + "\n" for s in steps))
    for method in METHODS:
        if method == broken.get("missing"):
            continue
        losses = [0.7, math.nan if method == broken.get("nan") else 0.6]
        write_run(work / "runs" / "methods", method, losses, diff=1.0 if method == broken.get("moved") else 0.0)
    return work


@pytest.mark.parametrize("broken", [{"nan": "aot_fc"}, {"moved": "lora"}, {"missing": "ptuning_v2"},
                                    {"methods": 1}], ids=["nan_loss", "inference_form_moved", "no_record",
                                                          "sweep_failed"])
def test_the_summary_fails_the_methods_check(tmp_path, broken):
    good = gpu_check.cmd_summary(str(make_work(tmp_path / "good", {})), str(tmp_path / "good.json"))
    verdict = json.loads((tmp_path / "good.json").read_text())
    assert verdict["checks"]["methods"] is True and good == 1  # the other steps wrote no records here
    assert gpu_check.cmd_summary(str(make_work(tmp_path / "bad", broken)), str(tmp_path / "bad.json")) == 1
    summary = json.loads((tmp_path / "bad.json").read_text())
    assert summary["checks"]["methods"] is False and "methods" in summary["failed"] and summary["passed"] is False
    if "nan" in broken:
        assert summary["methods"][broken["nan"]]["loss_finite"] is False
    if "moved" in broken:
        assert summary["methods"][broken["moved"]]["inference_ok"] is False
    if "missing" in broken:
        assert summary["methods"][broken["missing"]] == {"ok": False, "error": "no record"}
    # every other step has no record in this folder: each is failed, none is passed by default
    assert {"full_ft_fp16", "packed", "bench", "table"} <= set(summary["failed"])
