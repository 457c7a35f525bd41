"""The training loop: setup / train / evaluate / save, on one screen, with no hidden callbacks.

* Data order is a seeded permutation per epoch, so a resumed run sees exactly the batches an
  uninterrupted one would; checkpoints also carry optimizer, scheduler and RNG states, which makes
  a resumed CPU run bitwise identical to an uninterrupted one.
* Evaluation on the dev split(s) every ``trainer.eval_every`` optimizer steps (0: once per epoch);
  the best trainable state by the task's main metric (sign from ``higher_is_better``; the rule is
  :func:`aotp.metrics.is_improvement`: a NaN main never improves, any finite one improves on none yet)
  is kept and restored at the end; early stopping after ``trainer.patience`` evaluations without
  improvement.
* Precision (``trainer.precision``): fp32, or autocast to bf16/fp16 over fp32 weights (the optimizer
  updates fp32 master weights; the loss is taken in fp32). fp16 adds a loss scaler: the scaled loss is
  backpropagated, the gradients are unscaled before clipping, and a step whose gradients hold an
  inf/nan is skipped (weights and learning-rate schedule unchanged; counted in ``skipped_steps``) while
  the scale backs off. Dev evaluations during training run under the same autocast.
* The loop does not wait on the host (issue 17). The loss stays a device tensor: the losses of log steps
  are read back together (one host-device sync on a GPU) every ``LOSS_READ_EVERY`` logged steps and
  before each evaluation or checkpoint; each logged value is the same number as before (the mean loss of
  the step's last logical batch), so a CPU run logs exactly what it logged. Batches are
  collated ahead by a ``torch.utils.data.DataLoader`` over the epoch's batch list (``trainer.num_workers``
  processes; null = 0 on CPU, where a worker only competes with the training threads for the cores,
  and 2 on CUDA), into pinned memory on CUDA (``trainer.pin_memory``), copied with ``non_blocking``.
  The batch list is still a function of (seed, epoch) alone, so resumes stay exact.
* ``trainer.group_by_length`` (the Hugging Face Trainer's megabatch idea): the epoch's seeded permutation
  is cut into megabatches of 50 x batch size, each sorted by length (longest first), cut into batches,
  and the batches of the epoch are shuffled (seeded): batches hold similar lengths, so little padding
  is computed, while their order stays random. It changes which examples share a batch, hence results
  (within seed noise: results/bench/README_train.md); legacy runs had it off.
* Micro-batches (``trainer.micro_batch_size``, issue 26). An optimizer step's examples are always the
  ``gradient_accumulation_steps`` consecutive logical batches of ``batch_size`` of the epoch's batch list
  (the last step of an epoch may hold fewer), so data order and effective batch never depend on the device.
  How many of them go through one forward/backward is the micro-batch: null = one logical batch per
  forward (every run so far, bitwise); an integer m = the step's examples, in order, cut into slices of m;
  ``auto`` = the largest that fits, searched as Hugging Face's ``auto_find_batch_size`` (accelerate's
  ``find_executable_batch_size``) does: start at the step's examples (batch_size x accumulation), and on
  ``torch.cuda.OutOfMemoryError`` halve it and redo the step (gradients zeroed, the step's RNG state
  restored), for the rest of the run; on a device other than CUDA ``auto`` keeps the logical batches (no
  OOM to search with). Whatever the split, example i of logical batch b weighs
  ``1 / (len(b) x gradient_accumulation_steps)`` in the step's loss, which is what today's
  ``mean-loss(b) / accumulation`` gives: a micro-batch's loss is ``sum over the pieces p of logical batches
  it holds of (|p| / len(b)) mean-loss(p) / accumulation``. The step's gradient is therefore the same up to
  float rounding (and padding, masked out of attention), which is why the option is not in the run id
  (tests/unit/test_micro_batch.py: 4 x 8 accumulation = one forward of 32 to 1e-5). With dropout > 0 a
  different split draws other masks for the same examples: statistically, not bitwise, the same run (as
  another device or thread count). The chosen split is :attr:`Fitted.micro_batch`.
* AdamW is the fused kernel where the device has one (``trainer.fused_optimizer``; cpu and cuda in
  torch >= 2.4): the same update up to float rounding, one kernel for all parameters.
* ``trainer.compile``: ``torch.compile`` of the model for the training forward (off by default; the
  first steps and every new sequence length pay compilation: 198 s for 5 steps of a tiny model on one
  CPU thread). Compiled dropout draws its masks from inductor's own generator, so with dropout > 0 a
  compiled run is statistically, not bitwise, the eager one (and its resumes are not bitwise either).
"""

