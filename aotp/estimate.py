"""Expected compute of an experiment's sweep: from step times measured on this machine, or from an
assumed throughput (``throughput=``) where no GPU is at hand.

    aotp-estimate experiment=paper_glue_roberta_base trainer.device=cuda data.root=../shared/data
    aotp-estimate experiment=cpu_mini data.root=../shared/data compare=results/cpu_mini/runs
    aotp-estimate experiment=paper_superglue_roberta_large throughput=h100-sxm-assumed
    aotp-estimate budget=true experiment=paper_glue_roberta_large [check_disk=results/runs jobs=8]

First the sweep's disk and memory budget (:mod:`aotp.budget`: runs, bytes written per run and in
total, checkpoints at peak, peak host RAM and GPU memory per run; no weights loaded, no download),
then its compute. ``budget=true`` stops after the budget (seconds); ``check_disk=DIR`` then exits 3
with the figures when the disk of DIR has less free space than the sweep needs (``make reproduce``).

Every run of the sweep (the experiment's ``hydra.sweeper.params``, narrowed or widened by sweep
overrides on the command line, as ``make reproduce`` runs it) is composed exactly as ``aotp.run``
composes it, and its batches are built by the loop's own code (:func:`loop_workload`): a
:class:`aotp.trainer.loop.Trainer` over the run's example lengths gives the steps and, epoch by epoch,
``Trainer.epoch_batches`` (same seed, ``trainer.group_by_length``, batch size), walked with the loop's
gradient-accumulation rule (a step every ``gradient_accumulation_steps`` micro-batches and at the end
of each epoch) until ``total_steps``. Each micro-batch is padded to its longest sequence as the collator
pads it (rows = batch size x choices for multiple choice). Evaluation batches are consecutive slices of
each eval split in file order, as ``predict_scores`` takes them, ``n_evals`` = the evaluations during
training (every ``eval_every`` steps and the last) + the inference-form check (+ one pass over the first
eval split when the best state's scores were not kept: mixed precision). Early stopping is not
foreseen (an upper bound when ``trainer.patience`` is set).

Example lengths, per task, from the first source that has them (each task's source is printed):

* ``files``: the task's files under ``data.root``, tokenised with the model's tokenizer (or MiniLM's
  WordPiece as a stand-in when the model's cannot load offline; the same tokenisation cache as the runs);
* ``length table``: the committed per-task distribution (``aotp/token_lengths.json``: percentiles of
  the tokenised length per task and tokenizer family, made by ``scripts/token_length_table.py`` from the
  files in ../shared/data and the samples it names), drawn deterministically (stratified inverse CDF) for
  the split's example count and clipped at the run's ``data.max_length``; a family the table lacks is
  stood in for by one it has, and the source says so;
* ``max_length bound``: every sequence at ``data.max_length`` (an upper bound), for a task with neither.

Example counts without the files: the specs' ``official_sizes``, or a spec's ``size_estimate`` (ReCoRD:
queries x mean candidate entities, configs/task/superglue/record.yaml), said in the output.

Measured mode (a GPU box, the default): its cost is

    T(run) = sum_b t_train(rows_b, L_b) + n_evals * sum_e t_eval(rows_e, L_e) + t_build

t_train (forward, backward, clipping, AdamW step) and t_eval (no-grad forward) measured per
(model, method, rows) at a few lengths and interpolated linearly in L; t_build (backbone load +
method) once per (model, method). A hub model that cannot load is timed with random weights of its
shape (``model.architecture``): step time depends on the shape.

Stated-throughput mode (``throughput=<preset or file>``, :func:`analytic_estimate`): no timing, no
weights (parameters counted on the meta device, :func:`aotp.budget.count_parameters`); GPU seconds =
FLOPs / (assumed achieved FLOP/s), every figure marked "estimate (assumed throughput ...)". See
:func:`run_flops` for the FLOP count and :data:`THROUGHPUT_PRESETS` for the assumed rates.

``compare=DIR`` sets each estimate beside the measured ``wall_seconds`` of the matching records.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from omegaconf import DictConfig, OmegaConf

from aotp.cli import KeyValueParser, Option, UsageError, guarded

def sweep_override_lists(overrides: list[str]) -> tuple[list[list[str]], list[str]]:
    """The sweep's runs as override lists (cartesian product, the BasicSweeper's order), and the
    plain overrides shared by every run. Sweep parameters come from the experiment's
    ``hydra.sweeper.params``; a command-line override of the same key replaces it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from aotp.run import compose

    parser = OverridesParser.create()
    parsed = parser.parse_overrides(overrides)
    plain = [o.input_line for o in parsed if not o.is_sweep_override()]
    command_line_sweeps = {o.get_key_element(): o for o in parsed if o.is_sweep_override()}
    cfg = compose(plain, return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=False) or {}
    sweeps = {o.get_key_element(): o for o in parser.parse_overrides([f"{k}={v}" for k, v in params.items()])}
    plain_keys = {o.get_key_element() for o in parsed if not o.is_sweep_override()}
    sweeps = {k: v for k, v in sweeps.items() if k not in plain_keys}  # a plain command-line value narrows it
    sweeps.update(command_line_sweeps)
    axes = [[f"{key}={value}" for value in (o.sweep_string_iterator() if o.is_sweep_override() else [o.value()])]
            for key, o in sweeps.items()]
    return [list(combo) for combo in itertools.product(*axes)], plain


@dataclass
class Workload:
    """What one run computes: its training micro-batches and its evaluation batches as (rows, padded
    length), in the loop's order. ``train_rows``/``train_lengths`` are arrays (one entry per micro-batch);
    ``train_batches`` lists them as pairs. ``real_tokens``: the sequence positions that are not padding
    (per example its longest choice, as :func:`aotp.trainer.loop.padded_token_share` counts them, times
    its choices)."""
    train_rows: np.ndarray
    train_lengths: np.ndarray
    eval_batches: list[tuple[int, int]]
    evaluations: int
    lengths_from: str  # "files", "length table (...)" or "max_length bound"
    train_examples: int
    real_tokens: int = 0
    check_batches: list[tuple[int, int]] = field(default_factory=list)  # the first eval split's batches
    recheck: bool = False  # the inference check recomputes their "before" scores (mixed precision: not kept)
    sizes_from: str = "files"  # "files", "official_sizes" or "size_estimate (...)"

    @property
    def train_batches(self) -> list[tuple[int, int]]:
        return list(zip(self.train_rows.tolist(), self.train_lengths.tolist()))

    @property
    def padded_tokens(self) -> int:
        return int(np.dot(self.train_rows.astype(np.int64), self.train_lengths.astype(np.int64)))

    @property
    def padded_share(self) -> float:
        """Share of the trained token positions that are padding (the priced compute spent on nothing)."""
        padded = self.padded_tokens
        return 1.0 - self.real_tokens / padded if padded else 0.0

    def eval_passes(self) -> list[tuple[tuple[int, int], int]]:
        """((rows, length), times) of every evaluation forward the run makes."""
        passes: dict[tuple[int, int], int] = {}
        for batch in self.eval_batches:
            passes[batch] = passes.get(batch, 0) + self.evaluations
        for batch in self.check_batches if self.recheck else []:
            passes[batch] = passes.get(batch, 0) + 1
        return sorted(passes.items())


