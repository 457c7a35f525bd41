"""Aggregation of run records into tables, on synthetic records: selection, counts, warnings, determinism."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from aotp.results import aggregate as agg
from tests.helpers import REPO_ROOT

MAIN = {"glue": ["accuracy"]}


def write_record(root: Path, *, task="rte", benchmark="glue", model="roberta_base", method="full_ft", lr=1e-5, seed=1,
                 main=0.5, status="success", version=1, dirty=False, share=1.0, experiment="exp", error=None,
                 name=None, data=None) -> Path:
    run_id = name or f"{benchmark}{task}{model}{method}{lr}{seed}{version}{status}".replace(".", "")
    folder = root / f"{benchmark}-{task}__{model}__{method}__seed{seed}__{run_id}"
    folder.mkdir(parents=True)
    record = {
        "schema_version": 1, "status": status, "run_id": run_id, "experiment": experiment,
        "task": f"{benchmark}/{task}", "task_version": version, "method": method, "model": model, "seed": seed,
        "config": {"method": {"name": method, "lr": lr}, "task": {"benchmark": benchmark, "name": task,
                                                                  "version": version, "main_metric": ["accuracy"]},
                   "seed": seed, "model": {"name": model}, "data": data or {}},
        "env": {"git": {"sha": "abc", "dirty": dirty}},
    }
    if status == "success":
        record["metrics"] = {"accuracy": main, "main": main, "best_step": 10}
        record["params"] = {"trainable": int(share * 1000), "total": 1000, "share": share}
    else:
        record["error"] = error or "RuntimeError: CUDA out of memory"
        record["traceback"] = "Traceback (most recent call last): ..."
    (folder / "result.json").write_text(json.dumps(record))
    return folder


@pytest.fixture
def grid(tmp_path):
    """Two methods x two tasks x three seeds x two learning rates, with one of every defect."""
    runs = tmp_path / "runs"
    # full_ft / RTE: lr 2e-5 has the best single seed (0.80) but the worse mean; by mean, 1e-5 wins.
    for seed, value in zip((1, 2, 3), (0.70, 0.71, 0.72)):
        write_record(runs, task="rte", lr=1e-5, seed=seed, main=value)
    for seed, value in zip((1, 2, 3), (0.80, 0.50, 0.60)):
        write_record(runs, task="rte", lr=2e-5, seed=seed, main=value)
    # full_ft / SST-2: complete; the selected lr's seed 2 comes from a dirty tree; one outdated-version record.
    for seed, value in zip((1, 2, 3), (0.90, 0.91, 0.92)):
        write_record(runs, task="sst2", lr=1e-5, seed=seed, main=value, dirty=(seed == 2))
    for seed, value in zip((1, 2, 3), (0.80, 0.80, 0.80)):
        write_record(runs, task="sst2", lr=2e-5, seed=seed, main=value)
    write_record(runs, task="sst2", lr=1e-5, seed=1, main=0.99, version=0)
    # lora / RTE: the better lr (5e-4) lost seed 2 to a failure.
    for seed, value in zip((1, 2, 3), (0.60, 0.62, 0.64)):
        write_record(runs, task="rte", method="lora", lr=1e-4, seed=seed, main=value, share=0.01)
    write_record(runs, task="rte", method="lora", lr=5e-4, seed=1, main=0.90, share=0.01)
    write_record(runs, task="rte", method="lora", lr=5e-4, seed=2, status="failed",
                 error="RuntimeError: loss is NaN\nmore lines")
    write_record(runs, task="rte", method="lora", lr=5e-4, seed=3, main=0.88, share=0.01)
    # lora / SST-2: lr 1e-4 misses seed 3 (never ran); the selected 5e-4 is complete.
    for seed, value in zip((1, 2), (0.50, 0.52)):
        write_record(runs, task="sst2", method="lora", lr=1e-4, seed=seed, main=value, share=0.012)
    for seed, value in zip((1, 2, 3), (0.80, 0.81, 0.82)):
        write_record(runs, task="sst2", method="lora", lr=5e-4, seed=seed, main=value, share=0.012)
    return runs


def run(runs: Path, out: Path, **kwargs) -> agg.Aggregation:
    return agg.aggregate(runs, out, config_dir=REPO_ROOT / "configs", references_path=kwargs.pop("references", None),
                         **kwargs)


def test_learning_rate_is_selected_by_the_mean_over_seeds(grid, tmp_path):
    result = run(grid, tmp_path / "out", plots=False)
    (table,) = result.tables
    rte = table.cells[("full_ft", "rte")]
    assert rte.selected_lr == 1e-5  # mean 0.71 beats 0.633, although 2e-5 has the best single seed
    assert rte.mean == pytest.approx(0.71) and rte.std == pytest.approx(0.01)
    assert rte.text() == "71.0±1.0" and rte.complete
    assert table.cells[("lora", "rte")].selected_lr == 5e-4


def test_lower_is_better_metric_selects_the_smallest_mean(tmp_path, monkeypatch):
    assert agg._direction(["accuracy"]) is True and agg._direction(["validation_matched/accuracy"]) is True
    real = agg._direction
    monkeypatch.setattr(agg, "_direction", lambda names: False if list(names) == ["error_rate"] else real(names))
    runs = tmp_path / "runs"
    for lr, values in ((1e-5, (0.3, 0.3)), (2e-5, (0.1, 0.2))):
        for seed, value in zip((1, 2), values):
            folder = write_record(runs, lr=lr, seed=seed, main=value)
            record = json.loads((folder / "result.json").read_text())
            record["config"]["task"]["main_metric"] = ["error_rate"]
            (folder / "result.json").write_text(json.dumps(record))
    (table,) = run(runs, tmp_path / "out", plots=False).tables
    assert table.cells[("full_ft", "rte")].selected_lr == 2e-5


def test_failed_missing_dirty_and_outdated_records_are_marked_never_averaged(grid, tmp_path):
    result = run(grid, tmp_path / "out", plots=False)
    (table,) = result.tables
    assert table.expected_seeds == (1, 2, 3)
    cells = table.cells
    # failed seed of the selected lr: mean over the 2 successes, with the count
    assert cells[("lora", "rte")].text() == "89.0±1.4 (2/3)" and not cells[("lora", "rte")].complete
    # missing seed at a non-selected lr: selected value complete, grid marked
    assert cells[("lora", "sst2")].text() == "81.0±1.0*" and not cells[("lora", "sst2")].complete
    # the outdated record (0.99, version 0) is left out; the dirty seed is marked
    sst2 = cells[("full_ft", "sst2")]
    assert sst2.values == {1: 0.90, 2: 0.91, 3: 0.92} and sst2.text() == "91.0±1.0†" and sst2.complete
    # macro: complete row -> mean over tasks with the per-seed spread; incomplete row -> marked, not averaged
    mean, std, per_seed = table.macro("full_ft")
    assert mean == pytest.approx((0.71 + 0.91) / 2) and per_seed[2] == pytest.approx((0.71 + 0.91) / 2)
    assert table.macro_text("full_ft") == "81.0±1.0"
    assert table.macro("lora") == (None, None, {}) and table.macro_text("lora") == "— (0/2)"
    notes = "\n".join(agg.notes(table))
    assert "lora / RTE: lr 5e-4 (selected): seed 2 failed (RuntimeError: loss is NaN)" in notes
    assert "lora / SST-2: lr 1e-4: seed 3 missing" in notes
    warnings = "\n".join(result.warnings)
    assert "glue/sst2: 1 of version 0 left out: outdated task version (current spec: version 1)" in warnings
    assert "GLUE / roberta_base: 1 failed run(s)" in warnings
    assert "GLUE / roberta_base: 1 expected run(s) missing" in warnings
    assert "GLUE / roberta_base: 1 run(s) from a dirty git tree" in warnings
    # the parameter share column and the files
    assert agg.rows(table)[0][:2] == ["full_ft", "100%"] and agg.rows(table)[1][:2] == ["lora", "1%–1.2%"]
    out = tmp_path / "out"
    markdown = (out / "glue_roberta_base.md").read_text()
    assert agg.PROTOCOL in markdown and "| lora | 1%–1.2% | 81.0±1.0\\* | 89.0±1.4 (2/3) | — (0/2) |" in markdown
    wide = list(csv.reader((out / "glue_roberta_base.csv").open()))
    assert wide[0] == ["Method", "Params", "SST-2", "RTE", "Macro"]
    tidy = {(r["method"], r["task"]): r for r in csv.DictReader((out / "cells.csv").open())}
    assert tidy[("lora", "rte")]["seeds_ok"] == "2" and tidy[("lora", "rte")]["failed_runs"] == "1"
    assert tidy[("full_ft", "macro")]["complete"] == "true" and tidy[("lora", "macro")]["complete"] == "false"
    tex = (out / "glue_roberta_base.tex").read_text()
    assert "89.0$\\pm$1.4 (2/3)" in tex and "\\caption{" in tex and "full\\_ft" in tex
    assert "outdated task version" in (out / "warnings.txt").read_text()


def test_explicit_seeds_and_tasks_expose_what_never_ran(grid, tmp_path):
    (table,) = run(grid, tmp_path / "out", plots=False, seeds=[1, 2, 3, 4], tasks=["glue/rte", "glue/sst2", "glue/cola"]).tables
    assert table.tasks == ["cola", "sst2", "rte"]
    assert table.cells[("full_ft", "rte")].text() == "71.0±1.0 (3/4)*"
    assert table.cells[("full_ft", "cola")].text() == "—"
    assert table.macro_text("full_ft") == "— (0/3)"
    assert "full_ft / CoLA: no runs" in agg.notes(table)


def test_without_a_current_spec_mixed_versions_keep_the_newest(tmp_path):
    runs = tmp_path / "runs"
    write_record(runs, task="newtask", version=1, main=0.1)
    write_record(runs, task="newtask", version=2, main=0.2, seed=2)
    result = run(runs, tmp_path / "out", plots=False)
    (table,) = result.tables
    assert table.cells[("full_ft", "newtask")].values == {2: 0.2}
    assert any("glue/newtask: records mix task versions ['1', '2']" in w for w in result.warnings)


def test_duplicate_records_and_unfinished_runs_are_reported(tmp_path):
    runs = tmp_path / "runs"
    forced = write_record(runs, main=0.5, name="aaa", experiment="one")
    (forced / "result.json.previous").write_text((forced / "result.json").read_text().replace("0.5", "0.1"))
    write_record(runs, main=0.9, name="bbb", experiment="two")
    (runs / "glue-rte__x__full_ft__seed3__ccc" / "checkpoint").mkdir(parents=True)
    (runs / "glue-rte__x__full_ft__seed3__ccc" / "checkpoint.old").mkdir()  # one folder, counted once
    (runs / "glue-rte__x__full_ft__seed4__ddd" / "checkpoint.tmp-123").mkdir(parents=True)  # killed mid-save
    result = run(runs, tmp_path / "out", plots=False)
    assert result.tables[0].cells[("full_ft", "rte")].values == {1: 0.5}  # smallest run id, deterministic
    warnings = "\n".join(result.warnings)
    assert "several successful records with different run ids" in warnings and "aaa, bbb" in warnings
    assert "2 run folder(s) have a checkpoint but no record" in warnings  # the record set aside by force is not read
    only_two = run(runs, tmp_path / "out2", plots=False, experiments=["two"])
    assert only_two.tables[0].cells[("full_ft", "rte")].values == {1: 0.9}


def test_references_beside_ours_with_the_delta(grid, tmp_path):
    references = tmp_path / "references.yaml"
    references.write_text(
        "references:\n"
        "  - {benchmark: glue, model: roberta_base, method: full_ft, source: 'Paper A, Table 2',\n"
        "     tasks: {rte: {value: 70.0, metric: accuracy, std: 0.5}, sst2: {value: 93.0, metric: f1}}}\n"
        "  - {benchmark: glue, model: roberta_base, method: lora, source: 'Paper B, Table 3',\n"
        "     tasks: {rte: {value: 85.0, metric: accuracy}}}\n"
        "  - {benchmark: glue, model: roberta_base, method: lora, tasks: {rte: 1.0}}\n")
    result = run(grid, tmp_path / "out", plots=False, references=references)
    markdown = (tmp_path / "out" / "glue_roberta_base.md").read_text()
    assert "| full_ft | RTE | accuracy | 70.0±0.5 [1] | 71.0 | +1.0 |" in markdown
    assert "| full_ft | SST-2 | f1 | 93.0 [1] | — | n/a (metric 'f1' not in our records) |" in markdown
    assert "| lora | RTE | accuracy | 85.0 [2] | — | n/a (cell incomplete) |" in markdown
    assert "[1] Paper A, Table 2" in markdown and "[2] Paper B, Table 3" in markdown
    assert any("reference entry 2 is malformed" in w for w in result.warnings)


def test_repository_references_file_cites_every_number():
    path = REPO_ROOT / "results" / "references.yaml"
    references, warnings = agg.load_references(path)
    assert not warnings
    known = {(b, t) for b, tasks in agg.TASK_ORDER.items() for t in tasks}
    for ref in references:
        assert ref.source and "http" in ref.source, ref  # a checkable source per number
        assert (ref.benchmark, ref.task) in known and ref.method in agg.METHOD_ORDER and ref.model in agg.MODEL_ORDER
        assert 0 < ref.value <= 100


def test_output_is_byte_identical_when_rebuilt(grid, tmp_path):
    first = run(grid, tmp_path / "a")
    second = run(grid, tmp_path / "b")
    names = sorted(p.name for p in first.files)
    assert names == sorted(p.name for p in second.files)
    assert {"glue_roberta_base.md", "glue_roberta_base.tex", "glue_roberta_base.csv", "cells.csv", "summary.md",
            "macro_glue.png", "warnings.txt"} <= set(names)
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    png = (tmp_path / "a" / "macro_glue.png").read_bytes()
    assert png.startswith(b"\x89PNG") and b"Software" not in png and b"matplotlib" not in png.lower()
    # a fresh process through the CLI writes the same bytes
    cli = subprocess.run([sys.executable, "-m", "aotp.results.aggregate", f"results={grid}", f"output={tmp_path / 'c'}",
                          "references=null"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert "warning: glue/sst2: 1 of version 0 left out" in cli.stderr
    for name in names:
        assert (tmp_path / "c" / name).read_bytes() == (tmp_path / "a" / name).read_bytes(), name


def test_wandb_logging_sends_every_table(grid, tmp_path, monkeypatch):
    logged, finished = {}, []

    class FakeTable:
        def __init__(self, columns, data):
            self.columns, self.data = columns, data

    class FakeRun:
        def log(self, payload):
            logged.update(payload)

        def finish(self):
            finished.append(True)

    fake = types.SimpleNamespace(Table=FakeTable, init=lambda **kwargs: logged.setdefault("init", kwargs) and FakeRun())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    result = run(grid, tmp_path / "out", plots=False)
    agg.log_wandb(result.tables, result.warnings, project="p")
    assert logged["init"]["project"] == "p" and logged["init"]["job_type"] == "aggregate"
    table = logged["tables/glue_roberta_base"]
    assert table.columns == ["Method", "Params", "SST-2", "RTE", "Macro"] and table.data[1][3] == "89.0±1.4 (2/3)"
    assert logged["tables/cells"].columns == agg.CELL_COLUMNS and finished == [True]
    assert any("failed run" in row[0] for row in logged["tables/warnings"].data)


def test_the_caption_states_the_data_subsets_the_records_used(tmp_path):
    runs = tmp_path / "runs"
    for seed in (1, 2):
        write_record(runs, task="rte", seed=seed, data={"max_train_samples": 400, "max_eval_samples": 400})
    write_record(runs, task="sst2", seed=1, data={"max_train_samples": 400, "max_eval_samples": None})
    result = run(runs, tmp_path / "out")
    text = (tmp_path / "out" / "glue_roberta_base.md").read_text()
    assert ("Data subsets (fixed, seeded; from the records): train <= 400, dev <= 400 examples; "
            "train <= 400, dev <= all examples.") in text
    assert result.tables[0].subsets == ("train <= 400, dev <= 400 examples", "train <= 400, dev <= all examples")
    full = tmp_path / "full"
    write_record(full, task="rte", seed=1)
    run(full, tmp_path / "out_full")
    assert "Data subsets" not in (tmp_path / "out_full" / "glue_roberta_base.md").read_text()



def write_predictions(folder: Path, predictions, labels, split="validation") -> None:
    (folder / "predictions").mkdir()
    lines = [json.dumps({"idx": i, "prediction": int(p), "label": int(y)})
             for i, (p, y) in enumerate(zip(predictions, labels))]
    (folder / "predictions" / f"{split}.jsonl").write_text("\n".join(lines) + "\n")


def test_cells_with_saved_predictions_are_tested_against_the_best_constant(tmp_path):
    runs = tmp_path / "runs"
    labels = [1] * 60 + [0] * 40  # best constant: always "positive", accuracy 0.60
    right_on_90 = labels[:90] + [1 - y for y in labels[90:]]
    for seed in (1, 2):
        # lora learns (accuracy 0.90 on both seeds); bitfit predicts the majority class (= the constant).
        folder = write_record(runs, task="sst2", method="lora", lr=5e-4, seed=seed, main=0.9)
        write_predictions(folder, right_on_90, labels)
        folder = write_record(runs, task="sst2", method="bitfit", lr=1e-3, seed=seed, main=0.6)
        write_predictions(folder, [1] * 100, labels)
    result = agg.aggregate(runs, tmp_path / "out", plots=False, references_path=None)
    (table,) = result.tables
    lora, bitfit = table.cells[("lora", "sst2")], table.cells[("bitfit", "sst2")]
    assert lora.gain["constant"] == "positive" and lora.gain["constant_main"] == pytest.approx(0.6)
    assert lora.gain["delta"] == pytest.approx(0.3) and lora.gain["clears"] and lora.gain["ci95"][0] > 0.15
    assert bitfit.gain["delta"] == 0 and bitfit.gain["ci95"] == [0.0, 0.0] and not bitfit.gain["clears"]
    assert lora.text() == "90.0±0.0" + agg.CLEARS_MARK and bitfit.text() == "60.0±0.0"
    markdown = (tmp_path / "out" / "glue_roberta_base.md").read_text()
    assert "| best constant | 0% | 60.0 |  |" in markdown and "1 of 2 cells" in markdown
    assert "| lora | +30.0 [" in markdown
    rows = list(csv.DictReader(open(tmp_path / "out" / "baseline_gains.csv")))
    assert [(r["method"], r["clears"], r["constant_main"]) for r in rows] == [("bitfit", "false", "0.600000"),
                                                                             ("lora", "true", "0.600000")]
    assert result.warnings == []


def test_a_cell_whose_seed_lacks_predictions_is_warned_about(tmp_path):
    runs = tmp_path / "runs"
    labels = [1, 0, 1, 1]
    write_predictions(write_record(runs, task="sst2", method="lora", seed=1, main=1.0), labels, labels)
    write_record(runs, task="sst2", method="bitfit", seed=1, main=0.75)  # no predictions saved
    result = agg.aggregate(runs, tmp_path / "out", plots=False, references_path=None)
    assert result.tables[0].cells[("bitfit", "sst2")].gain is None
    assert any("1 cell(s) without a gain over the constant baseline" in w and "bitfit/sst2" in w
               for w in result.warnings)


def test_aot_cells_are_compared_with_every_other_method_on_the_same_examples(tmp_path):
    runs = tmp_path / "runs"
    labels = [1] * 60 + [0] * 40
    flipped = lambda right: labels[:right] + [1 - y for y in labels[right:]]  # noqa: E731  (right on `right`)
    # aot_fc: 0.90 and 0.80 (mean 0.85); bitfit: the majority class (0.60); lora: 0.85 and 0.85 exactly as aot_fc's
    # mean; aot_kron: 0.70 on both seeds.
    cells = {"aot_fc": [flipped(90), flipped(80)], "bitfit": [[1] * 100] * 2, "lora": [flipped(85)] * 2,
             "aot_kron": [flipped(70)] * 2}
    for method, seeds in cells.items():
        for seed, predictions in enumerate(seeds, start=1):
            main = sum(p == y for p, y in zip(predictions, labels)) / 100
            write_predictions(write_record(runs, task="sst2", method=method, seed=seed, main=main), predictions,
                              labels)
    result = agg.aggregate(runs, tmp_path / "out", plots=False, references_path=None)
    (table,) = result.tables
    # every AoT method against every other method, each AoT pair once
    assert sorted(table.comparisons) == sorted(
        [("aot_fc", other, "sst2") for other in ("bitfit", "lora", "aot_kron")]
        + [("aot_kron", other, "sst2") for other in ("bitfit", "lora")])
    over_bitfit = table.comparisons[("aot_fc", "bitfit", "sst2")]
    assert over_bitfit["delta"] == pytest.approx(0.25) and over_bitfit["clears"] and not over_bitfit["falls_short"]
    assert (over_bitfit["seeds"], over_bitfit["other_seeds"], over_bitfit["units"]) == (2, 2, 100)
    same_as_lora = table.comparisons[("aot_fc", "lora", "sst2")]
    assert same_as_lora["delta"] == pytest.approx(0.0, abs=1e-12)
    assert not same_as_lora["clears"] and not same_as_lora["falls_short"]
    below_lora = table.comparisons[("aot_kron", "lora", "sst2")]
    assert below_lora["delta"] == pytest.approx(-0.15) and below_lora["falls_short"]
    markdown = (tmp_path / "out" / "glue_roberta_base.md").read_text()
    assert "| aot_fc − bitfit | +25.0 [" in markdown and "]" + agg.CLEARS_MARK + " |" in markdown
    assert "| aot_kron − lora | -15.0 [" in markdown and "]" + agg.BELOW_MARK + " |" in markdown
    rows = {(r["method"], r["other"]): r for r in csv.DictReader(open(tmp_path / "out" / "method_differences.csv"))}
    assert rows[("aot_fc", "bitfit")]["verdict"] == "higher" and rows[("aot_kron", "lora")]["verdict"] == "lower"
    assert rows[("aot_fc", "lora")]["verdict"] == "unresolved" and rows[("aot_fc", "lora")]["difference"] == "0.000000"


def test_no_comparisons_without_saved_predictions(grid, tmp_path):
    result = run(grid, tmp_path / "out", plots=False)
    assert all(not table.comparisons for table in result.tables)
    assert not (tmp_path / "out" / "method_differences.csv").exists()


def test_methods_are_compared_on_a_task_without_a_constant_prediction(tmp_path, monkeypatch):
    # ReCoRD has no constant prediction, so no gain; its cells' predictions still compare methods.
    import aotp.tasks.baselines as baselines

    monkeypatch.setattr(baselines, "best_constant_predictions", lambda spec, formatted: None)
    runs = tmp_path / "runs"
    labels = [1, 0] * 10
    for method, predictions in (("aot_fc", labels), ("bitfit", [1] * 20)):
        write_predictions(write_record(runs, task="sst2", method=method, seed=1, main=0.5), predictions, labels)
    (table,) = agg.aggregate(runs, tmp_path / "out", plots=False, references_path=None).tables
    assert all(cell.gain is None for cell in table.cells.values())
    assert table.comparisons[("aot_fc", "bitfit", "sst2")]["delta"] == pytest.approx(0.5)
