"""Task-level scoring: model scores -> formatter predictions -> official metrics, and back out as
leaderboard files. MultiRC groups by question, ReCoRD takes the best entity, MNLI scores two dev sets."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from aotp.evaluate import RunError, label_mapping
from aotp.metrics import compute_metrics
from aotp.predict import read_submission, write_submission
from aotp.tasks.baselines import constant_baselines
from aotp.tasks.formatting import FORMATTERS
from aotp.tasks.loading import load_raw_records
from aotp.tasks.spec import load_spec
from aotp.tasks.scoring import score_splits, write_predictions
from tests.helpers import FIXTURE_DATA


def examples_of(task: str, split: str):
    spec = load_spec(task)
    return spec, FORMATTERS.get(spec.formatter).format(spec, load_raw_records(spec, split, FIXTURE_DATA),
                                                       split not in spec.test_splits)


def one_hot(labels, width=2):
    scores = np.zeros((len(labels), width))
    scores[np.arange(len(labels)), labels] = 1.0
    return scores


def test_multirc_exact_match_groups_answer_options_by_question():
    spec, examples = examples_of("superglue/multirc", "validation")
    labels = [e["label"] for e in examples]
    questions = list(dict.fromkeys(e["group"] for e in examples))
    assert len(questions) >= 3
    predictions = list(labels)
    wrong = [i for i, e in enumerate(examples) if e["group"] == questions[1]][0]
    predictions[wrong] = 1 - predictions[wrong]  # one wrong option spoils question 2 only
    formatted = FORMATTERS.get("multirc").predictions(spec, examples, one_hot(predictions))
    assert formatted["groups"] == [e["group"] for e in examples]
    metrics = compute_metrics(spec.metrics, formatted["predictions"], formatted["references"], formatted["groups"])
    assert metrics["multirc_em"] == pytest.approx((len(questions) - 1) / len(questions))
    tp = sum(p == l == 1 for p, l in zip(predictions, labels))
    fp = sum(p == 1 and l == 0 for p, l in zip(predictions, labels))
    fn = sum(p == 0 and l == 1 for p, l in zip(predictions, labels))
    assert metrics["multirc_f1a"] == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_record_prediction_is_the_best_entity_scored_against_every_gold_answer():
    spec, examples = examples_of("superglue/record", "validation")
    queries = list(dict.fromkeys(e["group"] for e in examples))
    margins = np.zeros(len(examples))
    expected = {}
    for query in queries:
        rows = [i for i, e in enumerate(examples) if e["group"] == query]
        gold = [i for i in rows if examples[i]["label"] == 1]
        wrong = [i for i in rows if examples[i]["label"] == 0]
        # query 1: its (second listed, if any) gold entity wins; others: a wrong entity wins
        best = (gold[-1] if query == queries[0] else wrong[0])
        margins[rows] = np.linspace(-1, 0, len(rows))
        margins[best] = 3.0
        expected[query] = examples[best]["entity"]
    scores = np.stack([np.zeros_like(margins), margins], axis=1)  # logit(answer) - logit(not) = margin
    formatted = FORMATTERS.get("record").predictions(spec, examples, scores)
    assert formatted["ids"] == queries and formatted["predictions"] == [expected[q] for q in queries]
    assert formatted["references"][0] == examples[0]["answers"]
    metrics = compute_metrics(spec.metrics, formatted["predictions"], formatted["references"])
    assert metrics["record_em"] == pytest.approx(1 / len(queries))
    # Scoring the constant "answer" column: every margin ties and the first candidate answers.
    first = FORMATTERS.get("record").predictions(spec, examples, one_hot([1] * len(examples)))
    assert first["predictions"] == [next(e["entity"] for e in examples if e["group"] == q) for q in queries]


def test_record_surface_forms_all_count_as_gold():
    from aotp.metrics.definitions import record_em, record_f1

    assert record_em(["Park"], [["Ellen Park", "Park"]]) == 1.0
    assert record_f1(["Ellen"], [["Ellen Park", "Park"]]) == pytest.approx(2 / 3)


def test_mnli_scores_matched_and_mismatched_with_matched_as_main(tmp_path):
    from aotp.models import TaskModel, build_backbone
    from aotp.tasks.data import Collator, load_task_data
    from aotp.trainer.loop import evaluate, predict_scores

    spec = load_spec("glue/mnli")
    backbone = build_backbone({"source": "tiny", "name": "tiny_bert", "family": "bert"})
    model = TaskModel(backbone, spec.head, spec.num_labels, seed=3)
    torch.nn.init.normal_(model.head.out_proj.weight, std=1.0)  # spread the logits so predictions differ
    data = load_task_data(spec, backbone.tokenizer, {"root": str(FIXTURE_DATA)}, uses_token_type_ids=True, seed=0,
                          cache_dir=None)
    collator = Collator(backbone.model.config.pad_token_id, torch.long)
    metrics, scores = evaluate(model, data, collator, 4, torch.device("cpu"))
    assert set(metrics) == {"validation_matched/accuracy", "validation_mismatched/accuracy", "main"}
    for split in spec.eval_splits:
        labels = np.array([e["label"] for e in data[split].examples])
        by_hand = float((predict_scores(model, data[split], collator, 4, torch.device("cpu")).argmax(-1) == labels).mean())
        assert metrics[f"{split}/accuracy"] == pytest.approx(by_hand)
    assert metrics["main"] == metrics["validation_matched/accuracy"]
    formatter = FORMATTERS.get(spec.formatter)
    assert score_splits(spec, {split: formatter.predictions(spec, data[split].examples, scores[split])
                               for split in spec.eval_splits}) == metrics


def test_a_predictions_file_rescores_to_the_recorded_metrics(tmp_path):
    """write_predictions keeps what score_splits needs (MultiRC: the question of every answer option)."""
    from aotp.results.aggregate import read_predictions

    spec, examples = examples_of("superglue/multirc", "validation")
    scores = np.random.default_rng(0).normal(size=(len(examples), 2))
    formatted = FORMATTERS.get(spec.formatter).predictions(spec, examples, scores)
    path = tmp_path / "predictions" / "validation.jsonl"
    write_predictions(path, formatted)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == len(examples) and set(lines[0]) == {"idx", "prediction", "label", "group"}
    assert [line["group"] for line in lines] == [list(group) for group in formatted["groups"]]
    assert score_splits(spec, {"validation": read_predictions(path)}) == score_splits(spec, {"validation": formatted})
    # atomic: a write that fails half way leaves the earlier file whole and no temporary file
    before = path.read_bytes()
    broken = {**formatted, "predictions": [*formatted["predictions"][:3], object()]}
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_predictions(path, broken)
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir()] == ["validation.jsonl"]


def test_score_splits_prefixes_several_splits_and_averages_the_main_metric():
    spec = load_spec("glue/mrpc")  # main = mean(f1, accuracy)
    rows = {"predictions": [1, 1, 0, 0], "references": [1, 0, 0, 1]}
    assert score_splits(spec, {"validation": rows}) == {"f1": 0.5, "accuracy": 0.5, "main": 0.5}
    two = score_splits(load_spec("glue/mnli"), {"validation_matched": rows, "validation_mismatched": {
        "predictions": [2, 2], "references": [2, 1]}})
    assert two == {"validation_matched/accuracy": 0.5, "validation_mismatched/accuracy": 0.5, "main": 0.5}


def test_stsb_regression_predictions_are_the_scores():
    spec, examples = examples_of("glue/stsb", "validation")
    labels = np.array([e["label"] for e in examples])
    formatted = FORMATTERS.get("fields").predictions(spec, examples, (labels * 2 + 1).reshape(-1, 1))
    metrics = compute_metrics(spec.metrics, formatted["predictions"], formatted["references"])
    assert metrics == {"pearson": pytest.approx(1.0), "spearman": pytest.approx(1.0)}


def test_diagnostic_label_mapping_by_name():
    mnli, ax = load_spec("glue/mnli"), load_spec("glue/ax")
    assert label_mapping(mnli, ax) == [0, 1, 2]
    assert label_mapping(mnli, mnli) is None
    from dataclasses import replace

    shuffled = replace(ax, label_names=["contradiction", "entailment", "neutral"])
    mapping = label_mapping(mnli, shuffled)
    assert mapping == [2, 0, 1]
    scores = np.array([[0.1, 0.2, 0.7], [0.9, 0.05, 0.05]])  # MNLI order: contradiction, entailment
    assert [shuffled.label_names[i] for i in scores[:, mapping].argmax(-1)] == ["contradiction", "entailment"]
    with pytest.raises(RunError, match="task glue/ax is scored with a run of glue/mnli"):
        label_mapping(load_spec("glue/rte"), ax)
    with pytest.raises(RunError, match="superglue/axb is scored with a run of superglue/rte or glue/rte"):
        label_mapping(load_spec("glue/sst2"), load_spec("superglue/axb"))
    with pytest.raises(RunError, match="it can only score glue/sst2 or a diagnostic set that lists it"):
        label_mapping(load_spec("glue/sst2"), load_spec("glue/rte"))
    assert label_mapping(load_spec("glue/rte"), load_spec("superglue/axg")) == [0, 1]


# -- leaderboard files --------------------------------------------------------------------------------


def roundtrip(task, split, predictions, tmp_path):
    spec, examples = examples_of(task, split)
    formatter = FORMATTERS.get(spec.formatter)
    formatted = formatter.predictions(spec, examples, predictions)
    rows = formatter.submission_rows(spec, formatted)
    path = tmp_path / spec.submission["files"][split]
    write_submission(spec, rows, path)
    return spec, examples, path.read_text(), read_submission(spec, path)


def test_glue_tsv_label_formats(tmp_path):
    _, examples, text, rows = roundtrip("glue/rte", "test", one_hot([0, 1, 1, 0]), tmp_path)
    assert text == "index\tprediction\n0\tentailment\n1\tnot_entailment\n2\tnot_entailment\n3\tentailment\n"
    _, _, text, rows = roundtrip("glue/cola", "test", one_hot([1, 0, 1, 1, 0]), tmp_path)
    assert text.splitlines()[1:] == ["0\t1", "1\t0", "2\t1", "3\t1", "4\t0"] and rows[1] == {"idx": 1, "label": 0}
    _, _, text, rows = roundtrip("glue/stsb", "test", np.array([-0.4, 2.25, 4.9999, 6.1, 3.0]), tmp_path)
    assert text.splitlines() == ["index\tprediction", "0\t0.000", "1\t2.250", "2\t5.000", "3\t5.000", "4\t3.000"]
    spec, examples = examples_of("glue/mnli", "test_mismatched")
    assert spec.submission["files"]["test_mismatched"] == "MNLI-mm.tsv"
    _, _, text, _ = roundtrip("glue/mnli", "test_mismatched", one_hot([2, 1, 0, 2], 3), tmp_path)
    assert text.splitlines()[1:] == ["0\tcontradiction", "1\tneutral", "2\tentailment", "3\tcontradiction"]


def test_superglue_jsonl_label_formats(tmp_path):
    _, _, text, rows = roundtrip("superglue/boolq", "test", one_hot([1, 0, 1, 0]), tmp_path)
    assert rows == [{"idx": 0, "label": "true"}, {"idx": 1, "label": "false"}, {"idx": 2, "label": "true"},
                    {"idx": 3, "label": "false"}]
    _, _, _, rows = roundtrip("superglue/wsc", "test", one_hot([1, 0, 0, 1]), tmp_path)
    assert [r["label"] for r in rows] == ["True", "False", "False", "True"]
    _, _, _, rows = roundtrip("superglue/copa", "test", one_hot([1, 0, 0, 1]), tmp_path)
    assert [r["label"] for r in rows] == [1, 0, 0, 1]
    _, _, _, rows = roundtrip("superglue/cb", "test", one_hot([0, 1, 2, 0], 3), tmp_path)
    assert [r["label"] for r in rows] == ["entailment", "contradiction", "neutral", "entailment"]
    spec, examples = examples_of("superglue/axb", "test")
    _, _, _, rows = roundtrip("superglue/axb", "test", one_hot([1] * len(examples)), tmp_path)
    assert rows[0] == {"idx": 0, "label": "not_entailment"} and len(rows) == len(examples)


def test_multirc_submission_is_nested_by_passage_and_question(tmp_path):
    spec, examples = examples_of("superglue/multirc", "test")
    predictions = [i % 2 for i in range(len(examples))]
    _, _, text, rows = roundtrip("superglue/multirc", "test", one_hot(predictions), tmp_path)
    records = load_raw_records(spec, "test", FIXTURE_DATA)
    assert [r["idx"] for r in rows] == [r["idx"] for r in records]
    for row, record in zip(rows, records):
        assert set(row) == {"idx", "passage"} and set(row["passage"]) == {"questions"}
        questions = record["passage"]["questions"]
        assert [q["idx"] for q in row["passage"]["questions"]] == [q["idx"] for q in questions]
        for got, question in zip(row["passage"]["questions"], questions):
            assert [a["idx"] for a in got["answers"]] == [a["idx"] for a in question["answers"]]
    flat = [a["label"] for row in rows for q in row["passage"]["questions"] for a in q["answers"]]
    assert flat == predictions and all(type(v) is int for v in flat)
    assert json.loads(text.splitlines()[0])["passage"]["questions"][0]["answers"][0] == {"idx": 0, "label": 0}


def test_record_submission_has_one_entity_per_query(tmp_path):
    spec, examples = examples_of("superglue/record", "test")
    _, _, _, rows = roundtrip("superglue/record", "test", one_hot([1] * len(examples)), tmp_path)
    queries = list(dict.fromkeys(e["idx"] for e in examples))
    assert [r["idx"] for r in rows] == queries
    assert all(isinstance(r["label"], str) and r["label"] for r in rows)


def test_read_submission_names_a_bad_line(tmp_path):
    spec = load_spec("glue/rte")
    path = tmp_path / "RTE.tsv"
    path.write_text("index\tprediction\n0\tentailment\n1 entailment\n")
    with pytest.raises(ValueError, match=r"RTE.tsv:3: expected 2 tab-separated columns, found 1"):
        read_submission(spec, path)


def test_constant_baselines_from_the_label_distribution():
    spec, examples = examples_of("glue/mrpc", "validation")
    positives = sum(e["label"] for e in examples) / len(examples)
    result = constant_baselines(spec, None, {"validation": examples})
    always_yes = result["constants"]["equivalent"]
    assert always_yes["accuracy"] == pytest.approx(positives)
    assert always_yes["f1"] == pytest.approx(2 * positives / (1 + positives))
    assert result["constants"]["not_equivalent"]["f1"] == 0.0
    stsb = constant_baselines(*examples_of_root("glue/stsb"))
    assert stsb["best_metrics"]["main"] == 0.0
    copa = constant_baselines(*examples_of_root("superglue/copa"))
    assert set(copa["constants"]) == {"choice 0", "choice 1"}
    assert math.isclose(sum(c["accuracy"] for c in copa["constants"].values()), 1.0)


def examples_of_root(task):
    return load_spec(task), FIXTURE_DATA
