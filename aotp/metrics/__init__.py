"""Registered GLUE / SuperGLUE metrics (official definitions, scikit-learn + scipy; no hub scripts).

API
---
``compute_metrics(metric_names, predictions, references, groups=None) -> dict[str, float]``
    Score one eval split with each named metric. Inputs per metric kind (``METRICS.get(n).inputs``):

    - ``labels``: predictions and references are label ids (ints; ``f1``/``multirc_f1a`` need 0/1
      with 1 the positive class). ``accuracy``, ``f1``, ``macro_f1``, ``mcc``, ``multirc_em``,
      ``multirc_f1a``, ``gender_parity``.
    - ``scores``: floats, shape (N,) or (N, 1). ``pearson``, ``spearman``.
    - ``text``: predictions are answer strings (None = no prediction, scores 0), references are lists
      of gold answer strings. ``record_em``, ``record_f1``.

    ``groups`` (one hashable per example) is required by ``multirc_em`` (question ids, e.g.
    ``(passage idx, question idx)``) and ``gender_parity`` (AX-g ``pair_id``); other metrics ignore it.
    Values are fractions (accuracy 0.83, not 83.0). Unknown names raise
    :class:`aotp.registry.UnknownChoiceError` with "did you mean".

``main_metric_value(metrics, names) -> float``
    Unweighted mean of ``metrics[name]`` over ``names`` (keys may carry an ``<eval split>/`` prefix,
    e.g. ``dev_matched/accuracy``), as the leaderboards average MRPC's F1 and accuracy.

``METRICS.get(name).higher_is_better``; ``main_metric_higher_is_better(names)``;
``is_improvement(new, best, higher_is_better)`` for best-checkpoint selection.

Tasks with two eval splits (MNLI matched/mismatched) call ``compute_metrics`` once per split, the keys
prefixed with the split name (``dev_matched/accuracy``, ``dev_mismatched/accuracy``): a task's splits are
scored in one place, :func:`aotp.tasks.scoring.score_splits`.

Main metrics per task (leaderboard convention): CoLA mcc; SST-2, QNLI, RTE, WNLI, BoolQ, COPA, WiC,
WSC accuracy; MRPC, QQP f1 + accuracy; STS-B pearson + spearman; MNLI accuracy (matched and
mismatched); AX, AX-b mcc; CB macro_f1 + accuracy; MultiRC multirc_f1a + multirc_em; ReCoRD
record_f1 + record_em; AX-g gender_parity + accuracy.
"""

from aotp.metrics.base import (
    INPUT_KINDS,
    METRICS,
    Metric,
    compute_metrics,
    is_improvement,
    main_metric_higher_is_better,
    main_metric_value,
    metric_for,
    register_metric,
    split_entry,
)
from aotp.metrics import definitions  # noqa: F401  (registers every metric)
from aotp.metrics.definitions import exact_match, gender_parity_pairs, normalize_answer, token_f1

__all__ = [
    "INPUT_KINDS",
    "METRICS",
    "Metric",
    "compute_metrics",
    "exact_match",
    "gender_parity_pairs",
    "is_improvement",
    "main_metric_higher_is_better",
    "main_metric_value",
    "metric_for",
    "normalize_answer",
    "register_metric",
    "split_entry",
    "token_f1",
]
