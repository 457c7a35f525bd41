"""Shared glue for the methods built on AdapterHub ``adapters`` (bottleneck adapters, P-Tuning v2).

``adapters.init(backbone)`` swaps the backbone's module classes for adapter-aware ones in place;
``add_adapter`` then injects the method's modules, whose parameters are named
``...adapters.<name>...`` (bottleneck) or ``...prefix_tunings.<name>...`` (prefix tuning), so the
trainable set is decidable by name.

Library check (adapters 1.3.0, transformers 4.57): BertModel, RobertaModel, DebertaModel (v1) and
DebertaV2Model are all supported as base models, including bottleneck adapters and prefix tuning
(the prefix's attention-mask columns are always attended, and DeBERTa's relative-position scores
are zero-padded over the prefix). One defect is repaired here: on DeBERTa v1,
``adapters.init`` wraps the fused ``in_proj`` (built with ``bias=False``) in ``LoRAMergedLinear``,
whose ``wrap`` creates an ``nn.Linear`` with a *freshly initialised* bias and copies the original
bias only when there is one; that random bias changes the pretrained model's outputs even with no
adapter attached. :func:`init_adapterhub` removes every bias the original module did not have.
(The library's LoRA is not used: see :mod:`aotp.methods.lora`.)
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from dataclasses import replace

from torch import nn

from aotp.methods.base import InferenceVariant, Method
from aotp.models.task_model import TaskModel


def init_adapterhub(model: TaskModel) -> None:
    """``adapters.init(model.backbone)``, leaving the backbone's function unchanged."""
    import adapters

    bias_free = {name for name, module in model.backbone.named_modules()
                 if isinstance(module, nn.Linear) and module.bias is None}
    adapters.init(model.backbone)
    for name, module in model.backbone.named_modules():
        if name in bias_free and isinstance(module, nn.Linear) and module.bias is not None:
            module.register_parameter("bias", None)


def add_and_activate(model: TaskModel, adapter_name: str, config) -> None:
    """Attach one AdapterHub adapter (``config``) to the backbone and make it the active one."""
    init_adapterhub(model)
    was_training = model.training
    model.backbone.add_adapter(adapter_name, config=config)
    # set_active_adapters first resets LoRA merges inside a forward context that warns "adapters
    # available but none are activated" -- true only until this very call returns; silence it.
    mixin_logger = logging.getLogger("adapters.model_mixin")
    level = mixin_logger.level
    mixin_logger.setLevel(logging.ERROR)
    try:
        model.backbone.set_active_adapters(adapter_name)
    finally:
        mixin_logger.setLevel(level)
    model.train(was_training)


class AdapterHubMethod(Method):
    """A method whose modules AdapterHub injects: ``library_config()`` describes them, and their
    parameters are the ones named ``...<module_marker><name>....``; everything else is frozen."""

    module_marker: str  # ".adapters." (bottleneck adapters) or ".prefix_tunings." (prefix tuning)
    # Nothing to merge: the benchmark serves the adapters as they are. AdapterHub's BatchSplit
    # composition routes contiguous slices of a batch to different adapters, so a batch sorted by
    # task mixes tasks (routing "batch_split").
    benchmark_variants = ("adapters",)
    mixing_note = "mixes: AdapterHub BatchSplit (batch sorted by task, contiguous slices per adapter, unsorted)"

    @classmethod
    def inference_variant(cls, variant: str, dtype: str = "fp32") -> InferenceVariant:
        return replace(super().inference_variant(variant, dtype), routing="batch_split")

    @abstractmethod
    def library_config(self):
        """The ``adapters`` config object of this method's modules."""

    def is_trainable(self, name: str) -> bool:
        return f"{self.module_marker}{self.name}." in name

    def apply(self, model: TaskModel) -> TaskModel:
        add_and_activate(model, self.name, self.library_config())
        self.freeze_all_but(model, self.is_trainable)
        return model
