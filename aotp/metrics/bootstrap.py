"""Paired bootstrap of a main-metric difference between two predictors on the same eval examples.

``paired_bootstrap(metric_names, main_names, splits, draws=1000, seed=0)`` resamples the eval units
of every split with replacement (B = ``draws`` times), scores both predictors on each resample and
returns the distribution of ``delta = main(A) - main(B)``:

    delta_b = main(metrics(A on resample b)) - main(metrics(B on resample b)),  b = 1..B

``A`` may be several predictors on the same examples (the seeds of one table cell): its main is then
the mean of their mains on the same resample, ``delta_b = mean_s main(A_s on b) - main(B on b)``, which
is the gain of the cell's seed-averaged score (dev-sampling uncertainty; the seeds are held fixed). ``B``
may be several predictors too (another cell's seeds): ``delta_b = mean_s main(A_s on b) - mean_t main(B_t on b)``,
two methods' seed-averaged scores compared on the same resamples. It is
reported as the full-sample delta, the 2.5 / 97.5 percentiles of delta_b (a 95% percentile interval)
and ``p_not_better`` = fraction of resamples with delta_b <= 0 (higher-is-better main metrics; the
sign flips otherwise). The unit is an example, or a group where the split has groups (a MultiRC
question, an AX-g male/female pair): group metrics (MultiRC exact match, gender parity) are computed
per group, so a group is resampled whole and each drawn copy becomes its own group. A metric whose
groups are not "rows sharing a value" declares its units (``Metric.units``/``relabel``): AX-g's rows
carry distinct pair ids p and p + 2, so a unit is the pair and copy k gets the ids 4k and 4k + 2.

Where every split is resampled by example and every main metric has a weighted form
(:mod:`aotp.metrics.resampled`: accuracy, F1, macro-F1, MCC, Pearson, Spearman), a chunk of resamples is
scored in one vectorised pass from per-example draw counts; grouped and text metrics are scored resample
by resample through their definitions. Both see the same draws and give the same deltas.

This is the standard nonparametric paired bootstrap (Efron & Tibshirani 1993; Koehn 2004 for NLP
evaluation); it is written here rather than taken from scipy because ``scipy.stats.bootstrap`` resamples
flat arrays and cannot keep grouped metrics (per-question exact match) consistent.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence

import numpy as np

from aotp.metrics.base import METRICS, compute_metrics, main_metric_higher_is_better, main_metric_value, split_entry


def _take(values: Any, rows: np.ndarray) -> Any:
    if isinstance(values, np.ndarray):
        return values[rows]
    return [values[i] for i in rows]


def _grouping(metric_names: Sequence[str]):
    """The grouped metric that decides the resampling units (its ``units``/``relabel``), or None."""
    grouped = {METRICS.get(name) for name in metric_names if METRICS.get(name).units is not None}
    if len({(metric.units, metric.relabel) for metric in grouped}) > 1:
        raise ValueError(f"metrics {sorted(m.name for m in grouped)} group rows into different resampling units")
    return next(iter(grouped), None)


def _units(count: int, groups: Optional[Sequence[Any]], grouping=None) -> list[np.ndarray]:
    """Row indices of each resampling unit: one row per example, all rows of a group, or the units the
    grouped metric declares (AX-g: the two rows of a male/female pair)."""
    if groups is None:
        return [np.array([i]) for i in range(count)]
    if grouping is not None:
        return [np.array(rows) for rows in grouping.units(groups)]
    members: dict[Any, list[int]] = {}
    for row, group in enumerate(groups):
        members.setdefault(tuple(group) if isinstance(group, list) else group, []).append(row)
    return [np.array(rows) for rows in members.values()]


def _relabelled(groups, chosen: list[np.ndarray], grouping) -> Optional[list[Any]]:
    """Groups of the resampled rows: each drawn copy k of a unit becomes its own group(s)."""
    if groups is None:
        return None
    if grouping is None or grouping.relabel is None:
        return [copy for copy, unit in enumerate(chosen) for _ in unit]
    return [label for copy, unit in enumerate(chosen) for label in grouping.relabel(copy, [groups[i] for i in unit])]


def _split_metrics(metric_names, predictions, references, rows, new_groups, prefix) -> dict[str, float]:
    values = compute_metrics(metric_names, _take(predictions, rows), _take(references, rows), groups=new_groups)
    return {prefix + name: float(value) for name, value in values.items()}


DRAWS_PER_CHUNK = 100


def _weighted_deltas(plan, scored: Sequence[str], main_names: Sequence[str],
                     picks: list[list[np.ndarray]]) -> np.ndarray:
    """delta_b for each resample of ``picks`` through the metrics' weighted forms (``Metric.weighted``):
    resample b of a split is its per-example draw counts, so one matrix product scores all of them."""
    values_a: list[dict[str, np.ndarray]] = [{} for _ in plan[0][1]]
    values_b: list[dict[str, np.ndarray]] = [{} for _ in plan[0][2]]
    for index, (prefix, firsts, seconds, units) in enumerate(plan):
        counts = np.stack([np.bincount(pick[index], minlength=len(units)) for pick in picks])
        for name in scored:
            weighted = METRICS.get(name).weighted
            for values, predictors in ((values_a, firsts), (values_b, seconds)):
                for member, one in zip(values, predictors):
                    member[prefix + name] = weighted(one["predictions"], one["references"], counts)

    def main(values: dict[str, np.ndarray]) -> np.ndarray:  # main_metric_value, per resample
        return np.mean([values[name] for name in main_names], axis=0)

    return (np.mean([main(member) for member in values_a], axis=0)
            - np.mean([main(member) for member in values_b], axis=0))


def paired_bootstrap(metric_names: Sequence[str], main_names: Sequence[str],
                     splits: dict[str, tuple[dict[str, Any], dict[str, Any]]], draws: int = 1000,
                     seed: int = 0, return_samples: bool = False) -> dict[str, Any]:
    """``splits``: split -> (A's formatted predictions, B's), each ``{"predictions", "references",
    "groups"}`` as the task formatters return them (same references and groups, same order); A and B may
    each be a list of such dicts (several seeds: their mean main metrics are compared).
    Metric keys get a ``<split>/`` prefix when there are several splits, as in run records.
    ``return_samples`` adds the B resampled deltas (``samples``)."""
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    prefixed = len(splits) > 1
    grouping = _grouping(metric_names)
    plan = []
    for split, (first, second) in splits.items():
        firsts = list(first) if isinstance(first, (list, tuple)) else [first]
        seconds = list(second) if isinstance(second, (list, tuple)) else [second]
        if not firsts or not seconds:
            raise ValueError(f"split {split}: no predictor {'A' if not firsts else 'B'} given")
        # B's first predictor gives the references and groups every predictor is resampled by
        references, groups = seconds[0]["references"], seconds[0].get("groups")
        for one in firsts + seconds:
            if len(one["predictions"]) != len(references) or len(one["references"]) != len(references):
                raise ValueError(f"split {split}: the two predictors were scored on different examples")
        units = _units(len(references), groups, grouping)
        plan.append((f"{split}/" if prefixed else "", firsts, seconds, units))
    members_a, members_b = (len(plan[0][1]), len(plan[0][2])) if plan else (0, 0)
    if any(len(firsts) != members_a or len(seconds) != members_b for _, firsts, seconds, _ in plan):
        raise ValueError("every split needs the same number of A predictors and of B predictors")
    higher = main_metric_higher_is_better(main_names)
    rng = np.random.default_rng(seed)
    # Only the metrics of the main score move delta; the others are not computed on resamples.
    scored = list(dict.fromkeys(split_entry(name)[1] for name in main_names))

    def delta(picks: Optional[list[np.ndarray]]) -> float:
        metrics_a: list[dict[str, float]] = [{} for _ in range(members_a)]
        metrics_b: list[dict[str, float]] = [{} for _ in range(members_b)]
        for (prefix, firsts, seconds, units), pick in zip(plan, picks or [None] * len(plan)):
            chosen = units if pick is None else [units[i] for i in pick]
            rows = np.concatenate(chosen)
            new_groups = _relabelled(seconds[0].get("groups"), chosen, grouping)
            for metrics, predictors in ((metrics_a, firsts), (metrics_b, seconds)):
                for member, one in zip(metrics, predictors):
                    member.update(_split_metrics(scored, one["predictions"], one["references"], rows, new_groups,
                                                 prefix))
        main_a = sum(main_metric_value(member, main_names) for member in metrics_a) / members_a
        return main_a - sum(main_metric_value(member, main_names) for member in metrics_b) / members_b

    observed = delta(None)  # the full sample, scored (and its inputs checked) by the metric definitions
    # Every split resampled by example and every main metric with a weighted form: score a chunk of
    # resamples in one vectorised pass from draw counts (same draws, same values up to float rounding).
    vectorised = (all(seconds[0].get("groups") is None for _, _, seconds, _ in plan)
                  and all(METRICS.get(name).weighted is not None for name in scored))
    chunks = []
    with warnings.catch_warnings():
        # A resample of a small split can hold a single class (scikit-learn warns about the confusion
        # matrix shape, then scores it by the metric's convention); a thousand such warnings say nothing.
        warnings.simplefilter("ignore", UserWarning)
        for start in range(0, draws, DRAWS_PER_CHUNK):  # chunks bound the (draws, examples) count matrices
            picks = [[rng.integers(0, len(units), len(units)) for _, _, _, units in plan]
                     for _ in range(min(DRAWS_PER_CHUNK, draws - start))]
            chunks.append(_weighted_deltas(plan, scored, main_names, picks) if vectorised
                          else np.array([delta(pick) for pick in picks]))
    samples = np.concatenate(chunks)
    not_better = samples <= 0 if higher else samples >= 0
    low, high = np.percentile(samples, [2.5, 97.5])
    result = {"delta": float(observed), "ci95": [float(low), float(high)], "p_not_better": float(not_better.mean()),
              "draws": int(draws), "seed": int(seed),
              "units": {split: len(units) for split, (_, _, _, units) in zip(splits, plan)}, "predictors_a": members_a,
              "predictors_b": members_b}
    if return_samples:
        result["samples"] = samples
    return result
