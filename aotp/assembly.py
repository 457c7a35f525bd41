"""A run's parts, assembled in one place: from a composed config (:func:`build_run`) or from a finished
run's directory (:func:`load_run`).

    parts = build_run(cfg)          # before training (aotp.run): data loaded, method applied, untrained
    parts = load_run(run_dir)       # after (aotp.evaluate, aotp.predict): the record's config + trained weights

The order is the training run's and every entry point follows it: threads, device and TF32
(:func:`aotp.trainer.loop.setup_device`), the seed, the backbone (:func:`aotp.models.build_backbone`),
the task model (:class:`aotp.models.TaskModel`: the task's head on the backbone, in the run's
``data.pair_encoding``) with the method applied (``method.apply``), the task's data, and the collator
(:func:`aotp.tasks.data.task_collator`). A rebuilt run is therefore the trained one up to its
trainable state, which :func:`load_run` then loads from ``trainable.safetensors``.

Configs are read by key (``cfg["model"]``), so a composed ``DictConfig`` and the plain config stored in
a record (``result.json``'s ``config``) are assembled by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

from aotp.cli import Refusal

if TYPE_CHECKING:
    import torch

    from aotp.methods.base import Method
    from aotp.models import Backbone, TaskModel
    from aotp.results.schema import RunRecord
    from aotp.tasks import TaskData, TaskSpec
    from aotp.tasks.data import Collator


class RunError(Refusal, ValueError):
    """A run that cannot be loaded or cannot score the requested task; the message says why."""


@dataclass
class RunParts:
    """Everything a run is built from. ``data`` (train + eval splits) only from :func:`build_run` with
    ``data=True``; ``run_dir`` and ``record`` only from :func:`load_run`."""

    config: Mapping[str, Any]  # the composed config (DictConfig) or a record's plain config
    spec: "TaskSpec"
    method: "Method"
    backbone: "Backbone"  # its tokenizer and uses_token_type_ids tokenise the task's data
    model: "TaskModel"
    collator: "Collator"
    device: "torch.device"
    data: Optional["TaskData"] = None
    run_dir: Optional[Path] = None
    record: Optional["RunRecord"] = None


def build_model(backbone, method, head: str, num_labels: int, seed: int = 0, pair_encoding: str = "cross"):
    """The task model a method trains: ``head`` (``num_labels`` outputs) on ``backbone``, then ``method.apply``."""
    from aotp.models import TaskModel

    model = TaskModel(backbone, head, num_labels, seed=seed, pair_encoding=pair_encoding)
    method.apply(model)
    return model


def parameter_counts(model, method) -> dict[str, int]:
    """Trainable and total parameters of a built model, and what the method's formula expects."""
    return {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total": sum(p.numel() for p in model.parameters()),
            "expected_trainable": method.expected_trainable_parameters(model)}


def cache_dir(cfg: Mapping[str, Any]) -> Optional[Path]:
    """The tokenisation cache of a run (``paths.cache``), None with ``data.cache=false``."""
    if not (cfg.get("data") or {}).get("cache", True):
        return None
    cache = (cfg.get("paths") or {}).get("cache")
    return Path(cache) if cache else None


def load_data(cfg: Mapping[str, Any], spec, backbone) -> "TaskData":
    """The run's train and eval splits, tokenised with the backbone's tokenizer (``data`` group settings)."""
    from aotp.tasks import load_task_data

    return load_task_data(spec, backbone.tokenizer, cfg["data"], uses_token_type_ids=backbone.uses_token_type_ids,
                          seed=int(cfg["seed"]), cache_dir=cache_dir(cfg))


def build_run(cfg: Mapping[str, Any], spec=None, method=None, device: Optional[str] = None,
              data: bool = True) -> RunParts:
    """Assemble a run from its config: ``spec`` and ``method`` when the caller has them already (built
    from the same config by :func:`aotp.run.validate`), ``device`` instead of ``trainer.device``, and
    ``data=False`` to leave the splits unloaded (a finished run loads the ones it scores)."""
    from transformers import set_seed

    from aotp.methods import build_method
    from aotp.models import build_backbone
    from aotp.models.task_model import pair_encoding_of
    from aotp.tasks import TaskSpec
    from aotp.tasks.data import task_collator
    from aotp.trainer.loop import setup_device

    spec = spec if spec is not None else TaskSpec.from_config(cfg["task"])
    method = method if method is not None else build_method(cfg["method"])
    torch_device = setup_device(cfg.get("trainer") or {}, device)
    set_seed(int(cfg["seed"]))  # the method's initialisation draws from the global generators
    backbone = build_backbone(cfg["model"])
    model = build_model(backbone, method, spec.head, spec.num_labels, seed=int(cfg["seed"]),
                        pair_encoding=pair_encoding_of(cfg.get("data")))
    collator = task_collator(spec, model.backbone.config.pad_token_id)
    return RunParts(cfg, spec, method, backbone, model, collator, torch_device,
                    data=load_data(cfg, spec, backbone) if data else None)


def finished_record(run_dir: Path | str, use: str = "evaluated") -> "RunRecord":
    """The typed record of a finished run (``status: success``), read with
    :func:`aotp.results.record.read_record`; a :class:`RunError` says why another directory cannot be ``use``\\ d."""
    from aotp.results.record import RecordError, read_record

    run_dir = Path(run_dir)
    record_path = run_dir / "result.json"
    try:
        record = read_record(record_path)
    except RecordError as error:
        raise RunError(str(error)) from None
    if record is None:
        raise RunError(f"{run_dir} is not a run directory: {record_path} does not exist")
    if not record.succeeded:
        raise RunError(f"run {run_dir} has status {record.status!r}; only a finished (success) run can be {use}"
                       f"{': ' + record.error if record.error else ''}")
    return record


def load_run(run_dir: Path | str, device: str = "auto") -> RunParts:
    """Reopen a finished run: assembled from its record's config as it was trained (threads, seed,
    backbone, head, method), its trained state loaded from ``trainable.safetensors``, in eval mode on
    ``device`` (auto: cuda > mps > cpu)."""
    from safetensors.torch import load_file

    from aotp.config_checks import check_device

    check_device("device", device)
    run_dir = Path(run_dir)
    record = finished_record(run_dir)
    weights = run_dir / "trainable.safetensors"
    if not weights.is_file():
        raise RunError(f"run {run_dir} has no trained weights: {weights} does not exist")
    parts = build_run(record.config, device=device, data=False)
    parts.method.load_trainable_state_dict(parts.model, load_file(str(weights)))
    parts.model.to(parts.device).eval()
    return replace(parts, run_dir=run_dir, record=record)
