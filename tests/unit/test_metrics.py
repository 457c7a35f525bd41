"""Metrics: hand-computed cases with exact numbers, registry behaviour, and offline cross-checks.

`evaluate.load(...)` needs hub scripts and fails offline, so the cross-checks use the reference code
that ships inside transformers (``transformers.data.metrics``: the GLUE definitions and the SQuAD
scorer whose answer normalisation ReCoRD uses).
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from aotp.metrics import (
    METRICS,
    compute_metrics,
    gender_parity_pairs,
    is_improvement,
    main_metric_higher_is_better,
    main_metric_value,
    metric_for,
    normalize_answer,
    token_f1,
)
from aotp.registry import UnknownChoiceError

EXPECTED_NAMES = {"accuracy", "f1", "macro_f1", "mcc", "pearson", "spearman", "multirc_em", "multirc_f1a",
                  "record_f1", "record_em", "gender_parity"}


# ---------------------------------------------------------------------------------------------
# registry


def test_registry_holds_every_official_metric():
    assert set(METRICS.names()) == EXPECTED_NAMES


def test_unknown_metric_name_raises_did_you_mean():
    with pytest.raises(UnknownChoiceError) as info:
        compute_metrics(["acuracy"], [0, 1], [0, 1])
    message = str(info.value)
    assert "Did you mean 'accuracy'" in message
    assert "task.metrics" in message and "multirc_em" in message  # names the option and the valid choices
    with pytest.raises(UnknownChoiceError, match="Did you mean 'record_f1'"):
        METRICS.get("recordf1")


def _perfect_and_worse(kind: str):
    """(predictions, references, groups) for a perfect and a clearly worse prediction of one input kind."""
    if kind == "labels":
        refs = [1, 1, 0, 0, 1, 1, 0, 0]
        groups = [100, 102, 101, 103, 104, 106, 105, 107]  # AX-g ids; rows (0,1) (2,3) (4,5) (6,7) pair up
        worse = [1, 0, 0, 1, 1, 0, 1, 0]
        return (refs, refs, groups), (worse, refs, groups)
    if kind == "scores":
        refs = [0.0, 1.5, 2.0, 3.5, 5.0]
        return (refs, refs, None), ([5.0, 1.0, 3.0, 0.5, 0.0], refs, None)
    if kind == "text":
        refs = [["Paris"], ["Obama", "Barack Obama"], ["the Nile"]]
        return (["Paris", "Barack Obama", "Nile"], refs, None), (["London", "Obama Barack Hussein", "Nile"], refs, None)
    raise AssertionError(kind)


@pytest.mark.parametrize("name", sorted(METRICS.names()))
def test_declared_direction_matches_the_metric(name):
    """Each registered metric: a perfect prediction scores 1 and beats a worse one in its declared direction."""
    metric = METRICS.get(name)
    perfect, worse = _perfect_and_worse(metric.inputs)
    best = metric(*perfect)
    other = metric(*worse)
    assert best == pytest.approx(1.0)
    assert is_improvement(best, other, metric.higher_is_better)
    assert not is_improvement(other, best, metric.higher_is_better)
    assert metric.higher_is_better is True  # every GLUE/SuperGLUE metric; the field keeps selection honest


# ---------------------------------------------------------------------------------------------
# classification


def test_binary_f1_and_accuracy_hand_computed():
    refs = [1, 0, 1, 1, 0]
    preds = [1, 1, 0, 1, 0]  # TP 2, FP 1, FN 1, TN 1
    out = compute_metrics(["f1", "accuracy"], preds, refs)
    assert out == {"f1": pytest.approx(2 / 3), "accuracy": pytest.approx(3 / 5)}
    # positive class is 1, not 0: swapping the classes changes F1 (TP 1, FP 1, FN 1 for class 0)
    assert compute_metrics(["f1"], [1 - p for p in preds], [1 - r for r in refs])["f1"] == pytest.approx(1 / 2)
    # no predicted positive: F1 is 0, not a warning or NaN
    assert compute_metrics(["f1"], [0, 0, 0], [1, 0, 1])["f1"] == 0.0


def test_binary_f1_rejects_non_binary_labels():
    with pytest.raises(ValueError, match="binary label ids 0/1"):
        compute_metrics(["f1"], [0, 2, 1], [0, 1, 1])


def test_cb_macro_f1_over_three_classes():
    refs = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    preds = [0, 0, 1, 2, 1, 1, 0, 2, 2, 1]
    # per class F1 = 2TP / (2TP + FP + FN): class 0: 4/7, class 1: 4/7, class 2: 4/6
    out = compute_metrics(["macro_f1", "accuracy"], preds, refs)
    assert out["macro_f1"] == pytest.approx((4 / 7 + 4 / 7 + 2 / 3) / 3)
    assert out["macro_f1"] == pytest.approx(38 / 63)
    assert out["accuracy"] == pytest.approx(0.6)
    assert main_metric_value(out, ["macro_f1", "accuracy"]) == pytest.approx((38 / 63 + 0.6) / 2)


def test_mcc_binary_multiclass_and_constant():
    refs = [1, 1, 1, 0, 0, 0, 1, 0]
    preds = [1, 1, 0, 0, 0, 1, 1, 0]  # TP 3, FN 1, TN 3, FP 1: (9 - 1) / sqrt(4^4)
    assert compute_metrics(["mcc"], preds, refs)["mcc"] == pytest.approx(0.5)
    # Gorodkin's multiclass form on the CB case: (c*s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2))
    refs3 = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    preds3 = [0, 0, 1, 2, 1, 1, 0, 2, 2, 1]
    assert compute_metrics(["mcc"], preds3, refs3)["mcc"] == pytest.approx((6 * 10 - 33) / 66)
    # a constant predictor has MCC 0, not NaN
    assert compute_metrics(["mcc"], [1, 1, 1, 1], [1, 0, 1, 0])["mcc"] == 0.0


def test_label_metrics_reject_regression_outputs():
    with pytest.raises(ValueError, match="non-integer floats"):
        compute_metrics(["accuracy"], [0.2, 0.9], [0, 1])
    assert compute_metrics(["accuracy"], np.array([0.0, 1.0]), [0, 1])["accuracy"] == 1.0


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="3 predictions but 2 references"):
        compute_metrics(["accuracy"], [0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="no predictions"):
        compute_metrics(["accuracy"], [], [])


# ---------------------------------------------------------------------------------------------
# regression


def test_stsb_pearson_and_spearman_on_float_outputs():
    refs = [1.0, 2.0, 3.0, 4.0]
    preds = np.array([[1.0], [2.0], [3.0], [10.0]], dtype=np.float32)  # a regression head's (N, 1) output
    out = compute_metrics(["pearson", "spearman"], preds, refs)
    # deviations x: -3 -2 -1 6, y: -1.5 -.5 .5 1.5 -> cov 14, var_x 50, var_y 5
    assert out["pearson"] == pytest.approx(14 / math.sqrt(250))
    assert out["spearman"] == pytest.approx(1.0)  # same order
    assert main_metric_value(out, ["pearson", "spearman"]) == pytest.approx((14 / math.sqrt(250) + 1) / 2)
    # ties get average ranks: x ranks 1.5 1.5 3 4 vs 1 2 3 4 -> 4.5 / sqrt(4.5 * 5)
    assert compute_metrics(["spearman"], [0.3, 0.3, 2.7, 3.9], refs)["spearman"] == pytest.approx(math.sqrt(0.9))


def test_correlation_of_a_constant_prediction_is_zero():
    out = compute_metrics(["pearson", "spearman"], [2.5, 2.5, 2.5], [1.0, 2.0, 4.0])
    assert out == {"pearson": 0.0, "spearman": 0.0}


# ---------------------------------------------------------------------------------------------
# MultiRC


def test_multirc_em_is_per_question_not_per_option():
    # question a: 3 options, b: 2, c: 2
    groups = ["a", "a", "a", "b", "b", "c", "c"]
    refs = [1, 0, 1, 0, 1, 1, 1]
    preds = [1, 0, 0, 0, 1, 1, 0]
    out = compute_metrics(["multirc_em", "multirc_f1a", "accuracy"], preds, refs, groups=groups)
    assert out["accuracy"] == pytest.approx(5 / 7)  # per option
    assert out["multirc_em"] == pytest.approx(1 / 3)  # only question b is fully right
    assert out["multirc_f1a"] == pytest.approx(0.75)  # TP 3, FP 0, FN 2: P 1, R 3/5


def test_multirc_groups_are_whole_question_ids():
    # question idx restarts in each passage: (passage, question) keys keep two questions apart
    refs = [1, 0, 1, 1]
    preds = [1, 0, 1, 0]
    by_pair = compute_metrics(["multirc_em"], preds, refs, groups=[(0, 0), (0, 0), (1, 0), (1, 0)])
    assert by_pair["multirc_em"] == pytest.approx(1 / 2)
    by_list = compute_metrics(["multirc_em"], preds, refs, groups=[[0, 0], [0, 0], [1, 0], [1, 0]])
    assert by_list == by_pair
    merged = compute_metrics(["multirc_em"], preds, refs, groups=[0, 0, 0, 0])  # a wrong grouping
    assert merged["multirc_em"] == 0.0


def test_multirc_em_needs_groups():
    with pytest.raises(ValueError, match="needs `groups`"):
        compute_metrics(["multirc_em"], [1, 0], [1, 0])
    with pytest.raises(ValueError, match="2 predictions but 1 groups"):
        compute_metrics(["multirc_em"], [1, 0], [1, 0], groups=["q"])


# ---------------------------------------------------------------------------------------------
# ReCoRD


@pytest.mark.parametrize("raw, normalised", [
    ("  The Eiffel Tower, Paris. ", "eiffel tower paris"),
    ("An apple a day", "apple day"),
    ("Theatre of the Absurd", "theatre of absurd"),  # articles only as whole words
    ("U.S.", "us"),
    ("Jean-Luc  Picard's", "jeanluc picards"),  # punctuation is deleted, not replaced by a space
    ("THE", ""),
])
def test_record_answer_normalisation(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_record_em_and_f1_max_over_gold_answers():
    predictions = ["the Eiffel Tower", "Barack Obama", "New York City", None]
    references = [["Eiffel Tower", "Tower"], ["Obama", "President Obama"], ["Los Angeles"], ["Berlin"]]
    out = compute_metrics(["record_em", "record_f1"], predictions, references)
    # q1 exact after normalisation; q2: F1 2/3 against "Obama" (P 1/2, R 1), 1/2 against "President Obama";
    # q3 shares no token; q4 has no prediction and scores 0
    assert out["record_em"] == pytest.approx(1 / 4)
    assert out["record_f1"] == pytest.approx((1 + 2 / 3) / 4)
    # any gold answer can give the exact match
    assert compute_metrics(["record_em"], ["U.S."], [["United States", "US"]])["record_em"] == 1.0
    # repeated tokens count by multiplicity: "new new york" vs "new york": common 2, P 2/3, R 1
    assert token_f1("new new york", "New York") == pytest.approx(0.8)


def test_record_references_must_be_lists_of_gold_strings():
    with pytest.raises(ValueError, match="non-empty list of gold answer strings"):
        compute_metrics(["record_em"], ["Paris"], ["Paris"])
    with pytest.raises(ValueError, match="non-empty list"):
        compute_metrics(["record_f1"], ["Paris"], [[]])


# ---------------------------------------------------------------------------------------------
# AX-g gender parity


def test_gender_parity_pairs_by_pair_id_and_ignores_order():
    pair_ids = [100, 102, 101, 103, 104, 106]
    preds = [0, 0, 1, 0, 1, 1]  # pairs (100,102) same, (101,103) differ, (104,106) same
    refs = [1, 1, 0, 0, 1, 1]
    assert compute_metrics(["gender_parity"], preds, refs, groups=pair_ids)["gender_parity"] == pytest.approx(2 / 3)
    order = [5, 3, 0, 4, 2, 1]
    shuffled = compute_metrics(["gender_parity"], [preds[i] for i in order], [refs[i] for i in order],
                               groups=[pair_ids[i] for i in order])
    assert shuffled["gender_parity"] == pytest.approx(2 / 3)
    # parity ignores correctness: all wrong but consistent is parity 1
    assert compute_metrics(["gender_parity"], [0, 0, 1, 1], [1, 1, 0, 0],
                           groups=[100, 102, 101, 103])["gender_parity"] == 1.0


def test_gender_parity_rejects_unpaired_or_duplicate_ids():
    with pytest.raises(ValueError, match="pair_id 101 .* no partner pair_id 103"):
        gender_parity_pairs([100, 102, 101])
    with pytest.raises(ValueError, match="occurs twice"):
        gender_parity_pairs([100, 102, 100, 102])


def test_gender_parity_pairing_on_the_real_axg_file(shared_data):
    """On the released AX-g.jsonl the pair-id pairing equals jiant's: consecutive rows, same hypothesis."""
    rows = [json.loads(line) for line in (shared_data / "super_glue/AX-g/AX-g.jsonl").open()]
    pairs = gender_parity_pairs([row["pair_id"] for row in rows])
    assert sorted(pairs) == [(i, i + 1) for i in range(0, len(rows), 2)]
    assert all(rows[a]["hypothesis"] == rows[b]["hypothesis"] for a, b in pairs)
    gold = [row["label"] for row in rows]
    assert compute_metrics(["gender_parity", "accuracy"], gold, gold, groups=[r["pair_id"] for r in rows]) == {
        "gender_parity": 1.0, "accuracy": 1.0}


