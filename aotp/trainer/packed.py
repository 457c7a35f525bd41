"""Packed runs: K runs of one task (seeds x learning rates) trained in one process on ONE frozen backbone.

    python -m aotp.trainer.packed model=tiny_bert method=aot_fc task=glue/rte data.root=../shared/data \\
        pack.seeds=[1,2] pack.lrs=[1e-3,3e-3]

Each of the K = |seeds| x |lrs| runs is the run ``python -m aotp.run <overrides> seed=S method.lr=LR``
would train: same composed config, hence the same run id, run directory and record form; a run whose
record already says ``success`` is skipped. Sweeps use packing through ``make reproduce PACK=K``
(:mod:`aotp.sweep_pack`).

Locks and resumption, as for a run alone. Each run of a pack is trained under its ``run.lock``
(:func:`lock_runs`): a run another process holds is left out of the pack, and a launch of a packed run
alone refuses (or waits) while the pack trains it. Each run writes its own checkpoint, in the format of
a run alone (``<run dir>/checkpoint``, :mod:`aotp.trainer.checkpoint`), after each of its evaluations and
every ``trainer.checkpoint_every`` steps; a pack started again after a kill resumes each run from its
own checkpoint (and a run alone could resume it too). On a CPU the resumed records and weights are
bitwise those of an uninterrupted pack when the runs resume at one step (a kill while training or
evaluating; tests/integration/test_sweep_pack.py). A kill between two runs' checkpoint saves of one
step resumes them at different steps; later packed batches then hold other companions, whose padding
and row count may change float rounding (a pack of 4 vs a pack of 1 moved weights by 4e-9 here).

What is shared and what is not. The backbone (frozen: no gradient, no optimizer state) exists once.
Every run keeps its own trainable parameters (task head + AoT reparametrization), AdamW state, LR
schedule, data order (its seed's permutation per epoch), gradient clipping, evaluations, best-state
selection, early stopping, checkpoint, metrics log and record. One training step of the pack:

* the next micro-batch of every active run is collated into one batch (padded to the longest sequence
  of the pack; padded positions are masked out of attention, so they change no real position's state);
* one forward of the backbone; encoder layer l adds to example i the AoT bias of *its* run:
  ``h_l[i] += P^(run(i))_l[x_i]`` -- the biases are computed run by run on the run's own rows, as
  :class:`aotp.inference.MultiTaskModel` routes tasks at serving time;
* run k's logits come from run k's head on its rows; the loss is ``sum_k mean-loss_k`` (each run's own
  mean, never one mean over the pack), so ``d loss / d theta_k = d mean-loss_k / d theta_k``: one
  backward gives every run exactly the gradient it gets alone;
* every run then clips, steps and schedules its own optimizer.

Nothing of a step is read back to the host (issue 26): as in :meth:`aotp.trainer.loop.Trainer.fit`, logged
losses stay on the device and are read together, every run's, before a run's evaluation or checkpoint and at
the latest every ``LOSS_READ_EVERY`` logged steps per run (the logged values are bitwise those of a read per
step), and on a device each run's biases are computed per position, without ``torch.unique``
(:class:`aotp.methods.aot.module.AoTBias`).

Evaluation and the inference check run per run, through the same functions as a single run, with the
backbone's bias hooks pointed at that run. With dropout (backbone or head) > 0 the packed runs are
statistically, not bitwise, the runs trained alone: dropout masks come from one RNG stream for the pack.
Training time in a record is the run's share of each packed step (proportional to its examples).

Which methods can be packed. The criterion is: frozen backbone, and a method whose per-example effect
can be routed inside one forward.

* AoT FC / Kronecker (implemented): the method is an input bias per (token, layer); routing is a
  per-row choice of bias source, as in multi-task serving.
* BitFit: not with a shared backbone as built: its trainable biases *are* backbone parameters; routing
  would need every biased Linear/LayerNorm replaced by a per-example-bias version (``x W^T + b[run(i)]``),
  possible but a rewrite of the backbone's modules.
* LoRA: routable (``h = x W^T + s B_k A_k x`` per row group, a batched matmul over runs, as multi-LoRA
  serving does), but the injected modules hold one (A, B) each; they would need a per-run bank and the
  row partition of the current batch. Not implemented.
* Houlsby / Pfeiffer adapters: same shape of problem as LoRA (per-run adapter bank, routed by row);
  the method's modules hold one adapter per site (the multi-task benchmark's per-row bank,
  ``aotp.bench.multitask.RoutedBottleneck``, serves inference only). Not implemented.
* P-Tuning v2: per-run prefix keys/values differ per example; rows of different runs can be
  concatenated along the batch (same prefix length), so it is routable once the prefix provider takes
  the row partition. Not implemented.
* Full fine-tuning: no (the backbone itself trains; there is nothing to share).
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from aotp.cli import KeyValueParser, Option, guarded

log = logging.getLogger(__name__)


def packable_method_names() -> list[str]:
    """Methods whose runs can share one backbone in a packed forward (see the module docstring)."""
    from aotp.methods.aot.method import aot_method_names

    return aot_method_names()


def unpackable_reason(cfg) -> Optional[str]:
    """Why this run cannot be trained in a pack (None: it can). Besides the method (module docstring): a warm
    start (``method.init_from``) is not loaded by :func:`build_pack`; fp16 is untested in packs (each run has
    its own loss scaler and skips its own steps through the shared ``optimizer_step``, but no test holds a
    packed fp16 run to the run alone yet). AdamW's betas/eps come from each run's trainer options, as alone.
    ``trainer.micro_batch_size`` other than null: a packed step is one forward of every run's next logical batch,
    and splitting it into micro-batches (each run's pieces weighted as in :func:`aotp.trainer.loop.micro_batch_loss`)
    is not implemented; such runs train alone (a packed sweep runs them through :func:`aotp.run.execute`)."""
    method = cfg.method.name
    if method not in packable_method_names():
        return (f"method={method} cannot be packed (its runs do not share a frozen backbone that "
                f"per-example routing can serve); packable: {', '.join(packable_method_names())}")
    if cfg.data.get("pair_encoding", "cross") not in (None, "cross"):
        return "packed runs support data.pair_encoding=cross only"
    if cfg.method.get("init_from") not in (None, ""):
        return f"method.init_from={cfg.method.init_from}: packed runs do not warm-start; run it alone"
    if cfg.trainer.precision == "fp16":
        return "packed runs support trainer.precision=fp32 or bf16 (fp16 in a pack is not tested against runs alone)"
    if cfg.trainer.get("micro_batch_size") is not None:
        # a packed forward already holds one logical batch of every run; splitting it across runs is not implemented
        return (f"trainer.micro_batch_size={cfg.trainer.micro_batch_size}: packed runs take one logical batch per run "
                f"per forward (micro_batch_size=null); run it alone")
    return None


def pack_configs(overrides: Sequence[str], seeds: Sequence[int], lrs: Sequence[float]):
    """The K composed run configs, seeds outer, learning rates inner; each equals the config of
    ``python -m aotp.run <overrides> seed=S method.lr=LR``."""
    from aotp.run import ConfigError, compose

    if not seeds or not lrs:
        raise ConfigError("pack.seeds and pack.lrs must each name at least one value")
    configs = [compose([*overrides, f"seed={int(seed)}", f"method.lr={float(lr)!r}"])
               for seed, lr in itertools.product(seeds, lrs)]
    reason = unpackable_reason(configs[0])
    if reason is not None:
        raise ConfigError(reason)
    return configs


@dataclass
class PackedRun:
    """One run of a pack: its config, record identity, model view (shared backbone, own head and AoT
    biases), data, optimizer and loop state."""

    cfg: Any
    config: dict
    identifier: str
    run_dir: Path
    spec: Any = None
    method: Any = None
    model: Any = None
    data: Any = None
    trainer: Any = None
    loggers: Any = None
    params: dict = field(default_factory=dict)
    truncation: dict = field(default_factory=dict)
    optimizer: Any = None
    scheduler: Any = None
    scaler: Any = None
    state: dict = field(default_factory=dict)
    best_state: Optional[dict] = None
    git: dict = field(default_factory=dict)
    started: float = 0.0
    # data cursor (as in Trainer.fit): batches of the current epoch, next batch, micro-batches since a step
    batches: list = field(default_factory=list)
    next_batch: int = 0
    micro: int = 0
    examples_since: int = 0
    seconds_since: float = 0.0
    done: bool = False
    lock: Any = None  # the run's RunLock while this process trains it

    def start_epoch(self) -> None:
        self.batches = self.trainer.epoch_batches(self.state["epoch"])  # the run's batches alone (length grouping too)
        self.micro = 0

    def checkpoint(self) -> None:
        from aotp.trainer.checkpoint import save_checkpoint

        save_checkpoint(self.trainer.checkpoint_dir, self.method.trainable_state_dict(self.model), self.best_state,
                        {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                         "scaler": self.scaler.state_dict(), "loop": dict(self.state)})


class PackedBiases:
    """The bias provider of the shared backbone's hooks: the whole pack's rows (training) or one run."""

    def __init__(self):
        self.parts: list[tuple[slice, Any]] = []  # (rows of the packed batch, that run's AoTBias)
        self.single = None                        # an AoTBias: every row belongs to this run

    def __call__(self, input_ids: torch.Tensor):
        if self.single is not None:
            return self.single.biases(input_ids)
        if not self.parts or self.parts[-1][0].stop != input_ids.shape[0]:
            raise RuntimeError("packed biases: the row partition does not cover the batch")
        # each run's (rows, T, L, d) biases from its own reparametrization: gradients reach only that run
        return torch.cat([bias.lookup(input_ids[rows]) for rows, bias in self.parts])


def pack_key(config: dict) -> str:
    """What the runs of one pack share: the whole composed config but ``seed``, ``method.lr`` and the
    ``experiment`` group (sweep bookkeeping such as ``experiment.lr_index``, out of the run id; its effect
    on a run is in the resolved values compared here, e.g. ``method.lr``, ``trainer.epochs``)."""
    import json

    rest = {k: v for k, v in config.items() if k not in ("seed", "experiment")}
    rest["method"] = {k: v for k, v in config["method"].items() if k != "lr"}
    return json.dumps(rest, sort_keys=True, default=str)


def finished(run_dir: Path, cfg) -> bool:
    """The run's record says ``success`` (and ``force`` is off): it is skipped, as :func:`aotp.run.execute` skips it."""
    from aotp.results.record import read_record

    previous = read_record(run_dir / "result.json")
    if previous is not None and previous.succeeded and not cfg.get("force", False):
        print(f"Skipping {run_dir.name}: already succeeded (main={previous.main}); "
              f"record: {run_dir / 'result.json'}", flush=True)
        return True
    return False


def lock_runs(runs: list[PackedRun]) -> list[PackedRun]:
    """Take each run's lock (``<run dir>/run.lock``, the lock of :func:`aotp.run.execute`), so a packed run and
    a launch of the same run alone never train it twice. A run another live process holds is left out of the
    pack (after ``lock.wait_seconds``), with the one-line message a sweep prints for it; a run that the
    holder finished meanwhile is skipped. Returns the runs whose locks this process now holds."""
    from aotp.results.lock import RunLocked, run_lock
    from aotp.results.record import set_aside_previous
    from aotp.run import ConfigError, to_container
    from aotp.trainer.checkpoint import delete_checkpoint

    locked = []
    for run in runs:
        cfg = run.cfg
        try:
            lock = run_lock(run.run_dir, to_container(cfg.lock) if cfg.get("lock") is not None else None)
        except ValueError as error:
            release_locks(locked)
            raise ConfigError(str(error)) from None
        run.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire()
        except RunLocked as error:
            print(f"Error: {' '.join(str(error).split())}", file=sys.stderr, flush=True)
            continue
        if finished(run.run_dir, cfg):  # the launch that held the lock finished it
            lock.release()
            continue
        run.lock = lock
        if cfg.get("force", False) and (run.run_dir / "result.json").exists():  # as aotp.run.execute_locked
            set_aside_previous(run.run_dir)
            delete_checkpoint(run.run_dir / "checkpoint")
        locked.append(run)
    return locked


def release_locks(runs: Sequence[PackedRun]) -> None:
    for run in runs:
        if run.lock is not None:
            run.lock.release()
            run.lock = None


def build_pack(configs, results_root: Optional[Path] = None) -> tuple[list[PackedRun], Any, Any, PackedBiases]:
    """Validate the K configs, skip finished runs, take the others' locks (:func:`lock_runs`), build one
    backbone and a run view on it per locked run. Returns (runs to train, backbone, bias hooks, bias
    provider); runs is empty when none is left to train. The caller releases the locks (:func:`release_locks`)."""
    from aotp.results.record import git_info, run_dir_name, run_id
    from aotp.run import ConfigError, to_container, validate

    runs = []
    shared_keys = None
    for cfg in configs:
        config = to_container(cfg)
        if shared_keys is None:
            shared_keys = pack_key(config)
        elif pack_key(config) != shared_keys:
            raise ConfigError("packed runs must differ only in seed and method.lr")
        identifier = run_id(config)
        run_dir = Path(results_root or cfg.paths.results) / run_dir_name(config, identifier)
        if finished(run_dir, cfg):
            continue
        runs.append(PackedRun(cfg=cfg, config=config, identifier=identifier, run_dir=run_dir, git=git_info(),
                              started=time.time()))
    if not runs:
        return [], None, None, None
    reason = unpackable_reason(runs[0].cfg)  # the same for every run of the pack (checked above)
    if reason is not None:
        raise ConfigError(reason)
    for run in runs:
        run.spec, run.method = validate(run.cfg)
    runs = lock_runs(runs)
    if not runs:
        return [], None, None, None
    try:
        return _build_locked(runs)
    except BaseException:
        release_locks(runs)
        raise


def _build_locked(runs: list[PackedRun]) -> tuple[list[PackedRun], Any, Any, PackedBiases]:
    from transformers import set_seed

    from aotp.methods.aot.injector import BiasHooks
    from aotp.assembly import build_model, load_data, parameter_counts
    from aotp.models import build_backbone
    from aotp.models.task_model import pair_encoding_of
    from aotp.run import build_loggers, report_truncation
    from aotp.trainer.loop import Trainer, setup_device

    first = runs[0].cfg
    device = setup_device(first.trainer)
    # A run alone calls set_seed(seed) and then builds the backbone; if building consumes the global RNG
    # (it does not for tiny models), the methods' initialisation after it would differ: we replay it.
    set_seed(int(first.seed))
    before = torch.random.get_rng_state()
    backbone = build_backbone(first.model)
    replay_build = not torch.equal(before, torch.random.get_rng_state())
    pooler = getattr(backbone.model, "pooler", None)
    provider = PackedBiases()
    for run in runs:
        cfg = run.cfg
        set_seed(int(cfg.seed))
        if replay_build:
            build_backbone(cfg.model)  # advances the RNG exactly as the run alone does; the copy is dropped
        if pooler is not None:
            backbone.model.pooler = pooler  # TaskModel initialises BERT's head from the pooler, then drops it
        run.loggers = build_loggers(cfg, run.run_dir, run.identifier, run.config)
        model = build_model(backbone, run.method, run.spec.head, run.spec.num_labels, seed=int(cfg.seed),
                            pair_encoding=pair_encoding_of(cfg.data))
        model.aot.hooks.detach()  # the pack's hooks (below) route every row to its run's biases
        run.model = model
        run.params = parameter_counts(model, run.method)
        run.loggers.describe({"params": {**run.params, "share": run.params["trainable"] / run.params["total"]}})
        run.data = load_data(cfg, run.spec, backbone)
        run.truncation = report_truncation(run.data, cfg.data)  # refuses choices made identical by truncation
        run.trainer = Trainer(cfg.trainer, model, run.method, run.data, run.run_dir, run.loggers, device, int(cfg.seed))
    hooks = BiasHooks(provider).attach(backbone.model)
    return runs, backbone, hooks, provider


def packed_logits(runs: Sequence[PackedRun], batch: dict[str, torch.Tensor], sizes: Sequence[int]) -> list[torch.Tensor]:
    """One backbone forward over the packed batch; run k's logits from its head on its rows (as
    :meth:`TaskModel.forward` for cross-encoded inputs)."""
    first = runs[0].model
    input_ids, mask, types = batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")
    choices = input_ids.shape[1] if first.head_type == "multiple_choice" else 1
    if choices > 1:
        flat = lambda t: None if t is None else t.reshape(-1, t.shape[-1])  # noqa: E731
        input_ids, mask, types = flat(input_ids), flat(mask), flat(types)
    states = first.encode(input_ids, mask, types)
    logits, start = [], 0
    for run, size in zip(runs, sizes):
        own = run.model.head(states[start:start + size * choices])
        start += size * choices
        if run.model.head_type == "multiple_choice":
            own = own.view(size, choices)
        elif run.model.head_type == "regression":
            own = own.squeeze(-1)
        logits.append(own)
    return logits


def fit_pack(runs: Sequence[PackedRun], provider: PackedBiases) -> None:
    """Train every run of the pack to its end (steps, early stopping), as :meth:`Trainer.fit` trains one."""
    from tqdm.auto import tqdm

    from aotp.trainer.checkpoint import load_checkpoint, set_rng_state
    from aotp.trainer import loop
    from aotp.trainer.loop import autocast_context, model_inputs, move, optimizer_step

    device = runs[0].trainer.device
    # Logged steps whose loss is not read yet, of every run: (run, step, loss on the device, lr, epoch). As in
    # Trainer.fit, a logged loss is not read per step (a host-device sync on a GPU) but with the others pending.
    pending: list[tuple[PackedRun, int, torch.Tensor, float, int]] = []

    def flush_losses() -> None:
        """Log the pending steps' losses, every run's: one device read for all of them (``.tolist()`` of the
        stacked float32 losses gives the floats ``.item()`` gives, one by one, so the logs are bitwise those
        of a read per step)."""
        if not pending:
            return
        values = torch.stack([loss for _, _, loss, _, _ in pending]).tolist()
        for (run, step, _, lr, epoch), value in zip(pending, values):
            run.loggers.log("train", step, {"loss": value * run.trainer.accumulation, "lr": lr, "epoch": epoch})
        pending.clear()

    for run in runs:
        cfg, trainer = run.cfg, run.trainer
        run.model.to(device)
        head_lr = cfg.method.get("head_lr")
        # as Trainer.fit builds them (adam_betas/eps, fused kernel, schedule, fp16 scaler)
        run.optimizer, run.scheduler, run.scaler = trainer.build_optimization(
            float(cfg.method.lr), float(cfg.method.get("weight_decay", 0.0)), None if head_lr is None else float(head_lr))
        run.state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best_main": None, "best_step": None,
                     "best_metrics": None, "bad_evals": 0, "history": [], "train_seconds": 0.0, "eval_seconds": 0.0,
                     "train_examples": 0, "stopped_early": False, "skipped_steps": 0}
        resumed = load_checkpoint(trainer.checkpoint_dir)
        if resumed is not None:
            run.method.load_trainable_state_dict(run.model, {k: v.to(device) for k, v in resumed["trainable"].items()})
            run.optimizer.load_state_dict(resumed["optimizer"])
            run.scheduler.load_state_dict(resumed["scheduler"])
            run.scaler.load_state_dict(resumed["scaler"])
            run.state.update(resumed["loop"])
            run.best_state = resumed["best"]
            set_rng_state(resumed["rng"])  # one RNG for the pack: the last resumed run's (matters with dropout only)
            print(f"Resuming {run.run_dir.name} from checkpoint at step {run.state['step']}/{trainer.total_steps}")
        run.loggers.start_at(run.state["step"])  # events of an earlier attempt after this step are logged again
        run.done = run.state["step"] >= trainer.total_steps or run.state["stopped_early"]
        run.start_epoch()
        run.next_batch = run.state["batch_in_epoch"]
    first_cfg = runs[0].cfg.trainer
    precision, collator = first_cfg.precision, runs[0].trainer.collator
    progress = tqdm(total=sum(r.trainer.total_steps for r in runs), initial=sum(r.state["step"] for r in runs),
                    desc=f"packed x{len(runs)}", disable=not first_cfg.get("progress", True), dynamic_ncols=True)
    while True:
        active = []
        for run in runs:
            if not run.done and run.next_batch >= len(run.batches):  # the epoch is over: the next one
                run.state["epoch"] += 1
                run.state["batch_in_epoch"] = 0
                run.next_batch = 0
                run.start_epoch()
            if not run.done:
                active.append(run)
        if not active:
            break
        tick = time.perf_counter()
        features, sizes, parts, start = [], [], [], 0
        for run in active:
            run.model.train()
            indices = run.batches[run.next_batch]
            features.extend(run.trainer.train_split.features[i] for i in indices)
            sizes.append(len(indices))
            rows = len(indices) * (len(features[0]["input_ids"]) if isinstance(features[0]["input_ids"][0], list) else 1)
            parts.append((slice(start, start + rows), run.model.aot))
            start += rows
        batch = move(collator(features), device)
        provider.parts, provider.single = parts, None
        with autocast_context(device, precision):
            logits = packed_logits(active, model_inputs(batch), sizes)
        losses, offset, total = [], 0, 0.0
        for run, own_logits, size in zip(active, logits, sizes):
            loss = run.model.loss(own_logits, batch["labels"][offset:offset + size]) / run.trainer.accumulation
            offset += size
            losses.append(loss)
            total = total + run.scaler.scale(loss)  # each run's own mean: its gradient is its own
        total.backward()
        provider.parts = []
        elapsed = time.perf_counter() - tick
        for run, loss, size in zip(active, losses, sizes):
            run.micro += 1
            run.examples_since += size
            run.seconds_since += elapsed * size / sum(sizes)  # the run's share of the packed step
            batch_index = run.next_batch
            run.next_batch += 1
            last_in_epoch = batch_index == len(run.batches) - 1
            if run.micro % run.trainer.accumulation and not last_in_epoch:
                continue
            step_tick = time.perf_counter()
            trainable = [p for p in run.model.parameters() if p.requires_grad]
            state = run.state
            if not optimizer_step(run.optimizer, run.scheduler, run.scaler, trainable, run.cfg.trainer.get("max_grad_norm")):
                state["skipped_steps"] += 1  # as Trainer.fit: fp16's scaler skipped it, the schedule waits
            state["step"] += 1
            state["batch_in_epoch"] = batch_index + 1
            finished = state["step"] >= run.trainer.total_steps
            evaluates = state["step"] % run.trainer.eval_every == 0 or finished
            checkpoints = evaluates or bool(run.trainer.checkpoint_every
                                            and state["step"] % run.trainer.checkpoint_every == 0)
            if state["step"] % run.trainer.log_every == 0:  # the loss stays on the device, read with the others
                pending.append((run, state["step"], loss.detach(), run.scheduler.get_last_lr()[0], state["epoch"]))
            # read before the run's evaluation or checkpoint (its metrics log then has every step up to it), and
            # at the latest every LOSS_READ_EVERY logged steps per run; the wait belongs to training time
            if checkpoints or len(pending) >= loop.LOSS_READ_EVERY * len(runs):
                flush_losses()
            if evaluates:
                loop.synchronize(device)  # the queued steps belong to training time, not evaluation time
            state["train_seconds"] += run.seconds_since + time.perf_counter() - step_tick
            state["train_examples"] += run.examples_since
            run.examples_since, run.seconds_since = 0, 0.0
            progress.update(1)
            if evaluates:
                provider.single = run.model.aot
                run.best_state = run.trainer._evaluate_and_select(state, run.best_state)
                provider.single = None
                run.checkpoint()
            elif checkpoints:
                run.checkpoint()
            run.done = finished or state["stopped_early"]
    flush_losses()  # none is left (every run ends on an evaluation), but a log never drops a step
    progress.close()
    for run in runs:
        if run.best_state is not None:
            run.method.load_trainable_state_dict(run.model, {k: v.to(device) for k, v in run.best_state.items()})


