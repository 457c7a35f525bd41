"""The single-task models the benchmark compares, each built with its registered method.

Every variant is built the way a finished run is: ``method.apply(model)``, the method's trainable
parameters moved away from their (often zero) init so the adaptation really acts (a fresh LoRA,
adapter or AoT model computes exactly the backbone), then ``method.prepare_for_inference(model,
tmp_dir)`` (merge / materialise / nothing). Options come from ``configs/method/<name>.yaml`` (the
options a run uses), overridden per variant.

Which variants a method has, and what each is, the method says (:class:`aotp.methods.base.Method`:
``benchmark_variants``, ``inference_variant``); nothing here names a method, so a newly registered
method is benchmarked as it is. The registered ones:

| method / variant                | what runs at inference                                              |
|---------------------------------|---------------------------------------------------------------------|
| backbone / frozen               | the frozen encoder + task head: the floor                           |
| full_ft / same_as_backbone      | the same computation as the backbone (only the weights differ)      |
| bitfit / same_as_backbone       | the same computation as the backbone (only the biases differ)       |
| lora / merged                   | ``prepare_for_inference`` merges B A into W: a plain backbone       |
| lora / unmerged                 | ``apply`` only: W x + (alpha/r) B A x in every adapted projection   |
| adapter_houlsby, adapter_pfeiffer / adapters | bottleneck adapters (AdapterHub's placement; nothing to merge) |
| ptuning_v2 / prefix{p}          | p prefix keys/values per layer (flat prefix tuning)                 |
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

from aotp.methods import METHODS, InferenceVariant, Method
from aotp.models import TaskModel
from aotp.paths import config_dir

BACKBONE_NOTE = "frozen encoder + head: the floor"


def method_order() -> list[str]:
    """Registered methods in the order of the results tables (``aggregate.METHOD_ORDER``), others after."""
    from aotp.results.aggregate import METHOD_ORDER

    names = METHODS.names()
    return [n for n in METHOD_ORDER if n in names] + [n for n in names if n not in METHOD_ORDER]


def default_variants() -> tuple[str, ...]:
    """``"method/variant"`` for every registered method and every variant it benchmarks by default."""
    return tuple(f"{name}/{variant}" for name in method_order() for variant in METHODS.get(name).benchmark_variants)


def method_options(name: str) -> dict[str, Any]:
    """``options`` of ``configs/method/<name>.yaml`` (empty for a method without a config file)."""
    path = config_dir("method", f"{name}.yaml")
    if not path.is_file():
        return {}
    from omegaconf import OmegaConf

    return dict(OmegaConf.to_container(OmegaConf.load(path)).get("options") or {})


def resolve(spec: str, dtype: str = "fp32") -> tuple[str, InferenceVariant]:
    """``"method/variant"`` -> (method name, the method's :class:`InferenceVariant`); a spec without a
    variant names the method's first default one."""
    method, _, variant = spec.partition("/")
    if method not in METHODS.names():
        from aotp.registry import unknown_choice_message
        raise KeyError(unknown_choice_message("method", method, METHODS.names()))
    cls = METHODS.get(method)
    return method, cls.inference_variant(variant or cls.benchmark_variants[0], dtype)


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
    impl: Optional[Method] = None  # the method object that built it (None: the backbone)


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
                  options: Optional[dict[str, Any]] = None, dtype: str = "fp32") -> Variant:
    """Build ``spec`` ("method/variant") from a copy of ``base`` (see the module docstring); ``dtype``:
    the dtype the model will run in (a method may prepare for it, e.g. AoT's table dtype)."""
    name, form = resolve(spec, dtype)
    opts = {**method_options(name), **form.options, **(options or {})}
    method: Method = METHODS.get(name)(**opts)
    torch.manual_seed(seed)  # method inits (LoRA's A, adapters) are reproducible
    model = copy.deepcopy(base)
    method.apply(model)
    moved = perturb_(method_parameters(model), torch.Generator().manual_seed(seed), scale)
    model.eval()
    facts: dict[str, Any] = {"options": opts, "perturbed_values": moved,
                             "trainable_parameters": method.expected_trainable_parameters(model)}
    if form.prepare:
        prepared = method.prepare_for_inference(model, work_dir / f"{name}_{form.name}")
        facts.update({k: v for k, v in prepared.items() if k not in ("pack_dir", "table_path", "reparam_path")})
    else:
        facts["prepare_for_inference"] = "skipped"
    model.requires_grad_(False)
    if form.adjust is not None:
        form.adjust(model)
    return Variant(f"{name}/{form.name}", name, form.name, model, lambda inputs, model=model: model(**inputs), facts,
                   form.note, method)


def backbone_variant(base: TaskModel) -> Variant:
    return Variant("backbone/frozen", "backbone", "frozen", base, lambda inputs: base(**inputs), {}, BACKBONE_NOTE)
