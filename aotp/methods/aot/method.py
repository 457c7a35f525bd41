"""AoT P-Tuning (Gavrilov & Balagansky 2023, arXiv 2305.10835) as two registered methods.

Equation: before every encoder layer l = 1..L, the hidden state of position i gets a bias that
depends only on its token id, ``h_l[i] <- h_l[i] + P_l[x_i]``, P a |V| x L x d tensor given by a
reparametrization (see :mod:`aotp.methods.aot.reparam`):

* ``aot_fc``:   ``P[x] = W2 dropout(act(W1 E[x] + b1)) + b2`` (E the frozen word embeddings).
  Trainable parameters: ``e*r + r + r*L*d + L*d + |head|``  (e = embedding width, = d here).
* ``aot_kron``: ``P[x] = dropout(A[x // b] kron B[x % b]) W``, a = b = ceil(sqrt(|V|)), no bias.
  Trainable parameters: ``a*r + b*r + r^2*L*d + |head|``.

|V| is the number of rows of the backbone's word-embedding matrix, ``|head| = d*d + d + d*k + k``.
The output projections (W2, b2 / W) start at zero, so a fresh AoT model computes exactly the frozen
backbone + head. Training computes P only for the batch's tokens, never the vocabulary: on a CPU for its
unique token ids, on a GPU once per position (static shapes, no host-device sync; ~2-3% of a RoBERTa-large
step, see :class:`aotp.methods.aot.module.AoTBias`).

Inference (``prepare_for_inference``), option ``inference_mode``:

* ``materialized`` (default): the |V| x L x d table is computed ``chunk_size`` token ids at a time in
  ``table_dtype`` (fp32/fp16/bf16) and the reparametrization is dropped; a forward pass then costs,
  per layer, one copy of the batch's rows of that layer from the table into a buffer allocated once
  per forward, and one in-place addition of the hidden states. What is kept on disk is what
  reproduces the table, not the table: ``artifact_dir/aot_reparam.safetensors`` (the
  reparametrization's parameters, megabytes), from which :mod:`aotp.inference` materialises the
  table at serving time. In memory the model gets

  - with ``token_ids`` (the runner passes the ids of its eval splits): only those tokens' rows, from
    the same chunks as the full table (peak memory: those rows + one chunk), enough to check the
    materialised form on dev without ever holding the whole table;
  - without: the full table, filled chunk by chunk into one tensor.

  ``save_table: true`` also writes the table, streamed chunk by chunk (peak memory one chunk), to
  ``artifact_dir/aot_table.safetensors`` and loads it back memory-mapped (``torch.frombuffer`` over a
  copy-on-write ``mmap``, no copy). Its size is ``|V| * L * d * bytes(table_dtype)``: RoBERTa-large
  fp32 50,265 x 24 x 1,024 x 4 B = 4.9 GB, so a sweep writes it only for the runs it serves.
  An fp16/bf16 table rounds each bias once; the run's logits check then allows
  ``TABLE_LOGIT_ROUNDINGS`` units of that format's rounding error times max|logit|
  (``logit_relative_tolerance`` in the facts).
* ``on_the_fly``: the reparametrization is kept and computes the batch's unique rows per forward;
  its parameters are saved to ``artifact_dir/aot_reparam.safetensors`` likewise.

Either way ``artifact_dir`` receives a task pack (:mod:`aotp.methods.aot.pack`) that
:class:`aotp.inference.MultiTaskModel` loads.

Multi-task: since only the per-token input biases depend on the task, one backbone pass serves a
batch mixing tasks (per-example task tables + heads, routing ``task_tables``), and runs of one
backbone can be trained packed in one forward (``packable``).

Benchmark variants (:meth:`AoTMethod.inference_variant`): ``materialized`` (the memory-mapped table
file, ``save_table``), ``materialized_<fp16|bf16>`` (the table stored in that dtype),
``materialized_previous`` (the same table through the hooks' previous dense path: one (N, T, L, d)
gather ``table[input_ids]``, then out-of-place adds) and ``on_the_fly``. The work AoT adds is also
timed alone (:meth:`AoTMethod.work_alone`: the hooks' provider + L adds, no encoder).
"""

