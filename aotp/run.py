"""Hydra entry point: compose -> validate -> one run -> ``result.json``.

    python -m aotp.run model=minilm method=full_ft task=glue/sst2 data.root=../shared/data

Flow: validate the composed config before any model is loaded -> run id (hash of the semantic
config) -> skip if a ``success`` record exists -> seed -> backbone -> ``method.apply`` -> load and
tokenise the task -> train (dev eval, keep the best trainable state) -> restore the best ->
``prepare_for_inference`` and check the logits did not change -> write predictions and the record
atomically -> mirror to W&B. A crash writes ``status: failed`` and exits non-zero (in a multirun
the sweep goes on).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from aotp.accelerator import exact_precision, peak_memory, reset_peak_memory, tf32_enabled
from aotp.cli import ConfigError, Refusal, one_line, refuse
from aotp.config_checks import check_group_choices, check_values
from aotp.paths import config_root
from aotp.results.lock import RunLocked, run_lock
from aotp.results.record import (drop_previous, drop_weights_unless_kept, environment, failed_record, git_info,
                                 identity, read_record, run_dir_name, run_id, set_aside_previous, succeeded_record,
                                 write_record)
from aotp.results.schema import DeviceMemory, Execution, Inference, Params, Selection, Timings, Truncation, WarmStart

if TYPE_CHECKING:
    import torch

log = logging.getLogger("aotp.run")
# The lines a user looks for in a run's log (data sizes, truncation, result, record path): printed, and
# written to <run dir>/run.log beside whatever the libraries log there.
notes = logging.getLogger("aotp.run.notes")
notes.propagate = False
notes.setLevel(logging.INFO)

# ${aotp.name_or:${experiment_name},adhoc}: a null value falls back (oc.select falls back only for absent keys)
OmegaConf.register_new_resolver("aotp.name_or", lambda value, fallback: fallback if value in (None, "") else value,
                                replace=True)


CONFIG_DIR = config_root()


def compose(overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    """Compose the run config exactly as ``python -m aotp.run <overrides>`` would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside a run of python -m aotp.run (a warm start's source)
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=return_hydra_config)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=return_hydra_config)


