"""A sweep's disk and memory budget, before anything trains (``python -m aotp.estimate --budget``).

    python -m aotp.estimate --budget experiment=paper_glue_roberta_large
    python -m aotp.estimate --budget experiment=paper_glue_roberta_large --check-disk results/runs --jobs 8

No weights are loaded and nothing is downloaded: each (model, method, head) is built on PyTorch's
``meta`` device from ``model.architecture`` (the checkpoint's config.json shapes) and the method is
applied to it, so the parameter counts are **counted** on the very modules a run trains (N: every
parameter, T: the trainable ones, R: AoT's reparametrization, H: the task head). Everything else is a
**formula** of those counts and of the run's config (stated below), except three constants
**measured** here: the size of run records (``RECORD_*``, from the 168 ``results/cpu_mini`` records)
and the resident memory of a process that has imported torch, transformers and aotp
(``PROCESS_BASE_BYTES``).

Disk, per run (``paths.results/<run>/``):

* kept after success: ``trainable.safetensors`` = 4 T bytes (fp32; full fine-tuning: the whole
  model; deleted with ``trainer.keep_weights=false``, kept by default for ``aotp.evaluate`` /
  ``aotp.predict``) + records (``result.json`` RECORD_BASE + RECORD_PER_EVAL per evaluation, ``metrics.jsonl``
  RECORD_PER_LOG_LINE per log line, ``predictions/`` RECORD_PER_PREDICTION per dev example) + AoT's
  ``inference/`` pack: 4 R (reparametrization) + 4 H (head), and with ``save_table=true`` the table
  |V| L d b (b = 4/2/2 bytes for fp32/fp16/bf16);
* during training: ``checkpoint/`` = 4 T (trainable) + 4 T (best) + 8 T (AdamW's two moments) =
  16 T, twice while a new checkpoint replaces the old one (written beside it, then renamed): 32 T at
  peak; deleted after success.

A sweep needs sum(kept) over its runs not yet successful + jobs x max(checkpoint peak) (jobs running
at once) + the tokenisation cache when ``paths.cache`` is on the same disk (about TOKEN_CACHE_BYTES per
token position, positions bounded by examples x max_length: an upper bound).

GPU memory per run (training device), at batch B (rows: B x choices for multiple choice), length S
= the configured maximum (``data.max_length`` or the task's; batches are padded to their longest,
so this bounds them), activation precision p bytes (fp32: 4; bf16/fp16 autocast: 2), L layers,
width d, intermediate f, a heads:

* weights 4 N (parameters stay fp32; autocast adds 16-bit copies of the weights it casts: + 2 N);
* gradients 4 T; AdamW states 8 T;
* activations kept for backward (Korthikanti et al. 2022, "Reducing Activation Recomputation in
  Large Transformer Models", per layer, generalised to p and f): ``B S d (8p + 2) + 2p B S f +
  (2p + 1) a S^2 B`` (at p = 2, f = 4d: their ``S B d (34 + 5 a S / d)``); DeBERTa's
  disentangled attention adds ``2p B R (a S + d)`` for R relative positions (v3: 512; v1: 2 S);
  times L,
  plus the embeddings' output p B S d (:func:`activation_bytes`);
* AoT: the batch's biases (B, S, L, d) and their gradient, ``2p B S L d``;
* evaluation (no graph kept) at batch B_e: weights + one layer's working set ``p B_e S (4d + f) +
  2p a S^2 B_e + 2p B_e a S R``, and for AoT the rows of the dev tokens held for the
  inference check, at most |V| L d b;

peak = max(training, evaluation). Host RAM: PROCESS_BASE_BYTES + loading the checkpoint (its state
dict beside the model, 2 x 4 N_backbone) + the best trainable state kept on the host (4 T) + the
tokenised examples (TOKEN_HOST_BYTES per token position: Python int objects and list slots) ; on a
CPU run the GPU figures are host memory too. Example counts: the specs' ``official_sizes``, or a spec's
``size_estimate`` where no official count exists (ReCoRD: queries x mean candidate entities, its YAML cites
both; every figure of such a run carries a warning saying the counts are estimated).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

# Measured: results/cpu_mini (168 records of minilm runs, 2 evaluations each): result.json 4,319-5,397 B,
# metrics.jsonl 120 B per line on average (131 max). Per-eval and prediction-line sizes are rounded up.
RECORD_BASE = 6_000
RECORD_PER_EVAL = 500
RECORD_PER_LOG_LINE = 140
RECORD_PER_PREDICTION = 100
# Measured: max RSS of `import torch, transformers, aotp.run, aotp.models.builders, aotp.methods,
# aotp.trainer.loop` on this machine (Linux, torch CPU build): 565 MiB; rounded up.
PROCESS_BASE_BYTES = 600 * 2**20
TOKEN_CACHE_BYTES = 10   # formula: pickled ids + type ids, <= 5 B each (pickle BININT)
TOKEN_HOST_BYTES = 2 * (8 + 28)  # formula: two fields, a list slot (8 B) + an int object (28 B) each
TABLE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


@dataclass(frozen=True)
class Counts:
    """Parameter counts of one (model, method, head), counted on the meta device."""
    total: int          # N: every parameter (backbone + method + head)
    trainable: int      # T
    backbone: int       # parameters of the pretrained checkpoint as loaded (the pooler is dropped later)
    reparam: int        # R: AoT's reparametrization (0 for other methods)
    head: int           # H
    vocab_size: int
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    family: str
    relative_positions: int  # R of DeBERTa's disentangled attention (0 otherwise)
    source: str         # "model.architecture" or "built" (package / tiny models)
    embedding: int = 0  # backbone parameters in embedding tables (``*embeddings.*``: tokens, positions, DeBERTa's
    #                     relative positions): looked up, not multiplied, per token
    dense: int = 0      # N of the FLOP count (aotp.estimate.run_flops): backbone parameters applied to every token
    #                     (backbone - embeddings - pooler, which the task model drops) + the head; not the method's


_COUNTS: dict[str, Counts] = {}


def count_parameters(cfg: DictConfig, head_type: str, num_outputs: int) -> Counts:
    """Build backbone + head + method on the ``meta`` device (no weights, no download) and count."""
    import torch

    from aotp.assembly import build_model
    from aotp.methods import build_method
    from aotp.methods.aot.method import AoTMethod
    from aotp.models.builders import ARCHITECTURE_CONFIGS, Backbone, build_backbone

    key = json.dumps([OmegaConf.to_container(cfg.model, resolve=True), OmegaConf.to_container(cfg.method, resolve=True),
                      head_type, num_outputs], sort_keys=True, default=str)
    if key in _COUNTS:
        return _COUNTS[key]
    architecture = dict(cfg.model.get("architecture") or {})
    if not architecture and cfg.model.source == "hub":
        raise ValueError(f"model={cfg.model.name}: a hub model needs `architecture:` (its config.json shapes) in "
                         f"configs/model/{cfg.model.name}.yaml for a budget without downloading it")
    # Hub models: shapes only, on the meta device. Package and tiny models are small and local: built as is.
    with torch.device("meta") if architecture else contextlib.nullcontext():
        if architecture:
            from transformers import AutoModel

            family = architecture.pop("family")
            backbone = Backbone(model=AutoModel.from_config(ARCHITECTURE_CONFIGS[family](**architecture)),
                                tokenizer=None, family=family, name=str(cfg.model.name))
            source = "model.architecture"
        else:
            backbone = build_backbone(cfg.model)
            source = "built"
        backbone_parameters = sum(p.numel() for p in backbone.model.parameters())
        embedding = sum(p.numel() for n, p in backbone.model.named_parameters() if "embeddings." in n)
        pooler = sum(p.numel() for n, p in backbone.model.named_parameters() if n.startswith("pooler."))
        config = backbone.model.config
        method = build_method(cfg.method)
        model = build_model(backbone, method, head_type, num_outputs)
    reparam = sum(p.numel() for n, p in model.named_parameters() if n.startswith("aot.")) \
        if isinstance(method, AoTMethod) else 0
    counts = Counts(total=sum(p.numel() for p in model.parameters()),
                    trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
                    backbone=backbone_parameters, reparam=reparam,
                    head=sum(p.numel() for p in model.head.parameters()),
                    vocab_size=model.backbone.get_input_embeddings().weight.shape[0],
                    num_layers=int(config.num_hidden_layers), hidden_size=int(config.hidden_size),
                    intermediate_size=int(config.intermediate_size), num_heads=int(config.num_attention_heads),
                    family=backbone.family, relative_positions=relative_positions(config), source=source,
                    embedding=embedding, dense=backbone_parameters - embedding - pooler
                    + sum(p.numel() for p in model.head.parameters()))
    _COUNTS[key] = counts
    return counts


def expand_runs(overrides: list[str]) -> list[tuple[list[str], DictConfig]]:
    """Every run of the sweep with its composed config. Only axes that choose a config group (model,
    method, task, ...) are composed by Hydra; value axes (seed, experiment.lr_index) are set on a
    copy of the composed config, which resolves exactly as a composition would (tested), and is
    hundreds of times faster for a 1,080-run sweep."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from aotp.estimate import sweep_override_lists
    from aotp.run import CONFIG_DIR, compose

    runs, plain = sweep_override_lists(overrides)
    parser = OverridesParser.create()
    composed: dict[tuple[str, ...], DictConfig] = {}
    expanded = []
    for run in runs:
        parsed = parser.parse_overrides(run)
        group = tuple(o.input_line for o in parsed if (CONFIG_DIR / o.get_key_element().split("@")[0]).is_dir())
        if group not in composed:
            composed[group] = compose([*plain, *group])
        cfg = copy.deepcopy(composed[group])
        for o in parsed:
            if o.input_line not in group:
                OmegaConf.update(cfg, o.get_key_element(), o.value(), merge=True)
        expanded.append((run, cfg))
    return expanded


