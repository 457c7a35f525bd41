"""Conversions of the dataset stand-in on known inputs (aotp.standin.datasets): the hub builders' rules."""

from __future__ import annotations

import json


from aotp.standin.__main__ import main
from aotp.standin.datasets import GLUE_CONFIGS, SUPERGLUE_CONFIGS, fix_wsc_spans


def test_wsc_fixed_spans_take_the_texts_case_and_lose_a_trailing_period():
    example = {"text": "The lawyer asked the witness a question, but he was reluctant to answer it.",
               "span1_index": 0, "span1_text": "the lawyer.", "span2_index": 9, "span2_text": "he"}
    fixed = fix_wsc_spans(example)
    assert fixed["span1_text"] == "The lawyer" and fixed["span2_text"] == "he"
    assert example["span1_text"] == "the lawyer."  # the input is not modified
    unfixable = {**example, "span1_text": "Kamenev and Zinoviev"}
    assert fix_wsc_spans(unfixable)["span1_text"] == "Kamenev and Zinoviev"


def test_glue_rows_are_numbered_and_labelled_as_the_builder_did(tmp_path):
    (tmp_path / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n7\ta\tb\tnot_entailment\n"
                                      "9\tc\td\t\n12\te\tf\tentailment\n", encoding="utf-8")
    rte = GLUE_CONFIGS["rte"]
    rows = list(rte.convert(rte, tmp_path / "dev.tsv", "validation", tmp_path))
    # idx = row number (not the index column); a row with an empty label is dropped, its number used up
    assert rows == [{"sentence1": "a", "sentence2": "b", "idx": 0, "label": 1},
                    {"sentence1": "e", "sentence2": "f", "idx": 2, "label": 0}]
    (tmp_path / "test.tsv").write_text("index\tsentence1\tsentence2\n0\tg\th\n", encoding="utf-8")
    assert [row["label"] for row in rte.convert(rte, tmp_path / "test.tsv", "test", tmp_path)] == [-1]


def test_superglue_labels_and_nested_rows():
    boolq, copa, multirc, record = (SUPERGLUE_CONFIGS[n] for n in ("boolq", "copa", "multirc", "record"))
    assert [r["label"] for r in boolq.convert(boolq, [{"question": "q", "passage": "p", "idx": 0, "label": True},
                                                      {"question": "q", "passage": "p", "idx": 1}])] == [1, -1]
    assert next(copa.convert(copa, [{"premise": "p", "choice1": "a", "choice2": "b", "question": "cause",
                                     "idx": 3, "label": 1}]))["label"] == 1
    line = {"idx": 4, "passage": {"text": "T", "questions": [{"question": "Q", "idx": 8, "answers": [
        {"text": "x", "idx": 20, "label": 0}, {"text": "y", "idx": 21, "label": 1}]}]}}
    rows = list(multirc.convert(multirc, [line]))
    assert [(r["answer"], r["label"], r["idx"]) for r in rows] == [
        ("x", 0, {"paragraph": 4, "question": 8, "answer": 20}), ("y", 1, {"paragraph": 4, "question": 8, "answer": 21})]
    text = "Zed met Amy. Amy left."
    line = {"idx": 1, "passage": {"text": text, "entities": [{"start": 8, "end": 10}, {"start": 0, "end": 2},
                                                              {"start": 13, "end": 15}]},
            "qas": [{"query": "@placeholder left.", "idx": 5, "answers": [{"start": 13, "end": 15, "text": "Amy"},
                                                                           {"start": 8, "end": 10, "text": "Amy"}]}]}
    (row,) = record.convert(record, [line])
    assert row["entities"] == ["Amy", "Zed"] and row["answers"] == ["Amy"]
    assert row["entity_spans"] == {"text": ["Zed", "Amy", "Amy"], "start": [0, 8, 13], "end": [2, 10, 15]}
    assert row["idx"] == {"passage": 1, "query": 5}
    json.dumps(row)


def test_cli_names_a_missing_data_root(tmp_path, capsys):
    assert main(["datasets", f"output={tmp_path / 'home'}", f"data.root={tmp_path / 'nowhere'}"]) == 2
    assert f"Error: data.root: not a directory: {tmp_path / 'nowhere'}" in capsys.readouterr().err
