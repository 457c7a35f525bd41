"""Inference-latency and training-step benchmarks of AoT P-Tuning against the frozen backbone.

Built for a shared, noisy machine (DESIGN.md, "Benchmarks on a shared machine"):

* every variant is timed in the same process, *interleaved* round by round (the order rotates every
  round), and the overhead is the median over rounds of the paired ratio ``t_variant / t_backbone``
  of the same round, so a slow minute slows both sides of a ratio;
* the added work is also timed alone: the bias lookup (one gather of all L layers' rows) plus the
  L additions, without the encoder, so a 2% overhead is not lost in 20% noise;
* threads, dtype, batch, sequence length, load average and versions are recorded with each figure.

Variants (``method`` / ``variant``): ``backbone`` / ``frozen`` (TaskModel, same head, no AoT);
``aot_fc`` / ``materialized`` (fp32 table, memory-mapped) and ``on_the_fly`` (FC evaluated on the
batch's unique tokens); ``aot_fc`` / ``multitask`` (three task packs, a mixed batch); bias-lookup
micro-benchmarks; and a training step (forward + backward + AdamW) of ``aot_fc`` vs ``full_ft``.
Inputs are uniformly random token ids (CLS ... SEP, no padding), which maximises the number of unique
tokens per batch (the worst case for ``on_the_fly``); the count is recorded.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import re
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from aotp.methods import METHODS
from aotp.models import TaskModel, build_backbone


@dataclass
class BenchConfig:
    model: str = "minilm"
    device: str = "cpu"
    threads: int = 1
    batch_size: int = 32
    seq_len: int = 128
    rounds: int = 12            # timed rounds per inference variant (after warmup)
    warmup: int = 2
    lookup_repeats: int = 50    # timed calls of the bias lookup alone
    train_rounds: int = 5       # timed training steps per method (0 disables the training benchmark)
    train_batch_size: Optional[int] = None  # default: batch_size
    num_tasks: int = 3          # task packs for the multi-task variant (0 disables it)
    seed: int = 0
    out_dir: str = "results/bench"
    model_config: dict = field(default_factory=dict)  # overrides the model group (e.g. a tiny model for tests)


# -- measurement helpers -----------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory during a block: CUDA allocator peak on GPU; on Linux CPU the process's peak RSS
    (VmHWM) after resetting it via /proc/self/clear_refs, else the process high-water mark."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda_max_memory_allocated" if device.type == "cuda" else "process_peak_rss"
        self.peak = 0
        self.before = 0
        self.delta = 0  # peak minus the memory in use when the block started: what the block itself added

    @staticmethod
    def _status(field: str) -> Optional[int]:
        try:
            match = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
            return int(match.group(1)) * 1024 if match else None
        except OSError:
            return None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = int(torch.cuda.memory_allocated(self.device))
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                self.kind = "process_max_rss_since_start"
            self.before = self._status("VmRSS") or 0
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = int(torch.cuda.max_memory_allocated(self.device))
        else:
            hwm = self._status("VmHWM")
            if hwm is None:
                import resource
                hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.peak = int(hwm)
        self.delta = max(0, self.peak - self.before)


def _time_call(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def interleaved(variants: dict[str, Callable[[], Any]], rounds: int, warmup: int, device: torch.device,
                baseline: str) -> dict[str, dict[str, Any]]:
    """Time every variant once per round, rotating the order; paired ratios against ``baseline``."""
    names = list(variants)
    times = {name: [] for name in names}
    peaks = {name: 0 for name in names}
    deltas = {name: 0 for name in names}
    for round_index in range(warmup + rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            with PeakMemory(device) as memory:
                seconds = _time_call(variants[name], device)
            if round_index >= warmup:
                times[name].append(seconds)
                peaks[name] = max(peaks[name], memory.peak)
                deltas[name] = max(deltas[name], memory.delta)
    results = {}
    for name in names:
        ratios = [t / b for t, b in zip(times[name], times[baseline])]
        results[name] = {"times": times[name], "peak": peaks[name], "peak_delta": deltas[name], "peak_kind": memory.kind,
                         "ratio_median": statistics.median(ratios), "ratio_p10": _percentile(ratios, 0.1),
                         "ratio_p90": _percentile(ratios, 0.9)}
    return results


def environment(cfg: BenchConfig, device: torch.device) -> dict[str, Any]:
    import transformers

    cpu = platform.processor()
    try:
        match = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = match.group(1).strip() if match else cpu
    except OSError:
        pass
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        sha = None
    env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "git_sha": sha, "dtype": "fp32", "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    try:
        env["loadavg_start"] = os.getloadavg()
    except OSError:
        pass
    return env


# -- models --------------------------------------------------------------------------------------
def _perturb(model: TaskModel, generator: torch.Generator, scale: float = 0.02) -> None:
    """Non-zero AoT weights (a trained model's table is not zero; the cost is the same either way)."""
    with torch.no_grad():
        for parameter in model.aot.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator).to(parameter.device) * scale)


