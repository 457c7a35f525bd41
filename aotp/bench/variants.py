"""The single-task models the benchmark compares, each built with its registered method.

Every variant is built the way a finished run is: ``method.apply(model)``, the method's trainable
parameters moved away from their (often zero) init so the adaptation really acts (a fresh LoRA,
adapter or AoT model computes exactly the backbone), then ``method.prepare_for_inference(model,
tmp_dir)`` (merge / materialise / nothing). Options come from ``configs/method/<name>.yaml`` (the
options a run uses), overridden per variant.

| method / variant                | what runs at inference                                              |
|---------------------------------|---------------------------------------------------------------------|
| backbone / frozen               | the frozen encoder + task head: the floor                           |
| full_ft / same_as_backbone      | the same computation as the backbone (only the weights differ)      |
| bitfit / same_as_backbone       | the same computation as the backbone (only the biases differ)       |
| lora / merged                   | ``prepare_for_inference`` merges B A into W: a plain backbone       |
| lora / unmerged                 | ``apply`` only: W x + (alpha/r) B A x in every adapted projection   |
| adapter_houlsby, adapter_pfeiffer / adapters | AdapterHub bottleneck adapters (nothing to merge)      |
| ptuning_v2 / prefix{p}          | p prefix keys/values per layer (AdapterHub prefix tuning, flat)     |
| aot_fc, aot_kron / materialized | per-layer gather from the (memory-mapped) table + add               |
| aot_fc / materialized_bf16      | the same with the table stored in bf16 (cast to the model dtype)    |
| aot_fc / materialized_previous  | the same table through the hooks as they were before (dense gather) |
| aot_fc, aot_kron / on_the_fly   | reparametrization on the batch's unique tokens, then gather + add   |

The head is the same for every variant (a copy of the backbone variant's head, whose output layer
is redrawn with std 1 so that logits depend visibly on the encoder output).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from aotp.methods import METHODS, Method
from aotp.models import TaskModel
from aotp.paths import config_dir


# (method, variant) -> method options (over the config file's) and whether prepare_for_inference runs.
DEFAULT_VARIANTS: tuple[str, ...] = (
    "full_ft/same_as_backbone", "bitfit/same_as_backbone", "lora/merged", "lora/unmerged",
    "adapter_houlsby/adapters", "adapter_pfeiffer/adapters", "ptuning_v2/prefix16", "ptuning_v2/prefix64",
    "aot_fc/materialized", "aot_fc/materialized_bf16", "aot_fc/on_the_fly", "aot_kron/materialized", "aot_kron/on_the_fly",
)

NOTES = {
    "backbone": "frozen encoder + head: the floor",
    "full_ft": "same computation as the backbone at inference (all weights differ, the architecture does not)",
    "bitfit": "same computation as the backbone at inference (only bias values differ)",
    "lora/merged": "B A merged into W by prepare_for_inference: a plain backbone",
    "lora/unmerged": "apply only (prepare_for_inference, which merges, is skipped): W x + (alpha/r) B A x",
    "adapter_houlsby": "AdapterHub DoubleSeqBn: 2 bottleneck adapters per layer",
    "adapter_pfeiffer": "AdapterHub SeqBn: 1 bottleneck adapter per layer",
    "ptuning_v2": "AdapterHub prefix tuning (flat): p extra keys/values per layer",
    "aot/materialized": "table |V| x L x d memory-mapped; per layer a gather of the batch's rows + an add",
    "aot/on_the_fly": "reparametrization on the batch's unique tokens (all L layers), then per-layer gather + add",
    "aot/previous": "the same table through the hooks as they were before this benchmark's optimisation: one "
                    "(N,T,L,d) gather table[input_ids] before the encoder, then per layer an out-of-place add of the "
                    "strided slice (a fresh tensor per layer)",
}


def method_options(name: str) -> dict[str, Any]:
    """``options`` of ``configs/method/<name>.yaml`` (empty for a method without a config file)."""
    path = config_dir("method", f"{name}.yaml")
    if not path.is_file():
        return {}
    from omegaconf import OmegaConf

    return dict(OmegaConf.to_container(OmegaConf.load(path)).get("options") or {})


def parse_variant(spec: str) -> tuple[str, str, dict[str, Any], bool]:
    """``"method/variant"`` -> (method, variant, option overrides, run prepare_for_inference)."""
    method, _, variant = spec.partition("/")
    if method not in METHODS.names():
        from aotp.registry import unknown_choice_message
        raise KeyError(unknown_choice_message("method", method, METHODS.names()))
    prepare = True
    overrides: dict[str, Any] = {}
    if method == "lora":
        if variant not in ("merged", "unmerged"):
            raise ValueError(f"lora variants: merged, unmerged (got {spec!r})")
        prepare = variant == "merged"
    elif method == "ptuning_v2":
        if not variant.startswith("prefix") or not variant[6:].isdigit():
            raise ValueError(f"ptuning_v2 variants: prefix<p>, e.g. prefix16 (got {spec!r})")
        overrides["prefix_length"] = int(variant[6:])
    elif method in ("aot_fc", "aot_kron"):
        mode, _, suffix = variant.partition("_") if variant.startswith("materialized") else (variant, "", "")
        if mode not in ("materialized", "on_the_fly") or suffix not in ("", "fp16", "bf16", "previous"):
            raise ValueError(f"{method} variants: materialized, materialized_<fp16|bf16>, materialized_previous, "
                             f"on_the_fly (got {spec!r})")
        overrides["inference_mode"] = mode
        if mode == "materialized":  # the benchmark times the memory-mapped table file, as it was measured
            overrides["save_table"] = True
        if suffix in ("fp16", "bf16"):
            overrides["table_dtype"] = suffix
    return method, variant, overrides, prepare


def perturb_(parameters, generator: torch.Generator, scale: float) -> int:
    """``p += scale * N(0, 1)`` for every parameter; returns how many values moved."""
    moved = 0
    with torch.no_grad():
        for parameter in parameters:
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float32)
            parameter.add_((noise * scale).to(device=parameter.device, dtype=parameter.dtype))
            moved += parameter.numel()
    return moved


def method_parameters(model: TaskModel) -> list[torch.nn.Parameter]:
    """The method's own trainable parameters (the head excluded)."""
    return [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]


