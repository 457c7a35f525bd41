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

import json
import logging
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from aotp.results.record import (SCHEMA_VERSION, environment, git_info, read_record, run_dir_name, run_id,
                                 write_json_atomic)

log = logging.getLogger("aotp.run")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the option and its valid values."""


CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def compose(overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    """Compose the run config exactly as ``python -m aotp.run <overrides>`` would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

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
    from aotp.trainer.loop import PRECISIONS

    trainer = cfg.trainer
    for option in ("batch_size", "eval_batch_size", "gradient_accumulation_steps"):
        if int(trainer[option]) <= 0:
            raise ConfigError(f"trainer.{option} must be a positive integer, got {trainer[option]}")
    if float(cfg.method.lr) <= 0:
        raise ConfigError(f"method.lr (the learning rate) must be positive, got {cfg.method.lr}")
    if cfg.method.get("head_lr") is not None and float(cfg.method.head_lr) <= 0:
        raise ConfigError(f"method.head_lr (the task head's learning rate; null = method.lr) must be positive, "
                          f"got {cfg.method.head_lr}")
    if not trainer.get("max_steps") and int(trainer.epochs) <= 0:
        raise ConfigError(f"set trainer.epochs > 0 or trainer.max_steps > 0 (got epochs={trainer.epochs}, "
                          f"max_steps={trainer.get('max_steps')})")
    if trainer.precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision={trainer.precision!r} is not one of {', '.join(PRECISIONS)}")
    valid_devices = ("auto", "cpu", "cuda", "mps")
    if str(trainer.device).split(":")[0] not in valid_devices:
        raise ConfigError(f"trainer.device={trainer.device!r}; valid: {', '.join(valid_devices)} (cuda:N allowed)")
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


