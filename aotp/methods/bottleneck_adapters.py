"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021) through AdapterHub ``adapters``.

An adapter is a residual bottleneck inserted into every encoder layer:
``a(h) = h + W_up f(W_down h + b_down) + b_up`` with ``W_down: d -> m``, ``W_up: m -> d`` and
``m = int(d // reduction_factor)``; f is the non-linearity.

* ``adapter_houlsby`` (``DoubleSeqBnConfig``): two adapters per layer, after the attention block
  and after the feed-forward block. Houlsby et al. also train the layer norms of every layer
  (Sec. 2.1, "we also train the layer normalization parameters"): option ``train_layer_norm``.
* ``adapter_pfeiffer`` (``SeqBnConfig``): one adapter per layer, after the feed-forward block.

Trainable parameters, with L layers, n adapters per layer (2 Houlsby, 1 Pfeiffer):
``L * n * (2*d*m + m + d)  [+ L * 2 * 2*d layer-norm weights and biases if train_layer_norm]  + head``.

Inference: the adapters stay (they are non-linear, nothing to merge); logits are unchanged.
Benchmark variant ``adapters``; a batch mixes tasks through AdapterHub ``BatchSplit`` (one adapter
per task, see :mod:`aotp.methods.adapterhub`).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from aotp.methods.adapterhub import AdapterHubMethod
from aotp.methods.base import METHODS, head_parameter_count
from aotp.models.task_model import TaskModel

# The two post-LN layer norms of every encoder layer (same names in all four families).
LAYER_NORM_PATTERN = re.compile(r"^backbone\.encoder\.layer\.\d+\.(attention\.output|output)\.LayerNorm\.")


class Variant(NamedTuple):
    """What tells the two bottleneck adapters apart: AdapterHub's config class (whose defaults are the
    non-linearity here), the adapters it inserts per layer, and whether the layer norms train by default."""

    library_config_class: str
    adapters_per_layer: int
    default_non_linearity: str
    train_layer_norm: bool


class BottleneckAdapter(AdapterHubMethod):
    module_marker = ".adapters."
    variant: Variant

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        count = cls.variant.adapters_per_layer
        cls.inference_note = (f"AdapterHub {cls.variant.library_config_class.removesuffix('Config')}: {count} "
                              f"bottleneck adapter{'s' if count > 1 else ''} per layer")

    def __init__(self, reduction_factor: float = 16, non_linearity: str | None = None,
                 train_layer_norm: bool | None = None):
        if reduction_factor <= 0:
            raise ValueError(f"method.options.reduction_factor must be > 0, got {reduction_factor}")
        self.reduction_factor = reduction_factor
        self.non_linearity = non_linearity or self.variant.default_non_linearity
        self.train_layer_norm = self.variant.train_layer_norm if train_layer_norm is None else bool(train_layer_norm)
        self.adapters_per_layer = self.variant.adapters_per_layer

    def library_config(self):
        import adapters

        config_class = getattr(adapters, self.variant.library_config_class)
        return config_class(reduction_factor=self.reduction_factor, non_linearity=self.non_linearity)

    def bottleneck_size(self, model: TaskModel) -> int:
        # exactly as adapters computes it: int(hidden_size // reduction_factor), at least 1
        return max(1, int(model.hidden_size // self.reduction_factor))

    def is_trainable(self, name: str) -> bool:
        return super().is_trainable(name) or (self.train_layer_norm and bool(LAYER_NORM_PATTERN.match(name)))

    def expected_trainable_parameters(self, model: TaskModel) -> int:
        config = model.backbone.config
        d, layers, m = config.hidden_size, config.num_hidden_layers, self.bottleneck_size(model)
        count = layers * self.adapters_per_layer * (2 * d * m + m + d)
        if self.train_layer_norm:
            count += layers * 2 * 2 * d
        return count + head_parameter_count(model)


@METHODS.register("adapter_houlsby")
class HoulsbyAdapter(BottleneckAdapter):
    """Houlsby et al. 2019: adapters after attention and after the FFN, layer norms trained."""

    name = "adapter_houlsby"
    variant = Variant("DoubleSeqBnConfig", adapters_per_layer=2, default_non_linearity="swish", train_layer_norm=True)


@METHODS.register("adapter_pfeiffer")
class PfeifferAdapter(BottleneckAdapter):
    """Pfeiffer et al. 2021: one adapter after the FFN (reusing the layer's own layer norm)."""

    name = "adapter_pfeiffer"
    variant = Variant("SeqBnConfig", adapters_per_layer=1, default_non_linearity="relu", train_layer_norm=False)
