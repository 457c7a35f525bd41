"""P-Tuning v2: deep prompt tuning (Liu et al. 2022, arXiv 2110.07602), aotp's own prefix modules.

Every encoder layer l attends over p trainable prefix keys and values before the sequence's own:
``Attn_l(x) = softmax(q [K_l^pre ; K_l]^T / s + mask) [V_l^pre ; V_l]`` with ``K_l^pre, V_l^pre``
of shape (p, d) per layer (split into the layer's heads like its own keys/values); the prefix positions
are always attended (their attention-mask columns are attended; padding stays masked) and carry no hidden
states, so the TaskModel head still reads the first real token. On DeBERTa (v1 and v2/v3) the
relative-position (c2p/p2c) scores are computed over the sequence's own keys and zero-padded over the
prefix columns, as THUDM's P-Tuning v2 and AdapterHub do. Where the prefix enters each family's attention
is :data:`aotp.methods.prefix_attention.PREFIX_ATTENTION`. The backbone is frozen.

Prefix parameters (options ``prefix_length`` p, ``reparametrize``, ``bottleneck_size`` b), the module
``backbone.prefix_encoder`` (:class:`PrefixEncoder`), whose output ``P`` is (p, L, 2, d) (key, value per layer):

* ``reparametrize: false`` (P-Tuning v2's default for NLU): the prefix itself is trained,
  ``prefix_encoder.prefix`` = ``[K_1^pre, V_1^pre, ..., K_L^pre, V_L^pre]`` per position, initialised
  ``N(0, 1)``: ``p * L * 2 * d`` parameters.
* ``reparametrize: true``: ``P = W_2 tanh(W_1 E + b_1) + b_2`` over a prefix embedding ``E: p x d``
  (``prefix_encoder.embedding``, ``N(0, 1)``), ``W_1: d -> b``, ``W_2: b -> 2 L d`` (``prefix_encoder.mlp``,
  ``nn.Linear`` init): ``p*d + (d*b + b) + (b*2*L*d + 2*L*d)`` parameters. The MLP runs on each row's copy
  of the p embeddings, as THUDM's and AdapterHub's code do (:meth:`PrefixEncoder.keys_values`).

Trainable parameters: the above ``+ head``. Dropout (option ``dropout``, P-Tuning v2 applies the backbone's
hidden dropout 0.1) acts on the batch's prefix keys/values (B, p, L, 2, d) during training only, drawn at the
start of the backbone's forward, before the embeddings' dropout.

This is AdapterHub's ``PrefixTuningConfig`` computation (``flat = not reparametrize``, ``non_linearity="tanh"``),
with its initialisation and random-draw order (:func:`aotp.methods.adapterhub.replay_init_draws` first), so
one seed gives the library's initial prefix; ``tests/unit/test_adapterhub_equivalence.py`` checks both.

Inference: a reparametrized prefix is materialised once into its flat form, ``prefix_encoder.prefix``
(the embedding and MLP are dropped); logits are unchanged. Benchmark variants ``prefix<p>`` (p prefix
keys/values per layer; default ``prefix16``, ``prefix64``); a batch mixes tasks with every task's prefix stacked
and gathered per row (routing ``stacked_adapters``, :class:`aotp.bench.multitask.RoutedPrefixEncoder`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from aotp.methods.adapterhub import native_state, replay_init_draws
from aotp.methods.base import METHODS, InferenceVariant, Method, count_option, head_parameter_count
from aotp.methods.prefix_attention import PREFIX_ATTENTION, PrefixStates, add_prefix
from aotp.models.task_model import TaskModel

PREFIX_MODULE = "prefix_encoder"  # attribute of the backbone holding the prefix parameters


class PrefixEncoder(nn.Module):
    """The prefix keys/values of all layers: ``table()`` (p, L, 2, d); ``forward(batch_size)`` the batch's
    (B, p, L, 2, d), dropout applied."""

    def __init__(self, prefix_length: int, layers: int, hidden_size: int, reparametrize: bool,
                 bottleneck_size: int, dropout: float):
        super().__init__()
        self.shape = (prefix_length, layers, 2, hidden_size)
        if reparametrize:  # AdapterHub PrefixTuning: wte, then control_trans (Linear, tanh, Linear)
            self.embedding = nn.Embedding(prefix_length, hidden_size)
            self.mlp = nn.Sequential(nn.Linear(hidden_size, bottleneck_size), nn.Tanh(),
                                     nn.Linear(bottleneck_size, layers * 2 * hidden_size))
        else:  # AdapterHub FlatPrefixTuning: torch.randn(p * L * 2 * d), the same draws in the same order
            self.prefix = nn.Parameter(torch.randn(self.shape))
        self.dropout = nn.Dropout(dropout)

    @property
    def reparametrized(self) -> bool:
        return "prefix" not in self._parameters

    def keys_values(self, batch_size: int) -> torch.Tensor:
        """(B, p, L, 2, d) before dropout. The MLP runs on each row's copy of the prefix embeddings, as in
        THUDM's and AdapterHub's code: bitwise the library's values (one evaluation broadcast to the rows
        would differ by float rounding, measured up to 7e-7 in the hidden states of the tiny models)."""
        if not self.reparametrized:
            return self.prefix.unsqueeze(0).expand(batch_size, *self.shape)
        tokens = torch.arange(self.shape[0], device=self.embedding.weight.device).unsqueeze(0).expand(batch_size, -1)
        return self.mlp(self.embedding(tokens)).view(batch_size, *self.shape)

    def table(self) -> torch.Tensor:
        """The prefix keys/values, (p, L, 2, d)."""
        return self.prefix if not self.reparametrized else self.keys_values(1)[0]

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.dropout(self.keys_values(batch_size))

    def flatten_(self) -> None:
        """Materialise the MLP's output as the flat prefix and drop the MLP (inference)."""
        if not self.reparametrized:
            return
        with torch.no_grad():
            table = self.table().detach().clone()
        # AdapterHub's eject() builds a FlatPrefixTuning, whose constructor draws torch.randn(p*L*2*d) before
        # the weights are replaced: the same draw, so the generator stays the library run's.
        torch.randn(table.numel())
        del self.embedding, self.mlp
        self.prefix = nn.Parameter(table)


