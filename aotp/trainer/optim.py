"""AdamW with parameter groups and the linear warmup / linear decay schedule."""

from __future__ import annotations

import torch
from transformers import get_linear_schedule_with_warmup

NO_DECAY_MARKERS = ("bias", "LayerNorm.weight", "layer_norm.weight", "layernorm.weight", "norm.weight")


def parameter_groups(model: torch.nn.Module, weight_decay: float, head_lr: float | None = None) -> list[dict]:
    """Weight decay on matrices, none on biases and normalisation weights; with ``head_lr`` the task
    head's parameters (``head.*``) form two more groups at that learning rate."""
    groups = {(in_head, decays): [] for in_head in (False, True) for decays in (True, False)}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            in_head = head_lr is not None and name.startswith("head.")
            decays = not any(marker in name for marker in NO_DECAY_MARKERS)
            groups[in_head, decays].append(parameter)
    result = []
    for (in_head, decays), parameters in groups.items():
        if in_head and not parameters:
            continue
        group = {"params": parameters, "weight_decay": weight_decay if decays else 0.0}
        result.append({**group, "lr": float(head_lr)} if in_head else group)
    return result


# Devices with a fused AdamW kernel in torch (CPU since torch 2.4): the one-kernel update is several times
# faster than the multi-tensor one for large parameter sets (full fine-tuning of MiniLM on one CPU thread:
# 22 ms against 130 ms per step) and equal to it up to float rounding.
FUSED_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


def fused_available(parameters) -> bool:
    """Every parameter is a floating-point tensor on one device type that has the fused AdamW kernel."""
    types = {p.device.type for p in parameters}
    return (len(types) == 1 and types <= set(FUSED_DEVICE_TYPES) and all(p.is_floating_point() for p in parameters)
            and "fused" in torch.optim.AdamW.__init__.__code__.co_varnames)


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8,
                    head_lr: float | None = None, fused: bool = True):
    """AdamW; ``head_lr`` (``method.head_lr``) trains the randomly initialised task head faster than the
    pretrained weights (null: every parameter at ``lr``). ``fused`` (``trainer.fused_optimizer``): the
    fused kernel where the parameters' device has one (else, and with False, torch's multi-tensor
    ``foreach`` update, as every run before issue 17)."""
    groups = parameter_groups(model, weight_decay, head_lr)
    parameters = [p for group in groups for p in group["params"]]
    kernel = {"fused": True} if fused and parameters and fused_available(parameters) else {}
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, **kernel)


def build_scheduler(optimizer, total_steps: int, warmup_ratio: float, warmup_steps: int | None = None):
    warmup = int(warmup_steps) if warmup_steps is not None else int(round(warmup_ratio * total_steps))
    return get_linear_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