from __future__ import annotations

import math

import time
from abc import abstractmethod
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from aotp.methods.aot import pack as packs
from aotp.methods.aot.injector import find_encoder_layers
from aotp.methods.aot.module import AoTBias
from aotp.methods.aot.reparam import (ACTIVATIONS, FCReparametrization, KroneckerReparametrization, check_dropout,
                                      check_rank, kron_split)
from aotp.methods.aot.table_io import TABLE_DTYPES, load_tensor_mmap, resolve_table_dtype, write_table
from aotp.methods.base import METHODS, InferenceVariant, Method, head_parameter_count
from aotp.models.mixed_precision import UNIT_ROUNDOFF
from aotp.models.task_model import TaskModel

INFERENCE_MODES = ("materialized", "on_the_fly")
TABLE_KEY = "aot.table"
# A table stored in fp16/bf16 rounds every bias once (relative error <= u of that format), so the
# inference form's logits move by rounding, not by a bug. Measured with trained-size logits (max 2-10)
# on random RoBERTa/DeBERTa v1/v2 encoders of 2 to 48 layers, biases up to 87: at most 1.5 u x max|logit|
# (no growth with depth: every layer norm renormalises). The runner's check allows this many u x max|logit|.
TABLE_LOGIT_ROUNDINGS = 4

# What runs at inference in each benchmark form, and what the bias work timed alone is.
INFERENCE_NOTES = {
    "materialized": "table |V| x L x d memory-mapped; per layer a gather of the batch's rows + an add",
    "on_the_fly": "reparametrization on the batch's unique tokens (all L layers), then per-layer gather + add",
    "previous": "the same table through the hooks as they were before this benchmark's optimisation: one "
                "(N,T,L,d) gather table[input_ids] before the encoder, then per layer an out-of-place add of the "
                "strided slice (a fresh tensor per layer)",
}
WORK_ALONE_NOTES = {
    "materialized": "as the hooks do it: per layer, gather the batch's rows of table[:, l] into a buffer + add the hidden states",
    "previous": "the hooks' previous path: one gather table[input_ids] -> (N,T,L,d), then L out-of-place strided adds",
    "on_the_fly": "reparametrization on the batch's unique tokens (all L), then per-layer gather + add",
    "mixed": "multi-task: each task's rows of every layer gathered from its own table into one (N,T,d) slice + add",
}
MIXING_NOTE = "mixes: per-example task tables + heads in one backbone pass (MultiTaskModel)"
BENCH_TABLE_SUFFIXES = ("", "fp16", "bf16", "previous")


def use_previous_path(model: TaskModel) -> None:
    """Route the model's table through the hooks as they were before (the benchmark's comparison):
    a dense (N, T, L, d) gather, and an out-of-place add per layer."""
    model.aot.hooks.provider = model.aot.lookup
    model.aot.hooks.reuse_buffers = False


def backbone_shapes(backbone: nn.Module) -> tuple[int, int, int, int]:
    """(|V|, embedding width e, number of layers L, hidden size d) of an HF encoder."""
    embedding = backbone.get_input_embeddings()
    vocab_size, embedding_dim = embedding.weight.shape
    return vocab_size, embedding_dim, len(find_encoder_layers(backbone)), backbone.config.hidden_size


