"""Where P-Tuning v2's prefix keys/values enter each family's self-attention: the per-family knowledge of
:mod:`aotp.methods.ptuning_v2`, kept small and named per family (:data:`PREFIX_ATTENTION`).

Every family gets the same computation, AdapterHub's prefix tuning (``adapters`` 1.3, its
``PrefixTuningLayer.compose_single`` and the families' ``*WithAdapters`` attention modules): the p prefix
keys/values of layer l are concatenated *before* the sequence's own keys/values, in the heads' layout,
after the family's own key/value biases; the attention mask gets p leading columns that are always attended
(padding stays masked); queries, and so the output length, are the sequence's own. The self-attention module's
class is swapped in place for a subclass (parameter names unchanged) that does this through the narrowest seam
the family offers, identical in transformers 4.57 and 5:

* ``bert``, ``roberta`` -- :class:`CachePrefix`: the self-attention module already concatenates earlier keys
  and values ahead of its own through its cache argument (``past_key_values``, named ``cache`` from
  transformers 5.2x: ``cache.update(key, value, layer_idx, ...)``, HF's cache protocol, the mechanism P-Tuning
  v2's reference code uses); the module is handed a :class:`PrefixKeyValues` whose ``update`` returns
  ``[prefix; key]``, ``[prefix; value]``, and an additive mask with p zero columns (True where the mask is
  boolean). Nothing else of the module is touched, so its eager and SDPA paths (4.57) and its
  attention-interface path (5) all serve.
* ``deberta_v2`` (DeBERTa-v2/v3) -- :class:`DebertaV2Prefix`: forward hooks on ``key_proj`` and
  ``value_proj`` prepend the prefix rows to the projections of the hidden states (``transpose_for_scores``
  infers the length), the mask (1 = attend) gets p columns of ones, and ``disentangled_attention_bias`` is
  run over the sequence's own keys and padded (see below). The hooks act once per forward (on the hidden
  states), not on the relative-position embeddings that ``key_proj`` also projects when ``share_att_key``.
* ``deberta`` (DeBERTa v1) -- :class:`DebertaV1Prefix`: the fused, per-head-interleaved ``in_proj`` computes
  Q, K and V in one matmul and ``v_bias`` is added after the split, so there is no seam between the value
  bias and the scores: the class has its own ``forward``, HF's ``DisentangledSelfAttention.forward``
  (unchanged from 4.57 to 5.25 but for type hints) with the prefix inserted after the biases, as AdapterHub's
  copy does.

Relative-position scores over the prefix (both DeBERTa versions): the c2p + p2c scores are computed between the
queries and the sequence's own keys only (the prefix has no position) and **zero-padded over the p prefix
columns**, so a prefix column's score is its content-to-content score alone. This is the padding of THUDM's
P-Tuning v2 (``model/deberta.py`` / ``model/debertaV2.py``: ``torch.cat([zeros(..., prefix_len), rel_att], -1)``)
and of AdapterHub (``rel_att_padded[..., -rel_att.size(-1):] = rel_att``).
"""

from __future__ import annotations

