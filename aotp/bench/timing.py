"""Timing and memory measurement for a shared, noisy machine (DESIGN.md, "Benchmarks on a shared machine").

* :func:`interleaved` times every variant once per round, rotating the order every round, and puts
  a call of the baseline (the frozen backbone) between every ``baseline_every`` variants. Each call
  of a variant is paired with the baseline calls right before and after it in the same round (their
  mean): the overhead is the median over rounds of ``t_variant / t_baseline_neighbours``, so a slow
  minute slows both sides of a ratio.
* Every call records wall-clock time (``time.perf_counter``; on CUDA after synchronising, plus the
  CUDA-event time) and, on CPU, the process CPU time (``time.process_time``). With a fixed thread
  count on a shared machine, wall time includes the time other processes held our core; CPU time
  does not, so the CPU-time ratio is reported next to the wall-time ratio as a second estimate.
* :func:`activation_peak` measures the peak of tensor memory allocated *during* one call: the CUDA
  allocator's peak on GPU; on CPU the profiler's allocation events (``profile_memory=True``),
  replayed in time order. The process RSS cannot be used on CPU: freed heap memory stays resident,
  so the second variant measured would see no growth at all.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (q in [0, 1]) of a non-empty list."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Sample:
    wall: float                  # seconds
    cpu: Optional[float] = None  # process CPU seconds (CPU device)
    gpu: Optional[float] = None  # CUDA-event seconds (CUDA device)


def time_call(fn: Callable[[], Any], device: torch.device) -> tuple[Sample, Any]:
    """Time one call of ``fn``; returns the sample and ``fn``'s result (checked by the caller)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        wall = time.perf_counter()
        start.record()
        result = fn()
        end.record()
        end.synchronize()
        torch.cuda.synchronize(device)
        return Sample(time.perf_counter() - wall, gpu=start.elapsed_time(end) / 1e3), result
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    return Sample(time.perf_counter() - wall, cpu=time.process_time() - cpu), result


@dataclass
class Timings:
    """Samples of one variant and, per sample, the mean of its neighbouring baseline calls."""

    samples: list[Sample] = field(default_factory=list)
    reference: list[Sample] = field(default_factory=list)  # baseline neighbours' mean, same round

    def values(self, kind: str = "wall") -> list[float]:
        return [getattr(s, kind) for s in self.samples if getattr(s, kind) is not None]

    def ratios(self, kind: str = "wall") -> list[float]:
        return [getattr(s, kind) / getattr(r, kind) for s, r in zip(self.samples, self.reference)
                if getattr(s, kind) is not None and getattr(r, kind)]

    def summary(self, examples: int) -> dict[str, Any]:
        wall = self.values("wall")
        out: dict[str, Any] = {
            "latency_ms_median": 1e3 * statistics.median(wall), "latency_ms_p90": 1e3 * percentile(wall, 0.9),
            "latency_ms_min": 1e3 * min(wall), "throughput_examples_per_s": examples / statistics.median(wall),
            "timed_calls": len(wall),
        }
        for kind in ("cpu", "gpu"):
            values = self.values(kind)
            if values:
                out[f"{kind}_ms_median"] = 1e3 * statistics.median(values)
                out[f"{kind}_ms_p90"] = 1e3 * percentile(values, 0.9)
        # The raw per-round samples, so every ratio can be recomputed from the records.
        out["samples"] = {kind: [round(1e3 * getattr(s, kind), 3) for s in self.samples]
                          for kind in ("wall", "cpu", "gpu") if self.values(kind)}
        out["baseline_neighbours"] = {kind: [round(1e3 * getattr(r, kind), 3) for r in self.reference]
                                      for kind in ("wall", "cpu", "gpu") if self.values(kind)}
        return out


def normalised_ratios(a: Timings, b: Timings, kind: str = "wall") -> list[float]:
    """Per round: (a / a's baseline neighbours) / (b / b's baseline neighbours); rounds aligned."""
    ra, rb = a.ratios(kind), b.ratios(kind)
    return [x / y for x, y in zip(ra, rb) if y]


def _round_order(names: list[str], baseline: str, round_index: int, baseline_every: int) -> list[str]:
    others = [n for n in names if n != baseline]
    if not others:
        return [baseline]
    shift = round_index % len(others)
    rotated = others[shift:] + others[:shift]
    order = [baseline]
    step = max(1, baseline_every)
    for start in range(0, len(rotated), step):
        order += rotated[start:start + step] + [baseline]
    return order


