"""The official GLUE / SuperGLUE metric definitions, computed with scikit-learn and scipy.

Every function has the signature ``fn(predictions, references, groups) -> float``.

- accuracy          mean(pred == ref)
- f1                binary F1 of the positive class 1 (MRPC, QQP); 0 when there is no true or predicted positive
- macro_f1          unweighted mean of per-class F1 over the classes present in refs or preds (CB)
- mcc               Matthews correlation, (TP*TN - FP*FN) / sqrt(...) and its multiclass form (CoLA, AX, AX-b);
                    0 when a marginal is constant (scikit-learn's convention)
- pearson/spearman  linear / rank correlation of float predictions and float scores (STS-B);
                    0 when either side is constant (the correlation is undefined; 0 keeps selection defined)
- multirc_em        mean over questions (``groups``) of 1[every answer option of the question is right]
- multirc_f1a       binary F1 over all answer options pooled (label 1 = correct answer)
- record_em/f1      per query, max over the gold answers of exact match / token F1 after the official
                    SQuAD v1.1 / ReCoRD normalisation (lowercase, drop punctuation, drop a/an/the,
                    collapse whitespace); averaged over queries. A missing prediction (None) scores 0.
- gender_parity     AX-g: fraction of male/female pairs that get the same prediction. ``groups`` are the
                    rows' ``pair_id``; the two variants of a pair have pair ids p and p + 2 (the
                    Winogender recast numbering of the DNC scorer; in the released AX-g.jsonl they are
                    consecutive rows with the same hypothesis, which is how jiant pairs them).
"""

from __future__ import annotations

import collections
import re
import string
from typing import Any, Sequence

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from aotp.metrics import resampled
from aotp.metrics.base import register_metric


def _labels(values: Sequence[Any], what: str, metric: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"metric {metric!r}: {what} must be a flat sequence of label ids, got shape {array.shape}")
    if array.dtype.kind == "f":
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError(f"metric {metric!r}: {what} must be label ids, got non-integer floats "
                             f"(regression outputs belong to pearson/spearman)")
        array = array.astype(np.int64)
    return array


def _scores(values: Sequence[Any], what: str, metric: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 2 and array.shape[1] == 1:  # a regression head's (N, 1) output
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"metric {metric!r}: {what} must be one float per example, got shape {array.shape}")
    return array


def _binary_ids(array: np.ndarray, what: str, metric: str) -> np.ndarray:
    if array.dtype.kind not in "iub" or not set(np.unique(array).tolist()) <= {0, 1}:
        raise ValueError(f"metric {metric!r}: {what} must be binary label ids 0/1 (positive class 1), "
                         f"got values {sorted(set(array.tolist()))[:5]}")
    return array.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# classification


@register_metric("accuracy", higher_is_better=True, inputs="labels", weighted=resampled.accuracy)
def accuracy(predictions, references, groups=None) -> float:
    """Fraction of examples whose predicted label equals the reference."""
    return float(accuracy_score(_labels(references, "references", "accuracy"),
                                _labels(predictions, "predictions", "accuracy")))


@register_metric("f1", higher_is_better=True, inputs="labels", weighted=resampled.binary_f1)
def binary_f1(predictions, references, groups=None) -> float:
    """Binary F1 of the positive class 1 (MRPC, QQP)."""
    y_true = _binary_ids(_labels(references, "references", "f1"), "references", "f1")
    y_pred = _binary_ids(_labels(predictions, "predictions", "f1"), "predictions", "f1")
    return float(f1_score(y_true, y_pred, pos_label=1, average="binary", zero_division=0))


@register_metric("macro_f1", higher_is_better=True, inputs="labels", weighted=resampled.macro_f1)
def macro_f1(predictions, references, groups=None) -> float:
    """Unweighted mean of per-class F1 (CB), over the classes present in references or predictions."""
    return float(f1_score(_labels(references, "references", "macro_f1"),
                          _labels(predictions, "predictions", "macro_f1"), average="macro", zero_division=0))


@register_metric("mcc", higher_is_better=True, inputs="labels", weighted=resampled.mcc)
def mcc(predictions, references, groups=None) -> float:
    """Matthews correlation coefficient (CoLA; multiclass form for AX)."""
    return float(matthews_corrcoef(_labels(references, "references", "mcc"),
                                   _labels(predictions, "predictions", "mcc")))


# ---------------------------------------------------------------------------------------------
# regression


def _correlation(kind: str, predictions, references) -> float:
    x = _scores(predictions, "predictions", kind)
    y = _scores(references, "references", kind)
    if len(x) < 2:
        raise ValueError(f"metric {kind!r} needs at least two examples, got {len(x)}")
    if np.all(x == x[0]) or np.all(y == y[0]):
        return 0.0
    result = stats.pearsonr(x, y) if kind == "pearson" else stats.spearmanr(x, y)
    return float(result[0])


@register_metric("pearson", higher_is_better=True, inputs="scores", weighted=resampled.pearson)
def pearson(predictions, references, groups=None) -> float:
    """Pearson correlation of float predictions with the gold scores (STS-B)."""
    return _correlation("pearson", predictions, references)