from __future__ import annotations

import gc
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from aotp.metrics import is_improvement, main_metric_higher_is_better
from aotp.methods.base import Method
from aotp.models.task_model import TaskModel
from aotp.tasks.data import Collator, SplitData, TaskData, task_collator
from aotp.tasks.formatting import FORMATTERS
from aotp.tasks.scoring import score_splits
from aotp.trainer.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from aotp.trainer.loggers import Loggers
from aotp.trainer.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# Logged train losses are kept on the device and read back together, at the latest every this many logged
# steps (and before every evaluation and checkpoint): with log_every=1, one device sync per 50 steps.
LOSS_READ_EVERY = 50


def select_device(name: str = "auto") -> torch.device:
    """``name``, or for ``auto`` cuda > mps > cpu. A fall back to the CPU while ``nvidia-smi`` lists GPUs is
    said loudly once (:func:`aotp.accelerator.warn_cpu_fallback`): torch cannot use them."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    from aotp.accelerator import warn_cpu_fallback

    warn_cpu_fallback()
    return torch.device("cpu")


def setup_device(trainer_cfg, device: Optional[str] = None) -> torch.device:
    """``trainer.threads`` (CPU threads), the device (``device``, by default ``trainer.device``; auto: cuda >
    mps > cpu) and, on CUDA, TF32 matmuls unless ``trainer.tf32=false``: what every process that builds a
    run's model sets first (``trainer_cfg``: the ``trainer`` group, a DictConfig or a record's dict)."""
    if trainer_cfg.get("threads"):
        torch.set_num_threads(int(trainer_cfg["threads"]))
    device = select_device(device or trainer_cfg.get("device") or "auto")
    if device.type == "cuda" and trainer_cfg.get("tf32", True):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def log_interval(log_every: Optional[int], total_steps: int) -> int:
    """Train loss every ``log_every`` steps; null: every step up to 1,000 steps, else about 1,000 points per run."""
    return int(log_every or max(1, math.ceil(total_steps / 1000)))


def autocast_context(device: torch.device, precision: str):
    dtype = PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timings at evaluations/checkpoints); nothing to wait for on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def default_num_workers(device: torch.device) -> int:
    """``trainer.num_workers: null``: 0 on CPU (a collating process only takes cores from the training
    threads; collation is ~0.2% of a CPU step: results/bench/README_train.md), 2 on an accelerator."""
    return 0 if device.type == "cpu" else 2


def sequence_length(feature: dict[str, Any]) -> int:
    """Tokens of an example as the collator pads it (multiple choice: its longest choice)."""
    ids = feature["input_ids"]
    return max(len(choice) for choice in ids) if ids and isinstance(ids[0], list) else len(ids)


def length_grouped_batches(order: list[int], lengths: list[int], batch_size: int, generator: torch.Generator,
                           megabatch_factor: int = 50) -> list[list[int]]:
    """Batches of similar lengths in random order (``trainer.group_by_length``).

    ``order`` (a seeded permutation) is cut into megabatches of ``megabatch_factor x batch_size``
    examples; each is sorted by length, longest first (a stable sort: ties keep the permutation's
    order), and cut into batches; then the batches are shuffled with ``generator``. Every example is
    in exactly one batch, and there are ceil(N / batch_size) batches as without grouping (only the last
    megabatch's last batch may be smaller)."""
    mega = megabatch_factor * batch_size
    batches = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start:start + mega], key=lambda i: -lengths[i])
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def padded_token_share(batches: list[list[int]], lengths: list[int]) -> float:
    """Share of the collated token positions that are padding (the compute spent on nothing)."""
    real = sum(lengths[i] for batch in batches for i in batch)
    padded = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)
    return 1.0 - real / padded if padded else 0.0


