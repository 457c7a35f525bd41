"""Backbones under ``torch.autocast`` (``trainer.precision=bf16|fp16``): one repair for DeBERTa v1.

DeBERTa v1's ``DisentangledSelfAttention`` (transformers 4.57, and AdapterHub's copy of it) adds its
fp32 parameters ``q_bias`` / ``v_bias`` to the fused projection's output. Under autocast that output
is bf16/fp16, so the sum is promoted to fp32, while the attention scores (an autocast matmul) stay
bf16/fp16; the masking step then fills the scores with ``torch.finfo(query_layer.dtype).min``, the
*fp32* minimum, which does not fit bf16 (-3.4028e38 < -3.3895e38) nor fp16, and every forward fails
with ``RuntimeError: value cannot be converted to type c10::BFloat16 without overflow``
(huggingface/transformers#35332, fixed upstream after the 4.57 line that AdapterHub supports).

:func:`make_autocast_safe` registers, on every such attention module, a forward pre-hook that, while
autocast is on, hands the forward bf16/fp16 casts of ``q_bias`` / ``v_bias`` (differentiable: the
gradients reach the fp32 parameters, which the optimizer keeps updating) and a forward hook that puts
the parameters back. The query then has the scores' dtype, as it would if the biases lived in an
``nn.Linear`` (whose bias autocast casts the same way). Without autocast the hooks do nothing, so an
fp32 forward is bitwise unchanged; parameter names and state dicts are unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

# Unit roundoff u of each floating format (half the spacing of its significand at 1; round to
# nearest): the largest relative error of one rounding. Tolerances in this project are multiples of it.
UNIT_ROUNDOFF = {"fp32": 2.0 ** -24, "bf16": 2.0 ** -8, "fp16": 2.0 ** -11}

CAST_BIASES = ("q_bias", "v_bias")
_SAVED = "_aotp_autocast_saved_biases"


def _autocast_dtype(module: nn.Module):
    """The autocast dtype in force for the device of ``module``'s biases, or None when autocast is off."""
    device_type = getattr(module, CAST_BIASES[0]).device.type
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def _cast_biases(module: nn.Module, args, kwargs):
    dtype = _autocast_dtype(module)
    if dtype is None:
        return None
    saved = {name: module._parameters[name] for name in CAST_BIASES}
    setattr(module, _SAVED, saved)
    for name, parameter in saved.items():
        # A tensor in place of the parameter for this forward only (as torch.func.functional_call does);
        # the cast is part of the graph, so the fp32 parameter receives the gradient.
        module._parameters[name] = parameter.to(dtype)
    return None


def _restore_biases(module: nn.Module, args, kwargs, output):
    saved = getattr(module, _SAVED, None)
    if saved is not None:
        module._parameters.update(saved)
        delattr(module, _SAVED)
    return None


def needs_bias_cast(module: nn.Module) -> bool:
    """True for DeBERTa-v1 disentangled attention modules with fp32 ``q_bias`` / ``v_bias`` parameters."""
    from transformers.models.deberta.modeling_deberta import DisentangledSelfAttention

    return isinstance(module, DisentangledSelfAttention) and all(
        isinstance(module._parameters.get(name), nn.Parameter) for name in CAST_BIASES)


def make_autocast_safe(model: nn.Module) -> int:
    """Install the hooks (once per module) on every module that needs them; returns how many modules have them."""
    count = 0
    for module in model.modules():
        if not needs_bias_cast(module):
            continue
        if not getattr(module, "_aotp_autocast_safe", False):
            module.register_forward_pre_hook(_cast_biases, with_kwargs=True)
            module.register_forward_hook(_restore_biases, with_kwargs=True, always_call=True)
            module._aotp_autocast_safe = True
        count += 1
    return count