def choices_per_example(spec) -> int:
    """Sequences one example feeds the encoder: its choices for multiple choice (COPA: 2), else 1."""
    if spec.head != "multiple_choice":
        return 1
    return len(spec.format_options.get("choice_fields") or []) or 1


def example_counts(spec) -> tuple[Optional[dict[str, int]], str]:
    """Examples per split (as the formatter counts them) without the files: the spec's ``official_sizes``,
    else its ``size_estimate.examples`` (ReCoRD: queries x mean candidate entities, the YAML cites both),
    else None. Returns (counts, where they come from)."""
    if spec.official_sizes:
        return dict(spec.official_sizes), "official_sizes"
    estimate = spec.extra.get("size_estimate") or {}
    if estimate.get("examples"):
        return ({str(k): int(v) for k, v in dict(estimate["examples"]).items()},
                f"size_estimate ({estimate.get('basis', spec.config_file)})")
    return None, "none"


def bound_batches(count: int, batch_size: int, rows_per_example: int, length: int) -> list[tuple[int, int]]:
    full, rest = divmod(count, batch_size)
    return [(batch_size * rows_per_example, length)] * full + ([(rest * rows_per_example, length)] if rest else [])


# ---- example lengths without the files: the committed length table ----------------------------------------

LENGTH_TABLE = Path(__file__).with_name("token_lengths.json")
# Tokenizer family of a backbone family (model.architecture.family / the built model's): the lengths of one
# family hold for every model that tokenises with it.
TOKENIZER_FAMILIES = {"bert": "wordpiece_uncased", "roberta": "gpt2_bpe", "deberta": "gpt2_bpe",
                      "deberta_v2": "deberta_v2_spm"}


def tokenizer_family(model_cfg) -> str:
    """The tokenizer family of a model config: MiniLM (a package model) and the tiny models tokenise with an
    uncased WordPiece; a hub model by its ``architecture.family`` (RoBERTa and DeBERTa v1: GPT-2's byte BPE;
    DeBERTa v2/v3: their 128k SentencePiece)."""
    if str(model_cfg.get("source")) in ("package", "tiny"):
        return "wordpiece_uncased"
    family = (model_cfg.get("architecture") or {}).get("family") or model_cfg.get("family")
    return TOKENIZER_FAMILIES.get(str(family), "wordpiece_uncased")


_TABLES: dict[str, dict[str, Any]] = {}


def load_length_table(path: Optional[Path] = None) -> dict[str, Any]:
    path = Path(path or LENGTH_TABLE)
    key = str(path)
    if key not in _TABLES:
        _TABLES[key] = json.loads(path.read_text()) if path.is_file() else {"families": {}}
    return _TABLES[key]


def table_entry(table: dict[str, Any], task: str, family: str) -> tuple[Optional[dict[str, Any]], str]:
    """The table's entry for ``task`` in ``family``, else in the first family that has the task (a stand-in,
    said in the returned label)."""
    families = table.get("families") or {}
    if task in (families.get(family) or {}).get("tasks", {}):
        return families[family]["tasks"][task], f"length table ({family})"
    for other, content in families.items():
        if task in content.get("tasks", {}):
            return content["tasks"][task], f"length table ({other}, standing in for {family})"
    return None, "max_length bound"


def drawn_lengths(percentiles: list[int], count: int, max_length: int) -> np.ndarray:
    """``count`` example lengths following the table's percentiles (p0..p100): the inverse CDF at the
    stratified points (i + 1/2) / count, linear between percentiles, rounded, clipped at ``max_length``, then
    put in a fixed shuffled order (seed 0) so that no split is sorted by length. Deterministic."""
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    grid = np.linspace(0.0, 1.0, len(percentiles))
    points = (np.arange(count) + 0.5) / count
    lengths = np.rint(np.interp(points, grid, np.asarray(percentiles, dtype=float))).astype(np.int64)
    lengths = np.clip(lengths, 1, max_length)
    return lengths[np.random.default_rng(0).permutation(count)]


# ---- the loop's batches ---------------------------------------------------------------------------------------

class _LengthFeatures:
    """Features that only have a length (what the Trainer reads of them to build batches)."""

    def __init__(self, lengths: np.ndarray):
        self.lengths = lengths

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input_ids": range(int(self.lengths[index]))}


class _NoCollator:
    def __call__(self, features):  # never called: the estimator does not collate
        raise RuntimeError("the estimate does not collate batches")


def loop_trainer(trainer_cfg, train_split, spec, seed: int, device: str = "cuda"):
    """The run's :class:`aotp.trainer.loop.Trainer` over ``train_split`` (a ``SplitData``, or example lengths
    as an array): its ``total_steps``, ``accumulation``, ``epoch_batches`` (and micro-batch size, where the
    loop has one) are the loop's own. No model and no device work: only the batch plan is used. ``device``:
    the device the runs train on (its type decides ``micro_batch_size=auto``: on CUDA the step's examples,
    the size its search starts at; a smaller one after an out-of-memory error pads less)."""
    import torch

    from aotp.tasks.data import SplitData, TaskData
    from aotp.trainer.loop import Trainer

    if isinstance(train_split, np.ndarray):
        train_split = SplitData(spec.train_split, [], _LengthFeatures(train_split), True)
    data = TaskData(spec, {spec.train_split: train_split})
    return Trainer(trainer_cfg, None, None, data, "unused", None, torch.device(device), seed, collator=_NoCollator())