def execute(cfg: DictConfig) -> dict[str, Any]:
    """One run. Returns its record (also written to ``<run_dir>/result.json``)."""
    config = to_container(cfg)
    identifier = run_id(config)
    run_dir = Path(cfg.paths.results) / run_dir_name(config, identifier)
    record_path = run_dir / "result.json"
    previous = read_record(record_path)
    # Checked before validation, which imports torch and the method libraries: a finished run of a
    # sweep is skipped in about a second.
    if previous is not None and previous.get("status") == "success" and not cfg.get("force", False):
        print(f"Skipping {run_dir.name}: already succeeded (main={previous['metrics'].get('main')}); record: {record_path}")
        return previous
    spec, method = validate(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    base = {"schema_version": SCHEMA_VERSION, "run_id": identifier, "run_dir": str(run_dir),
            "experiment": cfg.get("experiment_name"), "task": spec.full_name, "task_version": spec.version,
            "method": cfg.method.name, "model": cfg.model.name, "seed": int(cfg.seed), "config": config}
    started = time.time()
    # The code that runs is the code imported now: the commit state is taken at the start, so edits or
    # commits made while a long run trains do not end up in its record.
    git_at_start = git_info()
    loggers = None
    try:
        record, loggers = train_and_record(cfg, spec, method, run_dir, identifier, config)
        record = {**base, **record, "env": {**record["env"], "git": git_at_start}, "status": "success",
                  "wall_seconds": time.time() - started}
        (run_dir / "checkpoint").exists() and shutil.rmtree(run_dir / "checkpoint")  # 16 x trainable bytes
        if not cfg.trainer.get("keep_weights", True):
            (run_dir / "trainable.safetensors").unlink(missing_ok=True)
            record["trainable_weights"] = "deleted after success (trainer.keep_weights=false)"
    except Exception as error:  # noqa: BLE001 - any failure must leave a failed record behind
        record = {**base, "status": "failed", "error": f"{type(error).__name__}: {error}",
                  "traceback": traceback.format_exc(), "wall_seconds": time.time() - started,
                  "env": environment(git=git_at_start)}
        write_json_atomic(record_path, record)
        if loggers is not None:
            loggers.finish(record)
        raise
    write_json_atomic(record_path, record)
    loggers.finish(record)
    print(f"{spec.full_name} {cfg.model.name} {cfg.method.name} seed={cfg.seed}: dev main={record['metrics']['main']:.4f} "
          f"({', '.join(f'{k}={v:.4f}' for k, v in record['metrics'].items() if k not in ('main', 'best_step'))})")
    print(f"Record: {record_path}")
    return record


def build_loggers(cfg: DictConfig, run_dir: Path, identifier: str, config: dict):
    from aotp.trainer.loggers import JsonlLogger, Loggers, WandbLogger

    wandb = None
    if cfg.logger.name == "wandb":
        tags = [f"task:{cfg.task.benchmark}/{cfg.task.name}", f"method:{cfg.method.name}", f"model:{cfg.model.name}"]
        group = cfg.logger.get("group") or cfg.get("experiment_name") or "default"
        wandb = WandbLogger({**to_container(cfg.logger), "group": group}, identifier, run_dir, config,
                            name=run_dir.name, tags=tags)
    elif cfg.logger.name not in ("jsonl", "none"):
        raise ConfigError(f"logger={cfg.logger.name!r}; valid: jsonl, wandb, none")
    return Loggers(JsonlLogger(run_dir / "metrics.jsonl"), wandb)


def train_and_record(cfg, spec, method, run_dir: Path, identifier: str, config: dict):
    import torch
    from transformers import set_seed

    from aotp.models import TaskModel, build_backbone
    from aotp.models.task_model import pair_encoding_of
    from aotp.tasks import load_task_data
    from aotp.trainer.checkpoint import save_tensors
    from aotp.trainer.loop import Trainer, evaluate, predict_scores, select_device

    if cfg.trainer.get("threads"):
        torch.set_num_threads(int(cfg.trainer.threads))
    device = select_device(cfg.trainer.device)
    if device.type == "cuda" and cfg.trainer.get("tf32", True):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    set_seed(int(cfg.seed))
    loggers = build_loggers(cfg, run_dir, identifier, config)
    backbone = build_backbone(cfg.model)
    model = TaskModel(backbone, spec.head, spec.num_labels, seed=int(cfg.seed),
                      pair_encoding=pair_encoding_of(cfg.data))
    method.apply(model)
    params = {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
              "total": sum(p.numel() for p in model.parameters()),
              "expected_trainable": method.expected_trainable_parameters(model)}
    cache_dir = Path(cfg.paths.cache) if cfg.data.get("cache", True) else None
    data = load_task_data(spec, backbone.tokenizer, cfg.data, uses_token_type_ids=backbone.uses_token_type_ids,
                          seed=int(cfg.seed), cache_dir=cache_dir)
    print(f"{spec.full_name}: train {len(data[spec.train_split])}, "
          + ", ".join(f"{s} {len(data[s])}" for s in spec.eval_splits)
          + f" | {cfg.model.name} + {cfg.method.name}: {params['trainable']:,} of {params['total']:,} parameters train "
          + f"({100 * params['trainable'] / params['total']:.3f}%) | device {device}", flush=True)
    trainer = Trainer(cfg.trainer, model, method, data, run_dir, loggers, device, int(cfg.seed))
    head_lr = cfg.method.get("head_lr")
    state = trainer.fit(float(cfg.method.lr), float(cfg.method.get("weight_decay", 0.0)),
                        head_lr=None if head_lr is None else float(head_lr))
    save_tensors(method.trainable_state_dict(model), run_dir / "trainable.safetensors")

    # Inference form (merge / materialise): the logits on dev must not move. The scores of the restored
    # best state were kept from its evaluation (recomputed after a resume or with mixed precision).
    check_split = spec.eval_splits[0]
    eval_batch = int(cfg.trainer.eval_batch_size)
    before = (trainer.best_scores or {}).get(check_split)
    if before is None:
        before = predict_scores(model, data[check_split], trainer.collator, eval_batch, device)
    tick = time.perf_counter()
    inference_facts = method.prepare_for_inference(model, run_dir / "inference",
                                                   token_ids=eval_token_ids(data, spec.eval_splits, trainer.collator.pad_token_id)) or {}
    prepare_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    metrics, scores = evaluate(model, data, trainer.collator, eval_batch, device)  # with the inference form
    final_eval_seconds = time.perf_counter() - tick
    after = scores[check_split]
    max_diff = float(abs(before - after).max()) if before.size else 0.0
    tolerance = float(inference_facts.pop("logit_tolerance", cfg.trainer.inference_tolerance))
    if max_diff > tolerance:
        raise RuntimeError(f"prepare_for_inference changed dev logits by {max_diff:.3g} > tolerance {tolerance:g}")
    write_predictions(run_dir, spec, data, scores)
    metrics["best_step"] = state["best_step"]
    record = {
        "metrics": metrics,
        "selection": {"best_step": state["best_step"], "best_main_during_training": state["best_main"],
                      "stopped_early": state["stopped_early"], "total_steps": trainer.total_steps,
                      "steps_done": state["step"], "history": state["history"]},
        "params": {**params, "share": params["trainable"] / params["total"]},
        "inference": {**inference_facts, "max_abs_logit_diff": max_diff, "tolerance": tolerance,
                      "prepare_seconds": prepare_seconds},
        "data": {split: len(data[split]) for split in data.splits},
        "timings": {"train_seconds": state["train_seconds"], "eval_seconds": state["eval_seconds"] + final_eval_seconds,
                    "train_examples_per_second": state["train_examples"] / max(state["train_seconds"], 1e-9),
                    "train_examples": state["train_examples"]},
        "env": environment(device),
    }
    return record, loggers


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


def write_predictions(run_dir: Path, spec, data, scores) -> None:
    from aotp.tasks.formatting import FORMATTERS

    directory = run_dir / "predictions"
    directory.mkdir(parents=True, exist_ok=True)
    formatter = FORMATTERS.get(spec.formatter)
    for split, split_scores in scores.items():
        formatted = formatter.predictions(spec, data[split].examples, split_scores)
        with open(directory / f"{split}.jsonl", "w") as handle:
            groups = formatted.get("groups")
            for i, prediction in enumerate(formatted["predictions"]):
                reference = formatted["references"][i]
                line = {"idx": formatted["ids"][i], "prediction": _plain(prediction), "label": _plain(reference)}
                if groups is not None:  # grouped metrics (MultiRC exact match) can be rescored from the file
                    line["group"] = list(groups[i]) if isinstance(groups[i], tuple) else _plain(groups[i])
                handle.write(json.dumps(line) + "\n")


def _plain(value):
    return value.item() if hasattr(value, "item") else value


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> float | None:
    logging.getLogger("transformers").setLevel(logging.ERROR)
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        record = execute(cfg)
    except Exception as error:  # noqa: BLE001
        if multirun:  # a failed run is recorded as failed; the sweep goes on
            print(f"Run failed (recorded as failed): {type(error).__name__}: {error}", file=sys.stderr)
            return None
        if isinstance(error, (ConfigError,)) or type(error).__name__ in ("UnknownChoiceError", "DataFileError"):
            print(f"Error: {error}", file=sys.stderr)
            sys.exit(2)
        raise
    return record.get("metrics", {}).get("main")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