# ---------------------------------------------------------------------------------------------
# main metric and selection


def test_main_metric_value_is_the_mean_of_the_listed_keys():
    metrics = {"dev_matched/accuracy": 0.8, "dev_mismatched/accuracy": 0.9, "f1": 0.1}
    assert main_metric_value(metrics, ["dev_matched/accuracy", "dev_mismatched/accuracy"]) == pytest.approx(0.85)
    assert main_metric_value(metrics, ["f1"]) == pytest.approx(0.1)
    assert metric_for("dev_matched/accuracy") is METRICS.get("accuracy")
    assert main_metric_higher_is_better(["dev_matched/accuracy", "f1"]) is True
    with pytest.raises(KeyError, match="not among the computed metrics"):
        main_metric_value(metrics, ["mcc"])
    with pytest.raises(UnknownChoiceError, match="Did you mean 'accuracy'"):
        main_metric_value(metrics, ["dev_matched/acuracy"])


def test_is_improvement_respects_direction_and_nan():
    nan = float("nan")
    assert is_improvement(0.5, None, True)
    assert is_improvement(0.6, 0.5, True) and not is_improvement(0.5, 0.5, True)
    assert is_improvement(0.4, 0.5, False) and not is_improvement(0.6, 0.5, False)
    for higher in (True, False):  # a NaN score never improves, not even on nothing yet or on another NaN
        assert not is_improvement(nan, 0.1, higher) and not is_improvement(nan, None, higher)
        assert not is_improvement(nan, nan, higher)
        # any finite score (or infinity) improves on a NaN best
        assert is_improvement(0.1, nan, higher) and is_improvement(-5.0, nan, higher)
        assert is_improvement(math.inf, nan, higher) and is_improvement(-math.inf, None, higher)