def loop_epochs(trainer, batches_in=None) -> list[tuple[int, int]]:
    """(epoch, micro-batches of it trained) in the loop's order: the loop (``Trainer.fit``) steps after every
    ``accumulation`` micro-batches and after an epoch's last one, and stops at ``total_steps`` (possibly
    within an epoch, or after more epochs than ``trainer.epochs`` with ``max_steps``). ``batches_in(epoch)``:
    the number of batches of an epoch (default ``len(trainer.epoch_batches(epoch))``)."""
    batches_in = batches_in or (lambda epoch: len(trainer.epoch_batches(epoch)))
    planned, step, epoch = [], 0, 0
    while step < trainer.total_steps:
        count = batches_in(epoch)
        if count == 0:  # no training examples: the loop has nothing to step on
            break
        micro, used = 0, 0
        for index in range(count):
            micro += 1
            used = index + 1
            if micro % trainer.accumulation and index != count - 1:
                continue
            step += 1
            if step >= trainer.total_steps:
                break
        planned.append((epoch, used))
        epoch += 1
    return planned


_EPOCH_SHAPES: dict[tuple, tuple[int, np.ndarray, np.ndarray]] = {}


def epoch_forwards(trainer, epoch: int, used: Optional[int] = None) -> tuple[int, list[list[int]]]:
    """(logical batches of the epoch, the example indices of each forward/backward over its first ``used``
    of them) as the loop runs them: ``Trainer.epoch_batches``, and where the Trainer has a micro-batch size
    (``trainer.micro_batch_size``) each step's ``gradient_accumulation_steps`` consecutive logical batches cut
    by the loop's ``split_step``; else one forward per logical batch."""
    batches = trainer.epoch_batches(epoch)
    count = len(batches)
    if used is not None:
        batches = batches[:used]
    size = getattr(trainer, "micro_batch_size", None)
    if size is None:
        return count, batches
    from aotp.trainer.loop import split_step

    return count, [m.indices for start in range(0, len(batches), trainer.accumulation)
                   for m in split_step(batches[start:start + trainer.accumulation], size)]


def forward_shapes(forwards: list[list[int]], lengths: np.ndarray, rows_per_example: int):
    """(rows, padded length) arrays of forwards given as example indices (padded to their longest example)."""
    if not forwards:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    sizes = np.fromiter(map(len, forwards), dtype=np.int64, count=len(forwards))
    flat = lengths[np.fromiter(itertools.chain.from_iterable(forwards), dtype=np.int64, count=int(sizes.sum()))]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return sizes * rows_per_example, np.maximum.reduceat(flat, starts)


def epoch_shapes(trainer, lengths: np.ndarray, rows_per_example: int, lengths_key: str, epoch: int):
    """(logical batches, rows array, padded-length array) of the epoch's forwards, cached: they are a function
    of (lengths, seed, batch size, group_by_length, epoch) and the micro-batch split (aotp/trainer/loop.py)."""
    size = getattr(trainer, "micro_batch_size", None)
    key = (lengths_key, trainer.seed, trainer.batch_size, trainer.group_by_length, rows_per_example, epoch, size,
           trainer.accumulation if size is not None else None)
    if key not in _EPOCH_SHAPES and size is None and len(lengths) and lengths.min() == lengths.max():
        # every example as long (the max_length bound): each batch pads to that length whatever its examples,
        # so the shapes are the batch sizes (the loop's count; the short batch put last: an order-free sum)
        count = math.ceil(len(lengths) / trainer.batch_size)
        sizes = np.full(count, trainer.batch_size, dtype=np.int64)
        sizes[-1] = len(lengths) - trainer.batch_size * (count - 1)
        _EPOCH_SHAPES[key] = (count, sizes * rows_per_example, np.full(count, int(lengths[0]), dtype=np.int64))
    if key not in _EPOCH_SHAPES:
        count, forwards = epoch_forwards(trainer, epoch)
        _EPOCH_SHAPES[key] = (count, *forward_shapes(forwards, lengths, rows_per_example))
    return _EPOCH_SHAPES[key]


def lengths_fingerprint(lengths: np.ndarray) -> str:
    import hashlib

    return hashlib.sha1(np.ascontiguousarray(lengths, dtype=np.int64).tobytes()).hexdigest()[:16]


