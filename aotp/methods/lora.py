"""LoRA (Hu et al. 2021, arXiv 2106.09685): low-rank updates of the attention projections.

For every adapted projection ``W: d_in -> d_out`` (by default the query and value projections of
every layer): ``y = W x + b + (alpha / r) * B A dropout(x)`` with ``A: r x d_in`` (Kaiming-uniform,
as in ``loralib``) and ``B: d_out x r`` (zeros, so a fresh LoRA model is exactly the backbone).

Trainable parameters: ``sum over adapted projections of r * (d_in + d_out)`` + head, i.e.
``L * len(targets) * r * (d + A)`` with A the attention width (= d here).

Inference: ``W <- W + (alpha / r) B A`` is merged into each projection and the LoRA factors are
removed, so the merged model is a plain backbone with no inference overhead; logits are unchanged.
Benchmark variants: ``merged`` (that form) and ``unmerged`` (``apply`` only, ``W x + (alpha/r) B A x``
per adapted projection). Multi-task serving: unmerged, a batch mixes tasks with every task's factors
stacked and gathered per row (routing ``stacked_factors``); merged, it cannot (the update lives in
W), T per-task batches through T merged copies (``per_task_copies``).

Which modules are adapted is data, :data:`LORA_TARGETS` (family -> role -> module path inside each
encoder layer). This is a small own implementation rather than AdapterHub's ``LoRAConfig``, because
the library cannot do the job on DeBERTa v1: its fused ``in_proj`` (Q, K and V in one Linear) is
wrapped as ``LoRAMergedLinear``, which assumes the output rows are [Q; K; V] in three contiguous
blocks (GPT-2's layout), whereas DeBERTa v1 interleaves them per head ([q_h | k_h | v_h] for each
head h, see ``DisentangledSelfAttention.transpose_for_scores(...).chunk(3, -1)``); the library's
"q" and "v" updates therefore land on a mixture of query, key and value rows. It also adds a
random bias to that bias-free projection (see :mod:`aotp.methods.adapterhub`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from aotp.methods.base import METHODS, InferenceVariant, Method, count_option, head_parameter_count
from aotp.models.task_model import TaskModel

# family -> role -> module path relative to ``encoder.layer.<i>``; ``path:q`` names the query rows
# of a fused, per-head-interleaved QKV projection (DeBERTa v1's ``in_proj``).
LORA_TARGETS: dict[str, dict[str, str]] = {
    "bert": {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value"},
    "roberta": {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value"},
    "deberta": {"query": "attention.self.in_proj:q", "key": "attention.self.in_proj:k",
                "value": "attention.self.in_proj:v"},
    "deberta_v2": {"query": "attention.self.query_proj", "key": "attention.self.key_proj",
                   "value": "attention.self.value_proj"},
}
FUSED_QKV_OFFSET = {"q": 0, "k": 1, "v": 2}


def fused_qkv_rows(out_features: int, num_heads: int, part: str) -> torch.Tensor:
    """Output rows of a fused QKV projection laid out per head as [q_h | k_h | v_h], in (head, dim) order."""
    head_dim = out_features // (3 * num_heads)
    offset = FUSED_QKV_OFFSET[part] * head_dim
    return torch.cat([torch.arange(h * 3 * head_dim + offset, h * 3 * head_dim + offset + head_dim)
                      for h in range(num_heads)])


class LoRALinear(nn.Linear):
    """An ``nn.Linear`` with LoRA factors per role; created in place by :func:`add_lora` (the class of
    the existing module is swapped, so the base ``weight``/``bias`` keep their parameter names)."""

    lora_A: nn.ParameterDict
    lora_B: nn.ParameterDict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        h = self.lora_dropout(x)
        for role, a in self.lora_A.items():
            delta = F.linear(F.linear(h, a), self.lora_B[role]) * self.lora_scaling
            rows = getattr(self, f"lora_rows_{role}", None)
            out = out + delta if rows is None else out.index_add(-1, rows, delta)
        return out

    def delta_weight(self) -> torch.Tensor:
        """``(alpha / r) B A`` scattered into the rows of W it updates."""
        delta = torch.zeros_like(self.weight)
        for role, a in self.lora_A.items():
            update = (self.lora_B[role] @ a) * self.lora_scaling
            rows = getattr(self, f"lora_rows_{role}", None)
            delta = delta + update if rows is None else delta.index_add(0, rows, update)
        return delta


def add_lora(module: nn.Linear, role: str, rows: torch.Tensor | None, rank: int, alpha: float, dropout: float) -> None:
    if not isinstance(module, LoRALinear):
        if type(module) is not nn.Linear:
            raise TypeError(f"LoRA can adapt plain nn.Linear modules only, got {type(module).__name__}")
        module.__class__ = LoRALinear
        module.lora_A = nn.ParameterDict()
        module.lora_B = nn.ParameterDict()
        module.lora_scaling = alpha / rank
        module.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
    d_out = module.out_features if rows is None else len(rows)
    a = torch.empty(rank, module.in_features, dtype=module.weight.dtype, device=module.weight.device)
    nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # loralib's init for A; B starts at zero
    module.lora_A[role] = nn.Parameter(a)
    module.lora_B[role] = nn.Parameter(torch.zeros(d_out, rank, dtype=module.weight.dtype, device=module.weight.device))
    if rows is not None:  # a buffer, so it follows the module across devices
        module.register_buffer(f"lora_rows_{role}", rows.to(module.weight.device), persistent=False)


def merge_lora(module: LoRALinear) -> None:
    """``W <- W + delta`` and turn the module back into a plain ``nn.Linear``."""
    with torch.no_grad():
        module.weight.add_(module.delta_weight())
    for role in module.lora_A:
        if f"lora_rows_{role}" in module._buffers:
            delattr(module, f"lora_rows_{role}")
    for attribute in ("lora_A", "lora_B", "lora_dropout", "lora_scaling"):
        delattr(module, attribute)
    module.__class__ = nn.Linear


@METHODS.register("lora")
class LoRA(Method):
    name = "lora"
    benchmark_variants = ("merged", "unmerged")

    def __init__(self, rank: int = 8, alpha: float = 16, dropout: float = 0.0,
                 targets: Iterable[str] = ("query", "value")):
        self.rank = count_option("rank", rank)
        self.alpha = float(alpha)
        self.dropout = float(dropout)
        self.targets = tuple(targets)
        roles = sorted({role for spec in LORA_TARGETS.values() for role in spec})
        unknown = [t for t in self.targets if t not in roles]
        if unknown or not self.targets or len(set(self.targets)) != len(self.targets):
            raise ValueError(f"method.options.targets must be distinct roles from {roles}, got {list(self.targets)}")

    def target_modules(self, model: TaskModel) -> list[tuple[str, str, torch.Tensor | None]]:
        """(module name, role, output rows or None) for every projection to adapt."""
        if model.family not in LORA_TARGETS:
            raise ValueError(f"LoRA has no target modules for family {model.family!r}; add it to "
                             f"aotp/methods/lora.py:LORA_TARGETS (known: {', '.join(LORA_TARGETS)})")
        config = model.backbone.config
        found = []
        for role in self.targets:
            path, _, part = LORA_TARGETS[model.family][role].partition(":")
            pattern = re.compile(r"^encoder\.layer\.\d+\." + re.escape(path) + "$")
            names = [n for n, _ in model.backbone.named_modules() if pattern.match(n)]
            if len(names) != config.num_hidden_layers:
                raise ValueError(f"LoRA target {path!r} ({model.family}, role {role}) matched {len(names)} modules, "
                                 f"expected one per layer ({config.num_hidden_layers}); see LORA_TARGETS")
            for name in names:
                rows = None
                if part:
                    out_features = model.backbone.get_submodule(name).out_features
                    rows = fused_qkv_rows(out_features, config.num_attention_heads, part)
                found.append((name, role, rows))
        return found

    def is_trainable(self, name: str) -> bool:
        return ".lora_A." in name or ".lora_B." in name

    def apply(self, model: TaskModel) -> TaskModel:
        for name, role, rows in self.target_modules(model):
            add_lora(model.backbone.get_submodule(name), role, rows, self.rank, self.alpha, self.dropout)
        self.freeze_all_but(model, self.is_trainable)
        return model

    def expected_trainable_parameters(self, model: TaskModel) -> int:
        config = model.backbone.config
        d, heads = config.hidden_size, config.num_attention_heads
        attention_width = heads * (getattr(config, "attention_head_size", None) or d // heads)
        per_projection = self.rank * (d + attention_width)  # r * (d_in + d_out) for Q, K or V
        return config.num_hidden_layers * len(self.targets) * per_projection + head_parameter_count(model)

    def prepare_for_inference(self, model: TaskModel, artifact_dir: Path | None = None,
                              token_ids: torch.Tensor | None = None) -> dict[str, Any]:
        merged = [m for m in model.backbone.modules() if isinstance(m, LoRALinear)]
        for module in merged:
            merge_lora(module)
        return {"lora_merged_modules": len(merged)}

    @classmethod
    def inference_variant(cls, variant: str, dtype: str = "fp32") -> InferenceVariant:
        if variant == "merged":
            return InferenceVariant(variant, note="B A merged into W by prepare_for_inference: a plain backbone",
                                    routing="per_task_copies",
                                    mixing="cannot mix tasks in one batch (B A merged into W): served as T per-task "
                                           "batches on T merged copies")
        if variant == "unmerged":
            return InferenceVariant(variant, prepare=False, routing="stacked_factors",
                                    note="apply only (prepare_for_inference, which merges, is skipped): W x + (alpha/r) B A x",
                                    mixing="mixes: per-example LoRA factors (bench RoutedLoRALinear: gathered A, B + bmm)")
        raise ValueError(f"{cls.name} variants: merged, unmerged (got {variant!r})")