import functools
import inspect
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class PrefixStates:
    """The prefix keys/values of the forward under way, shared by the backbone's hooks and every layer's
    self-attention (a plain object: it holds no parameters). ``current``: (B, p, L, 2, d), or None outside a
    forward."""

    def __init__(self, length: int):
        self.length = length
        self.current: Optional[torch.Tensor] = None

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``index``'s prefix keys and values, each (B, p, d)."""
        if self.current is None:
            raise RuntimeError("prefix states requested outside a backbone forward (the backbone's prefix hook did not run)")
        return self.current[:, :, index, 0], self.current[:, :, index, 1]

    def layer_heads(self, index: int, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``index``'s prefix keys and values in the heads' layout, each (B, heads, p, d / heads)."""
        keys, values = self.layer(index)
        batch, length, width = keys.shape
        return tuple(x.view(batch, length, heads, width // heads).transpose(1, 2) for x in (keys, values))


def pad_mask(mask: Optional[torch.Tensor], length: int, attend) -> Optional[torch.Tensor]:
    """``length`` leading key columns on an attention mask (any rank, keys last), all attended: ``attend`` for a
    numeric mask (0.0 additive, 1 multiplicative), True for a boolean one."""
    if mask is None:
        return None
    value = True if mask.dtype == torch.bool else attend
    return torch.cat([mask.new_full((*mask.shape[:-1], length), value), mask], dim=-1)


def _with_mask(args: tuple, kwargs: dict, length: int, attend) -> tuple[tuple, dict]:
    """The self-attention call's ``attention_mask`` (second positional argument or keyword) with the prefix columns."""
    if len(args) > 1:
        args = (args[0], pad_mask(args[1], length, attend), *args[2:])
    elif "attention_mask" in kwargs:
        kwargs = {**kwargs, "attention_mask": pad_mask(kwargs["attention_mask"], length, attend)}
    return args, kwargs


class PrefixAttention(nn.Module):
    """Base of the family mixins: ``prefix_states`` (the shared :class:`PrefixStates`) and ``prefix_layer``
    (this layer's index) are set by :func:`add_prefix`."""

    prefix_states: PrefixStates
    prefix_layer: int

    @classmethod
    def install(cls, module: nn.Module, original: type) -> None:
        """Family-specific setup after the class swap (hooks); ``original``: the module's own class. Default none."""


class PrefixKeyValues:
    """HF's cache protocol for one layer: ``update(key, value, layer_idx, cache_kwargs)`` returns the prefix
    keys/values (B, heads, p, head_dim) concatenated ahead of the layer's own."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        self.keys, self.values = keys, values

    def update(self, key_states, value_states, *args, **kwargs):
        return torch.cat([self.keys, key_states], dim=2), torch.cat([self.values, value_states], dim=2)


# the self-attention's cache argument: ``past_key_values`` (transformers 4.57 to 5.2x), renamed ``cache``
# (5.2x, the old name deprecated until 5.40)
CACHE_ARGUMENTS = ("cache", "past_key_values")


class CachePrefix(PrefixAttention):
    """BERT / RoBERTa self-attention (see the module docstring)."""

    prefix_cache_argument: str = "past_key_values"

    @classmethod
    def install(cls, module: nn.Module, original: type) -> None:
        parameters = inspect.signature(original.forward).parameters
        names = [name for name in CACHE_ARGUMENTS if name in parameters]
        if not names:
            raise TypeError(f"{original.__name__}.forward takes none of {CACHE_ARGUMENTS}: "
                            "no seam for the prefix keys/values (aotp/methods/prefix_attention.py)")
        module.prefix_cache_argument = names[0]

    def forward(self, *args, **kwargs):
        if any(kwargs.get(name) is not None for name in CACHE_ARGUMENTS) or len(args) > 2:
            raise ValueError("P-Tuning v2 prefixes use the self-attention's cache argument: a call with a cache of its "
                             "own, or with arguments past the mask given by position, is not supported")
        keys, values = self.prefix_states.layer_heads(self.prefix_layer, self.num_attention_heads)
        kwargs[self.prefix_cache_argument] = PrefixKeyValues(keys, values)
        args, kwargs = _with_mask(args, kwargs, self.prefix_states.length, 0.0)
        return super().forward(*args, **kwargs)


def _prepend_prefix(attention: nn.Module, role: str, module: nn.Module, args, output: torch.Tensor):
    """Forward hook on DeBERTa-v2's ``key_proj`` / ``value_proj``: the pending prefix rows ahead of the output,
    once per attention forward (later calls, e.g. on the relative-position embeddings, pass through)."""
    pending = attention.prefix_pending
    if not pending or role not in pending:
        return None
    return torch.cat([pending.pop(role), output], dim=1)


class DebertaV2Prefix(PrefixAttention):
    """DeBERTa-v2/v3 ``DisentangledSelfAttention`` (see the module docstring)."""

    prefix_pending: Optional[dict] = None

    @classmethod
    def install(cls, module: nn.Module, original: type) -> None:
        module.prefix_pending = None
        for role, projection in (("key", module.key_proj), ("value", module.value_proj)):
            projection.register_forward_hook(functools.partial(_prepend_prefix, module, role))

    def forward(self, hidden_states, *args, **kwargs):
        keys, values = self.prefix_states.layer(self.prefix_layer)
        args, kwargs = _with_mask((hidden_states, *args), kwargs, self.prefix_states.length, 1)
        self.prefix_pending = {"key": keys, "value": values}
        try:
            return super().forward(*args, **kwargs)
        finally:
            self.prefix_pending = None

    def disentangled_attention_bias(self, query_layer, key_layer, relative_pos, rel_embeddings, scale_factor):
        length = self.prefix_states.length
        own_keys = key_layer[:, length:].contiguous()  # (B*heads, T, head_dim): the sequence's own keys
        score = super().disentangled_attention_bias(query_layer, own_keys, relative_pos, rel_embeddings, scale_factor)
        return F.pad(score, (length, 0)) if isinstance(score, torch.Tensor) else score


def _scaled_size_sqrt(query_layer: torch.Tensor, scale_factor: int) -> torch.Tensor:
    """DeBERTa's attention scale ``sqrt(head_dim * scale_factor)`` (HF's ``scaled_size_sqrt``)."""
    return torch.sqrt(torch.tensor(query_layer.size(-1), dtype=torch.float) * scale_factor)


class DebertaV1Prefix(PrefixAttention):
    """DeBERTa v1 ``DisentangledSelfAttention`` with the prefix (see the module docstring): HF's forward, the
    prefix keys/values concatenated after ``q_bias``/``v_bias``, the relative-position scores over the
    sequence's own keys, zero-padded over the prefix columns."""

    def forward(self, hidden_states, attention_mask, output_attentions=False, query_states=None, relative_pos=None,
                rel_embeddings=None):
        if query_states is None:
            qp = self.in_proj(hidden_states)
            query_layer, key_layer, value_layer = self.transpose_for_scores(qp).chunk(3, dim=-1)
        else:
            ws = self.in_proj.weight.chunk(self.num_attention_heads * 3, dim=0)
            qkvw = [torch.cat([ws[i * 3 + k] for i in range(self.num_attention_heads)], dim=0) for k in range(3)]
            q = torch.matmul(qkvw[0], query_states.t().to(dtype=qkvw[0].dtype))
            k = torch.matmul(qkvw[1], hidden_states.t().to(dtype=qkvw[1].dtype))
            v = torch.matmul(qkvw[2], hidden_states.t().to(dtype=qkvw[2].dtype))
            query_layer, key_layer, value_layer = [self.transpose_for_scores(x) for x in [q, k, v]]

        query_layer = query_layer + self.transpose_for_scores(self.q_bias[None, None, :])
        value_layer = value_layer + self.transpose_for_scores(self.v_bias[None, None, :])

        length = self.prefix_states.length
        prefix_keys, prefix_values = self.prefix_states.layer_heads(self.prefix_layer, self.num_attention_heads)
        own_keys = key_layer
        key_layer = torch.cat([prefix_keys, key_layer], dim=2)
        value_layer = torch.cat([prefix_values, value_layer], dim=2)
        attention_mask = pad_mask(attention_mask, length, 1)

        rel_att = 0
        scale_factor = 1 + len(self.pos_att_type)
        scale = _scaled_size_sqrt(query_layer, scale_factor)
        query_layer = query_layer / scale.to(dtype=query_layer.dtype)
        attention_scores = torch.matmul(query_layer, key_layer.transpose(-1, -2))

        if self.relative_attention and rel_embeddings is not None and relative_pos is not None:
            rel_embeddings = self.pos_dropout(rel_embeddings)
            rel_att = self.disentangled_att_bias(query_layer, own_keys, relative_pos, rel_embeddings, scale_factor)
            if isinstance(rel_att, torch.Tensor):
                rel_att = F.pad(rel_att, (length, 0))

        if rel_att is not None:
            attention_scores = attention_scores + rel_att

        if self.head_logits_proj is not None:
            attention_scores = self.head_logits_proj(attention_scores.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

        attention_mask = attention_mask.bool()
        attention_scores = attention_scores.masked_fill(~(attention_mask), torch.finfo(query_layer.dtype).min)
        attention_probs = nn.functional.softmax(attention_scores, dim=-1)

        attention_probs = self.dropout(attention_probs)
        if self.head_weights_proj is not None:
            attention_probs = self.head_weights_proj(attention_probs.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

        context_layer = torch.matmul(attention_probs, value_layer)
        context_layer = context_layer.permute(0, 2, 1, 3).contiguous()
        context_layer = context_layer.view(context_layer.size()[:-2] + (-1,))
        if not output_attentions:
            return (context_layer, None)
        return (context_layer, attention_probs)


# family -> (path of the self-attention inside ``encoder.layer.<i>``, the mixin swapped into it)
PREFIX_ATTENTION: dict[str, tuple[str, type]] = {
    "bert": ("attention.self", CachePrefix),
    "roberta": ("attention.self", CachePrefix),
    "deberta": ("attention.self", DebertaV1Prefix),
    "deberta_v2": ("attention.self", DebertaV2Prefix),
}

_PREFIX_CLASSES: dict[tuple[type, type], type] = {}


def add_prefix(module: nn.Module, mixin: type, states: PrefixStates, layer: int) -> None:
    """Swap the self-attention ``module``'s class for ``mixin`` over it (in place) and link it to ``states``."""
    if isinstance(module, PrefixAttention):
        raise TypeError(f"{type(module).__name__} already has a prefix")
    original = type(module)
    if (mixin, original) not in _PREFIX_CLASSES:
        _PREFIX_CLASSES[mixin, original] = type(f"{original.__name__}WithPrefix", (mixin, original), {})
    module.__class__ = _PREFIX_CLASSES[mixin, original]
    module.prefix_states = states
    module.prefix_layer = layer
    mixin.install(module, original)