def _inputs(tokenizer, vocab_size: int, batch: int, length: int, generator: torch.Generator, device):
    low = min(1000, vocab_size // 2)  # skip special / unused ids at the start of BERT-style vocabularies
    ids = torch.randint(low, vocab_size, (batch, length), generator=generator)
    ids[:, 0] = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else ids[:, 0]
    ids[:, -1] = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else ids[:, -1]
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "token_type_ids": torch.zeros_like(ids).to(device)}


def run_benchmarks(cfg: BenchConfig, log: Callable[[str], None] = print) -> tuple[list[dict[str, Any]], Path]:
    from aotp.inference import MultiTaskModel, TaskPack

    torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    generator = torch.Generator().manual_seed(cfg.seed)
    model_cfg = cfg.model_config or {"name": cfg.model, "source": "package" if cfg.model == "minilm" else "hub"}
    if not cfg.model_config and cfg.model != "minilm":
        raise ValueError("pass model_config (the model group dict) for models other than minilm")
    backbone = build_backbone(model_cfg)
    env = environment(cfg, device)
    base = TaskModel(backbone, "classification", 2, seed=cfg.seed).to(device).eval()
    vocab_size = base.backbone.get_input_embeddings().num_embeddings
    inputs = _inputs(backbone.tokenizer, vocab_size, cfg.batch_size, cfg.seq_len, generator, device)
    unique_tokens = int(torch.unique(inputs["input_ids"]).numel())
    common = {"model": model_cfg.get("name", cfg.model), "device": str(device), "threads": cfg.threads,
              "batch_size": cfg.batch_size, "seq_len": cfg.seq_len, "dtype": "fp32", "unique_tokens": unique_tokens}
    records: list[dict[str, Any]] = []
    tmp = tempfile.TemporaryDirectory(prefix="aotp-bench-")

    def make_aot(name: str, mode: str, subdir: str, seed: int) -> TaskModel:
        torch.manual_seed(seed)
        model = copy.deepcopy(base)
        method = METHODS.get(name)(inference_mode=mode)
        method.apply(model)
        _perturb(model, generator)
        model.eval()
        facts = method.prepare_for_inference(model, Path(tmp.name) / subdir)
        log(f"  prepared {name}/{mode}: {json.dumps({k: v for k, v in facts.items() if k != 'pack_dir'})}")
        return model

    log(f"[bench] {common['model']} on {device}, {cfg.threads} thread(s), batch {cfg.batch_size} x {cfg.seq_len}, "
        f"{unique_tokens} unique tokens; load average {env.get('loadavg_start')}")
    materialized = make_aot("aot_fc", "materialized", "fc_materialized", cfg.seed + 1)
    on_the_fly = make_aot("aot_fc", "on_the_fly", "fc_on_the_fly", cfg.seed + 1)

    variants: dict[str, Callable[[], Any]] = {}
    meta: dict[str, dict[str, Any]] = {}

    def add(key, fn, method, variant, tasks=1, **extra):
        variants[key] = fn
        meta[key] = {"method": method, "variant": variant, "tasks": tasks, **extra}

    with torch.no_grad():
        add("backbone", lambda: base(**inputs), "backbone", "frozen")
        add("materialized", lambda: materialized(**inputs), "aot_fc", "materialized", table_dtype="fp32")
        add("on_the_fly", lambda: on_the_fly(**inputs), "aot_fc", "on_the_fly")
        if cfg.num_tasks > 0:
            packs = [TaskPack("task0", materialized.aot.table, materialized.head)]
            for index in range(1, cfg.num_tasks):
                other = make_aot("aot_fc", "materialized", f"task{index}", cfg.seed + 1 + index)
                packs.append(TaskPack(f"task{index}", other.aot.table, other.head))
            multi = MultiTaskModel(build_backbone(model_cfg).model.to(device), packs)
            row_tasks = torch.arange(cfg.batch_size, device=device) % cfg.num_tasks  # round-robin mixed batch

            def multitask_forward():
                states = multi.encode(inputs["input_ids"], inputs["attention_mask"], row_tasks, inputs["token_type_ids"])
                for task in range(cfg.num_tasks):
                    multi.heads[task](states[row_tasks == task])
            add("multitask", multitask_forward, "aot_fc", "multitask", tasks=cfg.num_tasks, table_dtype="fp32")

        log(f"[bench] inference: {cfg.rounds} interleaved rounds (+{cfg.warmup} warmup) of {', '.join(variants)}")
        results = interleaved(variants, cfg.rounds, cfg.warmup, device, baseline="backbone")
        backbone_median = statistics.median(results["backbone"]["times"])
        for key, result in results.items():
            times = result["times"]
            records.append({**common, **meta[key], "kind": "inference",
                            "latency_ms_median": 1e3 * statistics.median(times),
                            "latency_ms_p90": 1e3 * _percentile(times, 0.9),
                            "throughput_examples_per_s": cfg.batch_size / statistics.median(times),
                            "peak_memory_bytes": result["peak"], "peak_memory_added_bytes": result["peak_delta"],
                            "peak_memory_kind": result["peak_kind"],
                            "ratio_to_backbone_median": result["ratio_median"],
                            "ratio_to_backbone_p10": result["ratio_p10"], "ratio_to_backbone_p90": result["ratio_p90"],
                            "rounds": cfg.rounds})

        # The added work alone: the gather of all layers' rows + L additions (no encoder).
        hidden = torch.randn(cfg.batch_size, cfg.seq_len, base.hidden_size, generator=generator).to(device)

        def lookup_and_add(aot):
            def run():
                bias = aot.lookup(inputs["input_ids"])
                for layer in range(aot.num_layers):
                    hidden + bias[:, :, layer]
            return run

        for variant, model in (("bias_lookup_materialized", materialized), ("bias_lookup_on_the_fly", on_the_fly)):
            fn = lookup_and_add(model.aot)
            for _ in range(cfg.warmup):
                fn()
            with PeakMemory(device) as memory:
                times = [_time_call(fn, device) for _ in range(cfg.lookup_repeats)]
            median = statistics.median(times)
            records.append({**common, "method": "aot_fc", "variant": variant, "tasks": 1, "kind": "bias_lookup",
                            "latency_ms_median": 1e3 * median, "latency_ms_p90": 1e3 * _percentile(times, 0.9),
                            "throughput_examples_per_s": cfg.batch_size / median,
                            "peak_memory_bytes": memory.peak, "peak_memory_added_bytes": memory.delta,
                            "peak_memory_kind": memory.kind,
                            "share_of_backbone_median": median / backbone_median, "rounds": cfg.lookup_repeats})
    del materialized, on_the_fly, variants
    if cfg.num_tasks > 0:
        multi.hooks.detach()
        del multi

    if cfg.train_rounds > 0:
        train_batch = cfg.train_batch_size or cfg.batch_size
        train_inputs = {k: v[:train_batch] for k, v in inputs.items()}
        labels = torch.randint(0, 2, (train_batch,), generator=generator).to(device)
        steps = {}
        for name in ("full_ft", "aot_fc"):
            torch.manual_seed(cfg.seed)
            model = copy.deepcopy(base)
            METHODS.get(name)().apply(model)
            model.train()
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

            def step(model=model, optimizer=optimizer):
                optimizer.zero_grad(set_to_none=True)
                model.loss(model(**train_inputs), labels).backward()
                optimizer.step()
            steps[name] = step
        log(f"[bench] training step: {cfg.train_rounds} interleaved rounds (+1 warmup) of full_ft, aot_fc, "
            f"batch {train_batch} x {cfg.seq_len}")
        results = interleaved(steps, cfg.train_rounds, 1, device, baseline="full_ft")
        for name, result in results.items():
            times = result["times"]
            records.append({**common, "batch_size": train_batch, "method": name, "variant": "train_step", "tasks": 1,
                            "kind": "train_step", "latency_ms_median": 1e3 * statistics.median(times),
                            "latency_ms_p90": 1e3 * _percentile(times, 0.9),
                            "throughput_examples_per_s": train_batch / statistics.median(times),
                            "peak_memory_bytes": result["peak"], "peak_memory_added_bytes": result["peak_delta"],
                            "peak_memory_kind": result["peak_kind"],
                            "ratio_to_full_ft_median": result["ratio_median"],
                            "ratio_to_full_ft_p10": result["ratio_p10"], "ratio_to_full_ft_p90": result["ratio_p90"],
                            "rounds": cfg.train_rounds})
    tmp.cleanup()
    try:
        env["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    env["config"] = asdict(cfg)
    for record in records:
        record["env"] = env
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"inference_{common['model']}_{device.type}_{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json"
    path.write_text(json.dumps(records, indent=2))
    return records, path


def summary(records: list[dict[str, Any]]) -> str:
    lines = [f"{'kind':<12} {'method':<9} {'variant':<25} {'tasks':>5} {'median ms':>10} {'p90 ms':>9} {'ex/s':>8} "
             f"{'ratio':>7} {'peak MB':>8} {'+MB':>6}"]
    for r in records:
        ratio = r.get("ratio_to_backbone_median", r.get("ratio_to_full_ft_median", r.get("share_of_backbone_median")))
        lines.append(f"{r['kind']:<12} {r['method']:<9} {r['variant']:<25} {r['tasks']:>5} {r['latency_ms_median']:>10.2f} "
                     f"{r['latency_ms_p90']:>9.2f} {r['throughput_examples_per_s']:>8.1f} "
                     f"{'' if ratio is None else f'{ratio:.4f}':>7} {r['peak_memory_bytes'] / 2**20:>8.0f} "
                     f"{r.get('peak_memory_added_bytes', 0) / 2**20:>6.0f}")
    lines.append("ratio: inference = median of paired t/t_backbone; bias_lookup = median/backbone median; "
                 "train_step = median of paired t/t_full_ft; peak MB = process peak (RSS on CPU) during a call, "
                 "+MB = that peak minus the memory in use before the call")
    return "\n".join(lines)
