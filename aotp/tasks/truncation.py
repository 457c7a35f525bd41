"""Truncation accounting: how many examples of a split lost tokens to ``max_length``, and, for multiple
choice, how many lost the difference between their choices.

An example is *truncated* when any of its sequences is longer than ``max_length`` before truncation.
A multiple-choice example has *identical choices* when two of its choices differ before truncation and
are the same token sequence after it: the model cannot tell them apart, so its prediction is a coin
flip. The counts go in the run record (``truncation``) and are printed; a share of truncated examples
above ``data.truncation_warning`` is a warning, and any example with identical choices stops the run
(:class:`TruncationError`) unless ``data.allow_identical_choices=true``.
"""

from __future__ import annotations

import logging
from typing import Any

from aotp.cli import Refusal

log = logging.getLogger(__name__)

UNTRUNCATED = 1_000_000  # a max_length no text reaches: tokenising with it gives the full sequences


class TruncationError(Refusal, ValueError):
    """Multiple-choice examples whose choices became identical token sequences after truncation."""


def sequences(feature: dict[str, Any]) -> list[list[int]]:
    """The token sequences of a feature: one, or one per choice (multiple choice, siamese pairs)."""
    ids = feature["input_ids"]
    return ids if ids and isinstance(ids[0], list) else [ids]


def truncation_stats(examples: list[dict[str, Any]], features: list[dict[str, Any]], full_features: list[dict[str, Any]],
                     max_length: int) -> dict[str, Any]:
    """Counts for one split from its features at ``max_length`` and the same examples untruncated."""
    truncated = identical = 0
    longest = 0
    for example, feature, full in zip(examples, features, full_features):
        cut, whole = sequences(feature), sequences(full)
        lengths = [len(s) for s in whole]
        longest = max([longest, *lengths])
        if max(lengths, default=0) > max_length:
            truncated += 1
            if example.get("choices"):
                identical += any(cut[i] == cut[j] and whole[i] != whole[j]
                                 for i in range(len(cut)) for j in range(i + 1, len(cut)))
    stats = {"examples": len(features), "truncated": truncated, "max_length": max_length, "longest": longest}
    if any(example.get("choices") for example in examples):
        stats["identical_choices"] = identical
    return stats


def describe(split: str, stats: dict[str, Any]) -> str:
    share = stats["truncated"] / max(stats["examples"], 1)
    text = f"{split} {stats['truncated']}/{stats['examples']} ({share:.1%})"
    if stats.get("identical_choices"):
        text += f", {stats['identical_choices']} with identical choices"
    return text


def truncation_report(data) -> dict[str, dict[str, Any]]:
    """Per-split truncation counts of a loaded :class:`~aotp.tasks.data.TaskData`."""
    return {name: split.truncation for name, split in data.splits.items() if split.truncation is not None}


def check_truncation(report: dict[str, dict[str, Any]], data_cfg) -> list[str]:
    """The warnings a :func:`truncation_report` raises; :class:`TruncationError` when choices became
    identical and ``data.allow_identical_choices`` is not set."""
    threshold = float(data_cfg.get("truncation_warning", 0.05))
    warnings = []
    for name, stats in report.items():
        share = stats["truncated"] / max(stats["examples"], 1)
        if share > threshold:
            warnings.append(f"data.max_length={stats['max_length']} truncates {stats['truncated']} of {stats['examples']} "
                            f"{name} examples ({share:.1%} > data.truncation_warning={threshold:g}; longest "
                            f"{stats['longest']} tokens)")
    identical = {name: stats["identical_choices"] for name, stats in report.items() if stats.get("identical_choices")}
    if identical and not data_cfg.get("allow_identical_choices", False):
        counts = ", ".join(f"{count} {name}" for name, count in identical.items())
        max_length = next(iter(report.values()))["max_length"]
        raise TruncationError(f"data.max_length={max_length} makes the choices of {counts} multiple-choice examples "
                              f"identical (truncation cut away all that differed), so they cannot be told apart; raise "
                              f"data.max_length (longest: {max(s['longest'] for s in report.values())} tokens) or set "
                              f"data.allow_identical_choices=true")
    return warnings
