"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021), aotp's own modules.

An adapter is a bottleneck MLP inserted into encoder sub-blocks:
``A(z) = W_up f(W_down z + b_down) + b_up`` with ``W_down: d -> m``, ``W_up: m -> d`` and
``m = max(1, int(d // reduction_factor))``; f is the non-linearity (``transformers.activations.get_activation``).

It sits in a *site*: a post-LN sub-block of an encoder layer, ``out = LN(r + h)`` with ``h = dropout(W x + b)``
the sub-block's projection (after its dropout), ``r`` the sub-block's residual input and LN the sub-block's own
layer norm. The two variants are AdapterHub's configs, with their placement options:

* ``adapter_houlsby`` = ``DoubleSeqBnConfig`` (``original_ln_before=False``, ``residual_before_ln=True``,
  ``original_ln_after=True``): sites after the attention block and after the feed-forward block of every
  layer, ``out = LN(r + (h + A(h)))``: the adapter reads the projection before the residual and the layer
  norm, its own residual is h, the layer's residual and LN follow. Non-linearity swish. Houlsby et al. also
  train the layer norms of every layer (Sec. 2.1, "we also train the layer normalization parameters"):
  option ``train_layer_norm`` (default on).
* ``adapter_pfeiffer`` = ``SeqBnConfig`` (``original_ln_before=True``, ``residual_before_ln=True``,
  ``original_ln_after=True``): one site, after the feed-forward block, ``y = LN(r + h)``,
  ``out = LN(r + (h + A(y)))``: the adapter reads the sub-block's normalised output; its residual is h
  (taken before the layer's residual and LN), and the *same* layer norm is applied again after it. Non-linearity
  relu. Layer norms frozen by default.

The sums are evaluated in the library's order (``(A + h) + r``), so the native forward is AdapterHub's, not
only equal up to rounding. Initialisation is AdapterHub's ``init_weights="bert"``: both projections are built
as ``nn.Linear`` (default init), then ``W_down, W_up ~ N(0, 0.02^2)``, biases zero; the generator is first
moved by :func:`aotp.methods.adapterhub.replay_init_draws`, and the adapters are created layer by layer, site by
site, so one seed gives the library's initial weights (and the same later draws). The library's adapter dropout
and scaling are not options here (its defaults: dropout 0, scaling 1).

Trainable parameters, with L layers, n sites per layer (2 Houlsby, 1 Pfeiffer):
``L * n * (2*d*m + m + d)  [+ L * 2 * 2*d layer-norm weights and biases if train_layer_norm]  + head``
(parameters named ``...<site>.bottleneck.{down,up}.{weight,bias}`` and, with ``train_layer_norm``, the two
``LayerNorm``s of every layer).

Inference: the adapters stay (they are non-linear, nothing to merge); logits are unchanged. Benchmark variant
``adapters``; a batch mixes tasks with every task's adapter weights stacked and gathered per row, the trained
layer norms' affine too (routing ``stacked_adapters``, :class:`aotp.bench.multitask.RoutedBottleneck`).

Which sub-blocks are sites is data, :data:`ADAPTER_SITES`; a site module must compute
``LayerNorm(dropout(dense(x)) + input_tensor)`` from its children ``dense``, ``dropout`` and ``LayerNorm`` with
``forward(hidden_states, input_tensor)`` (the self-output and output blocks of BERT, RoBERTa, DeBERTa v1 and
DeBERTa-v2 in transformers 4.57 and 5); its class is swapped in place (as :mod:`aotp.methods.lora` swaps
``nn.Linear``), so the sub-block keeps its parameter names.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import torch
from torch import nn

from aotp.methods.adapterhub import native_state, replay_init_draws
from aotp.methods.base import METHODS, Method, head_parameter_count
from aotp.models.task_model import TaskModel

# family -> site ("mh_adapter": after the attention block, "output_adapter": after the FFN) -> path of the
# sub-block inside ``encoder.layer.<i>``
ADAPTER_SITES: dict[str, dict[str, str]] = {
    "bert": {"mh_adapter": "attention.output", "output_adapter": "output"},
    "roberta": {"mh_adapter": "attention.output", "output_adapter": "output"},
    "deberta": {"mh_adapter": "attention.output", "output_adapter": "output"},
    "deberta_v2": {"mh_adapter": "attention.output", "output_adapter": "output"},
}

# The two post-LN layer norms of every encoder layer (same names in all four families).
LAYER_NORM_PATTERN = re.compile(r"^backbone\.encoder\.layer\.\d+\.(attention\.output|output)\.LayerNorm\.")


class Bottleneck(nn.Module):
    """``A(z) = W_up f(W_down z + b_down) + b_up`` (AdapterHub ``Adapter`` with ``init_weights="bert"``)."""

    def __init__(self, hidden_size: int, bottleneck_size: int, non_linearity: str):
        super().__init__()
        from transformers.activations import get_activation

        self.down = nn.Linear(hidden_size, bottleneck_size)
        self.act = get_activation(non_linearity.lower())
        self.up = nn.Linear(bottleneck_size, hidden_size)
        with torch.no_grad():  # the library's order: down's weight, down's bias, up's weight, up's bias
            for linear in (self.down, self.up):
                linear.weight.normal_(mean=0.0, std=0.02)
                linear.bias.zero_()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(z)))


class BottleneckSite(nn.Module):
    """Mixin swapped into a site sub-block (see the module docstring); ``bottleneck`` is its adapter and
    ``bottleneck_reads_normed`` says whether it reads ``LN(r + h)`` (Pfeiffer) or ``h`` (Houlsby)."""

    bottleneck: nn.Module
    bottleneck_reads_normed: bool

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.dense(hidden_states))
        z = self.LayerNorm(h + input_tensor) if self.bottleneck_reads_normed else h
        return self.LayerNorm((self.bottleneck(z) + h) + input_tensor)


