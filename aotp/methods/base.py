"""The method interface: a method is a transformation of any :class:`TaskModel`, never a subclass.

A method (1) freezes/injects parameters in ``apply``, (2) states which parameters train by name
(``is_trainable``), (3) states its trainable-parameter formula (``expected_trainable_parameters``),
and (4) optionally rewrites the model for inference (``prepare_for_inference``: merge, materialise)
without changing its logits. The trainer never branches on a method's name.

The benchmark (:mod:`aotp.bench`) does not either; it asks the method (class attributes and
hooks, all with defaults, so a new method is benchmarked as soon as it is registered):

* ``benchmark_variants`` -- the inference variants it times by default (``"<method>/<variant>"``);
* ``inference_variant(variant, dtype)`` -- what one variant is: option overrides, whether
  ``prepare_for_inference`` runs, a model adjustment, a note, and how it serves a batch whose rows
  belong to different tasks (``routing``: the per-example routing it supports, see
  :class:`InferenceVariant`);
* ``serving_facts(model)`` -- facts about the model as placed on the device (e.g. a table's dtype);
* ``work_alone(model, variant, input_ids, hidden)`` -- the work the method adds to the encoder,
  without the encoder, to be timed alone (AoT: the bias lookup and the L adds).

``packable`` says whether runs of the method can share one backbone in one packed forward
(:mod:`aotp.trainer.packed`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from aotp.models.task_model import TaskModel
from aotp.registry import Registry


@dataclass(frozen=True)
class InferenceVariant:
    """One way a finished model of a method is served, as the benchmark builds and times it.

    The model is built as a run builds it (``apply`` with the method's config options updated by
    ``options``), then ``prepare_for_inference`` if ``prepare``, then ``adjust(model)`` if given.

    ``routing`` names how the variant serves a batch mixing several tasks' rows; the multi-task
    benchmark keeps one server per routing (:data:`aotp.bench.multitask.SERVERS`):

    * ``"task_tables"`` -- per-example task tables + heads, one backbone pass (AoT:
      :class:`aotp.inference.MultiTaskModel`);
    * ``"stacked_factors"`` -- every task's LoRA factors stacked, gathered per row;
    * ``"stacked_adapters"`` -- every task's bottleneck-adapter weights or prefix keys/values stacked,
      gathered per row (aotp's own adapter modules, :mod:`aotp.methods.bottleneck_adapters`,
      :mod:`aotp.methods.ptuning_v2`);
    * ``"per_task_copies"`` -- cannot mix: T per-task batches through T prepared copies (timed);
    * ``None`` -- cannot mix and not timed (the same computation per task as ``per_task_copies``).
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    prepare: bool = True
    adjust: Optional[Callable[[TaskModel], None]] = None
    note: str = ""
    routing: Optional[str] = None
    mixing: str = ""  # one line: how a mixed batch is served (or why it cannot be)

    @property
    def mixes(self) -> bool:
        """Whether one forward can serve rows of different tasks."""
        return self.routing not in (None, "per_task_copies")


