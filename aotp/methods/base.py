"""The method interface: a method is a transformation of any :class:`TaskModel`, never a subclass.

A method (1) freezes/injects parameters in ``apply``, (2) states which parameters train by name
(``is_trainable``), (3) states its trainable-parameter formula (``expected_trainable_parameters``),
and (4) optionally rewrites the model for inference (``prepare_for_inference``: merge, materialise)
without changing its logits. The trainer never branches on a method's name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch

from aotp.models.task_model import TaskModel
from aotp.registry import Registry


class Method(ABC):
    """Base class. Subclasses register with ``@METHODS.register("name")``; options come from the
    ``method.options`` config block as keyword arguments."""

    name: str = "base"
    # True where the method's inference form holds the cross-encoder head (AoT's multi-task packs)
    cross_encoded_only: bool = False

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


METHODS: Registry[type[Method]] = Registry("method", option="method")


def head_parameter_count(model: TaskModel) -> int:
    return sum(p.numel() for p in model.head.parameters())


def build_method(method_cfg) -> Method:
    """Instantiate the method named by ``method.name`` with ``method.options``."""
    options = dict(method_cfg.get("options") or {})
    return METHODS.get(method_cfg["name"])(**options)
