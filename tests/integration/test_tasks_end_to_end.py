"""Every GLUE/SuperGLUE task end to end on the hand-written fixtures, in one process: load, format,
tokenise, train 5 steps (tiny BERT, full fine-tuning) into a success record; the diagnostics scored
with a fixture-trained MNLI / SuperGLUE-RTE run; leaderboard files written and read back."""

from __future__ import annotations

import json

import pytest

from aotp.evaluate import RunError, evaluate_run, load_run
from aotp.predict import predict_run, read_submission
from aotp.tasks.formatting import FORMATTERS
from aotp.tasks.loading import load_raw_records
from aotp.tasks.spec import load_spec, task_names
from tests.helpers import FIXTURE_DATA, compose, run_cli

TASKS = task_names()
TRAINABLE = [t for t in TASKS if load_spec(t).train_split]
DIAGNOSTICS = {"glue/ax": "glue/mnli", "superglue/axb": "superglue/rte", "superglue/axg": "superglue/rte"}


def fixture_size(task: str, split: str) -> int:
    spec = load_spec(task)
    records = load_raw_records(spec, split, FIXTURE_DATA)
    return len(FORMATTERS.get(spec.formatter).format(spec, records, split not in spec.test_splits))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One 5-step tiny run per trainable task (all in this process); task -> record."""
    from aotp.run import execute

    base = tmp_path_factory.mktemp("task_runs")
    records = {}
    for task in TRAINABLE:
        cfg = compose(["model=tiny_bert", "method=full_ft", f"task={task}", "trainer.max_steps=5",
                       f"data.root={FIXTURE_DATA}", f"paths.results={base / 'runs'}", f"paths.cache={base / 'cache'}",
                       "trainer.progress=false", "logger=jsonl", "trainer.eval_batch_size=16"])
        records[task] = execute(cfg)
    return records


def test_all_trainable_tasks_are_covered():
    assert len(TRAINABLE) == 17 and len(TASKS) == 20 and set(TASKS) - set(TRAINABLE) == set(DIAGNOSTICS)


@pytest.mark.parametrize("task", TRAINABLE)
def test_task_trains_into_a_success_record(task, runs):
    record, spec = runs[task], load_spec(task)
    assert record["status"] == "success" and record["task"] == task and record["task_version"] == spec.version
    assert record["selection"]["steps_done"] == 5
    assert record["data"] == {split: fixture_size(task, split) for split in [spec.train_split, *spec.eval_splits]}
    prefixes = [f"{s}/" for s in spec.eval_splits] if len(spec.eval_splits) > 1 else [""]
    assert set(record["metrics"]) == {p + m for p in prefixes for m in spec.metrics} | {"main", "best_step"}
    low = -1.0 if spec.head == "regression" or "mcc" in spec.metrics else 0.0
    assert all(low <= record["metrics"][k] <= 1.0 for k in record["metrics"] if k != "best_step")
    for split in spec.eval_splits:
        lines = (record["run_dir"] + f"/predictions/{split}.jsonl")
        rows = [json.loads(line) for line in open(lines)]
        units = fixture_size(task, split) if spec.formatter != "record" else \
            len({e["group"] for e in _examples(task, split)})
        assert len(rows) == units


def _examples(task, split):
    spec = load_spec(task)
    return FORMATTERS.get(spec.formatter).format(spec, load_raw_records(spec, split, FIXTURE_DATA), True)


def test_mnli_record_has_matched_and_mismatched_metrics(runs):
    metrics = runs["glue/mnli"]["metrics"]
    assert metrics["main"] == metrics["validation_matched/accuracy"]
    assert "validation_mismatched/accuracy" in metrics


def test_record_predictions_are_entities_per_query(runs):
    rows = [json.loads(line) for line in open(runs["superglue/record"]["run_dir"] + "/predictions/validation.jsonl")]
    examples = _examples("superglue/record", "validation")
    for row in rows:
        candidates = [e["entity"] for e in examples if e["group"] == row["idx"]]
        assert row["prediction"] in candidates and row["label"] == next(e["answers"] for e in examples
                                                                         if e["group"] == row["idx"])


@pytest.mark.parametrize("task", ["glue/rte", "glue/mnli", "glue/stsb", "superglue/multirc", "superglue/copa",
                                  "superglue/record", "superglue/wsc"])
def test_evaluate_rebuilds_the_run_and_reproduces_its_dev_metrics(task, runs, tmp_path):
    summary = evaluate_run(runs[task]["run_dir"], output=tmp_path)
    expected = {k: v for k, v in runs[task]["metrics"].items() if k != "best_step"}
    assert summary["metrics"] == pytest.approx(expected, abs=1e-6)
    assert summary["label_mapping"] is None and (tmp_path / f"{task.replace('/', '-')}.json").is_file()


def test_evaluate_on_another_eval_subset_reports_the_constant_baseline_on_the_same_examples(runs, tmp_path):
    from aotp.tasks.baselines import constant_baselines

    run_dir = runs["glue/rte"]["run_dir"]
    spec, full_size = load_spec("glue/rte"), fixture_size("glue/rte", "validation")
    whole = evaluate_run(run_dir, output=tmp_path / "whole", max_eval_samples=None)
    assert whole["data"] == {"validation": full_size} and whole["max_eval_samples"] is None
    expected = constant_baselines(spec, FIXTURE_DATA)
    assert whole["constant_baseline"] == {"prediction": expected["best"], "metrics": expected["best_metrics"]}
    part = evaluate_run(run_dir, output=tmp_path / "part", max_eval_samples=3)
    assert part["data"] == {"validation": 3} and part["max_eval_samples"] == 3
    rows = [json.loads(line) for line in open(part["predictions"]["validation"])]
    labels = [row["label"] for row in rows]
    majority = max(set(labels), key=lambda label: (labels.count(label), -label))
    assert part["constant_baseline"]["metrics"]["accuracy"] == pytest.approx(labels.count(majority) / 3)
    gain = part["gain_over_constant"]
    assert gain["delta"] == pytest.approx(part["metrics"]["main"] - part["constant_baseline"]["metrics"]["main"])
    assert gain["units"] == {"validation": 3} and gain["ci95"][0] <= gain["delta"] <= gain["ci95"][1]
    grouped = evaluate_run(runs["superglue/multirc"]["run_dir"], output=tmp_path / "multirc")
    questions = {tuple(e["group"]) for e in _examples("superglue/multirc", "validation")}
    assert grouped["gain_over_constant"]["units"] == {"validation": len(questions)}
    assert grouped["constant_baseline"]["prediction"] == \
        constant_baselines(load_spec("superglue/multirc"), FIXTURE_DATA)["best"]


@pytest.mark.parametrize("diagnostic", sorted(DIAGNOSTICS))
def test_diagnostic_is_scored_with_a_trained_run(diagnostic, runs):
    spec = load_spec(diagnostic)
    run_dir = runs[DIAGNOSTICS[diagnostic]]["run_dir"]
    summary = evaluate_run(run_dir, task=diagnostic)
    split = spec.eval_splits[0]
    assert summary["trained_task"] == DIAGNOSTICS[diagnostic] and summary["task"] == diagnostic
    assert summary["data"] == {split: fixture_size(diagnostic, split)}
    assert set(summary["metrics"]) == set(spec.metrics) | {"main"}
    assert summary["label_mapping"] == {name: name for name in spec.label_names}
    rows = [json.loads(line) for line in open(summary["predictions"][split])]
    assert len(rows) == summary["data"][split] and {r["prediction"] for r in rows} <= set(range(len(spec.label_names)))
    written = predict_run(run_dir, task=diagnostic)
    path = written["test"]["path"]
    assert path.endswith(spec.submission["files"]["test"]) and written["test"]["rows"] == fixture_size(diagnostic, "test")
    assert {row["label"] for row in read_submission(spec, path)} <= set(spec.label_names)


def test_a_run_of_another_task_is_refused(runs):
    with pytest.raises(RunError, match=r"was trained on glue/sst2; task glue/ax is scored with a run of glue/mnli"):
        evaluate_run(runs["glue/sst2"]["run_dir"], task="glue/ax")
    with pytest.raises(RunError, match=r"superglue/axg is scored with a run of superglue/rte or glue/rte"):
        predict_run(runs["glue/mnli"]["run_dir"], task="superglue/axg")


def test_unfinished_or_missing_runs_are_refused(runs, tmp_path):
    with pytest.raises(RunError, match="is not a run directory"):
        load_run(tmp_path)
    (tmp_path / "result.json").write_text(json.dumps({"status": "failed", "error": "ValueError: boom"}))
    with pytest.raises(RunError, match="has status 'failed'; only a finished .* ValueError: boom"):
        load_run(tmp_path)


def test_rte_submission_file_parses_back(runs, tmp_path):
    spec = load_spec("glue/rte")
    written = predict_run(runs["glue/rte"]["run_dir"], output=tmp_path)
    assert written == {"test": {"path": str(tmp_path / "RTE.tsv"), "rows": 4, "units": 4}}
    text = (tmp_path / "RTE.tsv").read_text()
    assert text.startswith("index\tprediction\n") and text.count("\n") == 5
    rows = read_submission(spec, tmp_path / "RTE.tsv")
    assert [r["idx"] for r in rows] == [0, 1, 2, 3] and {r["label"] for r in rows} <= set(spec.label_names)


def test_multirc_submission_file_parses_back(runs, tmp_path):
    spec = load_spec("superglue/multirc")
    written = predict_run(runs["superglue/multirc"]["run_dir"], output=tmp_path)
    assert written["test"]["units"] == fixture_size("superglue/multirc", "test")
    rows = read_submission(spec, tmp_path / "MultiRC.jsonl")
    records = load_raw_records(spec, "test", FIXTURE_DATA)
    assert [(r["idx"], [(q["idx"], [a["idx"] for a in q["answers"]]) for q in r["passage"]["questions"]])
            for r in rows] == \
        [(r["idx"], [(q["idx"], [a["idx"] for a in q["answers"]]) for q in r["passage"]["questions"]])
         for r in records]
    assert {a["label"] for r in rows for q in r["passage"]["questions"] for a in q["answers"]} <= {0, 1}


@pytest.mark.parametrize("task", TRAINABLE)
def test_every_task_writes_its_leaderboard_files(task, runs, tmp_path):
    spec = load_spec(task)
    written = predict_run(runs[task]["run_dir"], output=tmp_path)
    assert sorted(written) == sorted(spec.test_splits)
    for split, facts in written.items():
        assert facts["path"] == str(tmp_path / spec.submission["files"][split])
        rows = read_submission(spec, tmp_path / spec.submission["files"][split])
        assert len(rows) == facts["rows"] > 0


def test_cli_predict_in_a_subprocess(runs, tmp_path):
    result = run_cli([f"run={runs['superglue/rte']['run_dir']}", "task=superglue/axb", f"output={tmp_path}"],
                     module="aotp.predict", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"test: 8 rows (8 predictions) -> {tmp_path}/AX-b.jsonl" in result.stdout


def test_cli_evaluate_prints_metrics_and_refuses_with_exit_2(runs, capsys):
    from aotp.evaluate import main

    assert main([f"run={runs['glue/mnli']['run_dir']}", "task=glue/ax"]) == 0
    out = capsys.readouterr().out
    assert "glue/ax scored with run" in out and "(labels mapped from glue/mnli): main=" in out and "mcc=" in out
    assert main([f"run={runs['glue/cola']['run_dir']}", "task=glue/ax"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: run ") and "task glue/ax is scored with a run of glue/mnli" in err
    assert main(["run_dir=x"]) == 2
    assert ("unknown argument 'run_dir'; valid: run, task, data.root, data.max_eval_samples, output, device, "
            "batch_size") in capsys.readouterr().err
    for bad in ("0", "abc"):
        assert main([f"run={runs['glue/rte']['run_dir']}", f"data.max_eval_samples={bad}"]) == 2
        assert (f"data.max_eval_samples={bad!r}: expected a positive integer, or null for the whole split"
                in capsys.readouterr().err)
    assert main([f"run={runs['glue/rte']['run_dir']}", "data.max_eval_samples=null"]) == 0
    out = capsys.readouterr().out
    assert "Constant baseline on the same examples (always " in out and "95% paired-bootstrap interval" in out
    assert main(["task=glue/ax"]) == 2 and "missing run=" in capsys.readouterr().err
    assert main([f"run={runs['glue/mnli']['run_dir']}", "task=glue/axx"]) == 2
    assert "Unknown task 'glue/axx'" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["full_ft", "lora"])
def test_siamese_pair_encoding_trains_evaluates_and_predicts(method, tmp_path):
    from aotp.run import execute

    cfg = compose(["model=tiny_bert", f"method={method}", "task=glue/stsb", "data.pair_encoding=siamese",
                   "trainer.max_steps=5", f"data.root={FIXTURE_DATA}", f"paths.results={tmp_path / 'runs'}",
                   f"paths.cache={tmp_path / 'cache'}", "trainer.progress=false", "logger=jsonl"])
    record = execute(cfg)
    assert record["status"] == "success" and record["config"]["data"]["pair_encoding"] == "siamese"
    d = 32  # tiny_bert's width: the siamese regression head is W_out [u; v; |u - v|] + b_out
    assert record["params"]["expected_trainable"] == record["params"]["trainable"]
    if method == "full_ft":
        assert record["params"]["trainable"] == record["params"]["total"]
    summary = evaluate_run(record["run_dir"], output=tmp_path / "evaluation")
    expected = {k: v for k, v in record["metrics"].items() if k != "best_step"}
    assert summary["metrics"] == pytest.approx(expected, abs=1e-6)
    loaded = load_run(record["run_dir"])
    assert loaded.model.pair_encoding == "siamese"
    assert sum(p.numel() for p in loaded.model.head.parameters()) == 3 * d + 1
    written = predict_run(record["run_dir"], output=tmp_path / "submission")
    assert written["test"]["rows"] == fixture_size("glue/stsb", "test")