_SITE_CLASSES: dict[type, type] = {}


def site_class(cls: type) -> type:
    """``cls`` with :class:`BottleneckSite`'s forward (one subclass per sub-block class)."""
    if cls not in _SITE_CLASSES:
        _SITE_CLASSES[cls] = type(f"{cls.__name__}WithBottleneck", (BottleneckSite, cls), {})
    return _SITE_CLASSES[cls]


def add_bottleneck(module: nn.Module, adapter: nn.Module, reads_normed: bool) -> None:
    """Make the sub-block ``module`` a site running ``adapter`` (in place; its own parameters keep their names)."""
    missing = [child for child in ("dense", "dropout", "LayerNorm") if not hasattr(module, child)]
    if missing or isinstance(module, BottleneckSite):
        raise TypeError(f"{type(module).__name__} cannot take a bottleneck adapter: "
                        f"{'already has one' if not missing else 'no ' + ', '.join(missing)} (see ADAPTER_SITES)")
    module.__class__ = site_class(type(module))
    module.bottleneck = adapter
    module.bottleneck_reads_normed = reads_normed


class Variant(NamedTuple):
    """What tells the two bottleneck adapters apart: AdapterHub's config class they reproduce, the sites of
    every layer, whether the adapter reads the normalised sub-block output, the default non-linearity and
    whether the layer norms train by default."""

    library_config_class: str
    sites: tuple[str, ...]
    reads_normed: bool  # AdapterHub original_ln_before
    default_non_linearity: str
    train_layer_norm: bool