def execute_pack(configs, results_root: Optional[Path] = None) -> list[dict[str, Any]]:
    """Train the K runs of ``configs`` packed; write each run's record (``success`` or ``failed``) exactly
    as :func:`aotp.run.execute` would, each under its run's lock. Returns the records of the runs trained
    now (finished runs, and runs another process holds, left out), as written (``RunRecord.to_dict()``)."""
    runs, backbone, _, provider = build_pack(configs, results_root)
    if not runs:  # every run of the pack already succeeded (or is held by another process)
        return []
    try:
        return _train_and_record(runs, backbone, provider)
    finally:
        release_locks(runs)


def _train_and_record(runs: Sequence[PackedRun], backbone, provider: PackedBiases) -> list[dict[str, Any]]:
    from aotp.assembly import RunParts
    from aotp.results.record import (drop_previous, drop_weights_unless_kept, failed_record, identity,
                                     succeeded_record, write_record)
    from aotp.run import finish_run
    from aotp.trainer.checkpoint import delete_checkpoint

    from aotp.accelerator import peak_memory, reset_peak_memory, tf32_enabled

    records = []
    device = runs[0].trainer.device
    reset_peak_memory(device)
    tf32 = tf32_enabled()
    try:
        fit_pack(runs, provider)
    except Exception as error:  # noqa: BLE001 - the whole pack failed: every run gets a failed record
        for run in runs:
            record = failed_record(identity(run.cfg, run.spec, run.identifier, run.run_dir, run.config), error,
                                   run.started, run.git)
            write_record(run.run_dir / "result.json", record)
            run.loggers.finish(record.to_dict())
        raise
    train_memory = peak_memory(device)
    for run in runs:  # inference form, check and record, one run at a time (hooks pointed at the run)
        provider.single = run.model.aot
        base = identity(run.cfg, run.spec, run.identifier, run.run_dir, run.config)
        try:
            parts = RunParts(run.cfg, run.spec, run.method, backbone, run.model, run.trainer.collator,
                             run.trainer.device, run.data)
            # the pack's training peak is its K runs' together (one backbone, K runs' activations)
            outcome = finish_run(run.cfg, parts, run.trainer.fitted(run.state), run.params, run.run_dir,
                                 truncation=run.truncation, train_memory=train_memory, tf32=tf32)
            record = succeeded_record(base, outcome, run.started, run.git)
            drop_weights_unless_kept(run.cfg, run.run_dir, record)
        except Exception as error:  # noqa: BLE001 - this run failed; the others still get their records
            record = failed_record(base, error, run.started, run.git)
        write_record(run.run_dir / "result.json", record)
        if record.succeeded:
            delete_checkpoint(run.run_dir / "checkpoint")  # after the record: a kill in between leaves a finished run
            drop_previous(run.run_dir)
        run.loggers.finish(record.to_dict())
        if record.succeeded:
            print(f"{run.spec.full_name} seed={run.cfg.seed} lr={run.cfg.method.lr}: dev main={record.main:.4f}"
                  f" | record: {run.run_dir / 'result.json'}", flush=True)
        records.append(record.to_dict())
    return records


