"""Adding per-token biases before every encoder layer, with hooks and without copying backbone code.

:class:`BiasHooks` registers

* a forward pre-hook on the backbone (``with_kwargs=True``) that reads ``input_ids`` and asks a
  *provider* for the bias of every position and layer, shape (N, T, L, d) -- all L biases are
  computed once, before the encoder runs ("ahead of time");
* a forward pre-hook on every layer of the encoder's layer list that replaces the hidden states
  entering layer l (``hidden_states=`` keyword, or the first positional argument, as DeBERTa's
  encoder passes ``next_kv``) by ``hidden_states + bias[:, :, l]`` (out of place);
* a forward hook (``always_call=True``) on the backbone that drops the bias after the call.

The layer list is found generically (:func:`find_encoder_layers`), so any HF encoder whose layers
take the hidden states first works: BERT, RoBERTa, DeBERTa v1/v2/v3 here.

Limitation: DeBERTa-v2 checkpoints with a convolution layer (``conv_kernel_size > 0``) feed the
un-biased embedding output to that convolution as its residual; the layer inputs are still biased.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import torch
from torch import nn

BiasProvider = Callable[[torch.Tensor], torch.Tensor]


def find_encoder_layers(backbone: nn.Module) -> nn.ModuleList:
    """The encoder's list of Transformer layers (``backbone.encoder.layer`` for HF encoders)."""
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if isinstance(layers, nn.ModuleList) and len(layers) > 0:
        return layers
    expected = getattr(getattr(backbone, "config", None), "num_hidden_layers", None)
    candidates = [m for m in backbone.modules() if isinstance(m, nn.ModuleList) and len(m) == expected]
    if len(candidates) == 1:
        return candidates[0]
    raise ValueError(f"Cannot find the encoder layer list of {type(backbone).__name__}: expected "
                     f"`.encoder.layer` or a single ModuleList of num_hidden_layers={expected} modules")


class BiasHooks:
    """Hooks that add ``provider(input_ids)[:, :, l]`` to the input of encoder layer l."""

    def __init__(self, provider: BiasProvider):
        self.provider = provider
        self.bias: Optional[torch.Tensor] = None
        self.handles: list = []
        self.num_layers = 0
        self._backbone = None

    def attach(self, backbone: nn.Module) -> "BiasHooks":
        if self.handles:
            raise RuntimeError("bias hooks are already attached")
        if getattr(backbone, "_aotp_bias_hooks", None) is not None:
            raise RuntimeError(f"{type(backbone).__name__} already carries AoT bias hooks (a second set would add a "
                               "second bias): use another backbone instance, or detach the first hooks")
        layers = find_encoder_layers(backbone)
        self.num_layers = len(layers)
        self.handles.append(backbone.register_forward_pre_hook(self._compute, with_kwargs=True))
        self.handles.append(backbone.register_forward_hook(self._release, always_call=True))
        for index, layer in enumerate(layers):
            self.handles.append(layer.register_forward_pre_hook(functools.partial(self._add, index), with_kwargs=True))
        backbone._aotp_bias_hooks = self
        self._backbone = backbone
        return self

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self.bias = None
        backbone = getattr(self, "_backbone", None)
        if backbone is not None and getattr(backbone, "_aotp_bias_hooks", None) is self:
            del backbone._aotp_bias_hooks
        self._backbone = None

    def _compute(self, module, args, kwargs):
        input_ids = kwargs.get("input_ids")
        if input_ids is None and args:
            input_ids = args[0]
        if input_ids is None:
            raise ValueError("AoT P-Tuning indexes its biases by token id: call the backbone with input_ids "
                             "(inputs_embeds alone is not supported)")
        bias = self.provider(input_ids)
        if bias.dim() != 4 or bias.shape[:2] != input_ids.shape or bias.shape[2] != self.num_layers:
            raise RuntimeError(f"AoT bias has shape {tuple(bias.shape)}, expected "
                               f"({', '.join(map(str, input_ids.shape))}, {self.num_layers}, d)")
        self.bias = bias
        return None

    def _release(self, module, args, output):
        self.bias = None
        return None

    def _add(self, index: int, module, args, kwargs):
        bias = self.bias
        if bias is None:
            raise RuntimeError("AoT bias missing: an encoder layer ran outside a call of the backbone itself")
        layer_bias = bias[:, :, index]
        if "hidden_states" in kwargs:
            kwargs = dict(kwargs)
            hidden = kwargs["hidden_states"]
            kwargs["hidden_states"] = hidden + layer_bias.to(hidden.dtype)
            return args, kwargs
        if not args:
            raise RuntimeError(f"encoder layer {index} was called without hidden states")
        hidden = args[0]
        return (hidden + layer_bias.to(hidden.dtype),) + tuple(args[1:]), kwargs
