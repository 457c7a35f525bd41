"""Inference benchmark: every registered method vs the frozen backbone, multi-task serving, the AoT
bias lookup alone (see :mod:`aotp.bench.inference`); report tables and plots (:mod:`aotp.bench.report`)."""

from aotp.bench.inference import BenchConfig, run_benchmarks, summary

__all__ = ["BenchConfig", "run_benchmarks", "summary"]