def relative_positions(config) -> int:
    """R: relative positions a DeBERTa layer scores every query against (0 without disentangled
    attention): 2 x the attention span, the span being ``position_buckets`` (DeBERTa-v2/v3: 256) or
    else ``max_relative_positions`` (-1: ``max_position_embeddings``). DeBERTa v1 narrows its span to
    the sequence length (transformers' ``compute_attention_span``): :func:`run_budget` takes
    ``min(R, 2 S)`` for it."""
    if not getattr(config, "relative_attention", False):
        return 0
    span = int(getattr(config, "position_buckets", -1) or -1)
    if span < 1:
        span = int(getattr(config, "max_relative_positions", -1) or -1)
    if span < 1:
        span = int(config.max_position_embeddings)
    return 2 * span


def activation_bytes(rows: int, length: int, hidden: int, intermediate: int, heads: int, layers: int,
                     precision_bytes: int, relative: int = 0, unfused_layernorm: bool = False) -> int:
    """Activations an encoder keeps for backward (Korthikanti et al. 2022, generalised to p and f):
    ``L (B S d (8p + 2) + 2p B S f + (2p + 1) a S^2 B + 2p B R (a S + d)) + p B S d``.

    Per layer: the inputs of the QKV, output and first MLP projections, Q, K and V, the two LayerNorm
    inputs (p B S d each: 8p), two dropout masks (1 byte per value on CUDA: 2), the GELU's input and
    output (p B S f each), the attention probabilities and their dropped-out copy (p a S^2 B each) and
    that dropout's mask (a S^2 B); DeBERTa's disentangled attention adds its content-to-position and
    position-to-content scores against R relative positions (p B a S R each) and the projected
    relative embeddings (p B d R each; R from :func:`relative_positions`). DeBERTa v1's LayerNorm is
    written out in PyTorch operations and keeps x - mean and the normalised x besides its input
    (``unfused_layernorm``: + 4p B S d per layer). Plus the embeddings' output p B S d. Memory-efficient attention kernels (PyTorch SDPA on CUDA, used by BERT/RoBERTa) keep no
    S^2 terms, so there the figure is an upper bound. Checked against the tensors autograd saves
    (tests/unit/test_budget.py, CPU, where dropout masks are fp32: measured/formula 1.20 for RoBERTa,
    1.24 for DeBERTa-v3 shapes, 1.45 for DeBERTa v1, whose attention keeps more intermediates).
    """
    B, S, d, f, a, L, p, R = rows, length, hidden, intermediate, heads, layers, precision_bytes, relative
    per_layer = B * S * d * (8 * p + 2 + (4 * p if unfused_layernorm else 0)) + 2 * p * B * S * f \
        + (2 * p + 1) * a * S * S * B + 2 * p * B * R * (a * S + d)
    return L * per_layer + p * B * S * d