class AoTMethod(Method):
    """Shared machinery of the AoT reparametrizations (see the module docstring)."""

    name = "aot"
    # The task pack (aotp.inference: one backbone serving many tasks in one batch) holds the
    # cross-encoder head; a siamese head would need its own serving path.
    cross_encoded_only = True
    packable = True  # each run's biases routed to its rows of a packed batch (aotp.trainer.packed)
    benchmark_variants = ("materialized", "on_the_fly")

    def __init__(self, rank: int, dropout: float = 0.0, table_dtype: str = "fp32",
                 inference_mode: str = "materialized", chunk_size: int = 1024, save_table: bool = False):
        self.rank = check_rank(rank)
        self.dropout = check_dropout(dropout)
        resolve_table_dtype(table_dtype)
        self.table_dtype = table_dtype
        if inference_mode not in INFERENCE_MODES:
            raise ValueError(f"Unknown inference_mode {inference_mode!r} (config option `method.options.inference_mode`); "
                             f"valid choices: {', '.join(INFERENCE_MODES)}")
        self.inference_mode = inference_mode
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"AoT option `method.options.chunk_size` must be a positive integer, got {chunk_size!r}")
        self.chunk_size = chunk_size
        if not isinstance(save_table, bool):
            raise ValueError(f"AoT option `method.options.save_table` must be true or false, got {save_table!r}")
        self.save_table = save_table

    # -- to be provided by each reparametrization --------------------------------------------------
    def options(self) -> dict[str, Any]:
        return {"rank": self.rank, "dropout": self.dropout, "table_dtype": self.table_dtype,
                "inference_mode": self.inference_mode, "chunk_size": self.chunk_size, "save_table": self.save_table}

    @abstractmethod
    def build_reparam(self, backbone: nn.Module) -> nn.Module:
        """The module that produces the (L, |V|, d) bias table from its trainable parameters."""

    @abstractmethod
    def reparam_parameter_count(self, backbone: nn.Module) -> int:
        """Trainable parameters of :meth:`build_reparam`'s module (the formula in the class docstring)."""

    # -- training ------------------------------------------------------------------------------
    def build_bias(self, backbone: nn.Module) -> AoTBias:
        vocab_size, _, num_layers, hidden_size = backbone_shapes(backbone)
        return AoTBias(self.build_reparam(backbone), vocab_size, num_layers, hidden_size)

    def apply(self, model: TaskModel) -> TaskModel:
        if hasattr(model, "aot"):
            raise RuntimeError("this model already has AoT biases (model.aot); apply the method once")
        self.check_pair_encoding(model.pair_encoding)
        bias = self.build_bias(model.backbone)
        bias.to(device=model.backbone.get_input_embeddings().weight.device)
        model.aot = bias  # a submodule: its parameters are named "aot.*"
        bias.attach(model.backbone)
        self.freeze_all_but(model, lambda name: name.startswith("aot."))
        return model

    def expected_trainable_parameters(self, model: TaskModel) -> int:
        return self.reparam_parameter_count(model.backbone) + head_parameter_count(model)

    # -- state (a materialised model carries its table) -------------------------------------------
    def trainable_state_dict(self, model: TaskModel) -> dict[str, torch.Tensor]:
        state = super().trainable_state_dict(model)
        if model.aot.materialized:
            if model.aot.row_of is not None:
                raise RuntimeError("the model holds only some tokens' AoT rows (prepare_for_inference with token_ids): "
                                   "take the trainable state before prepare_for_inference")
            state[TABLE_KEY] = model.aot.table.detach().clone()
        return state

    def load_trainable_state_dict(self, model: TaskModel, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        table = state.pop(TABLE_KEY, None)
        if table is not None:
            model.aot.set_table(table.to(model.backbone.get_input_embeddings().weight.device))
            self.freeze_all_but(model, lambda name: name.startswith("aot."))
        elif model.aot.materialized:
            raise KeyError(f"model is materialised but the state has no {TABLE_KEY!r}")
        super().load_trainable_state_dict(model, state)

    # -- inference -------------------------------------------------------------------------------
    def _chunks_with_progress(self, aot: AoTBias):
        """The table's chunks behind a progress bar (on a terminal only): at RoBERTa-large scale the table
        takes minutes."""
        from tqdm.auto import tqdm

        return tqdm(aot.table_chunks(self.chunk_size), total=math.ceil(aot.vocab_size / self.chunk_size),
                    desc=f"materialise {self.name} table", unit="chunk", leave=False, dynamic_ncols=True, disable=None)

    def prepare_for_inference(self, model: TaskModel, artifact_dir: Path | None = None,
                              token_ids: Optional[torch.Tensor] = None) -> dict[str, Any]:
        aot: AoTBias = model.aot
        if aot.materialized:
            raise RuntimeError("prepare_for_inference was already called: the model is materialised")
        info = {
            "method": self.name, "options": self.options(), "inference_mode": self.inference_mode,
            "head_type": model.head_type, "num_labels": model.num_labels, "family": model.family,
            "vocab_size": aot.vocab_size, "num_layers": aot.num_layers, "hidden_size": aot.hidden_size,
            "head": packs.head_info(model.head), "files": {"head": packs.HEAD_FILE},
        }
        artifact_dir = Path(artifact_dir) if artifact_dir is not None else None
        facts: dict[str, Any] = {"inference_mode": self.inference_mode}
        if artifact_dir is not None:  # what reproduces the table (both modes): the reparametrization
            artifact_dir.mkdir(parents=True, exist_ok=True)
            path = artifact_dir / packs.REPARAM_FILE
            save_file({k: v.detach().cpu().contiguous() for k, v in aot.reparam.state_dict().items()}, str(path))
            info["files"]["reparam"] = packs.REPARAM_FILE
            facts.update(reparam_path=str(path), reparam_bytes=path.stat().st_size)
        if self.inference_mode == "materialized":
            dtype = resolve_table_dtype(self.table_dtype)
            shape = (aot.vocab_size, aot.num_layers, aot.hidden_size)
            full_bytes = aot.vocab_size * aot.num_layers * aot.hidden_size * torch.empty((), dtype=dtype).element_size()
            device = model.backbone.get_input_embeddings().weight.device
            start = time.perf_counter()
            row_of = None
            if artifact_dir is not None and self.save_table:
                path = artifact_dir / packs.TABLE_FILE
                write_table(path, packs.TABLE_TENSOR, self._chunks_with_progress(aot), shape, dtype,
                            metadata={"method": self.name, "shape": "x".join(map(str, shape)), "layout": "vocab,layer,hidden"})
                table, _ = load_tensor_mmap(path, packs.TABLE_TENSOR)
                if device.type != "cpu":
                    table = table.to(device)
                info["files"]["table"] = packs.TABLE_FILE
                facts.update(table_path=str(path), table_load="mmap (torch.frombuffer over mmap.ACCESS_COPY)"
                             if device.type == "cpu" else f"mmap, copied to {device}")
            elif token_ids is not None:
                table, row_of = aot.materialized_rows(token_ids, self.chunk_size, dtype)
                facts.update(table_path=None, table_load=f"in memory: the rows of the {table.shape[0]} token ids "
                                                         f"given, chunk by chunk (the table is not written)")
            else:
                table = aot.materialized_table(self.chunk_size, dtype, device)
                facts.update(table_path=None, table_load="in memory (the table is not written)")
            aot.set_table(table, row_of)
            self.freeze_all_but(model, lambda name: name.startswith("aot."))
            info["table_dtype"] = self.table_dtype
            if self.table_dtype != "fp32":
                facts["logit_relative_tolerance"] = TABLE_LOGIT_ROUNDINGS * UNIT_ROUNDOFF[self.table_dtype]
            facts.update(table_dtype=self.table_dtype, table_shape=list(shape), table_bytes=full_bytes,
                         table_bytes_in_memory=table.numel() * table.element_size(),
                         materialize_seconds=round(time.perf_counter() - start, 3))
        if artifact_dir is not None:
            packs.save_head(model.head, artifact_dir / packs.HEAD_FILE)
            packs.write_pack_json(artifact_dir, info)
            facts["pack_dir"] = str(artifact_dir)
        return facts

    # -- benchmark ---------------------------------------------------------------------------------
    @classmethod
    def inference_variant(cls, variant: str, dtype: str = "fp32") -> InferenceVariant:
        """``materialized[_fp16|_bf16|_previous]`` or ``on_the_fly`` (module docstring). A model run in
        fp16/bf16 gets its plain materialised table in its own dtype."""
        mode, _, suffix = variant.partition("_") if variant.startswith("materialized") else (variant, "", "")
        if mode not in INFERENCE_MODES or suffix not in BENCH_TABLE_SUFFIXES:
            raise ValueError(f"{cls.name} variants: materialized, materialized_<fp16|bf16>, materialized_previous, "
                             f"on_the_fly (got {variant!r})")
        options: dict[str, Any] = {"inference_mode": mode}
        if mode == "materialized":  # the benchmark times the memory-mapped table file, as it is served
            options["save_table"] = True
        if suffix in ("fp16", "bf16"):
            options["table_dtype"] = suffix
        elif mode == "materialized" and dtype != "fp32":
            options["table_dtype"] = dtype
        previous = suffix == "previous"
        return InferenceVariant(variant, options, adjust=use_previous_path if previous else None,
                                note=INFERENCE_NOTES["previous" if previous else mode], routing="task_tables",
                                mixing=MIXING_NOTE)

    def serving_facts(self, model: TaskModel) -> dict[str, Any]:
        table = model.aot.table
        return {"table_dtype_in_memory": str(table.dtype).replace("torch.", "") if table is not None else None}

    def work_alone(self, model: TaskModel, variant: str, input_ids: torch.Tensor,
                   hidden: torch.Tensor) -> dict[str, tuple[Callable[[], Any], str]]:
        """The bias work (``BiasHooks.run_without_encoder``: the provider, then each layer's bias added
        to ``hidden``); for ``materialized``, also the same table through the previous dense path."""
        aot = model.aot
        mode = "previous" if variant == "materialized_previous" else ("materialized" if aot.materialized else "on_the_fly")
        out = {variant: (lambda: aot.hooks.run_without_encoder(input_ids, hidden), WORK_ALONE_NOTES[mode])}
        if variant == "materialized":
            def previous():
                hooks = aot.hooks
                saved = hooks.provider, hooks.reuse_buffers
                use_previous_path(model)
                try:
                    return hooks.run_without_encoder(input_ids, hidden)
                finally:
                    hooks.provider, hooks.reuse_buffers = saved
            out["materialized_previous"] = (previous, WORK_ALONE_NOTES["previous"])
        return out

    def load_bias(self, backbone: nn.Module, pack_dir: Path, info: dict[str, Any],
                  table_dtype: Optional[str] = None) -> "AoTBias | torch.Tensor":
        """The bias source of a task pack: its table (the saved file memory-mapped, or materialised
        now from the saved reparametrization, chunk by chunk, in ``table_dtype``, default the run's),
        or for ``inference_mode: on_the_fly`` the reparametrized :class:`AoTBias`."""
        device = backbone.get_input_embeddings().weight.device
        dtype = resolve_table_dtype(table_dtype or info.get("table_dtype") or self.table_dtype)
        files = info["files"]
        if info.get("inference_mode", "materialized") == "materialized" and "table" in files:
            table, _ = load_tensor_mmap(Path(pack_dir) / files["table"], packs.TABLE_TENSOR)
            return table if table.dtype == dtype and device.type == "cpu" else table.to(device=device, dtype=dtype)
        if "reparam" not in files:
            raise FileNotFoundError(f"{pack_dir}: the pack has neither a table nor the reparametrization "
                                    f"({packs.REPARAM_FILE}) to materialise it from")
        bias = self.load_reparam(backbone, Path(pack_dir) / files["reparam"]).to(device)
        if info.get("inference_mode", "materialized") == "on_the_fly":
            return bias
        return bias.materialized_table(self.chunk_size, dtype, device)

    def load_reparam(self, backbone: nn.Module, path: Path) -> AoTBias:
        """An on-the-fly :class:`AoTBias` with the parameters saved by ``prepare_for_inference``."""
        bias = self.build_bias(backbone)
        bias.reparam.load_state_dict(load_file(str(path)))
        return bias.eval()


@METHODS.register("aot_fc")
class AoTFC(AoTMethod):
    """AoT P-Tuning, FC reparametrization: ``P[x] = W2 dropout(act(W1 E[x] + b1)) + b2``.

    Trainable parameters: ``e*r + r + r*L*d + L*d`` + head (e = word-embedding width).
    Options: ``rank`` r, ``activation`` (relu/gelu/tanh/identity), ``dropout`` (on the r hidden
    units), ``table_dtype``, ``inference_mode``, ``chunk_size`` (see :mod:`aotp.methods.aot.method`).
    """

    name = "aot_fc"
    benchmark_variants = ("materialized", "materialized_bf16", "on_the_fly")

    def __init__(self, rank: int = 128, activation: str = "relu", dropout: float = 0.0, **options: Any):
        super().__init__(rank=rank, dropout=dropout, **options)
        if activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {activation!r} (config option `method.options.activation`); "
                             f"valid choices: {', '.join(ACTIVATIONS)}")
        self.activation = activation

    def options(self) -> dict[str, Any]:
        return {**super().options(), "activation": self.activation}

    def build_reparam(self, backbone: nn.Module) -> nn.Module:
        _, _, num_layers, hidden_size = backbone_shapes(backbone)
        return FCReparametrization(backbone.get_input_embeddings(), num_layers, hidden_size, self.rank,
                                   self.activation, self.dropout)

    def reparam_parameter_count(self, backbone: nn.Module) -> int:
        _, embedding_dim, num_layers, hidden_size = backbone_shapes(backbone)
        return FCReparametrization.parameter_count(embedding_dim, num_layers, hidden_size, self.rank)