def _mean(samples: list[Sample]) -> Sample:
    def avg(kind):
        values = [getattr(s, kind) for s in samples if getattr(s, kind) is not None]
        return sum(values) / len(values) if values else None
    return Sample(avg("wall"), avg("cpu"), avg("gpu"))


def interleaved(variants: dict[str, Callable[[], Any]], rounds: int, warmup: int, device: torch.device,
                baseline: str, baseline_every: int = 4, check: Optional[Callable[[str, Any], None]] = None,
                between_rounds: Optional[Callable[[int, list], None]] = None) -> dict[str, Timings]:
    """Time ``variants`` round by round (see the module docstring); ``check(name, result)`` is called
    after every call, outside the timed region; ``between_rounds(round_index, [(name, Sample), ...])``
    after every round (warm-up rounds included: their index is < ``warmup``). Warm-up rounds are run
    and dropped."""
    if baseline not in variants:
        raise KeyError(f"baseline {baseline!r} is not among the variants {list(variants)}")
    names = list(variants)
    timings = {name: Timings() for name in names}
    for round_index in range(warmup + rounds):
        order = _round_order(names, baseline, round_index, baseline_every)
        samples: list[tuple[str, Sample]] = []
        for name in order:
            sample, result = time_call(variants[name], device)
            if check is not None:
                check(name, result)
            del result
            samples.append((name, sample))
        if between_rounds is not None:
            between_rounds(round_index, samples)
        if round_index < warmup:
            continue
        base_positions = [i for i, (name, _) in enumerate(samples) if name == baseline]
        for position, (name, sample) in enumerate(samples):
            if name == baseline:
                timings[name].samples.append(sample)
                timings[name].reference.append(sample)
                continue
            before = max(p for p in base_positions if p < position)
            after = [p for p in base_positions if p > position]
            neighbours = [samples[before][1]] + ([samples[after[0]][1]] if after else [])
            timings[name].samples.append(sample)
            timings[name].reference.append(_mean(neighbours))
    return timings


def ratio_summary(timings: Timings, prefix: str) -> dict[str, Any]:
    """Median/p10/p90 of the paired ratios (wall, and CPU or GPU time where recorded)."""
    out: dict[str, Any] = {}
    wall = timings.ratios("wall")
    if wall:
        out[prefix] = statistics.median(wall)
        out[f"{prefix}_p10"] = percentile(wall, 0.1)
        out[f"{prefix}_p90"] = percentile(wall, 0.9)
    for kind in ("cpu", "gpu"):
        values = timings.ratios(kind)
        if values:
            out[f"{prefix}_{kind}"] = statistics.median(values)
    return out


# -- memory ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_stderr():
    """Silence the profiler's C++ start/stop lines (written to fd 2)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def activation_peak(fn: Callable[[], Any], device: torch.device) -> tuple[int, str]:
    """(peak bytes of tensors allocated during one call of ``fn`` and alive at the same time, method)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before), "cuda_max_memory_allocated"
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return int(peak), "torch_profiler_cpu_allocations"


def resident_bytes(*objects) -> int:
    """Bytes of the distinct tensor storages of modules/tensors (shared storages counted once)."""
    seen: set[int] = set()
    total = 0

    def add(tensor: torch.Tensor) -> None:
        nonlocal total
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in seen or storage.nbytes() == 0:
            return
        seen.add(key)
        total += storage.nbytes()

    def visit(obj) -> None:
        if isinstance(obj, torch.Tensor):
            add(obj)
        elif isinstance(obj, torch.nn.Module):
            for tensor in list(obj.parameters()) + list(obj.buffers()):
                add(tensor)
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                visit(item)

    for obj in objects:
        visit(obj)
    return total


# -- the machine -------------------------------------------------------------------------------------
def load_average() -> Optional[list[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def wait_for_quiet(threshold: float, max_wait_s: float, log: Callable[[str], None] = print,
                   poll_s: float = 60.0) -> dict[str, Any]:
    """Sleep (``poll_s`` at a time, at most ``max_wait_s``) until the 1-minute load average is below
    ``threshold``; returns what happened (it never refuses to run)."""
    start = time.monotonic()
    load = load_average()
    while load is not None and load[0] >= threshold and time.monotonic() - start < max_wait_s:
        log(f"[bench] 1-min load average {load[0]} >= {threshold}: waiting {poll_s:.0f} s")
        time.sleep(poll_s)
        load = load_average()
    quiet = load is None or load[0] < threshold
    return {"threshold": threshold, "waited_s": round(time.monotonic() - start, 1), "loadavg_at_start": load,
            "quiet_at_start": quiet}