PACK_PARSER = KeyValueParser(
    "python -m aotp.trainer.packed", "Train K = |seeds| x |lrs| AoT runs packed on one backbone.",
    [Option("pack.seeds", "the seeds of the pack", required=True, many=True, kind=int),
     Option("pack.lrs", "the learning rates of the pack", required=True, many=True, kind=float)],
    examples=["python -m aotp.trainer.packed model=minilm method=aot_fc task=glue/rte data.root=../shared/data "
              "pack.seeds=[1,2] pack.lrs=[1e-3,3e-3]"],
    passthrough="<aotp-run overrides key=value ...>")


def split_pack_arguments(arguments: Sequence[str]) -> tuple[list[str], list[int], list[float]]:
    """``pack.seeds=[1,2] pack.lrs=[1e-3,3e-3]`` out of a list of Hydra overrides."""
    values, overrides = PACK_PARSER.parse(arguments)
    return overrides, values["pack.seeds"], values["pack.lrs"]


@guarded
def main(arguments: Optional[Sequence[str]] = None) -> int:
    logging.getLogger("transformers").setLevel(logging.ERROR)
    overrides, seeds, lrs = split_pack_arguments(sys.argv[1:] if arguments is None else arguments)
    from aotp.run import ConfigError

    try:
        records = execute_pack(pack_configs(overrides, seeds, lrs))
    except ConfigError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    return 0 if all(r["status"] == "success" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
