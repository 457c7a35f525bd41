"""Benchmarks: inference overhead of AoT P-Tuning, multi-task inference, training-step cost."""

from aotp.bench.inference import BenchConfig, run_benchmarks

__all__ = ["BenchConfig", "run_benchmarks"]