def loop_workload(trainer, rows_per_example: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(rows, padded lengths) of every forward/backward ``trainer`` (:func:`loop_trainer`) trains, in order, its
    example count and its real tokens, over the example lengths the Trainer itself measured
    (``Trainer.lengths``, :func:`aotp.trainer.loop.sequence_length`: a multiple-choice example's longest choice)."""
    lengths = np.asarray(trainer.lengths, dtype=np.int64)
    key = lengths_fingerprint(lengths)
    rows, padded, examples, real = [], [], 0, 0
    for epoch, used in loop_epochs(trainer, lambda e: epoch_shapes(trainer, lengths, rows_per_example, key, e)[0]):
        count, epoch_rows, epoch_padded = epoch_shapes(trainer, lengths, rows_per_example, key, epoch)
        if used == count:
            examples += len(lengths)
            real += int(lengths.sum()) * rows_per_example
        else:  # a partial epoch (max_steps): its first ``used`` logical batches, a step boundary
            _, forwards = epoch_forwards(trainer, epoch, used)
            epoch_rows, epoch_padded = forward_shapes(forwards, lengths, rows_per_example)
            chosen = np.fromiter(itertools.chain.from_iterable(forwards), dtype=np.int64)
            examples += len(chosen)
            real += int(lengths[chosen].sum()) * rows_per_example
        rows.append(epoch_rows)
        padded.append(epoch_padded)
    empty = np.zeros(0, dtype=np.int64)
    return (np.concatenate(rows) if rows else empty), (np.concatenate(padded) if padded else empty), examples, real


_PLANS: dict[tuple, tuple] = {}
# trainer options that change neither the batches nor the step count (any other option keys the plan cache)
NOT_IN_THE_BATCH_PLAN = {"device", "require_gpu", "precision", "tf32", "warmup_ratio", "warmup_steps", "adam_betas",
                         "adam_eps", "max_grad_norm", "patience", "checkpoint_every", "log_every", "progress", "threads",
                         "inference_tolerance", "num_workers", "pin_memory", "fused_optimizer", "compile",
                         "keep_weights", "eval_batch_size"}


def eval_slices(lengths: np.ndarray, batch_size: int, rows_per_example: int) -> list[tuple[int, int]]:
    """(rows, padded length) of an eval split's batches: consecutive slices in split order (``predict_scores``)."""
    return [(len(lengths[s:s + batch_size]) * rows_per_example, int(lengths[s:s + batch_size].max()))
            for s in range(0, len(lengths), batch_size)]


def run_workload(cfg: DictConfig, spec, tokenizer, uses_token_type_ids: bool, warnings: list[str],
                 family: Optional[str] = None, table: Optional[dict[str, Any]] = None,
                 tokenizer_note: str = "", device: str = "cuda") -> Optional[Workload]:
    """The run's :class:`Workload`, its lengths from the files, the length table or the max_length bound (module
    docstring). ``family``: the tokenizer family for the length table (default: the model's); ``tokenizer_note``:
    appended to "files" (a stand-in tokenizer); ``device``: the type of device the run trains on (:func:`loop_trainer`)."""
    from aotp.tasks import DataFileError, check_local_files, load_task_data
    from aotp.trainer.loop import sequence_length

    trainer_cfg = cfg.trainer
    eval_batch_size = int(trainer_cfg.eval_batch_size)
    max_length = int(cfg.data.get("max_length") or spec.max_length)
    rows = choices_per_example(spec)
    seed = int(cfg.seed)
    root = Path(cfg.data.root) if cfg.data.get("root") else None
    have_files = root is not None and tokenizer is not None
    if have_files:
        try:
            check_local_files(spec, root, [spec.train_split, *spec.eval_splits])
        except DataFileError:  # absent files: the table or the bound below
            have_files = False
    train_split = None
    if have_files:
        data = load_task_data(spec, tokenizer, cfg.data, uses_token_type_ids=uses_token_type_ids, seed=int(cfg.seed),
                              cache_dir=Path(cfg.paths.cache) if cfg.data.get("cache", True) else None)
        train_split = data[spec.train_split]
        train_lengths = np.array([sequence_length(f) for f in train_split.features], dtype=np.int64)
        eval_lengths = {s: np.array([sequence_length(f) for f in data[s].features], dtype=np.int64)
                        for s in spec.eval_splits}
        lengths_from, sizes_from = "files" + tokenizer_note, "files"
    else:
        sizes, sizes_from = example_counts(spec)
        if sizes is None or spec.train_split not in sizes or any(s not in sizes for s in spec.eval_splits):
            warnings.append(f"{spec.full_name}: left out: no files under data.root, no official_sizes and no "
                            f"size_estimate in {spec.config_file}")
            return None
        limit_train, limit_eval = cfg.data.get("max_train_samples"), cfg.data.get("max_eval_samples")
        n_train = min(sizes[spec.train_split], int(limit_train or sizes[spec.train_split]))
        n_eval = {s: min(sizes[s], int(limit_eval or sizes[s])) for s in spec.eval_splits}
        entry, lengths_from = table_entry(table if table is not None else load_length_table(), spec.full_name,
                                          family or tokenizer_family(cfg.model))
        if entry is None:
            train_lengths = np.full(n_train, max_length, dtype=np.int64)
            eval_lengths = {s: np.full(n, max_length, dtype=np.int64) for s, n in n_eval.items()}
        else:
            train_lengths = drawn_lengths(entry["train"], n_train, max_length)
            eval_lengths = {s: drawn_lengths(entry.get("eval") or entry["train"], n, max_length)
                            for s, n in n_eval.items()}
    # runs that differ only in what does not change the batches (learning rate, method) share one plan
    plan_key = (lengths_fingerprint(train_lengths), rows, seed, device,
                json.dumps({k: v for k, v in OmegaConf.to_container(trainer_cfg, resolve=True).items()
                            if k not in NOT_IN_THE_BATCH_PLAN}, sort_keys=True, default=str))
    if plan_key not in _PLANS:
        trainer = loop_trainer(trainer_cfg, train_split if train_split is not None else train_lengths, spec, seed,
                               device)
        _PLANS[plan_key] = (*loop_workload(trainer, rows), trainer.total_steps, trainer.eval_every)
        del trainer
    train_rows, train_padded, examples, real, total_steps, eval_every = _PLANS[plan_key]
    eval_batches = [b for s in spec.eval_splits for b in eval_slices(eval_lengths[s], eval_batch_size, rows)]
    evaluations = math.ceil(total_steps / eval_every) + 1  # during training + the inference check
    # the check's "before" scores are recomputed when the best state's were not kept (mixed precision)
    check = eval_slices(eval_lengths[spec.eval_splits[0]], eval_batch_size, rows)
    return Workload(train_rows, train_padded, eval_batches, evaluations, lengths_from, examples, real, check,
                    str(trainer_cfg.precision) != "fp32", sizes_from)


@dataclass
class StepTimer:
    """Measured seconds per training step / eval forward of one (model, method) at (rows, length)."""
    model: Any
    device: Any
    precision: str
    vocab_size: int
    repeats: int
    train_times: dict[tuple[int, int], float] = field(default_factory=dict)
    eval_times: dict[tuple[int, int], float] = field(default_factory=dict)

    def _inputs(self, rows: int, length: int):
        import torch

        generator = torch.Generator().manual_seed(rows * 1000 + length)
        input_ids = torch.randint(5, self.vocab_size, (rows, length), generator=generator)
        batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        if self.model.uses_token_type_ids:
            batch["token_type_ids"] = torch.zeros_like(input_ids)
        return {k: v.to(self.device) for k, v in batch.items()}, torch.zeros(rows, dtype=torch.long, device=self.device)

    def _synchronize(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _time(self, step, warmup: int = 2) -> float:
        samples = []
        for index in range(warmup + self.repeats):
            self._synchronize()
            tick = time.perf_counter()
            step()
            self._synchronize()
            if index >= warmup:
                samples.append(time.perf_counter() - tick)
        return statistics.median(samples)

    def train(self, rows: int, length: int) -> float:
        import torch

        from aotp.trainer.loop import autocast_context
        from aotp.trainer.optim import build_optimizer

        key = (rows, length)
        if key not in self.train_times:
            model = self.model
            batch, labels = self._inputs(rows, length)
            optimizer = build_optimizer(model, 1e-7, 0.0)
            trainable = [p for p in model.parameters() if p.requires_grad]

            def step():
                model.train()
                with autocast_context(self.device, self.precision):
                    loss = model.loss(model(**batch), labels)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            self.train_times[key] = self._time(step)
        return self.train_times[key]

    def eval(self, rows: int, length: int) -> float:
        import torch

        from aotp.trainer.loop import autocast_context

        key = (rows, length)
        if key not in self.eval_times:
            batch, _ = self._inputs(rows, length)

            def step():
                self.model.eval()
                with torch.no_grad(), autocast_context(self.device, self.precision):
                    self.model(**batch)

            self.eval_times[key] = self._time(step)
        return self.eval_times[key]


def length_grid(max_length: int) -> list[int]:
    grid = [16, 32, 64, 128, 256, 384, 512]
    return sorted({min(L, max_length) for L in grid} | {max_length})


def interpolated(measure, rows: int, length: int, grid: list[int]) -> float:
    """Linear interpolation of ``measure(rows, L)`` between the grid lengths around ``length``."""
    if length <= grid[0]:
        return measure(rows, grid[0]) * length / grid[0] if length < grid[0] else measure(rows, grid[0])
    for low, high in zip(grid, grid[1:]):
        if length <= high:
            t_low, t_high = measure(rows, low), measure(rows, high)
            return t_low + (t_high - t_low) * (length - low) / (high - low)
    return measure(rows, grid[-1]) * length / grid[-1]


def workload_seconds(timer: StepTimer, workload: Workload, max_length: int) -> tuple[float, float]:
    """(train, eval) seconds: each distinct (rows, length) interpolated once, times how often it occurs."""
    grid = length_grid(max_length)
    shapes, counts = np.unique(np.stack([workload.train_rows, workload.train_lengths]), axis=1, return_counts=True) \
        if len(workload.train_rows) else (np.zeros((2, 0), dtype=np.int64), np.zeros(0, dtype=np.int64))
    train = sum(int(n) * interpolated(timer.train, int(rows), int(length), grid)
                for (rows, length), n in zip(shapes.T, counts))
    evaluation = sum(times * interpolated(timer.eval, rows, length, grid)
                     for (rows, length), times in workload.eval_passes())
    return train, evaluation


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.3g}"


def estimate(overrides: list[str], repeats: int = 5, compare: Optional[Path] = None,
             out: Optional[Path] = None) -> dict[str, Any]:
    import torch

    from aotp.assembly import build_model
    from aotp.methods import build_method
    from aotp.models.builders import build_backbone, build_for_timing
    from aotp.results.record import read_record, run_dir_name, run_id
    from aotp.config_checks import check_values
    from aotp.run import compose, to_container
    from aotp.tasks.spec import TaskSpec
    from aotp.trainer.loop import setup_device

    runs, plain = sweep_override_lists(overrides)
    print(f"{len(runs)} runs in the sweep ({' '.join(plain)})", flush=True)
    warnings: list[str] = []
    groups: dict[tuple[str, str], list[tuple[DictConfig, Any]]] = {}
    for run_overrides in runs:
        cfg = compose([*plain, *run_overrides])
        check_values(cfg, paths=False)  # a count or number that cannot parse: refused before any timing
        groups.setdefault((str(cfg.model.name), str(cfg.method.name)), []).append((cfg, TaskSpec.from_config(cfg.task)))

    rows_out: list[dict[str, Any]] = []
    per_run: list[dict[str, Any]] = []
    device_name = None
    for (model_name, method_name), members in groups.items():
        first = members[0][0]
        device = setup_device(first.trainer)  # threads, device and TF32 as the runs set them
        device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type} ({torch.get_num_threads()} threads)"
        tick = time.perf_counter()
        backbone, weights = build_for_timing(first.model)
        model = build_model(backbone, build_method(first.method), "classification", 2).to(device)
        build_seconds = time.perf_counter() - tick
        tokenizer, tokenizer_note = backbone.tokenizer, "the model's"
        if tokenizer is None:  # offline hub model: MiniLM's WordPiece stands in for the lengths
            tokenizer, tokenizer_note = build_backbone(OmegaConf.create({"name": "minilm", "source": "package"})).tokenizer, "MiniLM's (stand-in)"
        timer = StepTimer(model, device, str(first.trainer.precision), int(backbone.model.config.vocab_size), repeats)
        totals = {"runs": 0, "train": 0.0, "eval": 0.0, "build": 0.0}
        sources: dict[str, str] = {}
        for cfg, spec in members:
            workload = run_workload(cfg, spec, tokenizer, backbone.uses_token_type_ids, warnings, device=device.type)
            if workload is None:
                continue
            sources[spec.full_name] = workload.lengths_from
            train, evaluation = workload_seconds(timer, workload, int(cfg.data.get("max_length") or spec.max_length))
            totals["runs"] += 1
            totals["train"] += train
            totals["eval"] += evaluation
            totals["build"] += build_seconds
            config = to_container(cfg)
            per_run.append({"run_dir": run_dir_name(config, run_id(config)), "task": spec.full_name, "model": model_name,
                            "method": method_name, "seed": int(cfg.seed), "train_examples": workload.train_examples,
                            "estimated_seconds": train + evaluation + build_seconds,
                            "estimated_train_seconds": train, "estimated_eval_seconds": evaluation,
                            "padded_share": workload.padded_share, "lengths_from": workload.lengths_from,
                            "sizes_from": workload.sizes_from})
        total = totals["train"] + totals["eval"] + totals["build"]
        rows_out.append({"model": model_name, "method": method_name, "runs": totals["runs"], "weights": weights,
                         "tokenizer": tokenizer_note, "train_hours": totals["train"] / 3600,
                         "eval_hours": totals["eval"] / 3600, "build_hours": totals["build"] / 3600,
                         "total_hours": total / 3600, "lengths_from": dict(sorted(sources.items())),
                         "max_length_bound_tasks": sorted(t for t, v in sources.items() if v == "max_length bound")})
        print(f"  {model_name} + {method_name}: {totals['runs']} runs, {hours(total)} h "
              f"(train {hours(totals['train'])}, eval {hours(totals['eval'])}, load {hours(totals['build'])})", flush=True)
        del model, backbone, timer
        if device.type == "cuda":
            torch.cuda.empty_cache()

    result = {"overrides": overrides, "device": device_name, "repeats": repeats, "groups": rows_out,
              "total_hours": sum(r["total_hours"] for r in rows_out), "runs": per_run, "warnings": sorted(set(warnings))}
    if compare is not None:
        measured = []
        for run in per_run:
            record = read_record(Path(compare) / run["run_dir"] / "result.json")
            if record is not None and record.succeeded and record.wall_seconds is not None:
                measured.append((run["estimated_seconds"], float(record.wall_seconds)))
        if measured:
            ratios = [m / e for e, m in measured]
            result["comparison"] = {"records": len(measured), "estimated_hours": sum(e for e, _ in measured) / 3600,
                                    "measured_hours": sum(m for _, m in measured) / 3600,
                                    "median_measured_over_estimated": statistics.median(ratios),
                                    "p10_p90": [float(np.percentile(ratios, 10)), float(np.percentile(ratios, 90))]}
        else:
            result["comparison"] = {"records": 0}
    print(render_markdown(result))
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"Estimate: {out}")
    return result


