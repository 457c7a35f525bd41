"""Inference benchmark: every registered method against the frozen backbone, and multi-task serving.

Sections (each a list of records, see :func:`run_benchmarks`):

* ``single_task`` -- for every (batch size, sequence length) of the grid: the frozen backbone (the
  floor) and each method variant of :mod:`aotp.bench.variants`, interleaved round by round
  (:func:`aotp.bench.timing.interleaved`); the overhead of a variant is the median over rounds of
  its time divided by the mean of the backbone calls right before and after it.
* ``bias_lookup`` -- the work AoT adds, alone (no encoder), timed ``lookup_repeats`` times after
  every round and divided by that round's backbone time: the biases of the batch (per-layer table
  gathers, or the on-the-fly rows) plus the L additions to (N, T, d) hidden states, as the hooks do
  it; and, for comparison, the dense form the hooks used before (one (N, T, L, d) gather
  ``table[input_ids]`` + L strided adds).
* ``multi_task`` -- at one batch shape: T_max tasks per method on one backbone
  (:mod:`aotp.bench.multitask`); a batch whose rows cycle through T tasks (row r -> task r mod T)
  served in one forward (``mixed``) and as T per-task batches (``per_task``), and a batch of one
  task (``single``, tasks = 1); ratios against the backbone and against the method's own
  single-task batch, paired per round.
* ``train_step`` (optional) -- forward + backward + AdamW step of ``aot_fc`` vs ``full_ft``.

What each method offers (its variants, the work it adds that can be timed alone, how it mixes
tasks) the method says (:class:`aotp.methods.base.Method`); the names below are default choices only.

Outputs are checked, not just produced: one untimed call per variant (under the memory profiler)
must return finite logits of the expected shape that differ from the backbone's (the method's
parameters were moved off their zero init); every timed call's result is checked for shape and
finiteness outside the timed region; a mixed batch must equal the same rows served per task, and
its encoder states must differ from serving every row as task 0 (the routing is real).

Inputs are uniformly random token ids (CLS ... SEP, no padding), the worst case for
``on_the_fly`` (most tokens unique; the count is recorded).
"""

from __future__ import annotations

import copy
import json
import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from aotp.bench import timing
from aotp.bench.multitask import AoTServer, Server, build_servers, form_of, unserved_methods
from aotp.bench.variants import Variant, backbone_variant, base_model, build_variant, default_variants
from aotp.models import build_backbone
from aotp.results.record import environment as record_environment
from aotp.results.record import git_info
from aotp.results.schema import Environment

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Default comparisons (choices of this benchmark, not knowledge of the methods): the multi-task servers,
# the headline comparison and the training-step pair (the first is the reference).
DEFAULT_MULTITASK = ("aot_fc/materialized", "lora/unmerged", "lora/merged", "adapter_houlsby/adapters",
                     "adapter_pfeiffer/adapters", "ptuning_v2/prefix16")
DEFAULT_HEADLINE = ("full_ft/same_as_backbone", "aot_fc/materialized", "aot_fc/materialized_previous")
TRAIN_STEP_METHODS = ("full_ft", "aot_fc")
SCHEMA_VERSION = 3  # 3: the file's env is the run record's (env.git.sha, not git_sha); aotp/bench/report.py reads 1-3
BENCHED_CODE = ("aotp/bench", "aotp/methods", "aotp/inference", "aotp/models")  # uncommitted changes here are recorded