def _examples(spec, split: str, limit) -> Optional[int]:
    """Examples of a split without the files: ``official_sizes``, else the spec's ``size_estimate`` (ReCoRD)."""
    from aotp.estimate import example_counts

    size = (example_counts(spec)[0] or {}).get(split)
    if size is None:
        return None
    return min(int(size), int(limit)) if limit else int(size)


def forward_examples(trainer) -> int:
    """Examples in one training forward (what the activations hold): ``trainer.micro_batch_size`` when it is a
    number; with ``auto`` the whole step (batch_size x gradient_accumulation_steps), where its search starts
    on CUDA (an upper bound: it halves on out-of-memory); otherwise one logical batch."""
    micro = trainer.get("micro_batch_size")
    if micro == "auto":
        return int(trainer.batch_size) * int(trainer.gradient_accumulation_steps)
    return int(micro) if micro is not None else int(trainer.batch_size)


def run_budget(cfg: DictConfig) -> dict[str, Any]:
    """Disk and memory figures of one run (see the module docstring for every formula)."""
    from aotp.estimate import choices_per_example, example_counts
    from aotp.tasks.spec import TaskSpec
    from aotp.trainer.loop import log_interval

    spec = TaskSpec.from_config(cfg.task)
    counts = count_parameters(cfg, spec.head, spec.num_labels)
    trainer, data = cfg.trainer, cfg.data
    n, t = counts.total, counts.trainable
    L, d, f, a, V = counts.num_layers, counts.hidden_size, counts.intermediate_size, counts.num_heads, counts.vocab_size
    p = 4 if str(trainer.precision) == "fp32" else 2
    S = int(data.get("max_length") or spec.max_length)
    choices = choices_per_example(spec)
    B, B_eval = forward_examples(trainer) * choices, int(trainer.eval_batch_size) * choices
    R = min(counts.relative_positions, 2 * S) if counts.family == "deberta" else counts.relative_positions
    options = dict(cfg.method.get("options") or {})
    is_aot = counts.reparam > 0
    table_bytes = V * L * d * TABLE_BYTES.get(str(options.get("table_dtype", "fp32")), 4) if is_aot else 0

    n_train = _examples(spec, spec.train_split, data.get("max_train_samples"))
    n_eval = [_examples(spec, s, data.get("max_eval_samples")) for s in spec.eval_splits]
    eval_examples = None if None in n_eval else sum(n_eval)
    if n_train is not None and not trainer.get("max_steps"):
        steps = int(trainer.epochs) * math.ceil(math.ceil(n_train / int(trainer.batch_size))
                                                / int(trainer.gradient_accumulation_steps))
    else:
        steps = int(trainer.max_steps) if trainer.get("max_steps") else None
    evaluations = None
    if steps is not None:
        per_epoch = math.ceil(n_train / int(trainer.batch_size) / int(trainer.gradient_accumulation_steps)) \
            if n_train is not None else steps
        evaluations = math.ceil(steps / (int(trainer.eval_every) if trainer.get("eval_every") else per_epoch)) + 1

    records = RECORD_BASE + RECORD_PER_EVAL * (evaluations or 0) \
        + RECORD_PER_LOG_LINE * ((math.ceil(steps / log_interval(trainer.get("log_every"), steps)) if steps else 0) + (evaluations or 0)) \
        + RECORD_PER_PREDICTION * (eval_examples or 0)
    pack = (4 * counts.reparam + 4 * counts.head + (table_bytes if options.get("save_table") else 0)) if is_aot else 0
    weights_kept = 4 * t if trainer.get("keep_weights", True) else 0
    kept = weights_kept + records + pack
    checkpoint_peak = 2 * 16 * t

    weights = 4 * n + (2 * n if p == 2 else 0)
    gradients, optimizer = 4 * t, 8 * t
    activations = activation_bytes(B, S, d, f, a, L, p, R, unfused_layernorm=counts.family == "deberta")
    aot_biases = 2 * p * B * S * L * d if is_aot else 0
    training = weights + gradients + optimizer + activations + aot_biases
    evaluation = weights + p * B_eval * S * (4 * d + f) + 2 * p * a * S * S * B_eval + 2 * p * B_eval * a * S * R + table_bytes
    tokens = ((n_train or 0) + (eval_examples or 0)) * choices * S
    host = PROCESS_BASE_BYTES + 2 * 4 * counts.backbone + 4 * t + TOKEN_HOST_BYTES * tokens
    return {"task": spec.full_name, "model": str(cfg.model.name), "method": str(cfg.method.name), "seed": int(cfg.seed),
            "counts": asdict(counts), "precision": str(trainer.precision), "batch_rows": B, "max_length": S,
            "train_examples": n_train, "eval_examples": eval_examples, "steps": steps, "evaluations": evaluations,
            "disk": {"kept": kept, "trainable_weights": weights_kept, "records": records, "inference_pack": pack,
                     "table_if_saved": table_bytes, "checkpoint_peak": checkpoint_peak},
            "gpu": {"weights": weights, "gradients": gradients, "optimizer": optimizer, "activations": activations,
                    "aot_biases": aot_biases, "training": training, "evaluation": evaluation,
                    "peak": max(training, evaluation)},
            "host_peak": host, "token_cache": TOKEN_CACHE_BYTES * tokens,
            "warning": (f"{spec.full_name}: no official_sizes in its spec, so its examples are left out of the "
                        f"record-size, host-RAM and tokenisation-cache figures")
            if n_train is None or eval_examples is None else
            (f"{spec.full_name}: example counts estimated ({example_counts(spec)[1]}), not official"
             if not spec.official_sizes else None)}