# ---- stated-throughput mode: FLOPs / an assumed achieved rate ---------------------------------------------------

# Assumed rates, no measurement behind them: replace them with a results/gpu/ record's figures when one exists
# (throughput=FILE takes the same structure as JSON or YAML). ``peak_tflops``: NVIDIA's H100 SXM datasheet, dense
# (no sparsity): BF16/FP16 989.4, TF32 494.7, FP64/FP32 (CUDA cores) 66.9 TFLOP/s. ``rates``: the first rule that
# matches (keys model / precision / method_class / max_parameters, each optional) gives the model FLOPs
# utilisation (``mfu``, of the peak of the run's precision) or the achieved rate (``achieved_tflops``).
THROUGHPUT_PRESETS: dict[str, dict[str, Any]] = {
    "h100-sxm-assumed": {
        "device": "NVIDIA H100 SXM (80 GB), one GPU",
        "peak_tflops": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
        "peak_source": "NVIDIA H100 Tensor Core GPU datasheet, SXM5, dense (without sparsity)",
        "rates": [
            {"max_parameters": 250_000_000, "mfu": 0.20},  # base-size encoders: small matmuls, launch-bound
            {"mfu": 0.30},                                  # large and xlarge encoders
        ],
        "rates_source": ("assumed, not measured: a model FLOPs utilisation of 20% (backbones under 250M "
                         "parameters) and 30% (larger) of the peak of the run's precision, for encoder "
                         "fine-tuning at batch 4-32 x 40-512 tokens, dynamic padding, eager PyTorch"),
        "run_overhead_seconds": 30,  # per run: load the checkpoint, build the method, tokenise (cache), write
    },
}