def to_container(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def validate(cfg: DictConfig):
    """Check everything checkable without loading a model or data. Returns (task spec, method)."""
    from aotp.methods import METHODS, build_method
    from aotp.models.builders import BACKBONES, FAMILIES
    from aotp.models.task_model import PAIR_ENCODINGS, pair_encoding_of
    from aotp.tasks import TaskSpec, check_local_files

    check_values(cfg)  # every numeric/enumerated option and the output folders (aotp/config_checks.py)
    check_gpu_requirement(cfg)
    BACKBONES.get(cfg.model.source)
    if cfg.model.source == "tiny" and cfg.model.get("family") not in FAMILIES:
        raise ConfigError(f"model.family={cfg.model.get('family')!r}; valid: {', '.join(FAMILIES)}")
    METHODS.get(cfg.method.name)
    try:
        method = build_method(cfg.method)
    except TypeError as error:
        raise ConfigError(f"method={cfg.method.name}: bad method.options ({error})") from None
    spec = TaskSpec.from_config(cfg.task)
    if spec.train_split is None:  # a diagnostic set: scored by aotp.evaluate with a trained run, never trained
        raise ConfigError(spec.not_trainable_message())
    pair_encoding = pair_encoding_of(cfg.data)
    if pair_encoding not in PAIR_ENCODINGS:
        raise ConfigError(f"data.pair_encoding={pair_encoding!r}; valid: {', '.join(PAIR_ENCODINGS)}")
    if pair_encoding != "cross" and (spec.head == "multiple_choice" or spec.formatter != "fields"
                                     or len(spec.text_fields or ()) != 2):
        raise ConfigError(f"data.pair_encoding={pair_encoding} needs a sentence-pair task (two text_fields); "
                          f"{spec.full_name} is not one (use data.pair_encoding=cross)")
    try:
        method.check_pair_encoding(pair_encoding)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if cfg.data.get("root"):
        root = Path(cfg.data.root)
        if not root.is_dir():
            raise ConfigError(f"data.root={cfg.data.root} is not a directory (expected the official layout: "
                              f"glue/<TASK>/..., super_glue/<Task>/...)")
        check_local_files(spec, root, [spec.train_split, *spec.eval_splits])
    return spec, method


def check_gpu_requirement(cfg) -> None:
    """``trainer.require_gpu=true`` (every paper experiment): refuse, before anything loads, when torch cannot
    use CUDA, naming torch's build, the driver nvidia-smi reports and the fix (aotp/accelerator.py)."""
    if not cfg.trainer.get("require_gpu", False):
        return
    from aotp.accelerator import gpu_refusal

    reason = gpu_refusal(str(cfg.trainer.get("device") or "auto"))
    if reason is not None:
        raise ConfigError(reason)


def note(message: str) -> None:
    """Print ``message`` and write it to the run's run.log (when one is open)."""
    print(message, flush=True)
    notes.info(message)


class RunLog:
    """``<run dir>/run.log`` for the time of one run: the root logger's records and :func:`note` lines."""

    def __init__(self, path: Path):
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        self.handler.setLevel(logging.INFO)

    def open(self) -> "RunLog":
        logging.getLogger().addHandler(self.handler)
        notes.addHandler(self.handler)
        return self

    def close(self) -> None:
        logging.getLogger().removeHandler(self.handler)
        notes.removeHandler(self.handler)
        self.handler.close()


def job_overrides() -> list[str] | None:
    """The command-line overrides of this Hydra job (a sweep job's own values included), or None outside Hydra."""
    if not HydraConfig.initialized():
        return None
    return list(HydraConfig.get().overrides.task)


def resolve_init_from(cfg: DictConfig, overrides: list[str] | None) -> Path | None:
    """The finished run that ``method.init_from`` names, as its run directory; None when unset.

    ``method.init_from`` is a run directory, a run id (looked up under ``paths.results``) or
    ``task:<benchmark>/<task>``: the run of this very config (same overrides, hence the same
    experiment, method, model, learning rate and seed) on that task, with that task's own
    specialization; e.g. the LoRA recipes for RTE/MRPC/STS-B start from the MNLI run. The source must
    have finished (``status: success``) with the same method and model; anything else is a
    :class:`ConfigError` raised before any model is built.
    """
    value = cfg.method.get("init_from")
    if value in (None, ""):
        return None
    value = str(value)
    option = f"method.init_from={value}"
    results = Path(cfg.paths.results)
    if value.startswith("task:"):
        task = value.removeprefix("task:")
        if not (CONFIG_DIR / "task" / f"{task}.yaml").is_file():
            raise ConfigError(f"{option}: no task {task!r} (configs/task/<benchmark>/<task>.yaml)")
        if task == f"{cfg.task.benchmark}/{cfg.task.name}":
            raise ConfigError(f"{option} names this run's own task; a warm start needs another task's run")
        if overrides is None:
            raise ConfigError(f"{option} needs the run's overrides: start it with python -m aotp.run")
        kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ("task", "method.init_from")]
        source_config = to_container(compose(kept + [f"task={task}", "method.init_from=null"]))
        source = results / run_dir_name(source_config, run_id(source_config))
        where = f"no finished run of this config on {task} at {source}; run it first (task={task}, same overrides)"
    elif Path(value).is_dir():
        source, where = Path(value), f"{value} holds no successful result.json"
    else:
        matches = sorted(results.glob(f"*__{value}"))
        if len(matches) != 1:
            found = "no run directory" if not matches else f"{len(matches)} run directories"
            raise ConfigError(f"{option}: {found} named *__{value} under paths.results={results} "
                              f"(give a run directory, a run id or task:<benchmark>/<task>)")
        source, where = matches[0], f"run {value} ({matches[0]}) has not succeeded"
    record = read_record(source / "result.json")
    if record is None or not record.succeeded or not (source / "trainable.safetensors").is_file():
        raise ConfigError(f"{option}: {where}")
    for key in ("method", "model"):
        if getattr(record, key) != cfg[key].name:
            raise ConfigError(f"{option}: the source run is {key}={getattr(record, key)}, this run {key}={cfg[key].name}")
    return source


