"""Adding per-token biases before every encoder layer, with hooks and without copying backbone code.

:class:`BiasHooks` registers

* a forward pre-hook on the backbone (``with_kwargs=True``) that reads ``input_ids`` and asks a
  *provider* for the biases of every position and layer, logically (N, T, L, d). The provider
  returns either a dense tensor of that shape, computed in full before the encoder runs, or a
  :class:`LayerBiases` object, whose per-layer slices are produced on demand (see below);
* a forward pre-hook on every layer of the encoder's layer list that replaces the hidden states
  entering layer l (``hidden_states=`` keyword, or the first positional argument, as DeBERTa's
  encoder passes ``next_kv``) by ``hidden_states + bias_l`` (out of place; ``bias_l`` is
  ``bias[:, :, l]`` of a dense tensor, or ``biases.layer(l)`` of a :class:`LayerBiases`);
* a forward hook (``always_call=True``) on the backbone that drops the bias after the call.

What is computed ahead of time. The biases depend on the token ids only, so they are fully
determined before the encoder runs. A dense provider (training, where autograd needs the tensor)
computes all L biases (N, T, L, d) at that point. A :class:`LayerBiases` provider (inference) does
everything that needs computation before the encoder too (a materialised table *is* the
precomputed biases; an on-the-fly reparametrization computes the rows of the batch's unique tokens
for all L layers in the backbone pre-hook), and leaves only a row *gather* to each layer's pre-hook:
layer l copies its (N, T, d) rows out of the table (or out of the unique rows) just before adding
them. Same values, bit for bit, as slicing the dense (N, T, L, d) gather (a copy is a copy); what
changes is memory traffic: no (N, T, L, d) tensor is allocated per forward (37.7 MB in fp32 at batch
32 x 128 on a 6-layer, d=384 model; on CPU a fresh allocation that size is paid in page faults, which
cost more than the gather itself), only one (N, T, d) buffer, allocated by the hooks at the first
layer and overwritten by every layer's gather (the add reads it before the next layer runs), and
read contiguously by the add.

A bias in another dtype than the hidden states (fp16/bf16 table, fp32 model) is cast to the hidden
states' dtype before the add (measured on CPU: as fast as letting the add promote the dtypes).

The layer list is found generically (:func:`find_encoder_layers`), so any HF encoder whose layers
take the hidden states first works: BERT, RoBERTa, DeBERTa v1/v2/v3 here.

DeBERTa-v2 with a convolution (``conv_kernel_size > 0``, e.g. deberta-v2-xlarge): the encoder feeds
layer 0's convolution (HF's ``ConvLayer``, ``encoder.conv``) the embedding output, beside layer 0's own
output. What layer 0 reads is ``h_0 + P_0``, so a pre-hook on ``encoder.conv`` gives the convolution the
same biased input (:func:`find_layer0_side_inputs`); with zero biases it is the backbone exactly.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn


class LayerBiases(ABC):
    """Biases of shape (N, T, L, d) whose layer slices (N, T, d) are produced on demand by
    :meth:`layer`; everything that needs computing is done when the object is built (before the
    encoder runs), :meth:`layer` only gathers rows (into ``out`` when given: a contiguous (N, T, d)
    tensor of :attr:`dtype`, which the hooks allocate once per forward and reuse for every layer)."""

    shape: torch.Size  # (*input_ids.shape, L, d)
    dtype: torch.dtype
    device: torch.device

    def dim(self) -> int:
        return len(self.shape)

    def new_layer_buffer(self) -> torch.Tensor:
        return torch.empty(*self.shape[:-2], self.shape[-1], dtype=self.dtype, device=self.device)

    @abstractmethod
    def layer(self, index: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The (*input_ids.shape, d) biases of layer ``index``."""


def _gather(source: torch.Tensor, index: torch.Tensor, shape: Sequence[int], out: Optional[torch.Tensor]) -> torch.Tensor:
    """``source[index]`` viewed as ``shape`` (+ d), written into ``out`` when given."""
    if out is None:
        return torch.index_select(source, 0, index).view(*shape, source.shape[-1])
    torch.index_select(source, 0, index, out=out.view(-1, source.shape[-1]))
    return out


