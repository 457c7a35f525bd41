"""Serving several tasks on one backbone: mixed batches vs one batch per task.

A *server* holds ``T_max`` tasks of one method on one backbone and answers two calls:

* ``mixed(inputs, row_tasks)`` -- one forward over a batch whose row r belongs to task
  ``row_tasks[r]`` (``None`` where the method cannot mix tasks in one batch);
* ``single(inputs, t)`` -- one forward over a batch of task t only.

Serving "per task" = splitting the mixed batch into its T per-task sub-batches and calling
``single`` on each. Every task has its own head (a perturbed copy of the benchmark head); row r's
logits come from its task's head in every server.

How a variant routes rows, the method says (``InferenceVariant.routing`` of
``Method.inference_variant``, with a one-line ``mixing`` note); this module has one server per
routing (:data:`SERVERS`) and names no method:

* ``task_tables`` (AoT): :class:`aotp.inference.MultiTaskModel` -- per-example task tables (each
  layer gathers every row's bias from its task's table) and per-task heads; the backbone runs once.
* ``stacked_factors`` (LoRA, unmerged): :class:`RoutedLoRALinear` (written for this benchmark) keeps
  every task's factors stacked, ``A: (T, r, d_in)``, ``B: (T, d_out, r)``, and computes
  ``W x + b + (alpha/r) B[task(r)] A[task(r)] x`` with the factors gathered per row and two batched
  matmuls (``torch.bmm``). A single-task batch takes the plain LoRA path (two ``F.linear``).
* ``per_task_copies`` (LoRA, merged): cannot mix -- the update lives inside W, so every task needs
  its own copy of the weights; served as T per-task batches through T merged models.
* ``stacked_adapters`` (bottleneck adapters, P-Tuning v2 prefixes): :class:`StackedAdapterServer` builds
  each task's model as a run does and keeps one backbone whose every adapter holds all T tasks' weights:
  :class:`RoutedBottleneck` stacks ``W_down: (T, m, d)``, ``W_up: (T, d, m)`` and their biases and computes
  ``W_up[task(r)] f(W_down[task(r)] z + b_down[task(r)]) + b_up[task(r)]`` with the weights gathered per row
  and two batched matmuls (``torch.baddbmm``); :class:`RoutedPrefixEncoder` stacks the T flat prefixes
  ``(T, p, L, 2, d)`` and gives row r its task's keys/values (a gather; the prefix is per row anyway); layer norms
  a method trains (Houlsby's) become :class:`RoutedLayerNorm` (their affine gathered per row), and any other
  module that differs between the tasks is refused. The batch is served in its own order, one backbone pass. A single-task batch takes the plain path (``F.linear``,
  one prefix expanded).
* no routing (full fine-tuning, BitFit): cannot mix -- task-specific backbone weights; T per-task
  batches through T full models, the same computation as ``per_task_copies`` (not timed separately).
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from aotp.bench.variants import build_variant, method_options, method_order, perturb_, resolve
from aotp.methods import METHODS, InferenceVariant
from aotp.methods.bottleneck_adapters import Bottleneck
from aotp.methods.lora import LoRALinear
from aotp.methods.ptuning_v2 import PrefixEncoder
from aotp.models import TaskModel


def form_of(spec: str) -> InferenceVariant:
    """The method's :class:`InferenceVariant` for ``spec`` ("method/variant"): how it is built and how it
    serves a batch mixing tasks (``routing``, ``mixing``)."""
    return resolve(spec)[1]


def unserved_methods() -> list[str]:
    """Registered methods that have no multi-task server (no routing): their default variant cannot mix
    tasks and is the same computation per task as a per-task-copies server, so it is not timed."""
    return [name for name in method_order() if form_of(name).routing is None]


def task_heads(base: TaskModel, count: int, seed: int, scale: float) -> list[nn.Module]:
    """``count`` heads: copies of the benchmark head, each perturbed differently."""
    heads = []
    for task in range(count):
        head = copy.deepcopy(base.head).eval()
        perturb_(head.parameters(), torch.Generator().manual_seed(seed + 100 + task), scale * 5)
        head.requires_grad_(False)
        heads.append(head)
    return heads


def apply_heads(heads: list[nn.Module], states: torch.Tensor, row_tasks: torch.Tensor,
                groups: Optional[list[tuple[int, torch.Tensor]]] = None) -> torch.Tensor:
    """Row r's logits from head ``row_tasks[r]`` (one head call per task present)."""
    if groups is None:
        groups = [(int(t), (row_tasks == t).nonzero().squeeze(1)) for t in torch.unique(row_tasks).tolist()]
    if len(groups) == 1:
        return heads[groups[0][0]](states)
    out = None
    for task, rows in groups:
        logits = heads[task](states.index_select(0, rows))
        if out is None:
            out = logits.new_empty(states.shape[0], logits.shape[-1])
        out.index_copy_(0, rows, logits)
    return out