@dataclass
class Variant:
    key: str                      # "method/variant"
    method: str
    variant: str
    model: torch.nn.Module
    forward: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    facts: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def base_model(backbone, num_labels: int, seed: int) -> TaskModel:
    """The frozen backbone + head every variant starts from (head output layer redrawn, std 1)."""
    model = TaskModel(backbone, "classification", num_labels, seed=seed).eval()
    generator = torch.Generator().manual_seed(seed + 7919)
    with torch.no_grad():
        weight = model.head.out_proj.weight
        weight.copy_(torch.randn(weight.shape, generator=generator))
    model.requires_grad_(False)
    return model


def build_variant(spec: str, base: TaskModel, work_dir: Path, seed: int, scale: float = 0.02,
                  options: Optional[dict[str, Any]] = None) -> Variant:
    """Build ``spec`` ("method/variant") from a copy of ``base`` (see the module docstring)."""
    name, variant, overrides, prepare = parse_variant(spec)
    method_cls = METHODS.get(name)
    opts = {**method_options(name), **overrides, **(options or {})}
    method: Method = method_cls(**opts)
    torch.manual_seed(seed)  # method inits (LoRA's A, adapters) are reproducible
    model = copy.deepcopy(base)
    method.apply(model)
    moved = perturb_(method_parameters(model), torch.Generator().manual_seed(seed), scale)
    model.eval()
    facts: dict[str, Any] = {"options": opts, "perturbed_values": moved,
                             "trainable_parameters": method.expected_trainable_parameters(model)}
    if prepare:
        prepared = method.prepare_for_inference(model, work_dir / spec.replace("/", "_"))
        facts.update({k: v for k, v in prepared.items() if k not in ("pack_dir", "table_path", "reparam_path")})
    else:
        facts["prepare_for_inference"] = "skipped"
    model.requires_grad_(False)
    if name.startswith("aot") and variant == "materialized_previous":
        model.aot.hooks.provider = model.aot.lookup  # dense (N, T, L, d) gather
        model.aot.hooks.reuse_buffers = False         # out-of-place add per layer
        note = NOTES["aot/previous"]
    elif name.startswith("aot"):
        note = NOTES[f"aot/{opts['inference_mode']}"]
    else:
        note = NOTES.get(f"{name}/{variant}", NOTES.get(name, ""))
    return Variant(spec, name, variant, model, lambda inputs, model=model: model(**inputs), facts, note)


def backbone_variant(base: TaskModel) -> Variant:
    return Variant("backbone/frozen", "backbone", "frozen", base, lambda inputs: base(**inputs), {}, NOTES["backbone"])