def _done(results: Optional[Path], cfg: DictConfig) -> bool:
    from aotp.results.record import read_record, run_dir_name, run_id
    from aotp.run import to_container

    if results is None:
        return False
    config = to_container(cfg)
    record = read_record(Path(results) / run_dir_name(config, run_id(config)) / "result.json")
    return record is not None and record.succeeded


def gpu_memory_measured(records: Path, cfg: DictConfig, budget: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The budget's GPU peak of a run beside what its record measured on CUDA (``execution.train_memory`` /
    ``eval_memory``, schema 3), or None when no such record exists under ``records``."""
    from aotp.results.record import read_record, run_dir_name, run_id
    from aotp.run import to_container

    config = to_container(cfg)
    name = run_dir_name(config, run_id(config))
    record = read_record(Path(records) / name / "result.json")
    execution = record.execution if record is not None and record.succeeded else None
    if execution is None or execution.train_memory is None:
        return None
    measured = max(execution.train_memory.peak_allocated_bytes or 0,
                   (execution.eval_memory.peak_allocated_bytes or 0) if execution.eval_memory else 0)
    return {"run_dir": name, "device": record.env.device_name, "estimated_peak": budget["gpu"]["peak"],
            "train_allocated": execution.train_memory.peak_allocated_bytes,
            "train_reserved": execution.train_memory.peak_reserved_bytes,
            "eval_allocated": execution.eval_memory.peak_allocated_bytes if execution.eval_memory else None,
            "measured_over_estimated": measured / budget["gpu"]["peak"] if budget["gpu"]["peak"] else None}


def sweep_budget(overrides: list[str], results: Optional[Path] = None, jobs: int = 1,
                 records: Optional[Path] = None) -> dict[str, Any]:
    """Per-run budgets of a sweep, grouped by (model, method), and the sweep's disk need in ``results``
    (runs with a success record there are skipped by the sweep, so they need nothing more). ``records``: a
    folder of run records; each run with a CUDA record there gets its measured GPU peaks beside the budget's
    (``gpu_measured``), so the formula can be checked against what ran."""
    runs = [(run_overrides, cfg, run_budget(cfg)) for run_overrides, cfg in expand_runs(overrides)]
    measured = [m for m in (gpu_memory_measured(records, cfg, b) for _, cfg, b in runs) if m] if records else []
    remaining = [(o, cfg, b) for o, cfg, b in runs if not _done(results, cfg)]
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for _, _, budget in runs:
        group = groups.setdefault((budget["model"], budget["method"]), {
            "model": budget["model"], "method": budget["method"], "runs": 0, "kept_total": 0, "kept_max": 0,
            "checkpoint_peak_max": 0, "gpu_peak_max": 0, "host_peak_max": 0, "trainable": budget["counts"]["trainable"],
            "total": budget["counts"]["total"], "table_if_saved": budget["disk"]["table_if_saved"],
            "parameters_from": budget["counts"]["source"]})
        group["runs"] += 1
        group["kept_total"] += budget["disk"]["kept"]
        group["kept_max"] = max(group["kept_max"], budget["disk"]["kept"])
        group["checkpoint_peak_max"] = max(group["checkpoint_peak_max"], budget["disk"]["checkpoint_peak"])
        group["gpu_peak_max"] = max(group["gpu_peak_max"], budget["gpu"]["peak"])
        group["host_peak_max"] = max(group["host_peak_max"], budget["host_peak"])
    caches = {}
    for _, cfg, budget in remaining:  # one tokenisation cache per (tokenizer, task), shared by the runs
        caches[(budget["model"], budget["task"])] = budget["token_cache"]
    checkpoint_peak = max((b["disk"]["checkpoint_peak"] for _, _, b in remaining), default=0)
    kept_remaining = sum(b["disk"]["kept"] for _, _, b in remaining)
    first = runs[0][1] if runs else None
    cache_dir = Path(first.paths.cache) if first is not None else None
    same_disk = results is not None and cache_dir is not None and _device(results) == _device(cache_dir)
    need = kept_remaining + jobs * checkpoint_peak + (sum(caches.values()) if same_disk else 0)
    return {"overrides": overrides, "runs": len(runs), "remaining_runs": len(remaining), "jobs": jobs,
            "groups": list(groups.values()), "kept_total": sum(b["disk"]["kept"] for _, _, b in runs),
            "kept_remaining": kept_remaining, "checkpoint_peak": checkpoint_peak,
            "token_cache": sum(caches.values()), "token_cache_counted": same_disk, "need": need,
            "gpu_peak_max": max((b["gpu"]["peak"] for _, _, b in runs), default=0),
            "host_peak_max": max((b["host_peak"] for _, _, b in runs), default=0),
            "warnings": sorted({b["warning"] for _, _, b in runs if b["warning"]}),
            "gpu_measured": measured,
            "per_run": [{"overrides": o, **b} for o, _, b in runs]}


def _existing(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return path


def _device(path: Path) -> int:
    return os.stat(_existing(path)).st_dev


def free_bytes(path: Path) -> int:
    """Free bytes on the disk that holds ``path`` (its nearest existing parent)."""
    return shutil.disk_usage(_existing(path)).free


def human(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.3g} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1000
    return f"{count:.3g} TB"


def render_budget(result: dict[str, Any]) -> str:
    lines = [f"Disk and memory budget: {result['runs']} runs ({' '.join(result['overrides'])})", "",
             "| model | method | runs | trainable | kept per run (max) | kept, all runs | checkpoint peak | "
             "AoT table if saved | GPU peak per run | host RAM peak |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for g in result["groups"]:
        lines.append(f"| {g['model']} | {g['method']} | {g['runs']} | {g['trainable']:,} | {human(g['kept_max'])} | "
                     f"{human(g['kept_total'])} | {human(g['checkpoint_peak_max'])} | "
                     f"{human(g['table_if_saved']) if g['table_if_saved'] else '-'} | {human(g['gpu_peak_max'])} | "
                     f"{human(g['host_peak_max'])} |")
    lines.append(f"| **all** | | {result['runs']} | | | **{human(result['kept_total'])}** | | | "
                 f"**{human(result['gpu_peak_max'])}** | **{human(result['host_peak_max'])}** |")
    lines += ["", f"Disk the sweep needs: {human(result['need'])} = kept files of the {result['remaining_runs']} runs "
              f"without a success record ({human(result['kept_remaining'])}) + {result['jobs']} job(s) x the largest "
              f"checkpoint peak ({human(result['checkpoint_peak'])})"
              + (f" + tokenisation cache ({human(result['token_cache'])})" if result["token_cache_counted"] else ""),
              "Parameter counts: counted on the modules built on the meta device; disk, GPU and host figures: "
              "formulas (aotp/budget.py) at the configured batch, max length and precision; record sizes and the "
              "process's base memory: measured (aotp/budget.py constants)."]
    if result.get("gpu_measured"):
        lines += ["", "GPU memory, the budget beside the records (peak allocated; the budget is the larger of training "
                  "and evaluation):", "", "| run | device | budget | training (allocated / reserved) | evaluation | "
                  "measured / budget |", "|---|---|---:|---:|---:|---:|"]
        for m in result["gpu_measured"]:
            ratio = "-" if m["measured_over_estimated"] is None else f"{m['measured_over_estimated']:.2f}"
            lines.append(f"| {m['run_dir']} | {m['device']} | {human(m['estimated_peak'])} | "
                         f"{human(m['train_allocated'])} / {human(m['train_reserved'])} | "
                         f"{human(m['eval_allocated']) if m['eval_allocated'] is not None else '-'} | {ratio} |")
    lines += [f"warning: {w}" for w in result.get("warnings", [])]
    return "\n".join(lines)


def check_disk(result: dict[str, Any], results: Path) -> Optional[str]:
    """None when the results disk has room for the sweep, else the one-paragraph refusal."""
    free = free_bytes(results)
    if free >= result["need"]:
        return None
    return (f"Refusing to start: the sweep needs {human(result['need'])} ({result['need']:,} B) on the disk of {results} "
            f"({result['remaining_runs']} runs to do: kept files {human(result['kept_remaining'])} + {result['jobs']} "
            f"job(s) x checkpoint peak {human(result['checkpoint_peak'])}"
            + (f" + tokenisation cache {human(result['token_cache'])}" if result["token_cache_counted"] else "")
            + f"), but only {human(free)} ({free:,} B) is free. Free space, narrow the sweep (ARGS=\"task=... seed=...\"), point "
              f"RESULTS= at a larger disk, or skip this check with DISK_CHECK=0.")