def load_throughput(name_or_file: str) -> dict[str, Any]:
    """A preset of :data:`THROUGHPUT_PRESETS` by name, or a JSON/YAML file of the same structure."""
    if name_or_file in THROUGHPUT_PRESETS:
        return {"name": name_or_file, **THROUGHPUT_PRESETS[name_or_file]}
    path = Path(name_or_file)
    if not path.is_file():
        raise UsageError(f"throughput={name_or_file}: neither a preset ({', '.join(THROUGHPUT_PRESETS)}) nor a file")
    content = json.loads(path.read_text()) if path.suffix == ".json" else \
        OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(content, dict) or not content.get("rates") or not content.get("peak_tflops"):
        raise UsageError(f"throughput={path}: needs peak_tflops {{precision: TFLOP/s}} and rates [{{mfu: ...}}, ...] "
                         f"(see aotp.estimate.THROUGHPUT_PRESETS)")
    return {"name": str(path), **content}


def precision_key(trainer_cfg) -> str:
    """The peak a run's matmuls run at: bf16 / fp16 autocast, else TF32 when ``trainer.tf32`` (on by default,
    Ampere+), else fp32."""
    precision = str(trainer_cfg.precision)
    if precision in ("bf16", "fp16"):
        return precision
    return "tf32" if trainer_cfg.get("tf32", True) else "fp32"


def method_class(method_name: str) -> str:
    """``full``: every backbone weight gets a gradient (full fine-tuning); ``frozen``: the backbone's weights
    get none (the other methods), activation gradients still flow through every layer."""
    return "full" if method_name == "full_ft" else "frozen"


def achieved_flops(throughput: dict[str, Any], model: str, parameters: int, precision: str,
                   klass: str) -> tuple[float, str]:
    """(FLOP/s, how it was derived) for one (model, precision, method class) under ``throughput``."""
    for rule in throughput["rates"]:
        if rule.get("model") not in (None, model) or rule.get("precision") not in (None, precision) \
                or rule.get("method_class") not in (None, klass) \
                or (rule.get("max_parameters") is not None and parameters > float(rule["max_parameters"])):
            continue
        if rule.get("achieved_tflops") is not None:
            return float(rule["achieved_tflops"]) * 1e12, f"{float(rule['achieved_tflops']):g} TFLOP/s {precision}"
        peak = float(throughput["peak_tflops"][precision])
        return float(rule["mfu"]) * peak * 1e12, f"{float(rule['mfu']):.0%} of {peak:g} TFLOP/s {precision}"
    raise UsageError(f"throughput={throughput['name']}: no rate for model {model}, precision {precision}, "
                     f"method class {klass}; add a rule without conditions last")


def attention_flops(counts, rows: np.ndarray, lengths: np.ndarray) -> float:
    """Forward FLOPs of the token-token products that carry no weights, summed over batches of ``rows`` sequences
    of ``lengths`` positions: per layer ``4 B S^2 d`` (Q K^T and the probabilities times V, Korthikanti et al.
    2022, section 4.1), and for DeBERTa's disentangled attention ``4 B S R d`` (content-to-position and
    position-to-content scores against R relative positions; v1: R = min(R, 2 S))."""
    rows, lengths = rows.astype(np.float64), lengths.astype(np.float64)
    L, d = counts.num_layers, counts.hidden_size
    total = 4.0 * L * d * float(np.dot(rows, lengths * lengths))
    if counts.relative_positions:
        R = np.minimum(counts.relative_positions, 2 * lengths) if counts.family == "deberta" \
            else np.full_like(lengths, counts.relative_positions)
        total += 4.0 * L * d * float(np.dot(rows, lengths * R))
    return total


def run_flops(counts, klass: str, workload: Workload) -> dict[str, float]:
    """FLOPs of one run (multiply-add = 2 FLOPs), from its priced batches (Kaplan et al. 2020, "Scaling Laws for
    Neural Language Models", section 2.1: a forward pass costs 2 N per token plus the attention term; the
    backward pass twice the forward, half of it for the weight gradients, half for the activation gradients):

        train = k N T_pad + 3 A_train,   k = 6 (full fine-tuning) or 4 (frozen backbone: no weight gradients,
                                          activation gradients through every layer)
        eval  = 2 N T_eval + A_eval      (every evaluation pass, no backward)

    N = ``counts.dense`` (backbone parameters applied per token: without embedding tables and the dropped
    pooler, + the head), T_pad = the padded token positions of the training micro-batches (sum of rows x
    padded length), A = :func:`attention_flops` of the same batches (its backward is twice its forward for
    every method: both inputs of those products are activations). Left out: the methods' own parameters (LoRA's
    A/B and the adapters add 6 T_method per token, under 1% of 6 N for the paper's ranks and sizes; P-tuning
    v2's prefix adds its p positions to the keys; AoT adds one table lookup per token and a reparametrisation
    per distinct token of a batch), layer norms, softmax, GELU and the optimizer step (memory-bound, in the
    utilisation assumed)."""
    n = float(counts.dense)
    k = 6.0 if klass == "full" else 4.0
    tokens = float(workload.padded_tokens)
    train = k * n * tokens + 3.0 * attention_flops(counts, workload.train_rows, workload.train_lengths)

    def forward(batches: list[tuple[tuple[int, int], int]]) -> float:
        if not batches:
            return 0.0
        rows = np.array([r for (r, _), _ in batches], dtype=np.int64)
        lengths = np.array([length for (_, length), _ in batches], dtype=np.int64)
        times = np.array([t for _, t in batches], dtype=np.float64)
        return float(2.0 * n * np.dot(times, rows * lengths)
                     + sum(t * attention_flops(counts, np.array([r]), np.array([length]))
                           for (r, length), t in batches))

    evaluation = forward([(b, workload.evaluations) for b in workload.eval_batches])
    check = forward([(b, 1) for b in workload.check_batches])
    return {"train": train, "eval": evaluation, "check": check, "train_tokens": tokens}