class Method(ABC):
    """Base class. Subclasses register with ``@METHODS.register("name")``; options come from the
    ``method.options`` config block as keyword arguments."""

    name: str = "base"
    # True where the method's inference form holds the cross-encoder head (AoT's multi-task packs)
    cross_encoded_only: bool = False
    # True where runs of the method can share one backbone in a packed forward (aotp.trainer.packed)
    packable: bool = False
    # The inference variants the benchmark times by default; the base class knows one, "prepared":
    # apply + prepare_for_inference, the form a finished run serves.
    benchmark_variants: tuple[str, ...] = ("prepared",)
    # What runs at inference (one line, in the benchmark records)
    inference_note: str = ""
    # How a batch mixing tasks is served (default: task-specific weights, so it cannot be mixed)
    mixing_note: str = "cannot mix tasks in one batch (task-specific weights): served as T per-task batches on T models"

    def __init__(self, **options: Any):
        if options:
            raise TypeError(f"method {self.name!r} takes no options, got {sorted(options)}")

    # -- training ------------------------------------------------------------------------------
    @abstractmethod
    def apply(self, model: TaskModel) -> TaskModel:
        """Transform ``model`` in place (freeze, inject modules) and return it. Must end with
        :meth:`freeze_all_but` (or set ``requires_grad`` itself) so only the method's parameters train."""

    def check_pair_encoding(self, pair_encoding: str) -> None:
        """Refuse (``ValueError``) a siamese ``data.pair_encoding`` for a cross-encoded-only method."""
        if self.cross_encoded_only and pair_encoding != "cross":
            supported = [name for name in METHODS.names() if not METHODS.get(name).cross_encoded_only]
            raise ValueError(f"method={self.name} serves cross-encoded tasks only; data.pair_encoding={pair_encoding} "
                             f"is supported by {', '.join(supported)}")

    @staticmethod
    def freeze_all_but(model: TaskModel, is_trainable) -> None:
        """Set ``requires_grad`` from a predicate on the parameter name; the head always trains."""
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.startswith("head.") or bool(is_trainable(name)))

    @abstractmethod
    def expected_trainable_parameters(self, model: TaskModel) -> int:
        """The method's trainable-parameter formula evaluated on ``model`` (head included),
        computed from shapes/options, independently of ``requires_grad``."""

    def trainable_state_dict(self, model: TaskModel) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, model: TaskModel, state: dict[str, torch.Tensor]) -> None:
        parameters = dict(model.named_parameters())
        missing = {n for n, p in parameters.items() if p.requires_grad} - set(state)
        unexpected = set(state) - set(parameters)
        if missing or unexpected:
            raise KeyError(f"trainable state mismatch: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
        with torch.no_grad():
            for name, value in state.items():
                parameters[name].copy_(value)

    # -- inference -----------------------------------------------------------------------------
    def prepare_for_inference(self, model: TaskModel, artifact_dir: Path | None = None,
                              token_ids: torch.Tensor | None = None) -> dict[str, Any]:
        """Rewrite ``model`` for inference (merge/materialise). Returns facts for the run record
        (e.g. ``{"table_bytes": ...}``). ``token_ids``: every token id the model will be given from now
        on (the runner's eval splits); a method may prepare only what those need (AoT: their table
        rows). Default: nothing to do."""
        return {}

    # -- benchmark (aotp.bench) ------------------------------------------------------------------
    @classmethod
    def inference_variant(cls, variant: str, dtype: str = "fp32") -> InferenceVariant:
        """The :class:`InferenceVariant` named ``variant`` for a model run in ``dtype`` (fp32, bf16,
        fp16); ``ValueError`` naming the valid variants. Default: the names in ``benchmark_variants``,
        each apply + prepare_for_inference, unable to mix tasks."""
        if variant not in cls.benchmark_variants:
            raise ValueError(f"{cls.name} variants: {', '.join(cls.benchmark_variants)} (got {variant!r})")
        return InferenceVariant(variant, note=cls.inference_note, mixing=cls.mixing_note)

    def serving_facts(self, model: TaskModel) -> dict[str, Any]:
        """Facts about ``model`` once placed on its device and dtype (for the benchmark record)."""
        return {}

    def work_alone(self, model: TaskModel, variant: str, input_ids: torch.Tensor,
                   hidden: torch.Tensor) -> dict[str, tuple[Callable[[], Any], str]]:
        """The work this method adds to the encoder's, without the encoder, for ``input_ids`` and
        hidden states ``hidden`` (N, T, d): ``{variant name: (call, note)}``, the first entry ``variant``
        itself, further entries forms of it to compare with. Default: none (nothing separable)."""
        return {}


METHODS: Registry[type[Method]] = Registry("method", option="method")


def count_option(name: str, value: Any, minimum: int = 1) -> int:
    """A method's integer option ``method.options.<name>``, refused below ``minimum`` with its name."""
    if int(value) < minimum:
        raise ValueError(f"method.options.{name} must be >= {minimum}, got {value}")
    return int(value)


def head_parameter_count(model: TaskModel) -> int:
    return sum(p.numel() for p in model.head.parameters())


def build_method(method_cfg) -> Method:
    """Instantiate the method named by ``method.name`` with ``method.options``."""
    options = dict(method_cfg.get("options") or {})
    return METHODS.get(method_cfg["name"])(**options)