@register_metric("spearman", higher_is_better=True, inputs="scores", weighted=resampled.spearman)
def spearman(predictions, references, groups=None) -> float:
    """Spearman rank correlation of float predictions with the gold scores (STS-B)."""
    return _correlation("spearman", predictions, references)


# ---------------------------------------------------------------------------------------------
# MultiRC


def _hashable(group: Any) -> Any:
    return tuple(group) if isinstance(group, (list, np.ndarray)) else group


@register_metric("multirc_em", higher_is_better=True, inputs="labels", needs_groups=True)
def multirc_em(predictions, references, groups) -> float:
    """Exact match per question (groups = question ids): all answer options right; mean over questions."""
    y_true = _labels(references, "references", "multirc_em")
    y_pred = _labels(predictions, "predictions", "multirc_em")
    all_right: dict[Any, bool] = {}
    for group, right in zip(groups, (y_true == y_pred).tolist()):
        key = _hashable(group)
        all_right[key] = all_right.get(key, True) and bool(right)
    return sum(all_right.values()) / len(all_right)


@register_metric("multirc_f1a", higher_is_better=True, inputs="labels", weighted=resampled.binary_f1)
def multirc_f1a(predictions, references, groups=None) -> float:
    """Binary F1 over all answer options pooled (MultiRC F1a; label 1 = a correct answer)."""
    return binary_f1(predictions, references)


# ---------------------------------------------------------------------------------------------
# ReCoRD

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 / ReCoRD answer normalisation: lowercase, drop punctuation, drop articles, collapse spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    """Token-level F1 of two answers after normalisation (0 when no token is shared)."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def _record(metric: str, score, predictions, references) -> float:
    total = 0.0
    for i, (prediction, golds) in enumerate(zip(predictions, references)):
        if isinstance(golds, str) or not len(golds):
            raise ValueError(f"metric {metric!r}: reference {i} must be a non-empty list of gold answer strings, "
                             f"got {golds!r}")
        if prediction is None:  # the official scorer counts a missing prediction as 0
            continue
        if not isinstance(prediction, str):
            raise ValueError(f"metric {metric!r}: prediction {i} must be an answer string, got {prediction!r}")
        total += max(score(prediction, gold) for gold in golds)
    return total / len(predictions)


@register_metric("record_em", higher_is_better=True, inputs="text")
def record_em(predictions, references, groups=None) -> float:
    """ReCoRD exact match: max over gold answers of normalised equality, mean over queries."""
    return _record("record_em", exact_match, predictions, references)


@register_metric("record_f1", higher_is_better=True, inputs="text")
def record_f1(predictions, references, groups=None) -> float:
    """ReCoRD token F1: max over gold answers of token F1, mean over queries."""
    return _record("record_f1", token_f1, predictions, references)


# ---------------------------------------------------------------------------------------------
# AX-g


def gender_parity_pairs(pair_ids: Sequence[int]) -> list[tuple[int, int]]:
    """Row-index pairs (male variant, female variant) from AX-g ``pair_id`` values.

    The variants of one Winogender sentence have pair ids p and p + 2; ids come in blocks
    p, p+1, p+2, p+3 holding two sentences, so pairing ascending ids greedily with their + 2
    partner recovers every pair. An id without a partner is an error (a filtered or shuffled file).
    """
    position: dict[int, int] = {}
    for row, pair_id in enumerate(pair_ids):
        pair_id = int(pair_id)
        if pair_id in position:
            raise ValueError(f"gender_parity: pair_id {pair_id} occurs twice (rows {position[pair_id]} and {row})")
        position[pair_id] = row
    pairs, used = [], set()
    for pair_id in sorted(position):
        if pair_id in used:
            continue
        partner = pair_id + 2
        if partner not in position or partner in used:
            raise ValueError(f"gender_parity: pair_id {pair_id} (row {position[pair_id]}) has no partner "
                             f"pair_id {partner}; AX-g rows come in male/female pairs with ids p and p + 2")
        used.update((pair_id, partner))
        pairs.append((position[pair_id], position[partner]))
    return pairs


def gender_parity_units(pair_ids: Sequence[int]) -> list[list[int]]:
    """Resampling units of AX-g: the rows of each male/female pair (a bootstrap must draw pairs, not rows)."""
    return [list(pair) for pair in gender_parity_pairs(pair_ids)]


def gender_parity_relabel(copy: int, unit_pair_ids: Sequence[int]) -> list[int]:
    """Pair ids for drawn copy ``copy`` of one pair: 4 * copy and 4 * copy + 2, in the pair's row order, so
    :func:`gender_parity_pairs` pairs exactly the two rows of each copy."""
    low = min(int(pair_id) for pair_id in unit_pair_ids)
    return [4 * copy + (int(pair_id) - low) for pair_id in unit_pair_ids]


@register_metric("gender_parity", higher_is_better=True, inputs="labels", needs_groups=True,
                 units=gender_parity_units, relabel=gender_parity_relabel)
def gender_parity(predictions, references, groups) -> float:
    """AX-g gender parity (groups = pair_id): fraction of male/female pairs with the same prediction."""
    y_pred = np.asarray(predictions)
    pairs = gender_parity_pairs(groups)
    return sum(bool(y_pred[a] == y_pred[b]) for a, b in pairs) / len(pairs)