def _encode(model: TaskModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return model.encode(inputs["input_ids"], inputs["attention_mask"], inputs.get("token_type_ids"))


class Server(ABC):
    method: str = ""
    variant: str = ""
    mixing: str = ""
    can_mix: bool = True

    def __init__(self, heads: list[nn.Module]):
        self.heads = heads

    @abstractmethod
    def encode_mixed(self, inputs: dict[str, torch.Tensor], row_tasks: torch.Tensor) -> Optional[torch.Tensor]:
        """First-token states (N, d) of a mixed batch, row r adapted for task ``row_tasks[r]``."""

    @abstractmethod
    def encode_single(self, inputs: dict[str, torch.Tensor], task: int) -> torch.Tensor:
        """First-token states (N, d) of a batch of task ``task`` alone."""

    def mixed(self, inputs: dict[str, torch.Tensor], row_tasks: torch.Tensor) -> Optional[torch.Tensor]:
        if not self.can_mix:
            return None
        return apply_heads(self.heads, self.encode_mixed(inputs, row_tasks), row_tasks)

    def single(self, inputs: dict[str, torch.Tensor], task: int) -> torch.Tensor:
        return self.heads[task](self.encode_single(inputs, task))

    @abstractmethod
    def weights(self, tasks: int) -> list:
        """Modules/tensors resident to serve ``tasks`` tasks (for the memory column)."""


# -- AoT -------------------------------------------------------------------------------------------
class AoTServer(Server):
    """Routing ``task_tables``: T task packs on one backbone (:class:`aotp.inference.MultiTaskModel`)."""

    def __init__(self, method: str, base: TaskModel, tasks: int, work_dir: Path, seed: int, scale: float,
                 heads: list[nn.Module], variant: str = "materialized"):
        from aotp.inference import MultiTaskModel, TaskPack

        super().__init__(heads)
        self.method, self.variant = method, variant
        self.mixing = form_of(f"{method}/{variant}").mixing
        packs, self.task_facts = [], []
        for task in range(tasks):
            built = build_variant(f"{method}/{variant}", base, work_dir / f"{method}_task{task}", seed + task, scale)
            packs.append(TaskPack(f"task{task}", built.model.aot.table if built.model.aot.materialized else built.model.aot,
                                  heads[task]))
            self.task_facts.append(built.facts)
            built.model.aot.hooks.detach()
            del built
        self.model = MultiTaskModel(copy.deepcopy(base.backbone), packs)

    def encode_mixed(self, inputs, row_tasks):
        return self.model.encode(inputs["input_ids"], inputs["attention_mask"], row_tasks, inputs.get("token_type_ids"))

    def encode_single(self, inputs, task):
        ids = inputs["input_ids"]
        row_tasks = torch.full((ids.shape[0],), task, dtype=torch.long, device=ids.device)
        return self.model.encode(ids, inputs["attention_mask"], row_tasks, inputs.get("token_type_ids"))

    def weights(self, tasks):
        return [self.model.backbone] + [self.model.sources[t] for t in range(tasks)] + self.heads[:tasks]

    @staticmethod
    def lookup_note(tasks: int) -> str:
        from aotp.methods.aot.method import WORK_ALONE_NOTES

        return WORK_ALONE_NOTES["mixed" if tasks > 1 else "materialized"]

    def lookup_alone(self, input_ids: torch.Tensor, row_tasks: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """The bias work of one mixed forward without the encoder: rows grouped by task as
        ``MultiTaskModel.encode`` does, the hooks' provider, L adds."""
        if row_tasks.numel() > 1 and bool((row_tasks[1:] < row_tasks[:-1]).any()):
            order = torch.argsort(row_tasks, stable=True)
            input_ids, row_tasks = input_ids[order], row_tasks[order]
        self.model._row_tasks = row_tasks
        try:
            return self.model.hooks.run_without_encoder(input_ids, hidden)
        finally:
            self.model._row_tasks = None


# -- LoRA ------------------------------------------------------------------------------------------
class Router:
    """Which task(s) the rows of the current forward belong to: ``task`` (one task for the whole
    batch) or ``row_tasks`` (N,)."""

    def __init__(self):
        self.task: Optional[int] = None
        self.row_tasks: Optional[torch.Tensor] = None


class RoutedLoRALinear(nn.Module):
    """``W x + b + (alpha/r) B_t A_t x`` with t the task of each row (see the module docstring).

    ``A[role]``: (T, r, d_in), ``B[role]``: (T, d_out_role, r); ``rows[role]``: output rows of a fused
    QKV projection that the role updates (DeBERTa v1), else None."""

    def __init__(self, base: LoRALinear, factors: dict[str, tuple[torch.Tensor, torch.Tensor]], router: Router):
        super().__init__()
        self.weight, self.bias = base.weight, base.bias
        self.scaling = base.lora_scaling
        self.router = router
        self.A = nn.ParameterDict({role: nn.Parameter(a, requires_grad=False) for role, (a, _) in factors.items()})
        self.B = nn.ParameterDict({role: nn.Parameter(b, requires_grad=False) for role, (_, b) in factors.items()})
        for role in factors:  # fused-QKV output rows (DeBERTa v1) as buffers, so they follow .to(device)
            self.register_buffer(f"rows_{role}", getattr(base, f"lora_rows_{role}", None), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        task, row_tasks = self.router.task, self.router.row_tasks
        for role, a in self.A.items():
            b = self.B[role]
            if task is not None:
                delta = F.linear(F.linear(x, a[task]), b[task]) * self.scaling
            else:
                if x.shape[0] != row_tasks.shape[0]:
                    raise ValueError(
                        f"per-example LoRA routing needs inputs with one leading row per example ({row_tasks.shape[0]}), "
                        f"got {tuple(x.shape)}: this backbone also feeds non-example tensors through the adapted "
                        "projection (DeBERTa-v2/v3 projects its relative-position embeddings with the shared query/key "
                        "projections), which would need one projection per task")
                flat = x.reshape(x.shape[0], -1, x.shape[-1])  # (N, S, d_in)
                hidden = torch.bmm(flat, a.index_select(0, row_tasks).transpose(1, 2))
                delta = torch.bmm(hidden, b.index_select(0, row_tasks).transpose(1, 2)) * self.scaling
                delta = delta.view(*x.shape[:-1], b.shape[1])
            rows = getattr(self, f"rows_{role}")
            out = out + delta if rows is None else out.index_add(-1, rows, delta)
        return out


def lora_factors(model: TaskModel, tasks: int, seed: int, scale: float) -> dict[str, dict[str, list]]:
    """Per LoRA module and role, ``tasks`` (A, B) pairs: A ~ U(-1/sqrt(d_in), 1/sqrt(d_in)) (loralib's
    Kaiming-uniform bound), B ~ scale * N(0, 1) (away from its zero init)."""
    generator = torch.Generator().manual_seed(seed)
    factors: dict[str, dict[str, list]] = {}
    for name, module in model.backbone.named_modules():
        if isinstance(module, LoRALinear):
            factors[name] = {}
            for role, a in module.lora_A.items():
                b = module.lora_B[role]
                bound = 1.0 / math.sqrt(a.shape[1])
                pairs = [((torch.rand(a.shape, generator=generator) * 2 - 1) * bound,
                          torch.randn(b.shape, generator=generator) * scale) for _ in range(tasks)]
                factors[name][role] = [(x.to(a.dtype), y.to(b.dtype)) for x, y in pairs]
    return factors


def _lora_model(base: TaskModel, method: str) -> TaskModel:
    model = copy.deepcopy(base)
    METHODS.get(method)(**method_options(method)).apply(model)
    return model.eval()


class RoutedLoRAServer(Server):
    """Routing ``stacked_factors``: every :class:`LoRALinear` of the method replaced by a
    :class:`RoutedLoRALinear` holding the T tasks' factors."""

    def __init__(self, base: TaskModel, tasks: int, seed: int, scale: float, heads: list[nn.Module],
                 factors: dict[str, dict[str, list]], method: str, variant: str):
        super().__init__(heads)
        self.method, self.variant = method, variant
        self.mixing = form_of(f"{method}/{variant}").mixing
        self.model = _lora_model(base, method)
        self.router = Router()
        for name, module in list(self.model.backbone.named_modules()):
            if isinstance(module, LoRALinear):
                stacked = {role: (torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs]))
                           for role, pairs in factors[name].items()}
                parent_name, _, child = name.rpartition(".")
                setattr(self.model.backbone.get_submodule(parent_name), child, RoutedLoRALinear(module, stacked, self.router))
        self.model.requires_grad_(False)

    def encode_mixed(self, inputs, row_tasks):
        self.router.task, self.router.row_tasks = None, row_tasks
        try:
            return _encode(self.model, inputs)
        finally:
            self.router.row_tasks = None

    def encode_single(self, inputs, task):
        self.router.task = task
        try:
            return _encode(self.model, inputs)
        finally:
            self.router.task = None

    def weights(self, tasks):
        # The stacked factors hold all T_max tasks; count the backbone and the factors of `tasks` tasks.
        shared = [p for n, p in self.model.named_parameters() if ".A." not in n and ".B." not in n]
        factors = [p[:tasks] for n, p in self.model.named_parameters() if ".A." in n or ".B." in n]
        return shared + [f.clone() for f in factors] + self.heads[:tasks]


class MergedLoRAServer(Server):
    """Routing ``per_task_copies`` of a LoRA method: T merged models (cannot mix)."""

    can_mix = False

    def __init__(self, base: TaskModel, tasks: int, heads: list[nn.Module], factors: dict[str, dict[str, list]],
                 work_dir: Path, method: str, variant: str):
        super().__init__(heads)
        self.method, self.variant = method, variant
        self.mixing = form_of(f"{method}/{variant}").mixing
        self.models = []
        method_obj = METHODS.get(method)(**method_options(method))
        for task in range(tasks):
            model = _lora_model(base, method)
            with torch.no_grad():
                for name, module in model.backbone.named_modules():
                    if isinstance(module, LoRALinear):
                        for role in module.lora_A:
                            a, b = factors[name][role][task]
                            module.lora_A[role].copy_(a)
                            module.lora_B[role].copy_(b)
            method_obj.prepare_for_inference(model, work_dir / f"{method}_{variant}_task{task}")
            model.requires_grad_(False)
            self.models.append(model)

    def encode_mixed(self, inputs, row_tasks):
        return None

    def encode_single(self, inputs, task):
        return _encode(self.models[task], inputs)

    def weights(self, tasks):
        return [m.backbone for m in self.models[:tasks]] + self.heads[:tasks]


# -- bottleneck adapters, prefixes -------------------------------------------------------------------------------
def _row_check(x: torch.Tensor, row_tasks: torch.Tensor, what: str) -> None:
    if x.shape[0] != row_tasks.shape[0]:
        raise ValueError(f"per-example {what} routing needs one leading row per example ({row_tasks.shape[0]}), "
                         f"got {tuple(x.shape)}")


class RoutedBottleneck(nn.Module):
    """A site's adapter with every task's weights stacked (``bank_*``, leading dim T):
    ``A_t(z) = W_up[t] f(W_down[t] z + b_down[t]) + b_up[t]``, t the task of each row (see the module docstring)."""

    def __init__(self, adapters: list[Bottleneck], router: Router):
        super().__init__()
        self.act, self.router = adapters[0].act, router
        for name, get in (("down_weight", lambda a: a.down.weight), ("down_bias", lambda a: a.down.bias),
                          ("up_weight", lambda a: a.up.weight), ("up_bias", lambda a: a.up.bias)):
            bank = torch.stack([get(a).detach() for a in adapters])
            self.register_parameter(f"bank_{name}", nn.Parameter(bank, requires_grad=False))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        task, row_tasks = self.router.task, self.router.row_tasks
        if task is not None:
            down = F.linear(z, self.bank_down_weight[task], self.bank_down_bias[task])
            return F.linear(self.act(down), self.bank_up_weight[task], self.bank_up_bias[task])
        _row_check(z, row_tasks, "adapter")
        flat = z.reshape(z.shape[0], -1, z.shape[-1])  # (N, S, d)
        down = torch.baddbmm(self.bank_down_bias.index_select(0, row_tasks).unsqueeze(1), flat,
                             self.bank_down_weight.index_select(0, row_tasks).transpose(1, 2))
        up = torch.baddbmm(self.bank_up_bias.index_select(0, row_tasks).unsqueeze(1), self.act(down),
                           self.bank_up_weight.index_select(0, row_tasks).transpose(1, 2))
        return up.view(*z.shape[:-1], up.shape[-1])


class RoutedPrefixEncoder(nn.Module):
    """``backbone.prefix_encoder`` with every task's flat prefix stacked, ``bank_prefix: (T, p, L, 2, d)``:
    row r gets its task's keys/values (inference: no dropout)."""

    def __init__(self, encoders: list[PrefixEncoder], router: Router):
        super().__init__()
        self.shape, self.router = encoders[0].shape, router
        self.bank_prefix = nn.Parameter(torch.stack([e.table().detach() for e in encoders]), requires_grad=False)

    def forward(self, batch_size: int) -> torch.Tensor:
        task, row_tasks = self.router.task, self.router.row_tasks
        if task is not None:
            return self.bank_prefix[task].unsqueeze(0).expand(batch_size, *self.shape)
        if batch_size != row_tasks.shape[0]:
            raise ValueError(f"per-example prefix routing needs one row per example ({row_tasks.shape[0]}), got {batch_size}")
        return self.bank_prefix.index_select(0, row_tasks)


class RoutedLayerNorm(nn.Module):
    """A layer norm whose affine part is task-specific (Houlsby's trained layer norms): the module's own
    normalisation with a unit affine, then ``weight[task(r)] * x + bias[task(r)]``."""

    def __init__(self, norms: list[nn.Module], router: Router):
        super().__init__()
        self.router = router
        self.norm = copy.deepcopy(norms[0]).requires_grad_(False)
        with torch.no_grad():
            self.norm.weight.fill_(1.0)
            self.norm.bias.zero_()
        self.bank_weight = nn.Parameter(torch.stack([n.weight.detach() for n in norms]), requires_grad=False)
        self.bank_bias = nn.Parameter(torch.stack([n.bias.detach() for n in norms]), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.norm(x)
        task, row_tasks = self.router.task, self.router.row_tasks
        if task is not None:
            return normed * self.bank_weight[task] + self.bank_bias[task]
        _row_check(x, row_tasks, "layer-norm")
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        return (normed * self.bank_weight.index_select(0, row_tasks).view(shape)
                + self.bank_bias.index_select(0, row_tasks).view(shape))


ROUTED_MODULES: dict[type, type] = {Bottleneck: RoutedBottleneck, PrefixEncoder: RoutedPrefixEncoder}


def _routed_form(name: str, modules: list[nn.Module]) -> Optional[type]:
    """The routed class for the module ``name`` of the T task models: the adapter modules always; a layer norm
    whose affine differs by task (a method that trains the layer norms); None where all tasks share it."""
    if type(modules[0]) in ROUTED_MODULES:
        return ROUTED_MODULES[type(modules[0])]
    own = [dict(m.named_parameters(recurse=False)) for m in modules]
    if all(torch.equal(p, other[n]) for other in own[1:] for n, p in own[0].items()):
        return None
    if name.endswith("LayerNorm") and set(own[0]) == {"weight", "bias"}:
        return RoutedLayerNorm
    raise ValueError(f"routing stacked_adapters: the tasks' {name} ({type(modules[0]).__name__}) differ and cannot be routed")


class StackedAdapterServer(Server):
    """Routing ``stacked_adapters``: T tasks of the method on one backbone (see the module docstring). Task t's
    model is built as the single-task benchmark builds it (``build_variant``, seed ``seed + t``); task 0's model
    is kept with every adapter module (:data:`ROUTED_MODULES`) replaced by its routed, T-task form."""

    def __init__(self, method: str, variant: str, base: TaskModel, tasks: int, work_dir: Path, seed: int,
                 scale: float, heads: list[nn.Module]):
        super().__init__(heads)
        self.method, self.variant = method, variant
        self.mixing = form_of(f"{method}/{variant}").mixing
        built = [build_variant(f"{method}/{variant}", base, work_dir / f"{method}_{variant}_task{t}", seed + t, scale).model
                 for t in range(tasks)]
        self.model = built[0]
        self.router = Router()
        if not any(type(m) in ROUTED_MODULES for m in self.model.modules()):
            raise ValueError(f"{method}/{variant}: routing stacked_adapters found none of "
                             f"{', '.join(c.__name__ for c in ROUTED_MODULES)} in the model")
        routes = []
        for name, _ in self.model.named_modules():
            if name and not any(name.startswith(done + ".") for done, _, _ in routes):
                modules = [model.get_submodule(name) for model in built]
                form = _routed_form(name, modules)
                if form is not None:
                    routes.append((name, form, modules))
        for name, form, modules in routes:
            parent_name, _, child = name.rpartition(".")
            setattr(self.model.get_submodule(parent_name), child, form(modules, self.router))
        del built
        self.model.eval().requires_grad_(False)

    def encode_mixed(self, inputs, row_tasks):
        self.router.task, self.router.row_tasks = None, row_tasks
        try:
            return _encode(self.model, inputs)
        finally:
            self.router.row_tasks = None

    def encode_single(self, inputs, task):
        self.router.task = task
        try:
            return _encode(self.model, inputs)
        finally:
            self.router.task = None

    def weights(self, tasks):
        # The banks hold all T_max tasks; count the backbone and the banks' first `tasks` tasks.
        shared = [p for n, p in self.model.named_parameters() if ".bank_" not in n]
        banks = [p[:tasks].clone() for n, p in self.model.named_parameters() if ".bank_" in n]
        return shared + banks + list(self.model.buffers()) + self.heads[:tasks]


def _lora_servers(method: str, variant: str, ctx: dict[str, Any]) -> Server:
    # Both LoRA forms of one method serve the same T tasks' factors (drawn once per method).
    factors = ctx["lora_factors"].get(method)
    if factors is None:
        factors = ctx["lora_factors"][method] = lora_factors(_lora_model(ctx["base"], method), ctx["tasks"],
                                                             ctx["seed"] + 17, ctx["scale"])
    if form_of(f"{method}/{variant}").routing == "per_task_copies":
        return MergedLoRAServer(ctx["base"], ctx["tasks"], ctx["heads"], factors, ctx["work_dir"], method, variant)
    return RoutedLoRAServer(ctx["base"], ctx["tasks"], ctx["seed"], ctx["scale"], ctx["heads"], factors, method, variant)


# routing (InferenceVariant.routing) -> (method, variant, context) -> server
SERVERS: dict[str, Callable[[str, str, dict[str, Any]], Server]] = {
    "task_tables": lambda method, variant, ctx: AoTServer(method, ctx["base"], ctx["tasks"], ctx["work_dir"],
                                                          ctx["own_seed"], ctx["scale"], ctx["heads"], variant),
    "stacked_factors": _lora_servers,
    "per_task_copies": _lora_servers,
    "stacked_adapters": lambda method, variant, ctx: StackedAdapterServer(method, variant, ctx["base"], ctx["tasks"],
                                                                          ctx["work_dir"], ctx["own_seed"], ctx["scale"],
                                                                          ctx["heads"]),
}


def build_servers(specs: list[str], base: TaskModel, tasks: int, work_dir: Path, seed: int, scale: float,
                  log: Callable[[str], None] = print) -> list[Server]:
    """Servers for ``specs`` (e.g. ``aot_fc/materialized``, ``lora/unmerged``, ``lora/merged``,
    ``adapter_houlsby/adapters``, ``ptuning_v2/prefix16``), each holding ``tasks`` tasks; the server
    of a spec is the one of the routing its method names for it."""
    heads = task_heads(base, tasks, seed, scale)
    ctx: dict[str, Any] = {"base": base, "tasks": tasks, "work_dir": work_dir / "multitask", "seed": seed,
                           "scale": scale, "heads": heads, "lora_factors": {}}
    servers: list[Server] = []
    for index, spec in enumerate(specs):
        method, form = resolve(spec)
        log(f"  multi-task: building {spec} with {tasks} tasks")
        if form.routing not in SERVERS:
            raise ValueError(f"no multi-task server for {spec!r}; {method}: {form.mixing or 'unknown'}")
        ctx["own_seed"] = seed + 1000 * (index + 1)
        servers.append(SERVERS[form.routing](method, form.name, ctx))
    return servers
