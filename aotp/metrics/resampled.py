"""The GLUE metrics on B bootstrap resamples at once, from per-example draw counts.

A resample with replacement of N examples is a count vector ``w`` (``w[i]`` = how often example i was
drawn, ``sum(w) = N``); a metric of the repeated rows is the same metric with example weights ``w``.
Given ``counts`` of shape (B, N), each function here returns the B metric values in one vectorised pass,
where :mod:`aotp.metrics.definitions` would call scikit-learn / scipy B times (about 20 ms a call, most
of it input validation: 1,000 resamples x 4 predictors took 80 s per table cell). The definitions stay
the reference; ``tests/unit/test_metrics_resampled.py`` checks every form against them on resamples.

- confusion counts   ``C[b, t, p] = sum_i counts[b, i] 1[ref_i = t] 1[pred_i = p]``
- accuracy           ``trace(C) / N``
- f1 (binary)        ``2 TP / (2 TP + FP + FN)``, 0 when the denominator is 0 (scikit-learn ``zero_division=0``)
- macro_f1           mean of per-class ``2 TP_k / (2 TP_k + FP_k + FN_k)`` over the classes present in the
                     resample's references or predictions
- mcc                ``(c s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t))`` with t, p the true / predicted class
                     totals, c = trace(C), s = N; 0 when a marginal is constant (scikit-learn's convention)
- pearson            weighted Pearson correlation; 0 when a side is constant on the drawn examples
- spearman           Pearson correlation of the resample's average ranks: a value's rank is
                     ``(weight below it) + (its weight + 1) / 2``, as ``scipy.stats.rankdata`` ranks ties
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def _class_ids(references: Sequence[Any], predictions: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, int]:
    """References and predictions as indices into their joint sorted label set (ids or label strings)."""
    y_true, y_pred = np.asarray(references), np.asarray(predictions)
    labels, inverse = np.unique(np.concatenate([y_true, y_pred]), return_inverse=True)
    return inverse[:len(y_true)], inverse[len(y_true):], len(labels)


def confusion_counts(predictions, references, counts: np.ndarray) -> np.ndarray:
    """(B, K, K) weighted confusion matrices, rows = reference class, columns = predicted class."""
    y_true, y_pred, classes = _class_ids(references, predictions)
    cell = np.zeros((len(y_true), classes * classes))
    cell[np.arange(len(y_true)), y_true * classes + y_pred] = 1.0
    return (np.asarray(counts, dtype=np.float64) @ cell).reshape(-1, classes, classes)


def accuracy(predictions, references, counts) -> np.ndarray:
    matrix = confusion_counts(predictions, references, counts)
    return np.trace(matrix, axis1=1, axis2=2) / matrix.sum(axis=(1, 2))


def binary_f1(predictions, references, counts) -> np.ndarray:
    """F1 of the positive class 1 (label ids 0/1, as :func:`aotp.metrics.definitions.binary_f1` checks)."""
    y_true = np.asarray(references).astype(np.int64) == 1
    y_pred = np.asarray(predictions).astype(np.int64) == 1
    weights = np.asarray(counts, dtype=np.float64)
    tp, fp, fn = weights @ (y_true & y_pred), weights @ (~y_true & y_pred), weights @ (y_true & ~y_pred)
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1.0), 0.0)


def macro_f1(predictions, references, counts) -> np.ndarray:
    matrix = confusion_counts(predictions, references, counts)
    tp = np.diagonal(matrix, axis1=1, axis2=2)
    true_totals, predicted_totals = matrix.sum(axis=2), matrix.sum(axis=1)
    denominator = true_totals + predicted_totals  # = 2 TP + FP + FN per class
    present = denominator > 0
    per_class = np.where(present, 2 * tp / np.where(present, denominator, 1.0), 0.0)
    return per_class.sum(axis=1) / present.sum(axis=1)


def mcc(predictions, references, counts) -> np.ndarray:
    matrix = confusion_counts(predictions, references, counts)
    true_totals, predicted_totals = matrix.sum(axis=2), matrix.sum(axis=1)
    correct = np.trace(matrix, axis1=1, axis2=2)
    samples = matrix.sum(axis=(1, 2))
    covariance = correct * samples - (true_totals * predicted_totals).sum(axis=1)
    predicted_spread = samples ** 2 - (predicted_totals ** 2).sum(axis=1)
    true_spread = samples ** 2 - (true_totals ** 2).sum(axis=1)
    product = predicted_spread * true_spread
    return np.where(product > 0, covariance / np.sqrt(np.where(product > 0, product, 1.0)), 0.0)


def _either_constant(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per resample: every drawn example has the same x, or the same y (the correlation is undefined: scored 0)."""
    drawn = weights > 0

    def constant(values):
        return np.where(drawn, values, np.inf).min(axis=1) == np.where(drawn, values, -np.inf).max(axis=1)

    return constant(x) | constant(y)


def _weighted_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    total = weights.sum(axis=1, keepdims=True)
    dx = x - (weights * x).sum(axis=1, keepdims=True) / total
    dy = y - (weights * y).sum(axis=1, keepdims=True) / total
    spread = (weights * dx * dx).sum(axis=1) * (weights * dy * dy).sum(axis=1)
    value = (weights * dx * dy).sum(axis=1) / np.sqrt(np.where(spread > 0, spread, 1.0))
    return np.clip(value, -1.0, 1.0)  # as scipy.stats.pearsonr, against rounding past +-1


def _scores(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(len(values))  # also a regression head's (N, 1) output


def pearson(predictions, references, counts) -> np.ndarray:
    weights = np.asarray(counts, dtype=np.float64)
    x, y = _scores(predictions), _scores(references)  # (N,), broadcast against the (B, N) weights
    return np.where(_either_constant(x, y, weights), 0.0, _weighted_pearson(x, y, weights))


def average_ranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B, N) rank of each example's value within resample b (ties: the average rank, as scipy's rankdata)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    new_value = np.r_[True, ordered[1:] != ordered[:-1]]  # a tie group starts here
    starts, group_of_position = np.flatnonzero(new_value), np.cumsum(new_value) - 1
    group_weight = np.add.reduceat(weights[:, order], starts, axis=1)  # (B, distinct values)
    below = np.cumsum(group_weight, axis=1) - group_weight
    group_rank = below + (group_weight + 1) / 2
    ranks = np.empty_like(weights)
    ranks[:, order] = group_rank[:, group_of_position]
    return ranks


def spearman(predictions, references, counts) -> np.ndarray:
    weights = np.asarray(counts, dtype=np.float64)
    x, y = _scores(predictions), _scores(references)
    value = _weighted_pearson(average_ranks(x, weights), average_ranks(y, weights), weights)
    return np.where(_either_constant(x, y, weights), 0.0, value)