class BottleneckAdapter(Method):
    variant: Variant
    benchmark_variants = ("adapters",)
    mixing_note = ("mixes: per-example adapter weights (bench RoutedBottleneck: every task's W_down, W_up stacked, "
                   "gathered per row + bmm; trained layer norms' affine per row)")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        count = len(cls.variant.sites)
        cls.inference_note = (f"{cls.variant.library_config_class.removesuffix('Config')} (AdapterHub's placement, "
                              f"aotp's modules): {count} bottleneck adapter{'s' if count > 1 else ''} per layer")

    def __init__(self, reduction_factor: float = 16, non_linearity: str | None = None,
                 train_layer_norm: bool | None = None):
        if reduction_factor <= 0:
            raise ValueError(f"method.options.reduction_factor must be > 0, got {reduction_factor}")
        self.reduction_factor = reduction_factor
        self.non_linearity = non_linearity or self.variant.default_non_linearity
        self.train_layer_norm = self.variant.train_layer_norm if train_layer_norm is None else bool(train_layer_norm)
        self.adapters_per_layer = len(self.variant.sites)

    @classmethod
    def inference_variant(cls, variant: str, dtype: str = "fp32"):
        from dataclasses import replace

        return replace(super().inference_variant(variant, dtype), routing="stacked_adapters")

    def bottleneck_size(self, model: TaskModel) -> int:
        # exactly as AdapterHub computes it: int(hidden_size // reduction_factor), at least 1
        return max(1, int(model.hidden_size // self.reduction_factor))

    def site_modules(self, model: TaskModel) -> list[nn.Module]:
        """The site sub-blocks, layer by layer and, within a layer, in :data:`ADAPTER_SITES` order."""
        if model.family not in ADAPTER_SITES:
            raise ValueError(f"bottleneck adapters have no sites for family {model.family!r}; add it to "
                             f"aotp/methods/bottleneck_adapters.py:ADAPTER_SITES (known: {', '.join(ADAPTER_SITES)})")
        paths = [path for site, path in ADAPTER_SITES[model.family].items() if site in self.variant.sites]
        return [layer.get_submodule(path) for layer in model.backbone.encoder.layer for path in paths]

    def is_trainable(self, name: str) -> bool:
        return ".bottleneck." in name or (self.train_layer_norm and bool(LAYER_NORM_PATTERN.match(name)))

    def apply(self, model: TaskModel) -> TaskModel:
        sites = self.site_modules(model)  # validate before drawing anything
        replay_init_draws(model.backbone, model.family)
        m = self.bottleneck_size(model)
        for module in sites:
            weight = module.dense.weight
            adapter = Bottleneck(model.hidden_size, m, self.non_linearity).to(device=weight.device, dtype=weight.dtype)
            add_bottleneck(module, adapter.train(model.training), self.variant.reads_normed)
        self.freeze_all_but(model, self.is_trainable)
        return model

    def expected_trainable_parameters(self, model: TaskModel) -> int:
        config = model.backbone.config
        d, layers, m = config.hidden_size, config.num_hidden_layers, self.bottleneck_size(model)
        count = layers * self.adapters_per_layer * (2 * d * m + m + d)
        if self.train_layer_norm:
            count += layers * 2 * 2 * d
        return count + head_parameter_count(model)

    def load_trainable_state_dict(self, model: TaskModel, state: dict[str, torch.Tensor]) -> None:
        """As :meth:`Method.load_trainable_state_dict`; states saved by the AdapterHub-based method load too."""
        super().load_trainable_state_dict(model, native_state(state, model.named_parameters()))


@METHODS.register("adapter_houlsby")
class HoulsbyAdapter(BottleneckAdapter):
    """Houlsby et al. 2019: adapters after attention and after the FFN, layer norms trained."""

    name = "adapter_houlsby"
    variant = Variant("DoubleSeqBnConfig", sites=("mh_adapter", "output_adapter"), reads_normed=False,
                      default_non_linearity="swish", train_layer_norm=True)


@METHODS.register("adapter_pfeiffer")
class PfeifferAdapter(BottleneckAdapter):
    """Pfeiffer et al. 2021: one adapter after the FFN (reusing the layer's own layer norm)."""

    name = "adapter_pfeiffer"
    variant = Variant("SeqBnConfig", sites=("output_adapter",), reads_normed=True, default_non_linearity="relu",
                      train_layer_norm=False)
