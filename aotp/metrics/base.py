"""The metric interface, the ``METRICS`` registry and the two functions the runner calls.

A :class:`Metric` is a named function ``fn(predictions, references, groups) -> float`` that declares
``higher_is_better`` (so best-checkpoint selection and tables cannot get the sign wrong), what kind of
predictions it scores (``inputs``) and whether it needs ``groups`` (MultiRC question ids, AX-g pair ids).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from aotp.registry import Registry

#: What a metric's ``predictions`` are: class ids (or label strings), floats, or answer strings.
INPUT_KINDS = ("labels", "scores", "text")


@dataclass(frozen=True)
class Metric:
    """One registered metric.

    ``fn(predictions, references, groups)`` returns a float; values are fractions in [0, 1]
    (correlations in [-1, 1]), not percentages.
    """

    name: str
    fn: Callable[[Sequence[Any], Sequence[Any], Optional[Sequence[Any]]], float]
    higher_is_better: bool
    inputs: str  # one of INPUT_KINDS
    needs_groups: bool = False
    description: str = ""
    # How ``groups`` form the units a bootstrap resamples whole, and how a drawn copy is relabelled so that
    # copies stay apart: ``units(groups) -> [row indices of each unit]`` and ``relabel(copy, unit_groups) ->
    # that copy's groups``. None: the rows sharing a group value are a unit, copy k is relabelled k.
    units: Optional[Callable[[Sequence[Any]], list[list[int]]]] = None
    relabel: Optional[Callable[[int, Sequence[Any]], list[Any]]] = None
    # The metric on B resamples at once: ``weighted(predictions, references, counts) -> (B,) array``, where
    # ``counts[b, i]`` is how often example i was drawn in resample b; equal to ``fn`` on the repeated rows.
    # None: the bootstrap scores each resample with ``fn`` (grouped and text metrics).
    weighted: Optional[Callable[[Sequence[Any], Sequence[Any], Any], Any]] = None

    def __post_init__(self) -> None:
        if self.inputs not in INPUT_KINDS:
            raise ValueError(f"metric {self.name!r}: inputs {self.inputs!r} is not one of {INPUT_KINDS}")

    def __call__(self, predictions: Sequence[Any], references: Sequence[Any],
                 groups: Optional[Sequence[Any]] = None) -> float:
        n = len(predictions)
        if n == 0:
            raise ValueError(f"metric {self.name!r}: no predictions to score")
        if len(references) != n:
            raise ValueError(f"metric {self.name!r}: {n} predictions but {len(references)} references")
        if self.needs_groups:
            if groups is None:
                raise ValueError(f"metric {self.name!r} needs `groups` ({self.description})")
            if len(groups) != n:
                raise ValueError(f"metric {self.name!r}: {n} predictions but {len(groups)} groups")
        return float(self.fn(predictions, references, groups))


METRICS: Registry[Metric] = Registry("metric", option="task.metrics")


def register_metric(name: str, *, higher_is_better: bool, inputs: str, needs_groups: bool = False,
                    description: str = "", units: Optional[Callable] = None, relabel: Optional[Callable] = None,
                    weighted: Optional[Callable] = None) -> Callable:
    """Decorator: ``@register_metric("accuracy", higher_is_better=True, inputs="labels")`` on
    ``def fn(predictions, references, groups) -> float``; ``units``/``relabel``/``weighted``: see :class:`Metric`."""

    def decorator(fn: Callable) -> Callable:
        METRICS.register(name)(Metric(name, fn, higher_is_better, inputs, needs_groups,
                                      description or (fn.__doc__ or "").strip().splitlines()[0], units, relabel,
                                      weighted))
        return fn

    return decorator


def compute_metrics(metric_names: Sequence[str], predictions: Sequence[Any], references: Sequence[Any],
                    groups: Optional[Sequence[Any]] = None) -> dict[str, float]:
    """Score one eval split with every listed metric: ``{name: value}``.

    Unknown names raise :class:`aotp.registry.UnknownChoiceError` ("did you mean ...") before
    anything is computed. ``groups`` is passed to the metrics that need it and ignored by the others.
    """
    metrics = [METRICS.get(name) for name in metric_names]
    return {metric.name: metric(predictions, references, groups) for metric in metrics}


def split_entry(entry: str) -> tuple[str, str]:
    """``"dev_matched/accuracy"`` -> ``("dev_matched", "accuracy")``; ``"f1"`` -> ``("", "f1")``."""
    split, _, name = entry.rpartition("/")
    return split, name


def metric_for(entry: str) -> Metric:
    """The registered metric behind a metric key, with or without an ``<eval split>/`` prefix."""
    return METRICS.get(split_entry(entry)[1])


def main_metric_value(metrics: dict[str, float], names: Sequence[str]) -> float:
    """The task's main score: the unweighted mean of the listed metric keys, as the GLUE/SuperGLUE
    leaderboards average e.g. F1 and accuracy for MRPC, Pearson and Spearman for STS-B.

    ``names`` are keys of ``metrics`` (optionally ``<eval split>/<metric>``); all of them must share
    one direction (:func:`main_metric_higher_is_better`). A missing key raises a KeyError that names
    the keys that are there.
    """
    if not names:
        raise ValueError("main_metric_value: no metric names given")
    main_metric_higher_is_better(names)
    missing = [name for name in names if name not in metrics]
    if missing:
        raise KeyError(f"main metric {missing} not among the computed metrics {sorted(metrics)}")
    values = [float(metrics[name]) for name in names]
    return math.fsum(values) / len(values)


def main_metric_higher_is_better(names: Sequence[str]) -> bool:
    """Direction of :func:`main_metric_value` for these keys; mixing directions is an error."""
    directions = {metric_for(name).higher_is_better for name in names}
    if len(directions) != 1:
        raise ValueError(f"main metric {list(names)} mixes higher-is-better and lower-is-better metrics")
    return directions.pop()


def is_improvement(new: float, best: Optional[float], higher_is_better: bool) -> bool:
    """The selection rule (best checkpoint, best constant): True when ``new`` beats ``best`` in the metric's
    direction. A NaN ``new`` never improves (a diverged evaluation is not selected); any other ``new``
    improves on ``best`` None (nothing yet) or NaN; a tie is no improvement (the earlier one stays)."""
    if new != new:  # NaN
        return False
    if best is None or best != best:
        return True
    return new > best if higher_is_better else new < best
