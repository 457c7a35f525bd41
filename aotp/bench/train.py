"""Training throughput: aotp's loop against the Hugging Face ``transformers.Trainer`` (issue 17).

Both loops train the *same* module (aotp's ``TaskModel``: backbone + task head; for the HF Trainer it is
wrapped to return ``{"loss", "logits"}``) on the same tokenised examples, batch size, precision, device
and thread count, for one epoch. Whole runs are interleaved round by round (the order rotates), so a load
change on a shared machine hits both sides of a pair; the headline is the median over rounds of the paired
ratio of train examples per second, with its range.

Arms (``--arms``):

* ``aotp``: aotp at its defaults (length-grouped batches, fused AdamW, loss read at log steps only);
* ``aotp_ungrouped``: the same with ``trainer.group_by_length=false`` (the batches of every run before
  issue 17): separates the loop from the padding it computes;
* ``hf``: ``transformers.Trainer`` at its defaults (random batches padded by ``DataCollatorWithPadding``,
  its default optimizer, no length grouping, ``dataloader_num_workers=0``); only what would make it do
  something else than train is set: no reporting integrations, no checkpoint saving, no progress bar.

What is timed. aotp: ``train_seconds`` of the loop (every step from the collation of its first batch to
the optimizer step, evaluations and checkpoints excluded). HF: from the callback ``on_step_begin`` of the
first step to ``on_step_end`` of the last. On a GPU every timed interval ends with a device synchronise.
Both also in process CPU time (``cpu_*`` fields; aotp: the whole ``fit`` call with evaluation and
checkpoint writing stubbed out), which leaves out the time other processes held the cores: on a shared
machine the wall-clock figures carry the load, the CPU-time ones much less of it.

Host time. Collation is timed inside both loops (the collate function is wrapped; both collate in the
training process at their defaults on CPU). Host reads (``host_reads_per_step``, by call site) count every
host-device synchronisation during training (:func:`count_host_reads`): on CUDA the syncs themselves
(``torch.cuda.set_sync_debug_mode("warn")``, one warning per sync, counted); on a CPU, where nothing waits,
every call that would wait for a GPU if its tensor lived there: a tensor's value handed to Python
(``item``, ``tolist``, ``bool/int/float/index()``, ``numpy``, ``cpu``) and every op whose output shape or
Python result depends on tensor values (``unique``, ``nonzero``, boolean-mask indexing, ...:
:data:`DATA_DEPENDENT`). Reads of host-only tensors (the samplers' permutations, collation) are left out.
Compute = step time - collation.

Methods. Every method of ``--methods`` trains ``--method-steps`` steps with aotp's defaults in every
round, and its step time is divided by full fine-tuning's in the same round.

Padded-token share: the share of the collated token positions that are padding over the epoch's batches
(aotp with and without grouping, from the batch lists; HF from the batches its collator saw).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from aotp.cli import guarded

import torch

METHODS = ("full_ft", "bitfit", "lora", "adapter_houlsby", "adapter_pfeiffer", "ptuning_v2", "aot_fc", "aot_kron")
ARMS = ("aotp", "hf", "aotp_ungrouped")


@dataclass
class TrainBenchConfig:
    model: str = "minilm"
    task: str = "glue/sst2"
    data_root: str = "../shared/data"
    train_examples: int = 512
    eval_examples: int = 32  # the final evaluation every aotp run makes (not timed)
    batch_size: int = 16
    max_length: int = 128
    rounds: int = 3
    arms: tuple = ARMS
    methods: tuple = METHODS
    method_steps: int = 12
    device: str = "cpu"
    precision: str = "fp32"
    threads: int = 1
    seed: int = 1
    overrides: tuple = ()  # extra Hydra overrides for every aotp config (e.g. model.family=bert for model=tiny_bert)
    out: Optional[str] = None


class TimedCollator:
    """Wraps a collate function: time spent collating, and real/padded token counts of every batch."""

    def __init__(self, collate: Callable, device: torch.device):
        self.collate, self.device = collate, device
        self.seconds, self.batches, self.real, self.padded = 0.0, 0, 0, 0

    def __call__(self, features):
        with host_only():  # collation and its token count read host tensors only
            tick = time.perf_counter()
            batch = self.collate(features)
            self.seconds += time.perf_counter() - tick
            mask = batch["attention_mask"]
            self.batches += 1
            self.real += int(mask.sum())
            self.padded += mask.numel()
        return batch

    def reset(self) -> None:
        self.seconds, self.batches, self.real, self.padded = 0.0, 0, 0, 0

    def share(self) -> float:
        return 1.0 - self.real / self.padded if self.padded else 0.0


# Reads of tensors that live on the host whatever the device (the sampler's permutation, the DataLoader's
# base seed, aotp's epoch batches): never a device synchronisation, so not counted.
HOST_ONLY_READERS = ("torch/utils/data/", "epoch_batches", "length_grouped_batches")

# Tensor methods that hand a tensor's value to Python: each waits for the device when the tensor is on a GPU.
VALUE_READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "__complex__", "numpy", "cpu")


def _bool_mask_index(index) -> bool:
    """Whether an index holds a boolean (or uint8) mask tensor: ``x[mask]`` has a data-dependent shape."""
    parts = index if isinstance(index, (tuple, list)) else (index,)
    return any(isinstance(part, torch.Tensor) and part.dtype in (torch.bool, torch.uint8) for part in parts)


def _repeats_from_tensor(args, kwargs) -> bool:
    """``repeat_interleave`` with per-element repeats and no ``output_size``: the output size is their sum."""
    repeats = args[1] if len(args) > 1 else kwargs.get("repeats", args[0] if len(args) == 1 else None)
    return isinstance(repeats, torch.Tensor) and repeats.numel() > 1 and kwargs.get("output_size") is None


def _always(args, kwargs) -> bool:
    return True


# Ops whose output shape or Python result depends on tensor values (on CUDA each waits for the device):
# (owner, name, when a call is one). Torch functions and Tensor methods both: a method calling the function
# (Tensor.unique -> torch.unique) is counted once.
DATA_DEPENDENT = (
    *((owner, name, _always) for owner in ("torch", "Tensor")
      for name in ("unique", "unique_consecutive", "nonzero", "argwhere", "masked_select", "bincount", "equal",
                   "allclose", "is_nonzero")),
    ("torch", "where", lambda args, kwargs: len(args) + len(kwargs) == 1),  # torch.where(condition) = nonzero
    ("torch", "repeat_interleave", _repeats_from_tensor), ("Tensor", "repeat_interleave", _repeats_from_tensor),
    ("Tensor", "__getitem__", lambda args, kwargs: _bool_mask_index(args[1])),
    ("Tensor", "__setitem__", lambda args, kwargs: _bool_mask_index(args[1])),
)

_READS = threading.local()  # depth > 0: inside a counted call or a host-only block, so nothing more is counted


@contextlib.contextmanager
def host_only():
    """Reads inside this block are of host tensors (collation): :func:`count_host_reads` leaves them out."""
    _READS.depth = getattr(_READS, "depth", 0) + 1
    try:
        yield
    finally:
        _READS.depth -= 1


def _site(frame) -> str:
    return f"{frame.f_code.co_filename.rsplit('site-packages/', 1)[-1]}:{frame.f_code.co_name}"


def _counting(label: str, original: Callable, sites: dict[str, int], when: Callable) -> Callable:
    @functools.wraps(original)
    def call(*args, **kwargs):
        if getattr(_READS, "depth", 0) or not when(args, kwargs):
            return original(*args, **kwargs)
        site = _site(sys._getframe(1))
        if not any(marker in site for marker in HOST_ONLY_READERS):
            sites[f"{label} {site}"] = sites.get(f"{label} {site}", 0) + 1
        _READS.depth = getattr(_READS, "depth", 0) + 1  # the reads this call makes itself are this one
        try:
            return original(*args, **kwargs)
        finally:
            _READS.depth -= 1
    return call


@contextlib.contextmanager
def count_cpu_reads():
    """Counts, by call site (``name file:function``), every call that waits for a GPU when its tensor lives
    there (:data:`VALUE_READS`, :data:`DATA_DEPENDENT`), on whatever device it runs; restores every patched
    function after. A copy to the host through ``.to("cpu")`` or ``copy_`` cannot be told from a no-op here
    (the CPU run's tensors are on the host already); on CUDA :func:`count_host_reads` counts those too."""
    sites: dict[str, int] = {}
    owners = {"torch": torch, "Tensor": torch.Tensor}
    patches = [("Tensor", name, _always) for name in VALUE_READS] + list(DATA_DEPENDENT)
    saved = []
    for owner_name, name, when in patches:
        owner = owners[owner_name]
        had_own = name in vars(owner)
        saved.append((owner, name, had_own, vars(owner).get(name)))
        label = f"{'torch.' if owner is torch else ''}{name}"
        setattr(owner, name, _counting(label, getattr(owner, name), sites, when))
    try:
        yield sites
    finally:
        for owner, name, had_own, original in reversed(saved):
            if had_own:
                setattr(owner, name, original)
            else:
                delattr(owner, name)  # inherited from torch._C.TensorBase: inherit it again


@contextlib.contextmanager
def count_cuda_syncs():
    """Counts every host-device synchronisation, by call site (``sync file:line``): torch's sync debug mode
    (``torch.cuda.set_sync_debug_mode("warn")``) warns once per synchronising CUDA call; the warnings are
    counted and not shown, other warnings are shown after, and the previous mode is restored. The mode reports
    every sync that goes through c10's ``memcpy_and_sync`` or ``stream_synchronize`` (``.item()``, ``.cpu()``,
    ``nonzero``, ``torch.unique``, ...; a backward's syncs are replayed to the ``backward()`` call); it does not
    report an explicit ``torch.cuda.synchronize()`` (the loop's one before each evaluation, not per step)."""
    sites: dict[str, int] = {}
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield sites
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    for warning in caught:
        if "synchronizing" in str(warning.message):
            site = f"sync {warning.filename.rsplit('site-packages/', 1)[-1]}:{warning.lineno}"
            sites[site] = sites.get(site, 0) + 1
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def count_host_reads(device: Optional[torch.device] = None):
    """Host-device synchronisations during the block, by call site (a dict, filled when the block ends on
    CUDA): on CUDA the syncs themselves (:func:`count_cuda_syncs`), elsewhere every call that would be one
    on a GPU (:func:`count_cpu_reads`)."""
    if device is not None and torch.device(device).type == "cuda":
        return count_cuda_syncs()
    return count_cpu_reads()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class NullLoggers:
    def log(self, kind, step, values):
        pass

    def start_at(self, step):
        pass

    def describe(self, values):
        pass


def compose_run(cfg: TrainBenchConfig, method: str, **trainer: Any):
    from aotp.run import compose

    overrides = [f"model={cfg.model}", f"method={method}", f"task={cfg.task}", f"data.root={cfg.data_root}",
                 f"data.max_train_samples={cfg.train_examples}", f"data.max_eval_samples={cfg.eval_examples}",
                 f"data.max_length={cfg.max_length}", f"trainer.batch_size={cfg.batch_size}",
                 f"trainer.precision={cfg.precision}", f"trainer.device={cfg.device}", "trainer.progress=false",
                 "trainer.epochs=1", f"trainer.threads={cfg.threads}", f"seed={cfg.seed}", "logger=none",
                 *cfg.overrides, *(f"trainer.{k}={v}" for k, v in trainer.items())]
    return compose(overrides)


def build_model(run_cfg):
    """aotp's model for a run config, assembled as ``aotp.run`` assembles it (:func:`aotp.assembly.build_run`:
    seed, backbone, head, method)."""
    from aotp.assembly import build_run

    parts = build_run(run_cfg, data=False)
    return parts.model, parts.method, parts.spec


def load_data(run_cfg, cache_dir: Path):
    from aotp.models import build_backbone
    from aotp.run import validate
    from aotp.tasks import load_task_data

    spec, _ = validate(run_cfg)
    backbone = build_backbone(run_cfg.model)
    data = load_task_data(spec, backbone.tokenizer, run_cfg.data, uses_token_type_ids=backbone.uses_token_type_ids,
                          seed=int(run_cfg.seed), cache_dir=cache_dir)
    return data, backbone.tokenizer


def run_aotp(cfg: TrainBenchConfig, data, method: str, work: Path, max_steps: Optional[int] = None,
             **trainer: Any) -> dict[str, Any]:
    """One aotp training run (evaluation stubbed out: only the training steps matter here)."""
    from aotp.trainer import loop
    from aotp.trainer.loop import Trainer, padded_token_share, setup_device

    run_cfg = compose_run(cfg, method, **({"max_steps": max_steps} if max_steps else {}), **trainer)
    device = setup_device(run_cfg.trainer)
    model, method_object, _ = build_model(run_cfg)
    run_dir = Path(tempfile.mkdtemp(dir=work))
    fit = Trainer(run_cfg.trainer, model, method_object, data, run_dir, NullLoggers(), device, int(run_cfg.seed))
    timed = TimedCollator(fit.collator, device)
    fit.collator = timed
    fit._evaluate_and_select = lambda state, best_state: best_state  # no dev pass: a training benchmark
    synchronize(device)
    saved = loop.save_checkpoint
    loop.save_checkpoint = lambda *args, **kwargs: None  # no checkpoint writes inside the CPU-time interval
    try:
        with count_host_reads(device) as reads:
            cpu = time.process_time()
            state = fit.fit(float(run_cfg.method.lr), float(run_cfg.method.get("weight_decay", 0.0))).state
            synchronize(device)
            cpu = time.process_time() - cpu
    finally:
        loop.save_checkpoint = saved
    steps = state["step"]
    batches = fit.epoch_batches(0)
    result = {"arm": "aotp", "method": method, "group_by_length": fit.group_by_length, "steps": steps,
              "examples": state["train_examples"], "train_seconds": state["train_seconds"],
              "examples_per_second": state["train_examples"] / state["train_seconds"],
              "step_ms": 1000 * state["train_seconds"] / steps, "cpu_seconds": cpu,
              "examples_per_cpu_second": state["train_examples"] / cpu, "cpu_step_ms": 1000 * cpu / steps,
              "collate_ms_per_step": 1000 * timed.seconds / steps, "padded_token_share": timed.share(),
              "padded_token_share_epoch": padded_token_share(batches, fit.lengths),
              "host_reads_per_step": sum(reads.values()) / steps, "host_reads": dict(reads),
              "num_workers": fit.num_workers, "trainable_parameters": sum(p.numel() for p in model.parameters()
                                                                           if p.requires_grad)}
    del fit, model
    gc.collect()
    return result


def run_hf(cfg: TrainBenchConfig, data, tokenizer, work: Path) -> dict[str, Any]:
    """``transformers.Trainer`` at its defaults on aotp's full fine-tuning model and the same examples."""
    try:
        from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments
        import accelerate  # noqa: F401 - the HF Trainer needs it; say so plainly
    except ImportError as error:
        raise RuntimeError(f"the HF Trainer arm needs `accelerate` (pip install 'accelerate>=0.26'): {error}") from error

    from aotp.trainer.loop import setup_device

    run_cfg = compose_run(cfg, "full_ft")
    device = setup_device(run_cfg.trainer)
    model, _, spec = build_model(run_cfg)

    class LossOutput(torch.nn.Module):
        def __init__(self, task_model):
            super().__init__()
            self.task_model = task_model

        def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
            logits = self.task_model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return {"loss": self.task_model.loss(logits, labels), "logits": logits}

    split = data[spec.train_split]
    keys = ("input_ids", "token_type_ids")
    examples = [{**{k: f[k] for k in keys if f.get(k) is not None}, "label": f["label"]} for f in split.features]
    collator = TimedCollator(DataCollatorWithPadding(tokenizer), device)
    times = {"first": None, "last": None, "cpu_first": None, "cpu_last": None, "steps": 0}

    class StepTimes(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if times["first"] is None:
                synchronize(device)
                times["first"], times["cpu_first"] = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            synchronize(device)
            times["last"], times["cpu_last"] = time.perf_counter(), time.process_time()
            times["steps"] += 1

    args = TrainingArguments(output_dir=str(Path(tempfile.mkdtemp(dir=work))), per_device_train_batch_size=cfg.batch_size,
                             num_train_epochs=1, seed=cfg.seed, use_cpu=device.type == "cpu",
                             bf16=cfg.precision == "bf16", fp16=cfg.precision == "fp16",
                             report_to="none", save_strategy="no", disable_tqdm=True)
    trainer = Trainer(model=LossOutput(model), args=args, train_dataset=examples, data_collator=collator,
                      callbacks=[StepTimes()])
    torch.set_num_threads(cfg.threads)
    with count_host_reads(device) as reads:
        trainer.train()
    steps = times["steps"]
    seconds, cpu = times["last"] - times["first"], times["cpu_last"] - times["cpu_first"]
    result = {"arm": "hf", "method": "full_ft", "group_by_length": bool(args.group_by_length), "steps": steps,
              "examples": len(examples), "train_seconds": seconds, "examples_per_second": len(examples) / seconds,
              "step_ms": 1000 * seconds / steps, "cpu_seconds": cpu, "examples_per_cpu_second": len(examples) / cpu,
              "cpu_step_ms": 1000 * cpu / steps, "collate_ms_per_step": 1000 * collator.seconds / steps,
              "padded_token_share": collator.share(), "host_reads_per_step": sum(reads.values()) / steps,
              "host_reads": dict(reads), "optimizer": str(args.optim), "num_workers": args.dataloader_num_workers,
              "threads_during_run": torch.get_num_threads()}
    del trainer, model
    gc.collect()
    return result


def summarise(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def run_benchmark(cfg: TrainBenchConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    from aotp.results.record import environment

    torch.set_num_threads(cfg.threads)
    work = Path(tempfile.mkdtemp(prefix="aotp-bench-train-"))
    data, tokenizer = load_data(compose_run(cfg, "full_ft"), work / "cache")
    load_before = os.getloadavg()
    rounds = []
    for round_index in range(cfg.rounds):
        arms = list(cfg.arms)
        shift = round_index % len(arms)
        arms = arms[shift:] + arms[:shift]  # rotate which arm runs first
        result: dict[str, Any] = {"round": round_index, "order": arms, "arms": {}, "methods": {}}
        for arm in arms:
            if arm == "hf":
                result["arms"][arm] = run_hf(cfg, data, tokenizer, work)
            else:
                result["arms"][arm] = run_aotp(cfg, data, "full_ft", work,
                                               **({"group_by_length": "false"} if arm == "aotp_ungrouped" else {}))
            r = result["arms"][arm]
            log(f"round {round_index} {arm}: {r['examples_per_second']:.1f} ex/s, step {r['step_ms']:.1f} ms, "
                f"collate {r['collate_ms_per_step']:.2f} ms, padded {r['padded_token_share']:.3f}")
        methods = list(cfg.methods)
        methods = methods[round_index % len(methods):] + methods[:round_index % len(methods)]
        for method in methods:
            r = run_aotp(cfg, data, method, work, max_steps=cfg.method_steps)
            result["methods"][method] = r
            log(f"round {round_index} method {method}: step {r['step_ms']:.1f} ms")
        if "full_ft" in result["methods"]:
            full, full_cpu = result["methods"]["full_ft"]["step_ms"], result["methods"]["full_ft"]["cpu_step_ms"]
            result["step_vs_full_ft"] = {m: r["step_ms"] / full for m, r in result["methods"].items()}
            result["cpu_step_vs_full_ft"] = {m: r["cpu_step_ms"] / full_cpu for m, r in result["methods"].items()}
        for arm in ("aotp", "aotp_ungrouped"):
            if arm in result["arms"] and "hf" in result["arms"]:
                ours, theirs = result["arms"][arm], result["arms"]["hf"]
                result[f"{arm}_over_hf"] = ours["examples_per_second"] / theirs["examples_per_second"]
                result[f"{arm}_over_hf_cpu"] = ours["examples_per_cpu_second"] / theirs["examples_per_cpu_second"]
        rounds.append(result)
    summary: dict[str, Any] = {}
    for key in ("aotp_over_hf", "aotp_over_hf_cpu", "aotp_ungrouped_over_hf", "aotp_ungrouped_over_hf_cpu"):
        if all(key in r for r in rounds):
            summary[key] = summarise([r[key] for r in rounds])
    for arm in cfg.arms:
        summary[arm] = {field_name: summarise([r["arms"][arm][field_name] for r in rounds])
                        for field_name in ("examples_per_second", "examples_per_cpu_second", "step_ms", "cpu_step_ms",
                                           "collate_ms_per_step", "padded_token_share", "host_reads_per_step")}
    if all("step_vs_full_ft" in r for r in rounds):
        for key in ("step_vs_full_ft", "cpu_step_vs_full_ft"):
            summary[key] = {m: summarise([r[key][m] for r in rounds]) for m in cfg.methods}
        summary["method_step_ms"] = {m: summarise([r["methods"][m]["step_ms"] for r in rounds]) for m in cfg.methods}
        summary["method_cpu_step_ms"] = {m: summarise([r["methods"][m]["cpu_step_ms"] for r in rounds]) for m in cfg.methods}
        summary["method_trainable_parameters"] = {m: rounds[0]["methods"][m]["trainable_parameters"] for m in cfg.methods}
    env = environment(device=torch.device(cfg.device),
                      load_average={"start": load_before, "end": os.getloadavg()}).to_dict()
    record = {"kind": "train_benchmark", "config": asdict(cfg), "summary": summary, "rounds": rounds, "env": env,
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if cfg.out:
        from aotp.results.record import write_json_atomic

        write_json_atomic(Path(cfg.out), record)
    return record


def format_summary(record: dict[str, Any]) -> str:
    """Markdown lines for the report (results/bench/README_train.md)."""
    s, cfg = record["summary"], record["config"]
    fmt = lambda d, p=3: f"{d['median']:.{p}f} ({d['min']:.{p}f}-{d['max']:.{p}f})"  # noqa: E731
    lines = [f"model={cfg['model']}, task={cfg['task']} ({cfg['train_examples']} train examples, max_length "
             f"{cfg['max_length']}), batch {cfg['batch_size']}, {cfg['precision']}, device {cfg['device']}, "
             f"{cfg['threads']} thread(s), {cfg['rounds']} interleaved rounds; median (min-max) over rounds.", ""]
    if "aotp_over_hf" in s:
        lines.append(f"- aotp defaults / HF Trainer defaults, train examples/s (paired per round): **{fmt(s['aotp_over_hf'])}** "
                     f"wall clock; **{fmt(s['aotp_over_hf_cpu'])}** per CPU second")
    if "aotp_ungrouped_over_hf" in s:
        lines.append(f"- aotp with `trainer.group_by_length=false` / HF Trainer: {fmt(s['aotp_ungrouped_over_hf'])} wall clock; "
                     f"{fmt(s['aotp_ungrouped_over_hf_cpu'])} per CPU second")
    lines += ["", "| arm | examples/s | examples/CPU s | step ms | CPU ms/step | collation ms/step | padded-token share "
                  "| host reads/step |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for arm in cfg["arms"]:
        a = s[arm]
        lines.append(f"| {arm} | {fmt(a['examples_per_second'], 1)} | {fmt(a['examples_per_cpu_second'], 1)} | "
                     f"{fmt(a['step_ms'], 1)} | {fmt(a['cpu_step_ms'], 1)} | {fmt(a['collate_ms_per_step'], 2)} | "
                     f"{fmt(a['padded_token_share'])} | {fmt(a['host_reads_per_step'], 2)} |")
    if "step_vs_full_ft" in s:
        lines += ["", f"Step time of every method ({cfg['method_steps']} steps each, aotp defaults) against full "
                      "fine-tuning in the same round:", "",
                  "| method | trainable parameters | step ms | step / full FT step | CPU ms/step | CPU step / full FT |",
                  "|---|---:|---:|---:|---:|---:|"]
        for method in cfg["methods"]:
            lines.append(f"| {method} | {s['method_trainable_parameters'][method]:,} | {fmt(s['method_step_ms'][method], 1)} | "
                         f"{fmt(s['step_vs_full_ft'][method])} | {fmt(s['method_cpu_step_ms'][method], 1)} | "
                         f"{fmt(s['cpu_step_vs_full_ft'][method])} |")
    env = record["env"]
    lines += ["", f"Environment: torch {env['torch']}, transformers {env['packages'].get('transformers')}, "
                  f"{env.get('device_name')}, {env['cpu_count']} CPUs, load average start {env['load_average']['start']}, "
                  f"end {env['load_average']['end']}; {record['time']}."]
    return "\n".join(lines)


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


@guarded
def main(argv: Optional[list[str]] = None) -> int:
    """``python -m aotp.bench.train key=value ...`` (``make bench-train``): run the benchmark, print the report."""
    from aotp.cli import KeyValueParser, Option

    parser = KeyValueParser("python -m aotp.bench.train", "Training benchmark: aotp's loop vs the Hugging Face "
                            "Trainer on the same model and data, and every method's step time vs full fine-tuning.", [
        Option("model", "", "minilm"), Option("task", "", "glue/sst2"),
        Option("data.root", "folder of the GLUE/SuperGLUE files", "../shared/data", metavar="DIR"),
        Option("train_examples", "", 512, int, minimum=1), Option("batch_size", "", 16, int, minimum=1),
        Option("max_length", "", 128, int, minimum=1), Option("rounds", "interleaved rounds", 3, int, minimum=1),
        Option("arms", "", tuple(ARMS), many=True, choices=tuple(ARMS)),
        Option("methods", "methods timed against full fine-tuning", tuple(METHODS), many=True),
        Option("method_steps", "optimizer steps per method run", 12, int, minimum=1),
        Option("device", "", "cpu"), Option("precision", "", "fp32", choices=("fp32", "bf16", "fp16")),
        Option("threads", "", 1, int, minimum=1), Option("seed", "", 1, int),
        Option("override", "extra Hydra overrides for every aotp run", (), many=True),
        Option("output", "the JSON record", "results/bench/train_minilm_cpu_fp32.json", flags=("--out",)),
        Option("readme", "write the report here (markdown)", None, nullable=True)],
        examples=("OMP_NUM_THREADS=1 python -m aotp.bench.train data.root=../shared/data   # the committed CPU run",
                  "python -m aotp.bench.train device=cuda precision=bf16 threads=4 train_examples=8000 batch_size=32 "
                  "output=results/bench/train_minilm_cuda_bf16.json"))
    args, _ = parser.parse(sys.argv[1:] if argv is None else argv)
    cfg = TrainBenchConfig(model=args["model"], task=args["task"], data_root=args["data.root"],
                           train_examples=args["train_examples"], batch_size=args["batch_size"],
                           max_length=args["max_length"], rounds=args["rounds"], arms=tuple(args["arms"]),
                           methods=tuple(args["methods"]), method_steps=args["method_steps"], device=args["device"],
                           precision=args["precision"], threads=args["threads"], seed=args["seed"],
                           overrides=tuple(args["override"]), out=args["output"])
    record = run_benchmark(cfg)
    text = format_summary(record)
    print(text)
    if args["readme"]:
        out = Path(args["output"]).name
        Path(args["readme"]).write_text(f"# Training benchmark\n\nGenerated by `python -m aotp.bench.train` from "
                                        f"[`{out}`]({out}).\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