MICRO_BATCH_SOURCES = ("batch_size", "config", "auto")  # Fitted.micro_batch["micro_batch_source"]


@dataclass(frozen=True)
class MicroBatch:
    """One forward/backward of an optimizer step: ``indices``, the training examples it holds (in the step's
    order), and ``parts``, one ``(rows, batch_rows, last)`` per logical batch it holds a piece of: the rows of
    that piece, the logical batch's size, and whether it is the step's last logical batch (whose mean loss is
    logged)."""

    indices: list[int]
    parts: tuple[tuple[int, int, bool], ...]


def split_step(step: Sequence[Sequence[int]], size: Optional[int]) -> list[MicroBatch]:
    """The micro-batches of one optimizer step whose logical batches are ``step``: the logical batches
    themselves when ``size`` is None (one forward each, as every run before issue 26); otherwise the step's
    examples, in order, cut into slices of ``size``, so a slice may hold pieces of several logical batches and
    a logical batch may span several slices. Every example is in exactly one micro-batch."""
    last = len(step) - 1
    if size is None:
        return [MicroBatch(list(batch), ((len(batch), len(batch), b == last),)) for b, batch in enumerate(step)]
    if int(size) < 1:
        raise ValueError(f"micro-batch size must be >= 1, got {size}")
    flat = [(index, b) for b, batch in enumerate(step) for index in batch]
    micro = []
    for start in range(0, len(flat), int(size)):
        chunk = flat[start:start + int(size)]
        pieces: list[list[int]] = []  # [logical batch, rows] for each run of one logical batch in the slice
        for _, b in chunk:
            if pieces and pieces[-1][0] == b:
                pieces[-1][1] += 1
            else:
                pieces.append([b, 1])
        micro.append(MicroBatch([index for index, _ in chunk],
                                tuple((rows, len(step[b]), b == last) for b, rows in pieces)))
    return micro


