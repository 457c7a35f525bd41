"""Local official files parse robustly; bad input fails with the file, the line and what was expected."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import types
from pathlib import Path

import pytest

from aotp.tasks.formatting import FORMATTERS
from aotp.tasks.loading import DataFileError, check_local_files, load_raw_records
from aotp.tasks.spec import load_spec
from tests.helpers import FIXTURE_DATA


def formatted(task: str, split: str, root: Path = FIXTURE_DATA):
    spec = load_spec(task)
    records = load_raw_records(spec, split, root)
    return records, FORMATTERS.get(spec.formatter).format(spec, records, split not in spec.test_splits)


def copy_task(tmp_path: Path, folder: str) -> Path:
    """A writable copy of one fixture folder (e.g. ``glue/RTE``) under ``tmp_path``; returns the root."""
    shutil.copytree(FIXTURE_DATA / folder, tmp_path / folder)
    return tmp_path


# -- format quirks of the official files -------------------------------------------------------------


def test_cola_train_is_headerless_and_test_has_a_header():
    records, examples = formatted("glue/cola", "train")
    assert len(records) == 12 and records[0]["_where"].endswith("CoLA/train.tsv:1")  # line 1 is data
    assert examples[0] == {"text": ("The children built a castle out of wet sand.",), "label": 1, "idx": 0}
    assert examples[1]["label"] == 0 and examples[11]["idx"] == 11
    _, test = formatted("glue/cola", "test")
    assert test[0] == {"text": ("The cat chased its own tail.",), "label": None, "idx": 0}


def test_mrpc_bom_header_and_test_index_column():
    records, examples = formatted("glue/mrpc", "train")
    assert "Quality" not in records[0] and examples[0]["label"] in (0, 1)
    assert examples[0]["text"][0].endswith(" .") and examples[3]["idx"] == 3  # no index column: row position
    _, test = formatted("glue/mrpc", "test")
    assert [e["idx"] for e in test] == [0, 1, 2, 3, 4] and all(e["label"] is None for e in test)


def test_mnli_label_is_gold_label_in_every_dev_file_and_both_dev_splits_load():
    spec = load_spec("glue/mnli")
    for split in ("train", "validation_matched", "validation_mismatched"):
        records, examples = formatted("glue/mnli", split)
        assert {e["label"] for e in examples} == {0, 1, 2}
        assert all(spec.label_names[e["label"]] == r["label"] for r, e in zip(records, examples))
    _, test = formatted("glue/mnli", "test_mismatched")
    assert test and all(e["label"] is None for e in test)


def test_stsb_scores_in_mixed_formats_are_floats():
    _, examples = formatted("glue/stsb", "train")
    assert all(isinstance(e["label"], float) and 0 <= e["label"] <= 5 for e in examples)
    assert any(abs(e["label"] - 3.77777777777778) < 1e-12 for e in examples)


def test_quotes_are_literal_and_crlf_is_tolerated():
    _, rte = formatted("glue/rte", "validation")
    assert any('"' in e["text"][0] + e["text"][1] for e in rte)
    records, ax = formatted("glue/ax", "diagnostic_full")  # CRLF line endings
    assert ax[0]["text"] == ("The lamp is on.", "The lamp is not on.") and ax[0]["label"] == 2
    assert not any(t.endswith("\r") for e in ax for t in e["text"])


def test_superglue_ids_labels_and_string_idx():
    _, axb = formatted("superglue/axb", "diagnostic")
    assert axb[0]["idx"] == 0 and isinstance(axb[0]["idx"], int)  # "0" in the file
    _, boolq = formatted("superglue/boolq", "train")
    assert boolq[0]["label"] == 1 and boolq[1]["label"] == 0  # JSON true/false
    _, axg = formatted("superglue/axg", "diagnostic")
    assert axg[0]["group"] == 900002 and axg[1]["group"] == 900004


# -- bad input ---------------------------------------------------------------------------------------


def test_malformed_tsv_line_names_file_line_and_expected_columns(tmp_path):
    root = copy_task(tmp_path, "glue/RTE")
    path = root / "glue/RTE/train.tsv"
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace("\t", " ", 1)  # one tab lost on line 4
    path.write_text("".join(lines))
    with pytest.raises(DataFileError) as error:
        load_raw_records(load_spec("glue/rte"), "train", root)
    message = str(error.value)
    assert f"{path}:4: expected 4 tab-separated columns" in message and "found 3" in message
    assert "'index', 'sentence1', 'sentence2', 'label'" in message


def test_malformed_headerless_line_names_the_column_layout(tmp_path):
    root = copy_task(tmp_path, "glue/CoLA")
    path = root / "glue/CoLA/train.tsv"
    path.write_text(path.read_text() + "fx01\t1\tA sentence without its mark column.\n")
    with pytest.raises(DataFileError) as error:
        load_raw_records(load_spec("glue/cola"), "train", root)
    assert f"{path}:13: expected 4 tab-separated columns (column 1 = label, column 3 = sentence), found 3" \
        in str(error.value)


def test_header_without_a_mapped_column(tmp_path):
    root = copy_task(tmp_path, "glue/QNLI")
    path = root / "glue/QNLI/dev.tsv"
    path.write_text(path.read_text().replace("question\tsentence", "query\tsentence", 1))
    with pytest.raises(DataFileError, match=r"dev.tsv:1: header lacks columns \['question'\]"):
        load_raw_records(load_spec("glue/qnli"), "validation", root)


@pytest.mark.parametrize("task, folder, file, old, new, shown", [
    ("glue/rte", "glue/RTE", "dev.tsv", "\tnot_entailment\n", "\tcontradiction\n", "'contradiction'"),
    ("glue/cola", "glue/CoLA", "train.tsv", "fx01\t1\t", "fx01\t2\t", "'2'"),
    ("superglue/cb", "super_glue/CB", "val.jsonl", '"label": "neutral"', '"label": "unsure"', "'unsure'"),
    ("superglue/boolq", "super_glue/BoolQ", "val.jsonl", '"label": true', '"label": "yes"', "'yes'"),
])
def test_label_outside_the_label_set(tmp_path, task, folder, file, old, new, shown):
    root = copy_task(tmp_path, folder)
    path = root / folder / file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    line = text[: text.index(old)].count("\n") + 1
    spec = load_spec(task)
    with pytest.raises(DataFileError) as error:
        split = "train" if file.startswith("train") else "validation"
        FORMATTERS.get(spec.formatter).format(spec, load_raw_records(spec, split, root), True)
    assert f"{path}:{line}: label {shown} is not in the label set of {task}: {spec.label_names}" in str(error.value)


def test_regression_label_outside_its_range(tmp_path):
    root = copy_task(tmp_path, "glue/STS-B")
    path = root / "glue/STS-B/dev.tsv"
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\t7.5\n"
    path.write_text("".join(lines))
    with pytest.raises(DataFileError, match=r"dev.tsv:3: label '7.5' is outside the label range \[0.0, 5.0\]"):
        formatted("glue/stsb", "validation", root)


def test_missing_label_and_missing_field(tmp_path):
    root = copy_task(tmp_path, "super_glue/RTE")
    path = root / "super_glue/RTE/val.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    del rows[1]["label"]
    del rows[2]["hypothesis"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataFileError, match=r"val.jsonl:2: missing label for task superglue/rte"):
        formatted("superglue/rte", "validation", root)
    del rows[1]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataFileError, match=r"val.jsonl:2: missing field 'hypothesis'.*found fields \['idx', 'label', "
                                            r"'premise'\]"):
        formatted("superglue/rte", "validation", root)


@pytest.mark.parametrize("line, message", [
    ('{"premise": "A", "hypothesis": "B" "idx": 9}\n', "not valid JSON (Expecting ',' delimiter at column 36)"),
    ('{"premise": "A\tB", "hypothesis": "B", "idx": 9}\n', "not valid JSON (Invalid control character at column 15)"),
    ('["premise", "hypothesis"]\n', "expected a JSON object, found list"),
    # a line cut short is called truncated, whatever json's complaint (here "Invalid control character")
    ('{"premise": "A", "hypothesis": "B\n', "truncated JSON: the file's last line ends at column 34 before its object "
                                          "closes (an incomplete download or copy?)"),
    ('{"premise": "A", "hypothesis": "B", "idx": 9', "truncated JSON: the file's last line ends at column 45 before its "
                                                  "object closes, and the file does not end with a newline"),
])
def test_bad_jsonl_line(tmp_path, line, message):
    root = copy_task(tmp_path, "super_glue/RTE")
    path = root / "super_glue/RTE/train.jsonl"
    path.write_text(path.read_text() + line)
    count = path.read_text().count("\n") + (not line.endswith("\n"))
    with pytest.raises(DataFileError) as error:
        load_raw_records(load_spec("superglue/rte"), "train", root)
    assert f"{path}:{count}: {message}" in str(error.value)
    assert " at at " not in str(error.value)


def test_truncated_line_in_the_middle_is_called_truncated(tmp_path):
    root = copy_task(tmp_path, "super_glue/RTE")
    path = root / "super_glue/RTE/train.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1][:20] + "\n"
    path.write_text("".join(lines))
    with pytest.raises(DataFileError, match=r"train.jsonl:2: truncated JSON: the line ends at column 21 before its "
                                            r"object closes"):
        load_raw_records(load_spec("superglue/rte"), "train", root)


def test_data_path_that_is_a_directory_is_called_a_directory(tmp_path):
    root = copy_task(tmp_path, "super_glue/COPA")
    (root / "super_glue/COPA/val.jsonl").unlink()
    (root / "super_glue/COPA/val.jsonl").mkdir()
    with pytest.raises(DataFileError, match=r"super_glue/COPA/val.jsonl is a directory, not the data file of task "
                                            r"superglue/copa, split 'validation'"):
        check_local_files(load_spec("superglue/copa"), root, ["train", "validation"])


def test_missing_split_file_names_the_expected_path(tmp_path):
    root = copy_task(tmp_path, "super_glue/COPA")
    (root / "super_glue/COPA/val.jsonl").unlink()
    spec = load_spec("superglue/copa")
    expected = f"expected {root}/super_glue/COPA/val.jsonl"
    with pytest.raises(DataFileError, match="Missing data file for task superglue/copa, split 'validation'") as error:
        check_local_files(spec, root, ["train", "validation"])
    assert expected in str(error.value)
    with pytest.raises(DataFileError) as error:
        load_raw_records(spec, "validation", root)
    assert expected in str(error.value)


@pytest.mark.parametrize("task, folder, file, content", [
    ("glue/rte", "glue/RTE", "dev.tsv", "index\tsentence1\tsentence2\tlabel\n"),
    ("superglue/copa", "super_glue/COPA", "val.jsonl", "\n"),
])
def test_empty_split_is_an_error(tmp_path, task, folder, file, content):
    root = copy_task(tmp_path, folder)
    (root / folder / file).write_text(content)
    with pytest.raises(DataFileError, match=f"{file}: split 'validation' of task {task} is empty"):
        load_raw_records(load_spec(task), "validation", root)


def test_blank_lines_are_skipped_and_counted(tmp_path, caplog):
    root = copy_task(tmp_path, "glue/WNLI")
    path = root / "glue/WNLI/train.tsv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:3] + ["\n"] + lines[3:] + ["\n"]))
    with caplog.at_level(logging.WARNING, logger="aotp.tasks.loading"):
        records = load_raw_records(load_spec("glue/wnli"), "train", root)
    assert len(records) == len(lines) - 1
    assert "train.tsv: skipped 2 blank line(s)" in caplog.text


# -- the hub path (datasets.load_dataset replaced: no network) ---------------------------------------


@pytest.fixture
def fake_hub(monkeypatch):
    calls = []
    tables: dict = {}

    def load_dataset(path, name=None, revision=None, split=None):
        calls.append((path, name, revision, split))
        return tables[(name, split)]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return tables, calls


def test_hub_split_names_and_revision_are_used(fake_hub):
    tables, calls = fake_hub
    tables[("axb", "test")] = [{"sentence1": "A", "sentence2": "B", "idx": 0, "label": 1}]
    spec = load_spec("superglue/axb")
    records = load_raw_records(spec, "diagnostic", None)
    assert calls == [("aps/super_glue", "axb", "main", "test")]
    assert records[0]["_where"] == "aps/super_glue/axb[test]#0"
    assert FORMATTERS.get("fields").format(spec, records, True)[0]["label"] == 1


def test_hub_test_labels_are_dropped_and_local_only_splits_refused(fake_hub):
    tables, _ = fake_hub
    tables[("mnli", "test_matched")] = [{"premise": "A", "hypothesis": "B", "idx": 0, "label": -1}]
    spec = load_spec("glue/mnli")
    examples = FORMATTERS.get("fields").format(spec, load_raw_records(spec, "test_matched", None), False)
    assert examples == [{"text": ("A", "B"), "label": None, "idx": 0}]
    with pytest.raises(DataFileError, match="split 'diagnostic_full' of task glue/ax is not on the hub"):
        load_raw_records(load_spec("glue/ax"), "diagnostic_full", None)


def test_hub_failure_suggests_local_files(monkeypatch):
    def load_dataset(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(DataFileError, match=r"Could not load nyu-mll/glue/rte split 'train'.*data.root=DIR"):
        load_raw_records(load_spec("glue/rte"), "train", None)