def _batch_size(args: tuple, kwargs: dict) -> int:
    """The batch size of a backbone call (as AdapterHub infers it: the first of these inputs given)."""
    for name in ("input_ids", "attention_mask", "inputs_embeds"):
        if kwargs.get(name) is not None:
            return kwargs[name].size(0)
    if args:
        return args[0].size(0)
    raise ValueError("P-Tuning v2: cannot infer the batch size of a backbone call without input_ids, attention_mask "
                     "or inputs_embeds")


def _begin_forward(backbone: nn.Module, args: tuple, kwargs: dict) -> None:
    """Backbone forward pre-hook: this call's prefix keys/values, once for all layers."""
    backbone.prefix_states.current = getattr(backbone, PREFIX_MODULE)(_batch_size(args, kwargs))


def _end_forward(backbone: nn.Module, args: tuple, kwargs: dict, output) -> None:
    backbone.prefix_states.current = None


@METHODS.register("ptuning_v2")
class PTuningV2(Method):
    name = "ptuning_v2"
    benchmark_variants = ("prefix16", "prefix64")
    inference_note = "prefix tuning (flat; AdapterHub's computation, aotp's modules): p extra keys/values per layer"
    mixing_note = "mixes: per-example prefix keys/values (bench RoutedPrefixEncoder: every task's prefix stacked, gathered per row)"

    def __init__(self, prefix_length: int = 16, reparametrize: bool = False, bottleneck_size: int = 512,
                 dropout: float = 0.1):
        self.prefix_length = count_option("prefix_length", prefix_length)
        self.reparametrize = bool(reparametrize)
        self.bottleneck_size = int(bottleneck_size)
        self.dropout = float(dropout)

    def attention_modules(self, model: TaskModel) -> list[tuple[nn.Module, type]]:
        """(self-attention module, family mixin) for every layer."""
        if model.family not in PREFIX_ATTENTION:
            raise ValueError(f"P-Tuning v2 has no prefix seam for family {model.family!r}; add it to "
                             f"aotp/methods/prefix_attention.py:PREFIX_ATTENTION (known: {', '.join(PREFIX_ATTENTION)})")
        config = model.backbone.config
        path, mixin = PREFIX_ATTENTION[model.family]
        modules = [(layer.get_submodule(path), mixin) for layer in model.backbone.encoder.layer]
        width = getattr(modules[0][0], "all_head_size", config.hidden_size)
        if width != config.hidden_size:
            raise ValueError(f"P-Tuning v2 needs the attention width to equal hidden_size ({width} != {config.hidden_size})")
        return modules

    def is_trainable(self, name: str) -> bool:
        return name.startswith(f"backbone.{PREFIX_MODULE}.")

    def apply(self, model: TaskModel) -> TaskModel:
        backbone, config = model.backbone, model.backbone.config
        attention = self.attention_modules(model)  # validate before drawing anything
        replay_init_draws(backbone, model.family)
        weight = backbone.get_input_embeddings().weight
        encoder = PrefixEncoder(self.prefix_length, config.num_hidden_layers, config.hidden_size, self.reparametrize,
                                self.bottleneck_size, self.dropout).to(device=weight.device, dtype=weight.dtype)
        setattr(backbone, PREFIX_MODULE, encoder.train(model.training))
        backbone.prefix_states = PrefixStates(self.prefix_length)
        for layer, (module, mixin) in enumerate(attention):
            add_prefix(module, mixin, backbone.prefix_states, layer)
        backbone.register_forward_pre_hook(_begin_forward, with_kwargs=True)
        backbone.register_forward_hook(_end_forward, with_kwargs=True, always_call=True)
        self.freeze_all_but(model, self.is_trainable)
        return model

    def expected_trainable_parameters(self, model: TaskModel) -> int:
        config = model.backbone.config
        d, layers, p, b = config.hidden_size, config.num_hidden_layers, self.prefix_length, self.bottleneck_size
        if self.reparametrize:
            prefix = p * d + (d * b + b) + (b * 2 * layers * d + 2 * layers * d)
        else:
            prefix = p * layers * 2 * d
        return prefix + head_parameter_count(model)

    def load_trainable_state_dict(self, model: TaskModel, state: dict[str, torch.Tensor]) -> None:
        """As :meth:`Method.load_trainable_state_dict`; states saved by the AdapterHub-based method load too."""
        super().load_trainable_state_dict(model, native_state(state, model.named_parameters()))

    def prepare_for_inference(self, model: TaskModel, artifact_dir: Path | None = None,
                              token_ids: torch.Tensor | None = None) -> dict[str, Any]:
        encoder = getattr(model.backbone, PREFIX_MODULE)
        if not encoder.reparametrized:
            return {"prefix_parameters": self._prefix_size(model)}
        encoder.flatten_()  # MLP -> flat prefix, computed once
        return {"prefix_parameters": self._prefix_size(model), "reparametrization": "materialised"}

    @classmethod
    def inference_variant(cls, variant: str, dtype: str = "fp32") -> InferenceVariant:
        """``prefix<p>``: the flat prefix of length p (option ``prefix_length``)."""
        if not variant.startswith("prefix") or not variant[6:].isdigit():
            raise ValueError(f"{cls.name} variants: prefix<p>, e.g. prefix16 (got {variant!r})")
        return InferenceVariant(variant, {"prefix_length": int(variant[6:])}, note=cls.inference_note,
                                routing="stacked_adapters", mixing=cls.mixing_note)

    def _prefix_size(self, model: TaskModel) -> int:
        return sum(p.numel() for n, p in model.named_parameters() if self.is_trainable(n))
