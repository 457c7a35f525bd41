"""Paired bootstrap of a main-metric gain (aotp.metrics.bootstrap): known distributions, whole-group
resampling for grouped metrics, split prefixes, determinism and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from aotp.metrics import compute_metrics
from aotp.metrics.bootstrap import paired_bootstrap


def formatted(predictions, references, groups=None):
    return {"predictions": np.asarray(predictions), "references": list(references), "groups": groups}


def test_identical_predictors_gain_nothing():
    references = [0, 1, 1, 0, 1]
    same = formatted([0, 1, 0, 0, 1], references)
    result = paired_bootstrap(["accuracy"], ["accuracy"], {"validation": (same, same)}, draws=200)
    assert result["delta"] == 0 and result["ci95"] == [0.0, 0.0] and result["p_not_better"] == 1.0
    assert result["units"] == {"validation": 5} and result["draws"] == 200


def test_always_right_against_always_wrong_is_a_sure_gain_of_one():
    references = [0, 1] * 20
    right, wrong = formatted(references, references), formatted([1 - r for r in references], references)
    result = paired_bootstrap(["accuracy"], ["accuracy"], {"validation": (right, wrong)}, draws=300)
    assert result["delta"] == 1.0 and result["ci95"] == [1.0, 1.0] and result["p_not_better"] == 0.0


def test_gain_interval_matches_the_binomial_spread_of_accuracy():
    # A is right on 60 of 100 examples where B is wrong, wrong on 20 where B is right, tied on 20:
    # delta = 0.4, per-example differences d in {+1 (60), -1 (20), 0 (20)}, sd(mean d) = sqrt(var(d)/100).
    references = np.zeros(100, dtype=int)
    a = np.array([0] * 60 + [1] * 20 + [0] * 20)
    b = np.array([1] * 60 + [0] * 20 + [0] * 20)
    result = paired_bootstrap(["accuracy"], ["accuracy"], {"v": (formatted(a, references), formatted(b, references))},
                              draws=2000, seed=1)
    d = (a == references).astype(float) - (b == references).astype(float)
    standard_error = d.std() / np.sqrt(len(d))
    assert result["delta"] == pytest.approx(0.4)
    assert result["ci95"][0] == pytest.approx(0.4 - 1.96 * standard_error, abs=0.03)
    assert result["ci95"][1] == pytest.approx(0.4 + 1.96 * standard_error, abs=0.03)
    assert result["p_not_better"] == 0.0


def test_groups_are_resampled_whole_and_each_drawn_copy_is_its_own_group():
    # Three questions of two answer options; B (always true) gets only question 1 exactly right.
    references = [0, 1, 1, 1, 1, 0]
    groups = [(0, 0), (0, 0), (0, 1), (0, 1), (0, 2), (0, 2)]
    a = formatted(references, references, groups)
    b = formatted([1] * 6, references, groups)
    result = paired_bootstrap(["multirc_em"], ["multirc_em"], {"validation": (a, b)}, draws=500, seed=0,
                              return_samples=True)
    assert result["units"] == {"validation": 3}
    assert result["delta"] == pytest.approx(2 / 3)
    # A is always exactly right; B's EM on a resample is (copies of question 1 drawn) / 3. Had the copies
    # been merged into one group, draws like [q1, q1, q0] would give 1 - 1/2, not a multiple of 1/3.
    allowed = np.array([1.0, 2 / 3, 1 / 3, 0.0])
    assert all(np.isclose(allowed, value).any() for value in result["samples"])
    assert result["p_not_better"] == pytest.approx(1 / 27, abs=0.03)  # all three draws question 1


def test_two_splits_average_into_the_main_metric_with_prefixed_keys():
    references = [0, 1, 0, 1]
    perfect, constant = formatted(references, references), formatted([0, 0, 0, 0], references)
    splits = {"validation_matched": (perfect, constant), "validation_mismatched": (constant, constant)}
    main = ["validation_matched/accuracy"]
    result = paired_bootstrap(["accuracy"], main, splits, draws=50)
    assert result["delta"] == pytest.approx(0.5) and result["units"] == {"validation_matched": 4,
                                                                         "validation_mismatched": 4}
    both = paired_bootstrap(["accuracy"], main + ["validation_mismatched/accuracy"], splits, draws=50)
    assert both["delta"] == pytest.approx(0.25)


def test_the_same_seed_gives_the_same_result_and_delta_is_the_full_sample_difference():
    references = [0, 1, 1, 0, 1, 0, 0, 1]
    a, b = formatted([0, 1, 1, 0, 1, 1, 0, 1], references), formatted([1, 1, 0, 0, 1, 1, 1, 1], references)
    first = paired_bootstrap(["accuracy"], ["accuracy"], {"v": (a, b)}, draws=100, seed=7)
    assert first == paired_bootstrap(["accuracy"], ["accuracy"], {"v": (a, b)}, draws=100, seed=7)
    assert first["delta"] == pytest.approx(compute_metrics(["accuracy"], a["predictions"], references)["accuracy"]
                                           - compute_metrics(["accuracy"], b["predictions"], references)["accuracy"])


def test_mismatched_predictors_and_no_draws_are_refused():
    a, b = formatted([0, 1], [0, 1]), formatted([0, 1, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="split v: the two predictors were scored on different examples"):
        paired_bootstrap(["accuracy"], ["accuracy"], {"v": (a, b)})
    with pytest.raises(ValueError, match="draws must be >= 1, got 0"):
        paired_bootstrap(["accuracy"], ["accuracy"], {"v": (a, a)}, draws=0)


def test_several_a_predictors_compare_their_mean_main_with_b():
    # Seeds of one cell: accuracies 1.0 and 0.5 on four examples; B (a constant) scores 0.5.
    references = [0, 1, 0, 1]
    seed_1, seed_2 = formatted([0, 1, 0, 1], references), formatted([0, 0, 0, 0], references)
    constant = formatted([1, 1, 1, 1], references)
    result = paired_bootstrap(["accuracy"], ["accuracy"], {"v": ([seed_1, seed_2], constant)}, draws=300, seed=3)
    assert result["delta"] == pytest.approx(0.75 - 0.5) and result["predictors_a"] == 2
    # The same resamples as a single predictor: mean of the two per-seed deltas, draw by draw.
    first = paired_bootstrap(["accuracy"], ["accuracy"], {"v": (seed_1, constant)}, draws=300, seed=3,
                             return_samples=True)
    second = paired_bootstrap(["accuracy"], ["accuracy"], {"v": (seed_2, constant)}, draws=300, seed=3,
                              return_samples=True)
    both = paired_bootstrap(["accuracy"], ["accuracy"], {"v": ([seed_1, seed_2], constant)}, draws=300, seed=3,
                            return_samples=True)
    np.testing.assert_allclose(both["samples"], (first["samples"] + second["samples"]) / 2, atol=1e-12)
    with pytest.raises(ValueError, match="split v: the two predictors were scored on different examples"):
        paired_bootstrap(["accuracy"], ["accuracy"], {"v": ([seed_1, formatted([0, 1], [0, 1])], constant)})


def test_ax_g_pairs_are_resampled_by_pair_id_not_by_position():
    # Issue 14: rows with pair ids [10, 12, 11, 13] are the pairs (rows 0, 1) and (rows 2, 3). A predicts the
    # same class within each pair (parity 1), as does B: the true gain in gender parity is 0. Pairing the
    # renumbered rows by position (0 with 2, 1 with 3) gave -1.
    groups = [10, 12, 11, 13]
    references = [0, 0, 1, 1]
    a = formatted([0, 0, 1, 1], references, groups)
    b = formatted([1, 1, 1, 1], references, groups)
    result = paired_bootstrap(["gender_parity"], ["gender_parity"], {"diagnostic": (a, b)}, draws=200, seed=0,
                              return_samples=True)
    assert result["delta"] == 0.0 and result["units"] == {"diagnostic": 2}
    assert np.all(result["samples"] == 0.0)  # every resample of whole pairs keeps both predictors at parity 1


def test_ax_g_bootstrap_delta_is_the_direct_difference_on_the_released_file(shared_data):
    import json

    from aotp.metrics import main_metric_value

    rows = [json.loads(line) for line in (shared_data / "super_glue" / "AX-g" / "AX-g.jsonl").open()]
    assert len(rows) == 356
    references = [row["label"] for row in rows]
    groups = [row["pair_id"] for row in rows]
    # A reads the pronoun (so its male and female variants can disagree); B reads only the hypothesis, which
    # both variants of a pair share (parity 1)
    a = formatted([("entailment" if " his " in f" {row['premise']} " else "not_entailment") for row in rows],
                  references, groups)
    b = formatted([("entailment" if len(row["hypothesis"].split()) % 2 else "not_entailment") for row in rows],
                  references, groups)
    metrics, main = ["gender_parity", "accuracy"], ["gender_parity", "accuracy"]
    direct = (main_metric_value(compute_metrics(metrics, a["predictions"], references, groups), main)
              - main_metric_value(compute_metrics(metrics, b["predictions"], references, groups), main))
    assert compute_metrics(["gender_parity"], b["predictions"], references, groups)["gender_parity"] == 1.0
    assert compute_metrics(["gender_parity"], a["predictions"], references, groups)["gender_parity"] < 1.0
    result = paired_bootstrap(metrics, main, {"diagnostic": (a, b)}, draws=100, seed=0)
    assert result["delta"] == pytest.approx(direct, abs=1e-12)
    assert result["units"] == {"diagnostic": 178}  # 356 rows = 178 male/female pairs
    assert result["ci95"][0] <= direct <= result["ci95"][1]


def test_several_b_predictors_compare_two_seed_means_on_the_same_resamples():
    # Two cells of three seeds each (a method comparison): delta = mean_s acc(A_s) - mean_t acc(B_t), and every
    # resample scores all six predictors on the same rows (grouped MultiRC too, through the definitions).
    rng = np.random.default_rng(2)
    references = rng.integers(0, 2, 50)
    groups = [(0, i // 5) for i in range(50)]
    cell_a = [formatted(np.where(rng.random(50) < 0.8, references, 1 - references), references, groups)
              for _ in range(3)]
    cell_b = [formatted(np.where(rng.random(50) < 0.6, references, 1 - references), references, groups)
              for _ in range(3)]
    for metric in ("accuracy", "multirc_em"):
        result = paired_bootstrap([metric], [metric], {"v": (cell_a, cell_b)}, draws=200, seed=3,
                                  return_samples=True)
        means = [np.mean([compute_metrics([metric], one["predictions"], one["references"], groups=groups)[metric]
                          for one in cell]) for cell in (cell_a, cell_b)]
        assert result["delta"] == pytest.approx(means[0] - means[1], abs=1e-12)
        assert result["predictors_a"] == 3 and result["predictors_b"] == 3
        # swapping the cells mirrors every resampled delta
        swapped = paired_bootstrap([metric], [metric], {"v": (cell_b, cell_a)}, draws=200, seed=3,
                                   return_samples=True)
        np.testing.assert_allclose(swapped["samples"], -result["samples"], rtol=0, atol=1e-12)
    # one B predictor given as a list is the single-predictor bootstrap, draw for draw
    single = paired_bootstrap(["accuracy"], ["accuracy"], {"v": (cell_a, cell_b[0])}, draws=100, seed=5,
                              return_samples=True)
    listed = paired_bootstrap(["accuracy"], ["accuracy"], {"v": (cell_a, cell_b[:1])}, draws=100, seed=5,
                              return_samples=True)
    np.testing.assert_array_equal(single["samples"], listed["samples"])
    with pytest.raises(ValueError, match="no predictor B"):
        paired_bootstrap(["accuracy"], ["accuracy"], {"v": (cell_a, [])})
    with pytest.raises(ValueError, match="different examples"):
        paired_bootstrap(["accuracy"], ["accuracy"], {"v": (cell_a, [cell_b[0], formatted([1], [1])])})