@METHODS.register("aot_kron")
class AoTKronecker(AoTMethod):
    """AoT P-Tuning, Kronecker reparametrization: ``P[x] = dropout(A[x // b] kron B[x % b]) W``.

    a = b = ceil(sqrt(|V|)); A: a x r, B: b x r, W: r^2 x L*d (no bias).
    Trainable parameters: ``a*r + b*r + r^2*L*d`` + head.
    Options: ``rank`` r, ``dropout`` (on the r^2 Kronecker features), ``table_dtype``,
    ``inference_mode``, ``chunk_size``.
    """

    name = "aot_kron"

    def __init__(self, rank: int = 16, dropout: float = 0.0, **options: Any):
        super().__init__(rank=rank, dropout=dropout, **options)

    def build_reparam(self, backbone: nn.Module) -> nn.Module:
        vocab_size, _, num_layers, hidden_size = backbone_shapes(backbone)
        return KroneckerReparametrization(vocab_size, num_layers, hidden_size, self.rank, self.dropout)

    def reparam_parameter_count(self, backbone: nn.Module) -> int:
        vocab_size, _, num_layers, hidden_size = backbone_shapes(backbone)
        a, b = kron_split(vocab_size)
        return KroneckerReparametrization.parameter_count(a, b, num_layers, hidden_size, self.rank)


def aot_method_names() -> list[str]:
    """Registered method names that are AoT P-Tuning variants (usable for multi-task inference)."""
    return [name for name in METHODS.names() if issubclass(METHODS.get(name), AoTMethod)]


def build_aot_method(name: str, options: Optional[dict] = None) -> AoTMethod:
    cls = METHODS.get(name)
    if not issubclass(cls, AoTMethod):
        raise ValueError(f"method {name!r} is not an AoT P-Tuning method ({', '.join(aot_method_names())})")
    return cls(**(options or {}))


__all__ = ["AoTMethod", "AoTFC", "AoTKronecker", "INFERENCE_MODES", "TABLE_DTYPES", "aot_method_names",
           "build_aot_method", "backbone_shapes"]