def analytic_estimate(overrides: list[str], throughput: dict[str, Any],
                      also_precision: Optional[str] = "bf16", quiet: bool = False) -> dict[str, Any]:
    """GPU-hours of a sweep at a stated throughput (module docstring): per run FLOPs (:func:`run_flops`) over the
    loop's batches (:func:`run_workload`) / the achieved rate (:func:`achieved_flops`) + the per-run overhead.
    ``also_precision``: the same runs priced as if ``trainer.precision`` were this (what a bf16 sweep would take)."""
    from aotp.budget import count_parameters, expand_runs
    from aotp.models.builders import build_backbone
    from aotp.results.record import run_dir_name, run_id
    from aotp.run import to_container
    from aotp.tasks.spec import TaskSpec

    label = f"estimate (assumed throughput {throughput['name']}: {throughput.get('rates_source', 'from the file')})"
    warnings: list[str] = []
    overhead = float(throughput.get("run_overhead_seconds", 0))
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    per_run: list[dict[str, Any]] = []
    tasks: dict[str, dict[str, Any]] = {}
    tokenizers: dict[str, Any] = {}
    runs = expand_runs(overrides)
    for run_overrides, cfg in runs:
        spec = TaskSpec.from_config(cfg.task)
        tokenizer, uses_types, note = None, False, ""
        if cfg.data.get("root"):  # lengths from the files where they are: a package/tiny model's own tokenizer,
            name = str(cfg.model.name)  # MiniLM's WordPiece standing in for a hub model's (no weights loaded here)
            if name not in tokenizers:
                own = cfg.model.source != "hub"
                backbone = build_backbone(cfg.model if own else OmegaConf.create({"name": "minilm", "source": "package"}))
                tokenizers[name] = (backbone.tokenizer, backbone.uses_token_type_ids,
                                    "" if own else f" (MiniLM WordPiece standing in for {tokenizer_family(cfg.model)})")
            tokenizer, uses_types, note = tokenizers[name]
        workload = run_workload(cfg, spec, tokenizer, uses_types, warnings, tokenizer_note=note)
        if workload is None:
            continue
        counts = count_parameters(cfg, spec.head, spec.num_labels)
        klass = method_class(str(cfg.method.name))
        flops = run_flops(counts, klass, workload)
        precision = precision_key(cfg.trainer)
        rate, rate_text = achieved_flops(throughput, str(cfg.model.name), counts.dense, precision, klass)
        recheck = flops["check"] if workload.recheck else 0.0
        seconds = (flops["train"] + flops["eval"] + recheck) / rate + overhead
        alt_seconds = None
        if also_precision:
            alt_rate, _ = achieved_flops(throughput, str(cfg.model.name), counts.dense, also_precision, klass)
            alt_seconds = (flops["train"] + flops["eval"] + flops["check"]) / alt_rate + overhead
        config = to_container(cfg)
        run = {"run_dir": run_dir_name(config, run_id(config)), "task": spec.full_name, "model": str(cfg.model.name),
               "method": str(cfg.method.name), "seed": int(cfg.seed), "method_class": klass, "precision": precision,
               "train_examples": workload.train_examples, "micro_batches": int(len(workload.train_rows)),
               "train_tokens_padded": int(workload.padded_tokens), "train_tokens_real": int(workload.real_tokens),
               "padded_share": workload.padded_share, "lengths_from": workload.lengths_from,
               "sizes_from": workload.sizes_from, "train_flops": flops["train"],
               "eval_flops": flops["eval"] + recheck, "rate": rate_text, "estimated_seconds": seconds,
               f"estimated_seconds_{also_precision}": alt_seconds}
        per_run.append(run)
        group = groups.setdefault((run["model"], run["method"]), {
            "model": run["model"], "method": run["method"], "runs": 0, "train_tokens_padded": 0,
            "train_tokens_real": 0, "train_flops": 0.0, "eval_flops": 0.0, "hours": 0.0,
            f"hours_{also_precision}": 0.0, "rate": rate_text, "lengths_from": {}})
        group["runs"] += 1
        for key in ("train_tokens_padded", "train_tokens_real", "train_flops", "eval_flops"):
            group[key] += run[key]
        group["hours"] += seconds / 3600
        group[f"hours_{also_precision}"] += (alt_seconds or 0.0) / 3600
        group["lengths_from"][spec.full_name] = workload.lengths_from
        task = tasks.setdefault(spec.full_name, {"runs": 0, "hours": 0.0, f"hours_{also_precision}": 0.0,
                                                 "train_tokens_padded": 0, "train_tokens_real": 0,
                                                 "lengths_from": workload.lengths_from,
                                                 "sizes_from": workload.sizes_from})
        task["runs"] += 1
        task["hours"] += seconds / 3600
        task[f"hours_{also_precision}"] += (alt_seconds or 0.0) / 3600
        task["train_tokens_padded"] += run["train_tokens_padded"]
        task["train_tokens_real"] += run["train_tokens_real"]
    for group in groups.values():
        group["padded_share"] = 1.0 - group["train_tokens_real"] / group["train_tokens_padded"] \
            if group["train_tokens_padded"] else 0.0
    padded = sum(g["train_tokens_padded"] for g in groups.values())
    result = {"overrides": overrides, "mode": "stated throughput", "label": label, "throughput": throughput,
              "also_precision": also_precision, "runs_in_sweep": len(runs), "runs": per_run,
              "groups": list(groups.values()), "tasks": tasks, "hours": sum(g["hours"] for g in groups.values()),
              f"hours_{also_precision}": sum(g[f"hours_{also_precision}"] for g in groups.values()),
              "padded_share": 1.0 - sum(g["train_tokens_real"] for g in groups.values()) / padded if padded else 0.0,
              "warnings": sorted(set(warnings))}
    if not quiet:
        print(render_analytic(result))
    return result