@dataclass
class BenchConfig:
    model: str = "minilm"
    model_config: dict = field(default_factory=dict)  # the model group dict; default: minilm from its package
    device: str = "cpu"
    threads: int = 1
    dtype: str = "fp32"                       # model (and AoT table) dtype: fp32 | bf16 | fp16
    batch_sizes: tuple = (8, 32)
    seq_lens: tuple = (64, 128)
    variants: tuple = field(default_factory=default_variants)  # "method/variant": every registered method's defaults
    rounds: int = 6                           # timed rounds per grid point (after warm-up)
    warmup: int = 1
    baseline_every: int = 4                   # a backbone call after every k variants in a round
    lookup_repeats: int = 10                  # bias-lookup calls timed after every round
    headline: tuple = (32, 128)               # (batch, seq) of the focused headline comparison
    headline_variants: tuple = DEFAULT_HEADLINE
    headline_rounds: int = 20                 # rounds of the headline comparison (0 disables it)
    tasks: tuple = (1, 4, 16)                 # tasks mixed in one batch (multi-task section; () disables it)
    multitask_variants: tuple = DEFAULT_MULTITASK
    multitask_batch_size: int = 32
    multitask_seq_len: int = 128
    multitask_rounds: Optional[int] = None    # default: rounds
    memory: bool = True                       # activation-peak pass (profiler on CPU) per variant
    train_rounds: int = 0                     # training-step benchmark (TRAIN_STEP_METHODS); 0 disables
    num_labels: int = 2
    scale: float = 0.02                       # std of the perturbation of the methods' parameters
    seed: int = 0
    out_dir: str = "results/bench"
    tag: Optional[str] = None                 # file stem; default <model>_<device>_<dtype>
    command: Optional[str] = None             # recorded as given (the CLI fills it in)
    quiet: dict = field(default_factory=dict)  # what timing.wait_for_quiet found (the CLI fills it in)


# -- environment ------------------------------------------------------------------------------------
def environment(cfg: BenchConfig, device: torch.device) -> Environment:
    """The run record's environment block (:func:`aotp.results.record.environment`; ``git`` counts changes to
    the benched code only), with the benchmark's own facts as its ``extra``."""
    cpu = platform.processor()
    try:
        match = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = match.group(1).strip() if match else cpu
    except OSError:
        pass
    return record_environment(device, git=git_info(BENCHED_CODE), cpu=cpu,
                              interop_threads=torch.get_num_interop_threads(), dtype=cfg.dtype,
                              timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              loadavg_start=timing.load_average())