def warm_start(model, source: Path) -> WarmStart:
    """Load the source run's trained method weights (``trainable.safetensors``, the task head excepted:
    a new task has its own label space and its head starts fresh, as LoRA's --lora_path does)."""
    from safetensors.torch import load_file

    tensors = {name: value for name, value in load_file(str(source / "trainable.safetensors")).items()
               if not name.startswith("head.")}
    parameters = {name: p for name, p in model.named_parameters() if p.requires_grad and not name.startswith("head.")}
    missing, unexpected = set(parameters) - set(tensors), set(tensors) - set(parameters)
    if missing or unexpected:
        raise ConfigError(f"method.init_from={source}: its trained weights do not fit this model "
                          f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    import torch

    with torch.no_grad():
        for name, value in tensors.items():
            if parameters[name].shape != value.shape:
                raise ConfigError(f"method.init_from={source}: {name} has shape {tuple(value.shape)}, "
                                  f"this model {tuple(parameters[name].shape)}")
            parameters[name].copy_(value)
    source_record = read_record(source / "result.json")  # resolve_init_from checked it succeeded
    return WarmStart(run_dir=str(source), run_id=source_record.run_id, task=source_record.task, tensors=len(tensors),
                     parameters=int(sum(t.numel() for t in tensors.values())))


def execute(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, Any]:
    """One run. Returns its record as written to ``<run_dir>/result.json`` (``RunRecord.to_dict()``; a skipped
    run's record in the current schema). ``overrides``: the command-line overrides (read from Hydra when
    None), needed by ``method.init_from=task:...``."""
    config = to_container(cfg)
    identifier = run_id(config)
    run_dir = Path(cfg.paths.results) / run_dir_name(config, identifier)
    record_path = run_dir / "result.json"
    previous = read_record(record_path)
    # Checked before validation, which imports torch and the method libraries: a finished run of a
    # sweep is skipped in about a second.
    if previous is not None and previous.succeeded and not cfg.get("force", False):
        print(f"Skipping {run_dir.name}: already succeeded (main={previous.main}); record: {record_path}")
        return previous.to_dict()
    spec, method = validate(cfg)
    init_source = resolve_init_from(cfg, overrides if overrides is not None else job_overrides())
    try:
        lock = run_lock(run_dir, to_container(cfg.lock) if cfg.get("lock") is not None else None)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    run_dir.mkdir(parents=True, exist_ok=True)
    lock.acquire()  # another launch of this run holds it: wait (lock.wait_seconds) or RunLocked, never train twice
    try:
        return execute_locked(cfg, spec, method, run_dir, identifier, config, init_source)
    finally:
        lock.release()


def execute_locked(cfg: DictConfig, spec, method, run_dir: Path, identifier: str, config: dict,
                   init_source=None) -> dict[str, Any]:
    """The run, its lock held. The record is read again: the launch that held the lock may have finished it."""
    record_path = run_dir / "result.json"
    previous = read_record(record_path)
    if previous is not None and previous.succeeded:
        if not cfg.get("force", False):
            print(f"Skipping {run_dir.name}: already succeeded (main={previous.main}); record: {record_path}")
            return previous.to_dict()
        set_aside_previous(run_dir)  # force: the old record stays aside until this run succeeds
        from aotp.trainer.checkpoint import delete_checkpoint

        delete_checkpoint(run_dir / "checkpoint")  # one left by a kill after the record: retrain, not resume
        print(f"Retraining {run_dir.name} (force=true); the earlier record is kept as result.json.previous until "
              f"this run succeeds", flush=True)
    run_log = RunLog(run_dir / "run.log").open()
    base = identity(cfg, spec, identifier, run_dir, config)
    started = time.time()
    # The code that runs is the code imported now: the commit state is taken at the start, so edits or
    # commits made while a long run trains do not end up in its record.
    git_at_start = git_info()
    loggers = None
    try:
        outcome, loggers = train_and_record(cfg, spec, method, run_dir, identifier, config, init_source)
        record = succeeded_record(base, outcome, started, git_at_start)
        drop_weights_unless_kept(cfg, run_dir, record)
    except Exception as error:  # noqa: BLE001 - any failure must leave a failed record behind
        record = failed_record(base, error, started, git_at_start)
        write_record(record_path, record)
        if loggers is not None:
            loggers.finish(record.to_dict())
        notes.error("Run failed: %s; record: %s", record.error, record_path)
        run_log.close()
        raise
    write_record(record_path, record)
    from aotp.trainer.checkpoint import delete_checkpoint

    delete_checkpoint(run_dir / "checkpoint")  # after the record: a kill in between leaves a finished run
    drop_previous(run_dir)
    written = record.to_dict()
    loggers.finish(written)
    note(f"{spec.full_name} {cfg.model.name} {cfg.method.name} seed={cfg.seed}: dev main={record.main:.4f} "
         f"({', '.join(f'{k}={v:.4f}' for k, v in record.metrics.items() if k not in ('main', 'best_step'))})")
    note(f"Record: {record_path}")
    run_log.close()
    return written


def build_loggers(cfg: DictConfig, run_dir: Path, identifier: str, config: dict):
    from aotp.trainer.loggers import JsonlLogger, Loggers, WandbLogger

    wandb = None
    if cfg.logger.name == "wandb":
        tags = [f"task:{cfg.task.benchmark}/{cfg.task.name}", f"method:{cfg.method.name}", f"model:{cfg.model.name}"]
        group = cfg.logger.get("group") or cfg.get("experiment_name") or "default"
        wandb = WandbLogger.create({**to_container(cfg.logger), "group": group}, identifier, run_dir, config,
                                   name=run_dir.name, tags=tags)
    elif cfg.logger.name not in ("jsonl", "none"):
        raise ConfigError(f"logger={cfg.logger.name!r}; valid: jsonl, wandb, none")
    return Loggers(JsonlLogger(run_dir / "metrics.jsonl"), wandb)


def train_and_record(cfg, spec, method, run_dir: Path, identifier: str, config: dict, init_source: Path | None = None):
    from aotp.assembly import build_run, parameter_counts
    from aotp.trainer.loop import Trainer

    loggers = build_loggers(cfg, run_dir, identifier, config)
    parts = build_run(cfg, spec=spec, method=method)  # threads + device, seed, backbone, model + method, data
    model, data = parts.model, parts.data
    warm = warm_start(model, init_source) if init_source is not None else None
    if warm is not None:
        print(f"Warm start: {warm.tensors} trained tensors ({warm.parameters:,} values) from {init_source}", flush=True)
    params = parameter_counts(model, method)
    loggers.describe({"params": {**params, "share": params["trainable"] / params["total"]}})
    note(f"{spec.full_name}: train {len(data[spec.train_split])}, "
         + ", ".join(f"{s} {len(data[s])}" for s in spec.eval_splits)
         + f" | {cfg.model.name} + {cfg.method.name}: {params['trainable']:,} of {params['total']:,} parameters train "
         + f"({100 * params['trainable'] / params['total']:.3f}%) | device {parts.device}")
    truncation = report_truncation(data, cfg.data)  # refuses choices made identical by truncation
    trainer = Trainer(cfg.trainer, model, method, data, run_dir, loggers, parts.device, int(cfg.seed), parts.collator)
    head_lr = cfg.method.get("head_lr")
    reset_peak_memory(parts.device)
    tf32 = tf32_enabled()
    fitted = trainer.fit(float(cfg.method.lr), float(cfg.method.get("weight_decay", 0.0)),
                         head_lr=None if head_lr is None else float(head_lr))
    return finish_run(cfg, parts, fitted, params, run_dir, warm=warm, truncation=truncation,
                      train_memory=peak_memory(parts.device), tf32=tf32), loggers


def finish_run(cfg, parts, fitted, params: dict, run_dir: Path, warm: WarmStart | None = None,
               truncation: dict | None = None, train_memory: dict | None = None,
               tf32: bool | None = None) -> dict[str, Any]:
    """After training (best state restored): save the trainable state, prepare the inference form and check
    the dev logits did not move, write predictions; returns the record's measured blocks (keyword arguments
    of ``RunRecord``, see :func:`aotp.results.record.succeeded_record`). ``parts``: the run's
    :class:`aotp.assembly.RunParts` (data loaded); ``fitted``: :meth:`aotp.trainer.loop.Trainer.fit`'s
    :class:`~aotp.trainer.loop.Fitted`; ``train_memory``: the CUDA peaks of training (:func:`aotp.accelerator.peak_memory`;
    a pack's are its K runs' together); ``tf32``: whether TF32 was allowed while training. Shared with packed
    runs (:mod:`aotp.trainer.packed`), so their records have the same form.

    The inference-form check compares like with like: both forms are scored, and the form prepared (a LoRA
    merge is itself a matmul), under :func:`aotp.accelerator.exact_precision` (fp32, TF32 off, restored after),
    so TF32's rounding, which differs between ``xW + s(xA)B`` and ``x(W + sBA)``, cannot fail an exact merge,
    and the record says so (``inference.check_precision``). Scores kept from training are reused only when
    they were computed at that precision (fp32 training without TF32)."""
    from aotp.tasks.formatting import FORMATTERS
    from aotp.tasks.scoring import write_predictions
    from aotp.trainer.checkpoint import save_tensors
    from aotp.trainer.loop import evaluate, predict_scores

    spec, method, model, data, collator, device = (parts.spec, parts.method, parts.model, parts.data,
                                                   parts.collator, parts.device)
    state = fitted.state
    save_tensors(method.trainable_state_dict(model), run_dir / "trainable.safetensors")

    # Inference form (merge / materialise): the logits on dev must not move. The scores of the restored
    # best state were kept from its evaluation (recomputed after a resume or with mixed precision).
    check_split = spec.eval_splits[0]
    eval_batch = int(cfg.trainer.eval_batch_size)
    # scores of the best state computed in this process at full fp32 precision, if any (not under TF32)
    exact_scores = {} if tf32_enabled() else (fitted.best_scores or {})
    progress = bool(cfg.trainer.get("progress", True))
    reset_peak_memory(device)
    with exact_precision() as check_precision:
        before = exact_scores.get(check_split)
        if before is None:
            before = predict_scores(model, data[check_split], collator, eval_batch, device,
                                    progress=f"scores before inference form {check_split}" if progress else None)
        note(f"Preparing the inference form ({cfg.method.name}) and checking dev logits against it ({check_precision})")
        tick = time.perf_counter()
        inference_facts = method.prepare_for_inference(
            model, run_dir / "inference", token_ids=eval_token_ids(data, spec.eval_splits, collator.pad_token_id)) or {}
        prepare_seconds = time.perf_counter() - tick
        tick = time.perf_counter()
        metrics, scores = evaluate(model, data, collator, eval_batch, device,  # with the inference form
                                   progress="check inference form" if progress else None)
        final_eval_seconds = time.perf_counter() - tick
    eval_memory = peak_memory(device)
    after = scores[check_split]
    max_diff = float(abs(before - after).max()) if before.size else 0.0
    tolerance = float(inference_facts.pop("logit_tolerance", cfg.trainer.inference_tolerance))
    # a method whose inference form rounds (an fp16/bf16 AoT table) states that rounding relative to max|logit|
    relative = float(inference_facts.get("logit_relative_tolerance", 0.0))
    if relative and before.size:
        tolerance = max(tolerance, relative * float(abs(before).max()))
    if max_diff > tolerance:
        raise RuntimeError(f"prepare_for_inference changed dev logits by {max_diff:.3g} > tolerance {tolerance:g}")
    formatter = FORMATTERS.get(spec.formatter)
    for split, split_scores in scores.items():
        write_predictions(run_dir / "predictions" / f"{split}.jsonl",
                          formatter.predictions(spec, data[split].examples, split_scores))
    metrics["best_step"] = state["best_step"]
    return {
        "metrics": metrics,
        "selection": Selection(best_step=state["best_step"], best_main_during_training=state["best_main"],
                               stopped_early=state["stopped_early"], total_steps=fitted.total_steps,
                               steps_done=state["step"], skipped_steps=state.get("skipped_steps", 0),
                               history=state["history"]),
        "params": Params(**params, share=params["trainable"] / params["total"]),
        "init_from": warm,
        "inference": Inference(max_abs_logit_diff=max_diff, tolerance=tolerance, prepare_seconds=prepare_seconds,
                               check_precision=check_precision, extra=inference_facts),
        "execution": execution_block(cfg, fitted, device, tf32, train_memory, eval_memory),
        "data": {split: len(data[split]) for split in data.splits},
        "truncation": Truncation(**truncation) if truncation is not None else None,
        "timings": Timings(train_seconds=state["train_seconds"], eval_seconds=state["eval_seconds"] + final_eval_seconds,
                           train_examples_per_second=state["train_examples"] / max(state["train_seconds"], 1e-9),
                           train_examples=state["train_examples"]),
        "env": environment(device),
    }


def execution_block(cfg, fitted, device, tf32: bool | None, train_memory: dict | None,
                    eval_memory: dict | None) -> Execution:
    """The record's ``execution``: precision, TF32, the micro-batch the loop ran (``Fitted.micro_batch``) and,
    on CUDA, the peak memory of training and of the final evaluations beside the budget's estimate, which
    is printed with them so the estimate can be checked against what ran."""
    execution = Execution(precision=str(cfg.trainer.precision), tf32=tf32, **(fitted.micro_batch or {}),
                          train_memory=DeviceMemory(**train_memory) if train_memory else None,
                          eval_memory=DeviceMemory(**eval_memory) if eval_memory else None)
    if train_memory:  # measured on CUDA (aotp.accelerator.peak_memory)
        import torch

        from aotp.budget import human

        execution.budget_gpu_bytes = budget_gpu_estimate(cfg)
        estimate = "not available" if execution.budget_gpu_bytes is None else human(execution.budget_gpu_bytes)
        note(f"GPU memory ({torch.cuda.get_device_name(device)}): training peak {human(train_memory['peak_allocated_bytes'])} "
             f"allocated / {human(train_memory['peak_reserved_bytes'])} reserved; final evaluation "
             f"{human(eval_memory['peak_allocated_bytes'])} / {human(eval_memory['peak_reserved_bytes'])}; "
             f"budget estimate {estimate} (aotp.budget)")
    return execution


def budget_gpu_estimate(cfg) -> int | None:
    """The budget's GPU peak for this run's config (:func:`aotp.budget.run_budget`), None when it cannot be
    computed (a model without ``architecture``); never fails the run."""
    try:
        from aotp.budget import run_budget

        return int(run_budget(cfg)["gpu"]["peak"])
    except Exception as error:  # noqa: BLE001 - the estimate is a note beside the measurement, not the run
        log.warning("no budget GPU estimate for this run: %s", one_line(str(error)))
        return None


def report_truncation(data, data_cfg) -> dict[str, Any]:
    """Print how many examples per split ``max_length`` truncated; warn above ``data.truncation_warning``.
    Returns ``{"splits": {split: counts}, "warnings": [...]}`` for the record (aotp/tasks/truncation.py)."""
    from aotp.tasks.truncation import check_truncation, describe, truncation_report

    splits = truncation_report(data)
    if splits:
        max_length = next(iter(splits.values()))["max_length"]
        note(f"Truncated at max_length {max_length}: " + ", ".join(describe(n, s) for n, s in splits.items()))
    warnings = check_truncation(splits, data_cfg)
    for warning in warnings:
        print(f"Warning: {warning}", file=sys.stderr, flush=True)
        notes.warning(warning)
    return {"splits": splits, "warnings": warnings}


def eval_token_ids(data, splits, pad_token_id: int) -> "torch.Tensor":
    """Every token id of the eval splits' features (multiple choice: of every choice) and the padding
    id the collator fills batches with, once each: all the inference form is given after
    ``prepare_for_inference`` (AoT materialises just their rows)."""
    import numpy as np
    import torch

    ids: set[int] = {int(pad_token_id)}
    for split in splits:
        for feature in data[split].features:
            sequences = feature["input_ids"]
            for sequence in (sequences if sequences and isinstance(sequences[0], list) else [sequences]):
                ids.update(sequence)
    return torch.from_numpy(np.fromiter(sorted(ids), dtype=np.int64, count=len(ids)))


# An absolute path from aotp/paths.py (the package's own configs, found from any working directory): a relative
# config_path would make Hydra read pkg://aotp/configs when started from the console script, which needs the
# config folders to be Python packages.
@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    logging.getLogger("transformers").setLevel(logging.ERROR)
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        record = execute(cfg)
    except RunLocked as error:  # another process trains this run: nothing is recorded, nothing trained twice
        if multirun:
            print(f"Error: {one_line(str(error))}", file=sys.stderr)
            return None
        refuse(str(error))
    except Exception as error:  # noqa: BLE001
        if multirun:  # a run that started is recorded as failed (one refused by validation has no record); the sweep goes on
            print(f"Run failed: {type(error).__name__}: {one_line(str(error))}; the sweep goes on", file=sys.stderr)
            return None
        if isinstance(error, Refusal):  # a bad option, file or name: one line, exit 2
            refuse(str(error))
        raise
    return (record.get("metrics") or {}).get("main")


def check_command_line(arguments: list[str]) -> None:
    """Refusals Hydra would print as a multi-line report (exit 1): an unknown group choice (with "did you
    mean" and the list) and, for a single run, any override Hydra cannot compose; each as one line, exit 2."""
    try:
        check_group_choices(arguments)
    except ConfigError as error:
        refuse(str(error))
    flags = [a for a in arguments if a.startswith("-")]
    if any(flag not in ("-m", "--multirun") for flag in flags):  # --cfg, --help, -cd DIR ...: Hydra's own handling
        return
    try:
        overrides = [a for a in arguments if a not in flags]
        if flags:  # a multirun: compose its first run (the first value of every sweep override)
            from hydra.core.override_parser.overrides_parser import OverridesParser

            overrides = [f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" if o.is_sweep_override()
                         else o.input_line for o in OverridesParser.create().parse_overrides(overrides)]
        first = compose(overrides)
        check_values(first, paths=False)  # counts and numbers of the (first) run
        check_gpu_requirement(first)  # a paper sweep without a usable GPU stops here, once, not once per run
    except ConfigError as error:
        refuse(str(error))
    except Exception as error:  # noqa: BLE001 - Hydra/OmegaConf raise many types for a bad override
        refuse(f"{one_line(str(error)).removesuffix(' Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.')}")


def cli() -> None:
    """``aotp-run`` (console script) and ``python -m aotp.run``: one-line refusals first, then Hydra."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if any(a in ("-h", "--help") for a in sys.argv[1:]):  # aotp's help, not Hydra's generic one (aotp/run_help.py)
        from aotp.run_help import run_help

        print(run_help("aotp-run" if os.path.basename(sys.argv[0]).startswith("aotp-run") else "python -m aotp.run"))
        return
    check_command_line(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