def render_analytic(result: dict[str, Any]) -> str:
    alt = result["also_precision"]
    lines = [f"GPU-hours, {result['label']}", "",
             f"| model | method | runs | train tokens (padded) | padded share | train PFLOP | GPU-h estimate | "
             f"GPU-h estimate if {alt} | rate assumed |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for g in result["groups"]:
        lines.append(f"| {g['model']} | {g['method']} | {g['runs']} | {g['train_tokens_padded']:.3g} | "
                     f"{g['padded_share']:.3f} | {g['train_flops'] / 1e15:.4g} | {g['hours']:.3g} | "
                     f"{g[f'hours_{alt}']:.3g} | {g['rate']} |")
    lines.append(f"| **all** | | {sum(g['runs'] for g in result['groups'])} | | {result['padded_share']:.3f} | | "
                 f"**{result['hours']:.3g}** | **{result[f'hours_{alt}']:.3g}** | |")
    sources: dict[str, set[str]] = {}
    for g in result["groups"]:
        for task, source in g["lengths_from"].items():
            sources.setdefault(source, set()).add(task)
    lines += ["", "Lengths priced from: " + "; ".join(f"{source}: {', '.join(sorted(tasks))}"
                                                      for source, tasks in sorted(sources.items()))]
    lines += [f"Every figure is an {result['label']}; per run +{result['throughput'].get('run_overhead_seconds', 0)} s "
              f"overhead (assumed). Not a measurement: a results/gpu/ record replaces it."]
    lines += [f"warning: {w}" for w in result["warnings"]]
    return "\n".join(lines)


def render_markdown(result: dict[str, Any]) -> str:
    lines = [f"Estimated compute on {result['device']} (step times: median of {result['repeats']} measured steps)", "",
             "| model | method | runs | train h | eval h | load h | total h | lengths at max_length for |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for row in result["groups"]:
        lines.append(f"| {row['model']} | {row['method']} | {row['runs']} | {row['train_hours']:.3g} | "
                     f"{row['eval_hours']:.3g} | {row['build_hours']:.3g} | {row['total_hours']:.3g} | "
                     f"{', '.join(row['max_length_bound_tasks']) or '-'} |")
    lines.append(f"| **all** | | {sum(r['runs'] for r in result['groups'])} | | | | **{result['total_hours']:.3g}** | |")
    weights = {r["weights"] for r in result["groups"]} | {f"tokenizer: {r['tokenizer']}" for r in result["groups"]}
    lines += ["", "Backbones: " + "; ".join(sorted(weights))]
    comparison = result.get("comparison")
    if comparison and comparison.get("records"):
        low, high = comparison["p10_p90"]
        lines += [f"Against {comparison['records']} records: estimated {comparison['estimated_hours']:.3g} h, measured "
                  f"{comparison['measured_hours']:.3g} h; per run measured/estimated median "
                  f"{comparison['median_measured_over_estimated']:.2f} (p10 {low:.2f}, p90 {high:.2f})"]
    sources: dict[str, set[str]] = {}
    for row in result["groups"]:
        for task, source in (row.get("lengths_from") or {}).items():
            sources.setdefault(source, set()).add(task)
    if sources:
        lines += ["Lengths priced from: " + "; ".join(f"{source}: {', '.join(sorted(tasks))}"
                                                      for source, tasks in sorted(sources.items()))]
    lines += [f"warning: {w}" for w in result["warnings"]]
    return "\n".join(lines)


@guarded
def main(argv: Optional[list[str]] = None) -> int:
    """Refusals (bad flags, an unknown experiment or group choice, an override Hydra cannot compose) are one
    line on stderr, exit 2."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from types import SimpleNamespace

    from aotp.config_checks import check_group_choices

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # as aotp-estimate (console script) as well
    # The estimate's own options; every other key=value is a Hydra override of the sweep (experiment=, model=, ...).
    parser = KeyValueParser("aotp-estimate", __doc__.split("\n\n")[0], [
        Option("repeats", "timed steps per (rows, length), after 2 warm-up steps", 5, int, minimum=1),
        Option("compare", "records folder: set the estimates beside the measured wall times (and, with budget=true "
               "too, the budget's GPU peak beside the records' measured CUDA memory)", None, Path,
               nullable=True, metavar="DIR"),
        Option("output", "write the estimate (per run and per group) as JSON", None, Path, nullable=True,
               metavar="FILE", flags=("--out",)),
        Option("budget", "only the disk and memory budget (no timing)", False, bool),
        Option("check_disk", "exit 3 when the disk of this results folder cannot hold the sweep (its runs not yet "
               "done)", None, Path, nullable=True, metavar="DIR"),
        Option("jobs", "runs training at once (checkpoints at peak)", 1, int, minimum=1),
        Option("throughput", "no timing: GPU-hours from FLOPs at an assumed throughput, a preset ("
               + ", ".join(THROUGHPUT_PRESETS) + ") or a JSON/YAML file of the same structure", None, str,
               nullable=True, metavar="PRESET|FILE"),
    ], examples=[line.strip() for line in __doc__.split("\n\n")[1].splitlines()],
        passthrough="experiment=<name> [Hydra overrides key=value ...]")
    values, overrides = parser.parse(sys.argv[1:] if argv is None else argv)
    args = SimpleNamespace(**values, out=values["output"])
    if not any(o.split("=", 1)[0] == "experiment" for o in overrides):
        raise UsageError(f"aotp-estimate: expected experiment=<name> and Hydra overrides key=value; got {overrides}. "
                         f"{parser.usage()}")
    if args.compare is not None and not args.compare.is_dir():
        raise UsageError(f"compare={args.compare}: not a folder of run records")
    check_group_choices(overrides)
    from aotp.budget import check_disk, render_budget, sweep_budget

    budget = sweep_budget(overrides, results=args.check_disk, jobs=args.jobs, records=args.compare)
    print(render_budget(budget), flush=True)
    if args.check_disk is not None:
        refusal = check_disk(budget, args.check_disk)
        if refusal is not None:
            print(refusal, file=sys.stderr)
            return 3
    if args.budget:
        if args.out is not None:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(budget, indent=2) + "\n")
            print(f"Budget: {args.out}")
        return 0
    print()
    try:
        if args.throughput is not None:
            result = analytic_estimate(overrides, load_throughput(args.throughput))
        else:
            result = estimate(overrides, repeats=args.repeats, compare=args.compare, out=None)
    except (HydraException, OmegaConfBaseException) as error:  # an override the config cannot take
        raise UsageError(str(error)) from None
    if args.out is not None:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({**result, "budget": budget}, indent=2) + "\n")
        print(f"Estimate: {args.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
