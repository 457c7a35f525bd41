"""P-Tuning v2: deep prompt tuning (Liu et al. 2022, arXiv 2110.07602), via AdapterHub prefix tuning.

Every encoder layer l attends over p trainable prefix keys and values before the sequence's own:
``Attn_l(x) = softmax(q [K_l^pre ; K_l]^T / s + mask) [V_l^pre ; V_l]`` with ``K_l^pre, V_l^pre``
of shape (p, d) per layer; the prefix positions are always attended (their attention-mask columns
are 1; padding stays masked) and carry no hidden states, so the TaskModel head still reads the
first real token. On DeBERTa the relative-position (c2p/p2c) scores are zero over the prefix columns.
The backbone is frozen.

Prefix parameters (options ``prefix_length`` p, ``reparametrize``, ``bottleneck_size`` b):

* ``reparametrize: false`` (P-Tuning v2's default for NLU): the prefix itself is trained,
  ``P = [K_1^pre, V_1^pre, ..., K_L^pre, V_L^pre]``: ``p * L * 2 * d`` parameters.
* ``reparametrize: true``: ``P = W_2 tanh(W_1 E + b_1) + b_2`` over a prefix embedding
  ``E: p x d``, ``W_1: d -> b``, ``W_2: b -> 2 L d``:
  ``p*d + (d*b + b) + (b*2*L*d + 2*L*d)`` parameters.

Trainable parameters: the above ``+ head``. Dropout (option ``dropout``, P-Tuning v2 applies the
backbone's hidden dropout 0.1) acts on the prefix keys/values during training only.

Inference: a reparametrized prefix is materialised once into its flat form (the MLP is dropped);
logits are unchanged. Benchmark variants ``prefix<p>`` (p prefix keys/values per layer; default
``prefix16``, ``prefix64``); a batch mixes tasks through AdapterHub ``BatchSplit`` (per-example
prefix keys/values).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aotp.methods.adapterhub import AdapterHubMethod
from aotp.methods.base import METHODS, InferenceVariant, count_option, head_parameter_count
from aotp.models.task_model import TaskModel


@METHODS.register("ptuning_v2")
class PTuningV2(AdapterHubMethod):
    name = "ptuning_v2"
    module_marker = ".prefix_tunings."
    benchmark_variants = ("prefix16", "prefix64")
    inference_note = "AdapterHub prefix tuning (flat): p extra keys/values per layer"
    mixing_note = "mixes: AdapterHub BatchSplit (per-example prefix keys/values)"

    def __init__(self, prefix_length: int = 16, reparametrize: bool = False, bottleneck_size: int = 512,
                 dropout: float = 0.1):
        self.prefix_length = count_option("prefix_length", prefix_length)
        self.reparametrize = bool(reparametrize)
        self.bottleneck_size = int(bottleneck_size)
        self.dropout = float(dropout)

    def library_config(self):
        from adapters import PrefixTuningConfig

        return PrefixTuningConfig(prefix_length=self.prefix_length, flat=not self.reparametrize,
                                  bottleneck_size=self.bottleneck_size, non_linearity="tanh", dropout=self.dropout)

    def expected_trainable_parameters(self, model: TaskModel) -> int:
        config = model.backbone.config
        d, layers, p, b = config.hidden_size, config.num_hidden_layers, self.prefix_length, self.bottleneck_size
        if self.reparametrize:
            prefix = p * d + (d * b + b) + (b * 2 * layers * d + 2 * layers * d)
        else:
            prefix = p * layers * 2 * d
        return prefix + head_parameter_count(model)

    def prepare_for_inference(self, model: TaskModel, artifact_dir: Path | None = None,
                              token_ids: torch.Tensor | None = None) -> dict[str, Any]:
        if not self.reparametrize:
            return {"prefix_parameters": self._prefix_size(model)}
        with torch.no_grad():
            model.backbone.eject_prefix_tuning(self.name)  # MLP -> flat prefix, computed once
        # eject() builds new FlatPrefixTuning modules in training mode (dropout on) whatever the
        # model's mode; re-propagate the model's own mode to them.
        model.train(model.training)
        return {"prefix_parameters": self._prefix_size(model), "reparametrization": "materialised"}

    @classmethod
    def inference_variant(cls, variant: str, dtype: str = "fp32") -> InferenceVariant:
        """``prefix<p>``: the flat prefix of length p (option ``prefix_length``)."""
        if not variant.startswith("prefix") or not variant[6:].isdigit():
            raise ValueError(f"{cls.name} variants: prefix<p>, e.g. prefix16 (got {variant!r})")
        return InferenceVariant(variant, {"prefix_length": int(variant[6:])}, note=cls.inference_note,
                                routing="batch_split", mixing=cls.mixing_note)

    def _prefix_size(self, model: TaskModel) -> int:
        return sum(p.numel() for n, p in model.named_parameters() if self.is_trainable(n))