# -- inputs and checks ----------------------------------------------------------------------------------
def make_inputs(tokenizer, vocab_size: int, batch: int, length: int, seed: int, device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    low = min(1000, vocab_size // 2)  # skip special / unused ids at the start of BERT-style vocabularies
    ids = torch.randint(low, vocab_size, (batch, length), generator=generator)
    if tokenizer is not None and tokenizer.cls_token_id is not None:
        ids[:, 0] = tokenizer.cls_token_id
    if tokenizer is not None and tokenizer.sep_token_id is not None:
        ids[:, -1] = tokenizer.sep_token_id
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "token_type_ids": torch.zeros_like(ids).to(device)}


class OutputCheck:
    """Checks every timed call's result (shape, finite) outside the timed region."""

    def __init__(self, shapes: dict[str, tuple]):
        self.shapes = shapes
        self.calls = {name: 0 for name in shapes}

    def __call__(self, name: str, result: Any) -> None:
        if not isinstance(result, torch.Tensor) or tuple(result.shape) != self.shapes[name]:
            got = tuple(result.shape) if isinstance(result, torch.Tensor) else type(result).__name__
            raise RuntimeError(f"benchmark variant {name}: output {got}, expected {self.shapes[name]}")
        if not bool(torch.isfinite(result).all()):
            raise RuntimeError(f"benchmark variant {name}: non-finite outputs")
        self.calls[name] += 1


# Output checks: "equal" = the same rows served two ways (mixed vs per task) agree within EQUAL_TOL;
# "differs" = a method's logits differ from the backbone's by more than DIFFER_TOL (exactly 0 is what a
# method that changes nothing gives; in fp16/bf16 any difference counts).
EQUAL_TOL = {"fp32": 1e-3, "bf16": 1e-1, "fp16": 1e-1}
DIFFER_TOL = {"fp32": 1e-5, "bf16": 0.0, "fp16": 0.0}


def _first_call(fn: Callable[[], Any], device: torch.device, memory: bool) -> tuple[Any, Optional[int], str]:
    if not memory:
        with torch.no_grad():
            return fn(), None, ""
    box = {}

    def run():
        box["out"] = fn()

    with torch.no_grad():
        peak, kind = timing.activation_peak(run, device)
    return box["out"], peak, kind


# -- the sections ------------------------------------------------------------------------------------
class Bench:
    def __init__(self, cfg: BenchConfig, log: Callable[[str], None]):
        self.cfg, self.log = cfg, log
        if cfg.dtype not in DTYPES:
            raise ValueError(f"dtype {cfg.dtype!r}: valid choices {', '.join(DTYPES)}")
        torch.set_num_threads(cfg.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass  # already set (only possible before any parallel work)
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device=cuda but torch.cuda.is_available() is False")
        self.dtype = DTYPES[cfg.dtype]
        self.env = environment(cfg, self.device)
        self.env.extra["quiet_check"] = cfg.quiet or None
        model_cfg = cfg.model_config or {"name": cfg.model, "source": "package" if cfg.model == "minilm" else "hub"}
        if not cfg.model_config and cfg.model != "minilm":
            raise ValueError("pass model_config (the model group dict) for models other than minilm")
        self.model_name = model_cfg.get("name", cfg.model)
        self.backbone = build_backbone(model_cfg)
        self.base = base_model(self.backbone, cfg.num_labels, cfg.seed)  # the fp32 CPU template of every variant
        self.running_base = self.place(copy.deepcopy(self.base))        # the backbone variant itself
        self.vocab_size = self.base.backbone.get_input_embeddings().num_embeddings
        self.tmp = tempfile.TemporaryDirectory(prefix="aotp-bench-")
        self.work = Path(self.tmp.name)
        self.records: list[dict[str, Any]] = []
        self.common = {"model": self.model_name, "device": str(self.device), "threads": cfg.threads, "dtype": cfg.dtype}

    def place(self, module: torch.nn.Module) -> torch.nn.Module:
        """Move a (CPU, fp32-built) module to the device, and cast it when the run's dtype is not fp32
        (an fp32 run leaves an fp16/bf16 AoT table as stored, memory-mapped on CPU)."""
        if self.dtype == torch.float32:
            return module.to(device=self.device)
        return module.to(device=self.device, dtype=self.dtype)

    def inputs(self, batch: int, length: int, salt: int = 0) -> dict[str, torch.Tensor]:
        return make_inputs(self.backbone.tokenizer, self.vocab_size, batch, length,
                           self.cfg.seed + 7 * batch + 13 * length + salt, self.device)

    def record(self, **fields) -> dict[str, Any]:
        record = {**self.common, **fields, "loadavg": timing.load_average()}
        self.records.append(record)
        return record

    # -- single task -----------------------------------------------------------------------------
    def single_task(self) -> list[Variant]:
        cfg = self.cfg
        variants = [backbone_variant(self.running_base)]
        for index, spec in enumerate(cfg.variants):
            self.log(f"  building {spec}")
            variant = build_variant(spec, self.base, self.work / "single", cfg.seed + 1 + index, cfg.scale,
                                    dtype=cfg.dtype)
            self.place(variant.model)  # built in fp32 on the CPU, then moved
            variant.facts.update(variant.impl.serving_facts(variant.model))
            variants.append(variant)
        if cfg.headline_rounds > 0:
            chosen = [v for v in variants if v.method == "backbone" or v.key in cfg.headline_variants]
            for index, spec in enumerate(s for s in cfg.headline_variants if s not in cfg.variants):
                self.log(f"  building {spec} (headline only)")
                extra = build_variant(spec, self.base, self.work / "headline", cfg.seed + 101 + index, cfg.scale,
                                      dtype=cfg.dtype)
                self.place(extra.model)
                chosen.append(extra)
            self.single_task_point(chosen, *cfg.headline, rounds=cfg.headline_rounds, kind="headline")
            chosen = None
        for batch in cfg.batch_sizes:
            for length in cfg.seq_lens:
                self.single_task_point(variants, batch, length)
        return variants

    def single_task_point(self, variants: list[Variant], batch: int, length: int, rounds: Optional[int] = None,
                          kind: str = "single_task") -> None:
        cfg = self.cfg
        rounds = rounds or cfg.rounds
        inputs = self.inputs(batch, length)
        unique = int(torch.unique(inputs["input_ids"]).numel())
        self.log(f"[bench] {kind.replace('_', ' ')}, batch {batch} x {length} ({unique} unique tokens): "
                 f"{rounds} rounds (+{cfg.warmup} warm-up) of {len(variants)} variants; load {timing.load_average()}")
        calls, checks = {}, {}
        reference = None
        hidden = torch.randn(batch, length, self.base.hidden_size, generator=torch.Generator().manual_seed(1)).to(
            self.device, self.dtype)
        for variant in variants:
            fn = (lambda v=variant: v.forward(inputs))
            out, peak, peak_kind = _first_call(fn, self.device, cfg.memory)
            if reference is None:
                reference = out
            checks[variant.key] = self.check_output(variant.key, out, (batch, cfg.num_labels), reference,
                                                    must_differ=variant.method != "backbone")
            checks[variant.key].update(activation_peak_bytes=peak, activation_peak_kind=peak_kind)
            calls[variant.key] = fn
        check = OutputCheck({key: (batch, cfg.num_labels) for key in calls})
        lookups = LookupTimer(self.lookup_functions(variants, inputs, hidden), cfg, self.device)
        with torch.no_grad():
            results = timing.interleaved(calls, rounds, cfg.warmup, self.device, "backbone/frozen",
                                         cfg.baseline_every, check, lookups.between)
        for variant in variants:
            result = results[variant.key]
            checks[variant.key]["calls_checked"] = check.calls[variant.key]
            weights = timing.resident_bytes(variant.model)
            peak = checks[variant.key].get("activation_peak_bytes")
            self.record(kind=kind, method=variant.method, variant=variant.variant, tasks=1,
                        batch_size=batch, seq_len=length, unique_tokens=unique, **result.summary(batch),
                        **timing.ratio_summary(result, "overhead_vs_backbone"),
                        weights_bytes=weights, activation_peak_bytes=peak,
                        peak_memory_bytes=weights + peak if peak is not None else None,
                        peak_memory_kind=f"weights (distinct parameter/buffer storages, AoT table included) + "
                                         f"{checks[variant.key].get('activation_peak_kind') or 'not measured'}",
                        outputs_checked=checks[variant.key], rounds=rounds, note=variant.note,
                        facts=_jsonable(variant.facts))
        for fields in lookups.summaries(batch):
            self.record(kind="bias_lookup", batch_size=batch, seq_len=length, rounds=rounds, section=kind, **fields)

    def lookup_functions(self, variants: list[Variant], inputs, hidden) -> dict[str, tuple]:
        """name -> (fn, method, variant, tasks, note): the work each method adds, without the encoder
        (``Method.work_alone``; AoT: the hooks' provider, then each layer's bias added to hidden
        states), and the forms the method compares it with that this benchmark names (its variants or
        headline variants) but that are not built at this point."""
        ids = inputs["input_ids"]
        functions = {}
        keys = {v.key for v in variants}
        wanted = set(self.cfg.variants) | set(self.cfg.headline_variants)
        for variant in variants:
            if variant.impl is None:
                continue
            work = variant.impl.work_alone(variant.model, variant.variant, ids, hidden)
            for index, (name, (fn, note)) in enumerate(work.items()):
                key = f"{variant.method}/{name}"
                if index == 0 or (key in wanted and key not in keys and key not in functions):
                    functions[key] = (fn, variant.method, name, 1, note)
        return functions

    def check_output(self, name: str, out: torch.Tensor, shape: tuple, reference: torch.Tensor,
                     must_differ: bool) -> dict[str, Any]:
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != shape:
            raise RuntimeError(f"{name}: output {getattr(out, 'shape', type(out))}, expected {shape}")
        finite = bool(torch.isfinite(out).all())
        diff = float((out.float() - reference.float()).abs().max())
        differs = diff > DIFFER_TOL[self.cfg.dtype]
        if not finite:
            raise RuntimeError(f"{name}: non-finite outputs")
        if must_differ and not differs:
            raise RuntimeError(f"{name}: outputs equal the backbone's (max |diff| {diff:.2e}): the method's parameters "
                               "did not change the model, so it would not be measured")
        return {"shape": list(out.shape), "finite": finite, "max_abs_diff_vs_backbone": diff,
                "differs_from_backbone": differs}

    # -- multi task ------------------------------------------------------------------------------
    def multi_task(self) -> None:
        cfg = self.cfg
        counts = sorted(set(int(t) for t in cfg.tasks))
        if not counts:
            return
        batch, length = cfg.multitask_batch_size, cfg.multitask_seq_len
        if max(counts) > batch:
            raise ValueError(f"tasks {max(counts)} > multitask batch size {batch}: some tasks would have no rows")
        t_max = max(counts)
        self.log(f"[bench] multi-task: building {len(cfg.multitask_variants)} servers with {t_max} tasks each")
        servers = build_servers(list(cfg.multitask_variants), self.base, t_max, self.work, cfg.seed + 500, cfg.scale,
                                log=self.log)
        for server in servers:
            for module in _server_modules(server):
                self.place(module)
        inputs = self.inputs(batch, length, salt=1)
        base = self.running_base
        calls: dict[str, Callable[[], Any]] = {"backbone/frozen": lambda: base(**inputs)}
        meta: dict[str, dict[str, Any]] = {"backbone/frozen": {"method": "backbone", "variant": "frozen", "tasks": 1,
                                                               "serving": "single", "server": None}}
        for server in servers:
            key = f"{server.method}/{server.variant}"
            calls[f"{key}/single"] = lambda s=server: s.single(inputs, 0)
            meta[f"{key}/single"] = {"method": server.method, "variant": server.variant, "tasks": 1, "serving": "single",
                                     "server": server}
            for count in counts:
                if count == 1:
                    continue
                row_tasks = torch.arange(batch, device=self.device) % count
                groups = [(t, (row_tasks == t).nonzero().squeeze(1)) for t in range(count)]
                subs = [{k: v.index_select(0, rows) for k, v in inputs.items()} for _, rows in groups]
                if server.can_mix:
                    calls[f"{key}/mixed/{count}"] = lambda s=server, rt=row_tasks: s.mixed(inputs, rt)
                    meta[f"{key}/mixed/{count}"] = {"method": server.method, "variant": server.variant, "tasks": count,
                                                    "serving": "mixed", "server": server, "row_tasks": row_tasks,
                                                    "groups": groups, "subs": subs}

                def per_task(s=server, groups=groups, subs=subs):
                    out = None
                    for (task, rows), sub in zip(groups, subs):
                        logits = s.single(sub, task)
                        if out is None:
                            out = logits.new_empty(batch, logits.shape[-1])
                        out.index_copy_(0, rows, logits)
                    return out
                calls[f"{key}/per_task/{count}"] = per_task
                meta[f"{key}/per_task/{count}"] = {"method": server.method, "variant": server.variant, "tasks": count,
                                                   "serving": "per_task", "server": server, "row_tasks": row_tasks,
                                                   "groups": groups, "subs": subs}
        self.log(f"[bench] multi-task, batch {batch} x {length}, tasks {counts}: {cfg.multitask_rounds or cfg.rounds} "
                 f"rounds (+{cfg.warmup} warm-up) of {len(calls)} variants; load {timing.load_average()}")
        checks = {}
        outputs = {}
        for name, fn in calls.items():
            out, peak, peak_kind = _first_call(fn, self.device, cfg.memory)
            outputs[name] = out
            checks[name] = self.check_output(name, out, (batch, cfg.num_labels), outputs["backbone/frozen"],
                                             must_differ=name != "backbone/frozen")
            checks[name].update(activation_peak_bytes=peak, activation_peak_kind=peak_kind)
        for name, info in meta.items():  # mixed == the same rows served per task; routing is real
            if info["serving"] == "mixed":
                key = name.replace("/mixed/", "/per_task/")
                checks[name].update(self.check_mixed(info, outputs[name], outputs[key], inputs))
        check = OutputCheck({name: (batch, cfg.num_labels) for name in calls})
        hidden = torch.randn(batch, length, self.base.hidden_size, generator=torch.Generator().manual_seed(1)).to(
            self.device, self.dtype)
        lookup_fns = {}
        for server in servers:
            if isinstance(server, AoTServer):
                for count in counts:
                    row_tasks = torch.arange(batch, device=self.device) % count
                    lookup_fns[f"{server.method}/{count}"] = (
                        lambda s=server, rt=row_tasks: s.lookup_alone(inputs["input_ids"], rt, hidden),
                        server.method, f"{server.variant}_mixed" if count > 1 else server.variant, count,
                        server.lookup_note(count))
        lookups = LookupTimer(lookup_fns, cfg, self.device)
        with torch.no_grad():
            results = timing.interleaved(calls, cfg.multitask_rounds or cfg.rounds, cfg.warmup, self.device,
                                         "backbone/frozen", cfg.baseline_every, check, lookups.between)
        for fields in lookups.summaries(batch):
            self.record(kind="bias_lookup", batch_size=batch, seq_len=length, rounds=cfg.multitask_rounds or cfg.rounds,
                        section="multi_task", **fields)
        for name, info in meta.items():
            result = results[name]
            checks[name]["calls_checked"] = check.calls[name]
            server: Optional[Server] = info["server"]
            weights = timing.resident_bytes(server.weights(info["tasks"]) if server else base)
            peak = checks[name].get("activation_peak_bytes")
            extra: dict[str, Any] = {}
            if server is not None:
                single = results[name.rsplit("/", 2)[0] + "/single"] if info["serving"] != "single" else result
                # Per round: (t / its neighbouring backbone calls) / (t_single / its neighbouring backbone calls),
                # so load drifting between the two calls of a round (up to a round apart) cancels too.
                ratios = timing.normalised_ratios(result, single, "wall")
                extra = {"vs_single_task": statistics.median(ratios),
                         "throughput_vs_single_task": statistics.median([1 / x for x in ratios]),
                         "vs_single_task_p10": timing.percentile(ratios, 0.1),
                         "vs_single_task_p90": timing.percentile(ratios, 0.9),
                         "mixing": server.mixing,
                         "tasks_loaded": len(server.heads)}
                for kind in ("cpu", "gpu"):
                    other = timing.normalised_ratios(result, single, kind)
                    if other:
                        extra[f"vs_single_task_{kind}"] = statistics.median(other)
            self.record(kind="multi_task", method=info["method"], variant=info["variant"], tasks=info["tasks"],
                        serving=info["serving"], batch_size=batch, seq_len=length, **result.summary(batch),
                        **timing.ratio_summary(result, "overhead_vs_backbone"), **extra,
                        weights_bytes=weights, activation_peak_bytes=peak,
                        peak_memory_bytes=weights + peak if peak is not None else None,
                        outputs_checked=checks[name], rounds=cfg.multitask_rounds or cfg.rounds)
        for method in unserved_methods():
            self.record(kind="multi_task", method=method, variant="-", tasks=max(counts), serving="not_timed",
                        batch_size=batch, seq_len=length, mixing=form_of(method).mixing, outputs_checked=None)

    def check_mixed(self, info, mixed: torch.Tensor, per_task: torch.Tensor, inputs) -> dict[str, Any]:
        """Mixed logits == per-task logits; encoder states of rows of other tasks != task 0's."""
        server: Server = info["server"]
        diff = float((mixed.float() - per_task.float()).abs().max())
        with torch.no_grad():
            states = server.encode_mixed(inputs, info["row_tasks"])
            as_task0 = server.encode_single(inputs, 0)
        other = info["row_tasks"] != 0
        routed = float((states.float() - as_task0.float())[other].abs().max()) if bool(other.any()) else 0.0
        same = float((states.float() - as_task0.float())[~other].abs().max())
        if diff > EQUAL_TOL[self.cfg.dtype]:
            raise RuntimeError(f"{server.method}/{server.variant}: mixed batch differs from per-task serving by {diff:.2e}")
        if routed <= max(DIFFER_TOL[self.cfg.dtype], 10 * same):
            raise RuntimeError(f"{server.method}/{server.variant}: rows of tasks 1.. got task 0's adaptation (routing ignored): "
                               f"their states moved by {routed:.2e}, task-0 rows by {same:.2e}")
        return {"max_abs_diff_vs_per_task": diff, "matches_per_task": True,
                "encoder_states_max_abs_diff_other_tasks_vs_task0": routed,
                "encoder_states_max_abs_diff_task0_rows_vs_task0": same}

    # -- training step ---------------------------------------------------------------------------
    def train_step(self) -> None:
        cfg = self.cfg
        if cfg.train_rounds <= 0:
            return
        from aotp.methods import METHODS

        batch, length = max(cfg.batch_sizes), max(cfg.seq_lens)
        inputs = self.inputs(batch, length, salt=2)
        labels = torch.randint(0, cfg.num_labels, (batch,), generator=torch.Generator().manual_seed(3)).to(self.device)
        steps, models = {}, {}
        for name in TRAIN_STEP_METHODS:
            torch.manual_seed(cfg.seed)
            model = copy.deepcopy(self.base).float()
            METHODS.get(name)().apply(model)
            model.to(self.device).train()
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

            def step(model=model, optimizer=optimizer):
                optimizer.zero_grad(set_to_none=True)
                loss = model.loss(model(**inputs), labels)
                loss.backward()
                optimizer.step()
                return loss.detach().reshape(1)
            steps[name], models[name] = step, model
        self.log(f"[bench] training step: {cfg.train_rounds} rounds of {', '.join(TRAIN_STEP_METHODS)} "
                 f"at batch {batch} x {length}")
        check = OutputCheck({name: (1,) for name in steps})
        results = timing.interleaved(steps, cfg.train_rounds, 1, self.device, TRAIN_STEP_METHODS[0], 1, check)
        for name, result in results.items():
            self.record(kind="train_step", method=name, variant="train_step", tasks=1, batch_size=batch, seq_len=length,
                        dtype_note="fp32 training", **result.summary(batch),
                        **timing.ratio_summary(result, "ratio_vs_full_ft"),
                        outputs_checked={"calls_checked": check.calls[name], "finite_loss": True}, rounds=cfg.train_rounds)

    def finish(self) -> tuple[list[dict[str, Any]], Path]:
        cfg = self.cfg
        self.env.extra.update(loadavg_end=timing.load_average(), config=_jsonable(asdict(cfg)), command=cfg.command)
        env = self.env.to_dict()
        for record in self.records:
            record["env"] = env
        out_dir = Path(cfg.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tag = cfg.tag or f"{self.model_name}_{self.device.type}_{cfg.dtype}"
        path = out_dir / f"{tag}.json"
        payload = {"schema_version": SCHEMA_VERSION, "env": env, "records": self.records}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(_jsonable(payload), indent=1))
        tmp.replace(path)
        self.tmp.cleanup()
        return self.records, path


class LookupTimer:
    """Times each lookup function ``lookup_repeats`` times after every timed round and pairs the
    round's median with that round's mean backbone time."""

    def __init__(self, functions: dict[str, tuple], cfg: BenchConfig, device: torch.device):
        self.functions, self.cfg, self.device = functions, cfg, device
        self.times: dict[str, list[list[float]]] = {name: [] for name in functions}
        self.backbone: list[float] = []

    def between(self, round_index: int, samples) -> None:
        if round_index < self.cfg.warmup or not self.functions:
            return
        self.backbone.append(statistics.mean(s.wall for name, s in samples if name == "backbone/frozen"))
        with torch.no_grad():
            for name, (fn, *_) in self.functions.items():
                fn()  # warm
                self.times[name].append([timing.time_call(fn, self.device)[0].wall for _ in range(self.cfg.lookup_repeats)])

    def summaries(self, batch: int) -> list[dict[str, Any]]:
        out = []
        for name, per_round in self.times.items():
            if not per_round:
                continue
            _, method, variant, tasks, note = self.functions[name]
            flat = [t for times in per_round for t in times]
            shares = [statistics.median(times) / base for times, base in zip(per_round, self.backbone)]
            out.append({"method": method, "variant": variant, "tasks": tasks,
                        "latency_ms_median": 1e3 * statistics.median(flat), "latency_ms_p90": 1e3 * timing.percentile(flat, 0.9),
                        "throughput_examples_per_s": batch / statistics.median(flat),
                        "share_of_backbone": statistics.median(shares), "share_of_backbone_p90": timing.percentile(shares, 0.9),
                        "timed_calls": len(flat), "note": note})
        return out


def _server_modules(server: Server) -> list[torch.nn.Module]:
    modules = list(server.heads)
    for attribute in ("model",):
        if hasattr(server, attribute):
            modules.append(getattr(server, attribute))
    modules += list(getattr(server, "models", []))
    return modules


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, torch.dtype):
        return str(value).replace("torch.", "")
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def run_benchmarks(cfg: BenchConfig, log: Callable[[str], None] = print) -> tuple[list[dict[str, Any]], Path]:
    """Run every section; write ``<out_dir>/<tag>.json`` (``{"schema_version", "env", "records"}``)."""
    bench = Bench(cfg, log)
    log(f"[bench] {bench.model_name} on {bench.device}, {cfg.threads} thread(s), {cfg.dtype}; "
        f"load average {bench.env.extra['loadavg_start']}")
    bench.single_task()
    bench.multi_task()
    bench.train_step()
    return bench.finish()


def command_line() -> str:
    """The command as run (the interpreter relative to the working directory when it lies below it)."""
    executable = os.path.relpath(sys.executable)
    if executable.startswith(".."):
        executable = Path(sys.executable).name
    return " ".join(shlex.quote(a) for a in [executable] + sys.argv)


def summary(records: list[dict[str, Any]]) -> str:
    """A plain-text table for the console."""
    lines = [f"{'kind':<11} {'method':<16} {'variant':<26} {'T':>2} {'batch':>5} {'seq':>4} {'ms med':>9} {'ms p90':>9} "
             f"{'ex/s':>8} {'vs bb':>6} {'vs bb cpu':>9} {'vs 1task':>8}"]
    for r in records:
        if r.get("latency_ms_median") is None:
            lines.append(f"{r['kind']:<11} {r['method']:<16} {'(' + r.get('mixing', '')[:70] + ')'}")
            continue
        ratio = r.get("overhead_vs_backbone", r.get("share_of_backbone", r.get("ratio_vs_full_ft")))
        cpu = r.get("overhead_vs_backbone_cpu", r.get("overhead_vs_backbone_gpu"))
        variant = r["variant"] + (f"/{r['serving']}" if r.get("serving") else "")
        lines.append(f"{r['kind']:<11} {r['method']:<16} {variant:<26} {r['tasks']:>2} {r['batch_size']:>5} "
                     f"{r['seq_len']:>4} {r['latency_ms_median']:>9.2f} {r['latency_ms_p90']:>9.2f} "
                     f"{r['throughput_examples_per_s']:>8.1f} {_fmt(ratio):>6} {_fmt(cpu):>9} "
                     f"{_fmt(r.get('throughput_vs_single_task')):>8}")
    lines.append("vs bb: median over rounds of t / t(backbone calls right before and after) (wall clock); "
                 "bias_lookup rows: lookup time / backbone time; vs bb cpu: the same with process CPU time; "
                 "vs 1task: throughput / the method's single-task throughput, paired per round")
    return "\n".join(lines)


def _fmt(value) -> str:
    return "" if value is None else f"{value:.3f}"