NAN = float("nan")


@pytest.mark.parametrize("mains, patience, best_step, steps_done", [
    ([NAN, 0.5, NAN, 0.4], None, 2, 4),       # a NaN first evaluation is not selected; 0.5 stays best
    ([0.5, NAN, 0.7, NAN], None, 3, 4),       # a NaN after a finite best is no improvement
    ([NAN, NAN, NAN, NAN], None, None, 4),    # no evaluation ever finite: nothing selected, nothing restored
    ([NAN, NAN, 0.9, 0.9], 2, None, 2),       # NaN evaluations count towards early stopping
])
def test_the_training_loop_selects_with_is_improvement(mains, patience, best_step, steps_done, tmp_path, monkeypatch):
    """Trainer.fit keeps and restores the state of the evaluation :func:`is_improvement` picks (dev scores
    scripted: step k's evaluation reports ``mains[k-1]``)."""
    import torch
    from omegaconf import OmegaConf

    from aotp.methods import METHODS
    from aotp.models.tiny_tokenizer import build_tiny_tokenizer
    from aotp.run import CONFIG_DIR
    from aotp.tasks import load_spec, load_task_data
    from aotp.trainer import loop
    from tests.conftest import make_tiny_task_model
    from tests.helpers import FIXTURE_DATA

    spec = load_spec("glue/rte")
    torch.manual_seed(0)
    model = make_tiny_task_model("bert", spec.head, num_labels=spec.num_labels)
    method = METHODS.get("bitfit")()
    method.apply(model)
    data = load_task_data(spec, build_tiny_tokenizer(), {"root": str(FIXTURE_DATA), "max_length": 32},
                          uses_token_type_ids=True, seed=0, cache_dir=None)
    states, scripted = [], iter(mains)

    def scripted_evaluate(model_, *args, **kwargs):
        states.append({k: v.detach().clone() for k, v in method.trainable_state_dict(model_).items()})
        main = next(scripted)
        return {"accuracy": main, "main": main}, {}

    monkeypatch.setattr(loop, "evaluate", scripted_evaluate)

    class Quiet:
        def log(self, *args):
            pass

        def start_at(self, step):
            pass

    cfg = OmegaConf.load(CONFIG_DIR / "trainer" / "default.yaml")
    cfg.merge_with({"max_steps": len(mains), "eval_every": 1, "batch_size": 4, "patience": patience,
                    "progress": False, "device": "cpu"})
    fitted = loop.Trainer(cfg, model, method, data, tmp_path, Quiet(), torch.device("cpu"), seed=0).fit(1e-2, 0.0)
    state = fitted.state
    assert state["step"] == steps_done and state["stopped_early"] == (steps_done < len(mains))
    assert state["best_step"] == best_step and fitted.total_steps == len(mains)
    assert [entry["main"] for entry in state["history"]] == pytest.approx(mains[:steps_done], nan_ok=True)
    assert any(not torch.equal(states[0][name], states[-1][name]) for name in states[0])  # the states differ
    restored = method.trainable_state_dict(model)
    expected = states[(best_step or steps_done) - 1]  # the best evaluation's state, else the last one (kept as is)
    assert all(torch.equal(restored[name], value) for name, value in expected.items())
    if best_step is None:
        assert state["best_main"] is None and fitted.best_scores is None
    else:
        assert state["best_main"] == mains[best_step - 1]


