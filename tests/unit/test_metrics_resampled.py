"""The metrics' weighted forms (aotp.metrics.resampled) equal the definitions on the repeated rows, and the
vectorised bootstrap equals the per-resample one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from aotp.metrics import METRICS
from aotp.metrics import bootstrap as bootstrap_module
from aotp.metrics.bootstrap import paired_bootstrap


def resamples(count: int, draws: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    picks = [rng.integers(0, count, count) for _ in range(draws)]
    return picks, np.stack([np.bincount(pick, minlength=count) for pick in picks])


def labelled(name: str, count: int, seed: int):
    rng = np.random.default_rng(seed)
    classes = 3 if name in ("macro_f1", "mcc") else 2
    references = rng.integers(0, classes, count)
    # right about 70% of the time, so that every metric is away from its degenerate values
    predictions = np.where(rng.random(count) < 0.7, references, rng.integers(0, classes, count))
    return predictions, references


@pytest.mark.filterwarnings("ignore:A single label was found")  # tiny resamples: one class, scored by convention
@pytest.mark.parametrize("name", ["accuracy", "f1", "macro_f1", "mcc", "multirc_f1a"])
@pytest.mark.parametrize("count", [7, 60])  # 7 rows: many resamples miss a class entirely
def test_label_metrics_on_resamples_equal_the_definitions_on_the_repeated_rows(name, count):
    metric = METRICS.get(name)
    predictions, references = labelled(name, count, seed=count)
    picks, counts = resamples(count, 60, seed=1)
    weighted = metric.weighted(predictions, references, counts)
    direct = [metric(predictions[rows], references[rows]) for rows in picks]
    np.testing.assert_allclose(weighted, direct, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["pearson", "spearman"])
def test_correlations_on_resamples_equal_the_definitions_on_the_repeated_rows(name):
    metric = METRICS.get(name)
    rng = np.random.default_rng(0)
    references = rng.integers(0, 11, 40) / 2.0  # STS-B-like gold scores on a 0.5 grid: many ties
    predictions = np.round(references + rng.normal(0, 1.0, 40), 1)  # ties among predictions too
    picks, counts = resamples(40, 60, seed=2)
    weighted = metric.weighted(predictions[:, None], references, counts)  # a regression head's (N, 1) output
    direct = [metric(predictions[rows], references[rows]) for rows in picks]
    np.testing.assert_allclose(weighted, direct, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["pearson", "spearman"])
def test_a_resample_constant_on_one_side_scores_zero_as_the_definition_does(name):
    references, predictions = np.array([1.0, 1.0, 2.0, 3.0]), np.array([0.5, 0.7, 0.1, 0.9])
    counts = np.array([[2, 2, 0, 0],   # references constant on the drawn rows
                       [1, 1, 1, 1]])
    weighted = METRICS.get(name).weighted(predictions, references, counts)
    assert weighted[0] == 0.0 and METRICS.get(name)(predictions[[0, 0, 1, 1]], references[[0, 0, 1, 1]]) == 0.0
    assert weighted[1] == pytest.approx(METRICS.get(name)(predictions, references), abs=1e-12)


def test_label_strings_are_scored_as_the_definition_scores_them():
    references = np.array(["entailment", "neutral", "contradiction", "neutral", "entailment"])
    predictions = np.array(["entailment", "neutral", "neutral", "neutral", "contradiction"])
    picks, counts = resamples(5, 50, seed=3)
    for name in ("accuracy", "macro_f1", "mcc"):
        metric = METRICS.get(name)
        direct = [metric(predictions[rows], references[rows]) for rows in picks]
        np.testing.assert_allclose(metric.weighted(predictions, references, counts), direct, atol=1e-12)


def per_resample_only(monkeypatch):
    """Score every resample through the definitions (the bootstrap without weighted forms)."""
    original = METRICS.get
    monkeypatch.setattr(METRICS, "get", lambda name: dataclasses.replace(original(name), weighted=None))


def counting_vectorised_chunks(monkeypatch) -> list[int]:
    """Record the size of every chunk the vectorised path scores (so a test knows that path ran)."""
    chunk_sizes, vectorised = [], bootstrap_module._weighted_deltas

    def counted(plan, scored, main_names, picks):
        chunk_sizes.append(len(picks))
        return vectorised(plan, scored, main_names, picks)

    monkeypatch.setattr(bootstrap_module, "_weighted_deltas", counted)
    return chunk_sizes


@pytest.mark.parametrize("metrics,main,kind", [
    (["f1", "accuracy"], ["f1", "accuracy"], "labels"),  # MRPC
    (["mcc"], ["mcc"], "labels3"),  # CoLA's metric, multiclass as on AX
    (["pearson", "spearman"], ["pearson", "spearman"], "scores"),  # STS-B
])
@pytest.mark.parametrize("against", ["constant", "another cell's seeds"])
def test_the_vectorised_bootstrap_equals_the_per_resample_bootstrap(metrics, main, kind, against, monkeypatch):
    rng = np.random.default_rng(5)
    if kind == "scores":
        references = rng.integers(0, 11, 80) / 2.0
        seeds = [{"predictions": references + rng.normal(0, s, 80), "references": references} for s in (1, 1.5, 2)]
        constant = {"predictions": np.full(80, 2.5), "references": references}
    else:
        classes = 3 if kind == "labels3" else 2
        references = rng.integers(0, classes, 80)
        seeds = [{"predictions": np.where(rng.random(80) < 0.6, references, 1 - references % 2),
                  "references": references} for _ in range(3)]
        constant = {"predictions": np.ones(80, dtype=int), "references": references}
    # B: the best constant (a cell's gain) or two seeds of another method (a method comparison)
    other = constant if against == "constant" else seeds[1:][::-1]
    splits = {"validation": (seeds, other)}
    chunk_sizes = counting_vectorised_chunks(monkeypatch)
    fast = paired_bootstrap(metrics, main, splits, draws=60, seed=11, return_samples=True)
    assert chunk_sizes == [60]
    per_resample_only(monkeypatch)
    slow = paired_bootstrap(metrics, main, splits, draws=60, seed=11, return_samples=True)
    assert chunk_sizes == [60]  # the definitions scored these, resample by resample
    np.testing.assert_allclose(fast["samples"], slow["samples"], rtol=0, atol=1e-10)
    assert fast["delta"] == slow["delta"] and fast["p_not_better"] == slow["p_not_better"]
    np.testing.assert_allclose(fast["ci95"], slow["ci95"], rtol=0, atol=1e-10)


def test_two_splits_and_a_chunk_boundary_give_the_per_resample_result(monkeypatch):
    monkeypatch.setattr(bootstrap_module, "DRAWS_PER_CHUNK", 8)  # 3 chunks, the last one short
    rng = np.random.default_rng(8)
    references = rng.integers(0, 3, 30)
    a = {"predictions": np.where(rng.random(30) < 0.7, references, 0), "references": references}
    b = {"predictions": np.zeros(30, dtype=int), "references": references}
    splits = {"validation_matched": (a, b), "validation_mismatched": (b, a)}
    main = ["validation_matched/accuracy", "validation_mismatched/accuracy"]
    draws = 2 * bootstrap_module.DRAWS_PER_CHUNK + 5
    chunk_sizes = counting_vectorised_chunks(monkeypatch)
    fast = paired_bootstrap(["accuracy"], main, splits, draws=draws, seed=4, return_samples=True)
    assert chunk_sizes == [8, 8, 5]
    per_resample_only(monkeypatch)
    slow = paired_bootstrap(["accuracy"], main, splits, draws=draws, seed=4, return_samples=True)
    assert len(fast["samples"]) == draws and chunk_sizes == [8, 8, 5]
    np.testing.assert_allclose(fast["samples"], slow["samples"], rtol=0, atol=1e-12)
