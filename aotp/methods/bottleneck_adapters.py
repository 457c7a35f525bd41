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
from aotp.methods.adapterhub import AdapterHubMethod
from aotp.methods.base import METHODS, head_parameter_count
from aotp.models.task_model import TaskModel

# The two post-LN layer norms of every encoder layer (same names in all four families).
LAYER_NORM_PATTERN = re.compile(r"^backbone\.encoder\.layer\.\d+\.(attention\.output|output)\.LayerNorm\.")


class BottleneckAdapter(AdapterHubMethod):
    module_marker = ".adapters."
    adapters_per_layer: int
    default_non_linearity: str

    def __init__(self, reduction_factor: float = 16, non_linearity: str | None = None,
                 train_layer_norm: bool = False):
        if reduction_factor <= 0:
            raise ValueError(f"method.options.reduction_factor must be > 0, got {reduction_factor}")
        self.reduction_factor = reduction_factor
        self.non_linearity = non_linearity or self.default_non_linearity
        self.train_layer_norm = bool(train_layer_norm)

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
    inference_note = "AdapterHub DoubleSeqBn: 2 bottleneck adapters per layer"
    adapters_per_layer = 2
    default_non_linearity = "swish"  # AdapterHub's DoubleSeqBnConfig default

    def __init__(self, reduction_factor: float = 16, non_linearity: str | None = None,
                 train_layer_norm: bool = True):
        super().__init__(reduction_factor, non_linearity, train_layer_norm)

    def library_config(self):
        from adapters import DoubleSeqBnConfig

        return DoubleSeqBnConfig(reduction_factor=self.reduction_factor, non_linearity=self.non_linearity)


@METHODS.register("adapter_pfeiffer")
class PfeifferAdapter(BottleneckAdapter):
    """Pfeiffer et al. 2021: one adapter after the FFN (reusing the layer's own layer norm)."""

    name = "adapter_pfeiffer"
    inference_note = "AdapterHub SeqBn: 1 bottleneck adapter per layer"
    adapters_per_layer = 1
    default_non_linearity = "relu"  # AdapterHub's SeqBnConfig default

    def library_config(self):
        from adapters import SeqBnConfig

        return SeqBnConfig(reduction_factor=self.reduction_factor, non_linearity=self.non_linearity)