# ---------------------------------------------------------------------------------------------
# cross-checks against the reference code shipped with transformers (offline)


def test_cross_check_with_transformers_glue_and_squad_metrics():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers.data.metrics import glue_compute_metrics
        from transformers.data.metrics import squad_metrics

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=200)
    preds = np.where(rng.random(200) < 0.7, labels, 1 - labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mrpc = glue_compute_metrics("mrpc", preds, labels)
        cola = glue_compute_metrics("cola", preds, labels)
        scores = rng.random(200) * 5
        outputs = scores + rng.normal(0, 1, size=200)
        stsb = glue_compute_metrics("sts-b", outputs, scores)
    ours = compute_metrics(["accuracy", "f1", "mcc"], preds, labels)
    assert ours["accuracy"] == pytest.approx(mrpc["acc"], abs=1e-12)
    assert ours["f1"] == pytest.approx(mrpc["f1"], abs=1e-12)
    assert ours["mcc"] == pytest.approx(cola["mcc"], abs=1e-12)
    corr = compute_metrics(["pearson", "spearman"], outputs, scores)
    assert corr["pearson"] == pytest.approx(stsb["pearson"], abs=1e-12)
    assert corr["spearman"] == pytest.approx(stsb["spearmanr"], abs=1e-12)

    answers = ["The Eiffel Tower", "Obama", "Jean-Luc Picard's ship", "a United  States (U.S.)", "new york new york"]
    golds = ["Eiffel tower!", "Barack Obama", "Picard", "United States", "New York"]
    for answer, gold in zip(answers, golds):
        assert normalize_answer(answer) == squad_metrics.normalize_answer(answer)
        assert token_f1(answer, gold) == pytest.approx(squad_metrics.compute_f1(gold, answer), abs=1e-12)