def micro_batch_loss(model: TaskModel, logits: torch.Tensor, labels: torch.Tensor, parts: Sequence[tuple[int, int, bool]],
                     accumulation: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(the loss to backpropagate, the logged share or None) of one micro-batch.

    ``loss = sum_p (|p| / len(b_p)) * mean-loss(p) / accumulation`` over the pieces p of logical batches
    b_p it holds (``parts``, :class:`MicroBatch`): each example weighs ``1 / (len(its logical batch) x
    accumulation)``, the weight ``mean-loss(b) / accumulation`` gives it when b runs alone, for any
    mean-reduced loss (``model.loss`` is used as it is). A micro-batch that is exactly one logical batch is
    ``model.loss(logits, labels) / accumulation``, bitwise the loop before micro-batches. The logged share is
    the piece of the step's last logical batch, ``/ accumulation`` (summed over the step's micro-batches and
    multiplied back by ``accumulation`` when read: that batch's mean loss, the value logged so far); None
    when this micro-batch holds none of it."""
    if len(parts) == 1:
        rows, batch_rows, last = parts[0]
        piece = model.loss(logits, labels)
        loss = (piece if rows == batch_rows else piece * (rows / batch_rows)) / accumulation
        return loss, loss.detach() if last else None
    pieces, logged, start = [], None, 0
    for rows, batch_rows, last in parts:
        piece = model.loss(logits[start:start + rows], labels[start:start + rows])
        if rows != batch_rows:
            piece = piece * (rows / batch_rows)
        if last:
            logged = piece.detach() / accumulation
        pieces.append(piece)
        start += rows
    return sum(pieces[1:], pieces[0]) / accumulation, logged


def auto_micro_batch_start(device: torch.device, step_examples: int) -> Optional[int]:
    """Where ``trainer.micro_batch_size=auto`` starts its search: the step's examples on CUDA (halved on
    each ``torch.cuda.OutOfMemoryError``); None elsewhere (keep the logical batches: a CPU or MPS run has no
    CUDA out-of-memory error to search with, and more rows per forward buys a CPU nothing)."""
    return step_examples if device.type == "cuda" else None


def resolve_micro_batch(option: Any, batch_size: int, accumulation: int, device: torch.device) -> tuple[Optional[int], str]:
    """(micro-batch size or None = one logical batch per forward, its source) for ``trainer.micro_batch_size``
    (validated by :mod:`aotp.config_checks`): null -> (None, "batch_size"); an integer m -> (min(m, step's
    examples), "config"); ``auto`` -> (:func:`auto_micro_batch_start`, "auto"), or (None, "batch_size") where
    that is None."""
    step_examples = batch_size * accumulation
    if option is None:
        return None, "batch_size"
    if str(option) == "auto":
        start = auto_micro_batch_start(device, step_examples)
        return (None, "batch_size") if start is None else (int(start), "auto")
    return min(int(option), step_examples), "config"


def optimizer_step(optimizer, scheduler, scaler, parameters, max_grad_norm: Optional[float]) -> bool:
    """One optimizer step after the micro-batches' backward passes: unscale (fp16) and clip the
    gradients, step, update the loss scale, advance the schedule, zero the gradients. Returns False
    when fp16's scaler skipped the step (inf/nan gradients): weights and schedule unchanged. Shared by
    :meth:`Trainer.fit` and the packed loop (:func:`aotp.trainer.packed.fit_pack`). Without fp16 the
    scaler is a no-op and this reads nothing back from the device."""
    if max_grad_norm:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, float(max_grad_norm))
    scale_before = scaler.get_scale()  # 1.0 without a device read when the scaler is off
    scaler.step(optimizer)  # skipped when the (unscaled) gradients hold an inf/nan
    scaler.update()
    stepped = not scaler.get_scale() < scale_before  # the scaler backs off only after a skipped step
    if stepped:  # the schedule waits for a step that updated the weights
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return stepped


def move(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k != "labels"}


@torch.no_grad()
def predict_scores(model: TaskModel, split: SplitData, collator: Collator, batch_size: int, device: torch.device,
                   precision: str = "fp32", progress: Optional[str] = None) -> np.ndarray:
    """Model scores for every example of a split, in order: (N, k), (N,) or (N, C). ``progress``: the label of
    a progress bar over the batches (as training's, removed when done); None = no bar."""
    model.eval()
    outputs = []
    starts = range(0, len(split), batch_size)
    for start in tqdm(starts, desc=progress, leave=False, dynamic_ncols=True, disable=not progress):
        batch = move(collator(split.features[start:start + batch_size]), device)
        with autocast_context(device, precision):
            outputs.append(model(**model_inputs(batch)).float().cpu())
    return torch.cat(outputs).numpy()


def evaluate(model: TaskModel, data: TaskData, collator: Collator, batch_size: int, device: torch.device,
             precision: str = "fp32", progress: Optional[str] = None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Metrics over every eval split (:func:`aotp.tasks.scoring.score_splits`: keys prefixed ``<split>/`` when
    there are several, + ``main``) and the scores per split; ``progress``: label of a per-split progress bar."""
    spec = data.spec
    formatter = FORMATTERS.get(spec.formatter)
    all_scores, formatted = {}, {}
    for split_name in spec.eval_splits:
        label = f"{progress} {split_name}" if progress else None
        scores = predict_scores(model, data[split_name], collator, batch_size, device, precision, progress=label)
        all_scores[split_name] = scores
        formatted[split_name] = formatter.predictions(spec, data[split_name].examples, scores)
    return score_splits(spec, formatted), all_scores


@dataclass
class Fitted:
    """What :meth:`Trainer.fit` hands back: the loop ``state`` (best step and main, history, timings, skipped
    steps; the restored model holds the best state), the planned ``total_steps``, and ``best_scores``: the
    eval splits' scores of the best state when they were computed in fp32 in this process (the runner's
    inference check then needs no extra pass); None after a resume to a best state evaluated earlier or
    under mixed precision (recompute them). ``micro_batch``: how the steps were split into forwards
    (``trainer.micro_batch_size``): ``micro_batch_size`` (examples per forward; the logical batch size when
    unsplit), ``micro_batch_source`` ("batch_size": one logical batch per forward; "config": the option's
    integer; "auto": the size the CUDA out-of-memory search settled on) and ``accumulation_steps``
    (micro-batches per full optimizer step); None where no loop said (an older caller)."""

    state: dict[str, Any]
    total_steps: int
    best_scores: Optional[dict[str, np.ndarray]] = None
    micro_batch: Optional[dict[str, Any]] = None


class Trainer:
    def __init__(self, cfg, model: TaskModel, method: Method, data: TaskData, run_dir: Path, loggers: Loggers,
                 device: torch.device, seed: int, collator: Optional[Collator] = None):
        self.cfg = cfg  # the ``trainer`` group
        self.model = model
        self.method = method
        self.data = data
        self.spec = data.spec
        self.run_dir = Path(run_dir)
        self.loggers = loggers
        self.device = device
        self.seed = seed
        # the run's collator (aotp.assembly builds it); the task's own when none is given
        self.collator = collator or task_collator(self.spec, model.backbone.config.pad_token_id)
        self.train_split = data[self.spec.train_split]
        self.batch_size = int(cfg.batch_size)
        self.accumulation = int(cfg.gradient_accumulation_steps)
        batches_per_epoch = math.ceil(len(self.train_split) / self.batch_size)
        self.steps_per_epoch = math.ceil(batches_per_epoch / self.accumulation)
        self.total_steps = int(cfg.max_steps) if cfg.get("max_steps") else int(cfg.epochs) * self.steps_per_epoch
        self.eval_every = int(cfg.eval_every) if cfg.get("eval_every") else self.steps_per_epoch
        self.checkpoint_every = int(cfg.get("checkpoint_every") or 0)
        self.log_every = log_interval(cfg.get("log_every"), self.total_steps)
        self.checkpoint_dir = self.run_dir / "checkpoint"
        self.higher_is_better = main_metric_higher_is_better(self.spec.main_metric)
        self._best_scores: Optional[dict[str, np.ndarray]] = None  # set by an evaluation in this process (fp32)
        self.group_by_length = bool(cfg.get("group_by_length", False))
        self.lengths = [sequence_length(f) for f in self.train_split.features]
        workers = cfg.get("num_workers")
        self.num_workers = default_num_workers(device) if workers is None else int(workers)
        pin = cfg.get("pin_memory")
        self.pin_memory = device.type == "cuda" if pin is None else bool(pin) and device.type == "cuda"
        # examples per forward/backward (None: one logical batch each); auto may halve it during fit
        self.micro_batch_size, self.micro_batch_source = resolve_micro_batch(
            cfg.get("micro_batch_size"), self.batch_size, self.accumulation, device)
        if cfg.get("micro_batch_size") == "auto" and self.micro_batch_source != "auto":
            log.info("trainer.micro_batch_size=auto on %s: no out-of-memory search off CUDA, one logical batch of %d "
                     "per forward", device.type, self.batch_size)

    def epoch_order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(len(self.train_split), generator=generator).tolist()

    def fitted(self, state: dict[str, Any]) -> Fitted:
        """The :class:`Fitted` of a finished loop ``state`` (``fit``'s, or a packed run's)."""
        return Fitted(state, self.total_steps, self._best_scores, micro_batch=self.micro_batch())

    def micro_batch(self) -> dict[str, Any]:
        """The split of this run's steps into forwards (:attr:`Fitted.micro_batch`): after ``fit``, the size
        ``auto`` settled on."""
        step_examples = self.batch_size * self.accumulation
        if self.micro_batch_size is None:
            return {"micro_batch_size": self.batch_size, "micro_batch_source": self.micro_batch_source,
                    "accumulation_steps": self.accumulation}
        return {"micro_batch_size": self.micro_batch_size, "micro_batch_source": self.micro_batch_source,
                "accumulation_steps": math.ceil(step_examples / self.micro_batch_size)}

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The epoch's batches of example indices: a function of (seed, epoch) only, so a resumed run
        sees the batches an uninterrupted one sees. Without length grouping: consecutive slices of the
        seeded permutation (as every run so far); with it: :func:`length_grouped_batches`."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.train_split), generator=generator).tolist()  # = epoch_order(epoch)
        if self.group_by_length:  # the batch shuffle continues the permutation's generator
            return length_grouped_batches(order, self.lengths, self.batch_size, generator)
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def batch_loader(self, batches: list[list[int]]) -> torch.utils.data.DataLoader:
        """Collated batches in the given order, prepared ahead by ``num_workers`` processes (0: in this
        process, when asked for). Its own generator: creating an iterator draws a base seed, which must not
        come from the global generator (that one drives dropout, and a resumed run restores it)."""
        extra = {"prefetch_factor": 4, "persistent_workers": False} if self.num_workers else {}
        return torch.utils.data.DataLoader(self.train_split.features, batch_sampler=batches, collate_fn=self.collator,
                                           num_workers=self.num_workers, pin_memory=self.pin_memory,
                                           generator=torch.Generator().manual_seed(0), **extra)

    def build_optimization(self, method_lr: float, weight_decay: float, head_lr: Optional[float] = None):
        """(optimizer, scheduler, scaler) of a run from the trainer options: AdamW (fused where the device
        has it unless ``trainer.fused_optimizer=false``), linear warmup/decay, fp16's loss scaler."""
        cfg = self.cfg
        optimizer = build_optimizer(self.model, method_lr, weight_decay, betas=tuple(cfg.get("adam_betas", (0.9, 0.999))),
                                    eps=float(cfg.get("adam_eps", 1e-8)), head_lr=head_lr,
                                    fused=cfg.get("fused_optimizer", True))
        scheduler = build_scheduler(optimizer, self.total_steps, float(cfg.warmup_ratio), cfg.get("warmup_steps"))
        scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        return optimizer, scheduler, scaler

    def fit(self, method_lr: float, weight_decay: float, head_lr: Optional[float] = None) -> Fitted:
        cfg, model, device = self.cfg, self.model, self.device
        model.to(device)
        optimizer, scheduler, scaler = self.build_optimization(method_lr, weight_decay, head_lr)
        state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best_main": None, "best_step": None, "best_metrics": None,
                 "bad_evals": 0, "history": [], "train_seconds": 0.0, "eval_seconds": 0.0, "train_examples": 0,
                 "stopped_early": False, "skipped_steps": 0}
        best_state: Optional[dict[str, torch.Tensor]] = None
        resumed = load_checkpoint(self.checkpoint_dir)
        if resumed is not None:
            self.method.load_trainable_state_dict(model, {k: v.to(device) for k, v in resumed["trainable"].items()})
            optimizer.load_state_dict(resumed["optimizer"])
            scheduler.load_state_dict(resumed["scheduler"])
            scaler.load_state_dict(resumed["scaler"])
            state.update(resumed["loop"])
            best_state = resumed["best"]
            set_rng_state(resumed["rng"])
            log.info("resumed from %s at step %d", self.checkpoint_dir, state["step"])
            print(f"Resuming from checkpoint at step {state['step']}/{self.total_steps}", flush=True)
        self.loggers.start_at(state["step"])  # events of an earlier attempt after this step are logged again below

        def checkpoint() -> None:
            save_checkpoint(self.checkpoint_dir, self.method.trainable_state_dict(model), best_state,
                            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                             "scaler": scaler.state_dict(), "loop": dict(state)})

        pending: list[tuple[int, torch.Tensor, float, int]] = []  # logged steps whose loss is not read yet

        def flush_losses() -> Optional[float]:
            """Log the pending steps' losses: one device read for all of them (``.tolist()`` of the
            stacked float32 losses gives the floats ``.item()`` gives, one by one). Returns the last."""
            if not pending:
                return None
            values = torch.stack([loss for _, loss, _, _ in pending]).tolist()
            for (step, _, lr, epoch), value in zip(pending, values):
                self.loggers.log("train", step, {"loss": value * self.accumulation, "lr": lr, "epoch": epoch})
            pending.clear()
            return values[-1] * self.accumulation

        # torch.compile: the training forward only (evaluation and the inference check run the model as built)
        forward = torch.compile(model) if cfg.get("compile", False) else model
        progress = tqdm(total=self.total_steps, initial=state["step"], desc=f"train {self.spec.full_name}",
                        disable=not cfg.get("progress", True), dynamic_ncols=True)
        trainable = [p for p in model.parameters() if p.requires_grad]

        def accumulate(micro_batches: list[MicroBatch], loader) -> Optional[torch.Tensor]:
            """Forward/backward of one step's micro-batches (the next ones of ``loader``); returns the logged
            share of the step's loss (:func:`micro_batch_loss`), still on the device."""
            logged = None
            for micro_batch in micro_batches:
                model.train()
                batch = move(next(loader), device)
                with autocast_context(device, cfg.precision):
                    logits = forward(**model_inputs(batch))
                loss, share = micro_batch_loss(model, logits, batch["labels"], micro_batch.parts, self.accumulation)
                scaler.scale(loss).backward()
                if share is not None:
                    logged = share if logged is None else logged + share
            return logged

        done = state["step"] >= self.total_steps or state["stopped_early"]
        while not done:
            batches = self.epoch_batches(state["epoch"])
            # the epoch's optimizer steps left: consecutive groups of `accumulation` logical batches counted from
            # the resume point (always a step boundary), the epoch's last group possibly shorter
            starts = list(range(state["batch_in_epoch"], len(batches), self.accumulation))
            tick = time.perf_counter()
            examples_since = 0
            position, loader, plan, planned_from = 0, None, [], 0
            while position < len(starts):
                if loader is None:  # the micro-batches of the epoch's remaining steps, collated ahead
                    plan = [split_step(batches[start:start + self.accumulation], self.micro_batch_size)
                            for start in starts[position:]]
                    planned_from = position  # plan[i] is step starts[planned_from + i] (indexed, not popped)
                    loader = iter(self.batch_loader([m.indices for step in plan for m in step]))
                step_batches = batches[starts[position]:starts[position] + self.accumulation]
                # auto: an out-of-memory step is redone at half the size from the same RNG state and zero gradients
                searching = self.micro_batch_source == "auto" and self.micro_batch_size > 1
                rng = (torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None) \
                    if searching else None
                out_of_memory = False
                try:
                    logged = accumulate(plan[position - planned_from], loader)
                except torch.cuda.OutOfMemoryError:
                    if not searching:
                        raise
                    out_of_memory = True  # recover outside the handler, once its frames (and activations) are gone
                if out_of_memory:
                    self._halve_micro_batch(optimizer, rng)
                    loader = None
                    continue
                position += 1
                examples_since += sum(len(b) for b in step_batches)
                if not optimizer_step(optimizer, scheduler, scaler, trainable, cfg.get("max_grad_norm")):
                    state["skipped_steps"] += 1
                state["step"] += 1
                state["batch_in_epoch"] = starts[position - 1] + len(step_batches)
                finished = state["step"] >= self.total_steps
                logs = state["step"] % self.log_every == 0
                evaluates = state["step"] % self.eval_every == 0 or finished
                if logs:  # the loss stays on the device until it is read with the others pending
                    pending.append((state["step"], logged, scheduler.get_last_lr()[0], state["epoch"]))
                checkpoints = evaluates or (self.checkpoint_every and state["step"] % self.checkpoint_every == 0)
                # read before an evaluation or checkpoint (so metrics.jsonl has every step up to it) and every
                # LOSS_READ_EVERY logged steps; the wait for the device belongs to training time
                last_loss = flush_losses() if checkpoints or len(pending) >= LOSS_READ_EVERY else None
                if evaluates:
                    synchronize(device)  # the queued steps belong to training time, not evaluation time
                elapsed = time.perf_counter() - tick
                state["train_seconds"] += elapsed
                state["train_examples"] += examples_since
                if last_loss is not None:
                    progress.set_postfix(loss=f"{last_loss:.4f}", ex_s=f"{examples_since / max(elapsed, 1e-9):.1f}",
                                         refresh=False)
                progress.update(1)
                if evaluates:
                    best_state = self._evaluate_and_select(state, best_state)
                if checkpoints:
                    checkpoint()
                tick = time.perf_counter()
                examples_since = 0
                if finished or state["stopped_early"]:
                    done = True
                    break
            else:
                state["epoch"] += 1
                state["batch_in_epoch"] = 0
            del loader  # ends its worker processes (if any) before an epoch's new ones start
        progress.close()
        if best_state is not None:
            self.method.load_trainable_state_dict(model, {k: v.to(device) for k, v in best_state.items()})
        return self.fitted(state)

    def _halve_micro_batch(self, optimizer, rng) -> None:
        """After a step ran out of CUDA memory under ``micro_batch_size=auto``: drop the step's partial
        gradients and the failed forward's memory, restore the RNG state the step started from (so the redone
        step draws what it would have drawn), and halve the micro-batch for the rest of the run."""
        failed = self.micro_batch_size
        optimizer.zero_grad(set_to_none=True)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        cpu_state, cuda_state = rng
        torch.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state, self.device)
        self.micro_batch_size = failed // 2
        message = (f"micro-batch of {failed} examples ran out of GPU memory; redoing the step with "
                   f"{self.micro_batch_size} (trainer.micro_batch_size=auto)")
        log.warning(message)
        tqdm.write(message)

    def _evaluate_and_select(self, state: dict[str, Any], best_state):
        tick = time.perf_counter()
        metrics, scores = evaluate(self.model, self.data, self.collator, int(self.cfg.eval_batch_size), self.device,
                                   self.cfg.precision, progress="evaluate" if self.cfg.get("progress", True) else None)
        state["eval_seconds"] += time.perf_counter() - tick
        state["history"].append({"step": state["step"], **metrics})
        self.loggers.log("eval", state["step"], metrics)
        tqdm.write(f"step {state['step']}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        if is_improvement(metrics["main"], state["best_main"], self.higher_is_better):  # a NaN main never is
            state.update(best_main=metrics["main"], best_step=state["step"], best_metrics=metrics, bad_evals=0)
            # dev scores of the best state, kept so the runner's inference check needs no extra pass
            self._best_scores = scores if self.cfg.precision == "fp32" else None
            return {k: v.detach().cpu().clone() for k, v in self.method.trainable_state_dict(self.model).items()}
        state["bad_evals"] += 1
        patience = self.cfg.get("patience")
        if patience and state["bad_evals"] >= int(patience):
            state["stopped_early"] = True
            tqdm.write(f"early stopping at step {state['step']}: no improvement in {patience} evaluations")
        return best_state