class TableBiases(LayerBiases):
    """Rows of a materialised (|V|, L, d) table: ``layer(l) = table[input_ids, l]``, gathered from the
    (strided) layer-l view ``table[:, l]`` of the vocabulary-major table, whose rows of d values are
    contiguous. Out-of-range ids raise IndexError, as ``table[input_ids]`` does."""

    def __init__(self, table: torch.Tensor, input_ids: torch.Tensor):
        self.table, self.ids_shape = table, tuple(input_ids.shape)
        self.flat_ids = input_ids.reshape(-1)
        self.shape = torch.Size((*self.ids_shape, table.shape[1], table.shape[2]))
        self.dtype, self.device = table.dtype, table.device

    def layer(self, index: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        return _gather(self.table[:, index], self.flat_ids, self.ids_shape, out)


class RowBiases(LayerBiases):
    """Precomputed rows (U, L, d) of the batch's unique tokens and the index of each position's row
    (``inverse``, N*T): ``layer(l) = rows[inverse, l]``."""

    def __init__(self, rows: torch.Tensor, inverse: torch.Tensor, ids_shape: Sequence[int]):
        self.rows, self.inverse, self.ids_shape = rows, inverse.reshape(-1), tuple(ids_shape)
        self.shape = torch.Size((*self.ids_shape, rows.shape[1], rows.shape[2]))
        self.dtype, self.device = rows.dtype, rows.device

    def layer(self, index: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        return _gather(self.rows[:, index], self.inverse, self.ids_shape, out)


Rows = Union[None, slice, torch.Tensor]


class MixedBiases(LayerBiases):
    """Biases of a batch whose rows come from different sources (multi-task inference).

    ``parts`` = [(rows, biases of those rows), ...] covering every row once; ``rows`` is a ``slice``
    (the part's rows are contiguous: its gather writes straight into its slice of the layer buffer,
    one copy, as for a single task), a tensor of row indices (gather, then ``index_copy_``: two
    copies), or ``None`` for a single part holding every row."""

    def __init__(self, parts: Sequence[tuple[Rows, Union[torch.Tensor, LayerBiases]]], ids_shape: Sequence[int],
                 num_layers: int, hidden_size: int, dtype: torch.dtype, device: torch.device):
        self.parts = list(parts)
        self.shape = torch.Size((*ids_shape, num_layers, hidden_size))
        self.dtype, self.device = dtype, device

    def layer(self, index: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        if len(self.parts) == 1 and self.parts[0][0] is None:  # one source for the whole batch
            return _layer_into(self.parts[0][1], index, out, self.dtype)
        out = self.new_layer_buffer() if out is None else out
        for rows, biases in self.parts:
            if isinstance(rows, slice):
                _layer_into(biases, index, out[rows], self.dtype)
            else:
                out.index_copy_(0, rows, layer_slice(biases, index).to(self.dtype))
        return out


def _layer_into(biases: Union[torch.Tensor, LayerBiases], index: int, out: Optional[torch.Tensor],
                dtype: torch.dtype) -> torch.Tensor:
    """Layer ``index`` of ``biases`` in ``dtype``, written into ``out`` when given."""
    if out is None:
        return layer_slice(biases, index).to(dtype)
    if isinstance(biases, LayerBiases) and biases.dtype == out.dtype:
        return biases.layer(index, out=out)
    out.copy_(layer_slice(biases, index))
    return out


def layer_slice(biases: Union[torch.Tensor, LayerBiases], index: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The (N, T, d) biases of layer ``index`` from a dense (N, T, L, d) tensor or a :class:`LayerBiases`
    (written into ``out`` for the latter when given)."""
    return biases.layer(index, out) if isinstance(biases, LayerBiases) else biases[:, :, index]


def add_bias(hidden: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``hidden + bias`` in ``hidden``'s dtype (out of place: the input may be referenced elsewhere)."""
    return hidden + bias.to(hidden.dtype)


BiasProvider = Callable[[torch.Tensor], Union[torch.Tensor, LayerBiases]]


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


def find_layer0_side_inputs(backbone: nn.Module) -> list[nn.Module]:
    """Modules besides layer 0 that read the embedding output, which layer 0 reads with its bias added:
    DeBERTa-v2's ``encoder.conv`` (``ConvLayer(hidden_states, residual_states, input_mask)``)."""
    conv = getattr(getattr(backbone, "encoder", None), "conv", None)
    return [conv] if isinstance(conv, nn.Module) else []


class BiasHooks:
    """Hooks that add layer l of ``provider(input_ids)`` to the input of encoder layer l."""

    def __init__(self, provider: BiasProvider):
        self.provider = provider
        self.bias: Optional[Union[torch.Tensor, LayerBiases]] = None
        self._layer_buffer: Optional[torch.Tensor] = None  # one (N, T, d) buffer per forward, reused by every layer
        self._sum_buffer: Optional[torch.Tensor] = None    # inference: the biased layer input, reused by every layer
        self.reuse_buffers = True  # False: allocate every layer's slice and sum (the earlier behaviour; for benchmarks)
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
        for module in find_layer0_side_inputs(backbone):
            self.handles.append(module.register_forward_pre_hook(self._add_layer0_side, with_kwargs=True))
        backbone._aotp_bias_hooks = self
        self._backbone = backbone
        return self

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self.bias = None
        self._layer_buffer = self._sum_buffer = None
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
        self._layer_buffer = self._sum_buffer = None
        return None

    def _release(self, module, args, output):
        self.bias = None
        self._layer_buffer = self._sum_buffer = None
        return None

    def run_without_encoder(self, input_ids: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """The hooks' whole work for one forward, without the encoder (for benchmarks): the provider,
        then every layer's bias added to ``hidden`` (the same tensor each time); returns the last sum."""
        if not self.handles:
            raise RuntimeError("attach the hooks first (the number of layers comes from the backbone)")
        self._compute(None, (), {"input_ids": input_ids})
        try:
            for index in range(self.num_layers):
                out = self._biased(index, hidden)
        finally:
            self._release(None, (), None)
        return out

    def _layer_bias(self, index: int) -> torch.Tensor:
        bias = self.bias
        if not isinstance(bias, LayerBiases):
            return bias[:, :, index]
        if not self.reuse_buffers:
            return bias.layer(index)
        # Every layer's rows go into the same buffer: the add below reads it before the next layer
        # overwrites it, and nothing else keeps it. One allocation per forward instead of one per
        # layer (on CPU a fresh multi-MB allocation is paid in page faults).
        if self._layer_buffer is None:
            self._layer_buffer = bias.new_layer_buffer()
        return bias.layer(index, out=self._layer_buffer)

    def _biased(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden + bias_l`` (a new tensor, ``hidden`` untouched).

        Inference fast path (autograd off, per-layer biases, contiguous hidden states): the sum is
        written into one buffer owned by the hooks for the whole forward -- the gather writes the
        rows into it and ``add_`` adds the hidden states (``b + h == h + b`` bit for bit) -- and that
        buffer is what layer l receives. Layer l+1's hook overwrites it only after layer l has
        returned; a layer's output is a new tensor in every supported family (it ends in a layer
        norm), and that is checked (a layer input that *is* the buffer takes the allocating path).
        Nothing else keeps layer inputs under ``no_grad`` (``output_hidden_states`` records the
        un-biased tensors, before this hook runs). No allocation per layer, so no page faults per layer."""
        bias = self.bias
        if (self.reuse_buffers and isinstance(bias, LayerBiases) and not torch.is_grad_enabled() and hidden.is_contiguous()
                and hidden.shape == bias.shape[:-2] + bias.shape[-1:] and hidden.dtype.is_floating_point):
            buffer = self._sum_buffer
            if buffer is None or buffer.dtype != hidden.dtype or buffer.device != hidden.device:
                buffer = self._sum_buffer = torch.empty_like(hidden, memory_format=torch.contiguous_format)
            if buffer.data_ptr() != hidden.data_ptr():
                if bias.dtype == hidden.dtype:
                    return bias.layer(index, out=buffer).add_(hidden)
                return torch.add(hidden, self._layer_bias(index), out=buffer)
        return add_bias(hidden, self._layer_bias(index))

    def _add_layer0_side(self, module, args, kwargs):
        """Layer 0's bias on the hidden states a side module of layer 0 reads (allocating: this runs
        after layer 0, whose input may sit in the reused sum buffer)."""
        if self.bias is None:
            raise RuntimeError("AoT bias missing: the layer-0 convolution ran outside a call of the backbone itself")
        if "hidden_states" in kwargs:
            return args, {**kwargs, "hidden_states": add_bias(kwargs["hidden_states"], self._layer_bias(0))}
        return (add_bias(args[0], self._layer_bias(0)),) + tuple(args[1:]), kwargs

    def _add(self, index: int, module, args, kwargs):
        bias = self.bias
        if bias is None:
            raise RuntimeError("AoT bias missing: an encoder layer ran outside a call of the backbone itself")
        if "hidden_states" in kwargs:
            kwargs = dict(kwargs)
            kwargs["hidden_states"] = self._biased(index, kwargs["hidden_states"])
            return args, kwargs
        if not args:
            raise RuntimeError(f"encoder layer {index} was called without hidden states")
        return (self._biased(index, args[0]),) + tuple(args[1:]), kwargs
