"""The task model: a bare backbone encoder followed by a task head.

The head is everything after the encoder and trains in every method, so heads are comparable
across families: ``logits = W_out dropout(tanh(W_d dropout(h_0) + b_d)) + b_out`` on the first
token's final hidden state ``h_0``. This is RoBERTa's classification head and DeBERTa's
ContextPooler + classifier; for BERT the dense layer is initialised from the pretrained pooler
(BERT's pooler is part of its head). Trainable head parameters: ``d*d + d + d*k + k`` with k the
number of outputs (labels; 1 for regression and for multiple choice, which scores each choice).

With ``pair_encoding="siamese"`` (``data.pair_encoding``; sentence-pair tasks) the two sentences are
encoded separately, each mean-pooled over its tokens to ``u`` and ``v``, and classified as in
Sentence-BERT (Reimers & Gurevych, 2019): ``logits = W_out dropout([u; v; |u - v|]) + b_out``, with
``3*d*k + k`` trainable head parameters. ``pair_encoding="siamese_cosine"`` scores the pair by the
cosine similarity alone, the quantity sentence encoders are trained to make meaningful:
``logits = w * (s cos(u, v)) + b`` with ``w, b`` in R^k and the fixed scale ``s = 20`` (the scale of
Sentence-BERT's ranking loss), ``2k`` trainable head parameters. Both suit backbones trained as sentence
encoders (such as all-MiniLM-L6-v2), whose pretraining never saw a concatenated pair.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from aotp.models.builders import Backbone

HEAD_TYPES = ("classification", "regression", "multiple_choice")
PAIR_ENCODINGS = ("cross", "siamese", "siamese_cosine")


def pair_encoding_of(data_cfg) -> str:
    """``data.pair_encoding`` of a run's config (absent in records older than the option: cross)."""
    return str((data_cfg or {}).get("pair_encoding") or "cross")


class TaskHead(nn.Module):
    def __init__(self, hidden_size: int, num_outputs: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, num_outputs)

    def forward(self, first_token_states: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(self.dense(self.dropout(first_token_states)))
        return self.out_proj(self.dropout(hidden))


class SiameseHead(nn.Module):
    """``W_out dropout([u; v; |u - v|]) + b_out`` on the mean-pooled states of the two sentences."""

    def __init__(self, hidden_size: int, num_outputs: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(3 * hidden_size, num_outputs)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(torch.cat([first, second, (first - second).abs()], dim=-1)))


class CosineHead(nn.Module):
    """``w * (s cos(u, v)) + b`` per output, on the mean-pooled states of the two sentences."""

    scale = 20.0  # cos is in [-1, 1]; the scale lets logits reach useful magnitudes as w trains

    def __init__(self, num_outputs: int):
        super().__init__()
        self.out_proj = nn.Linear(1, num_outputs)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        cosine = nn.functional.cosine_similarity(first, second, dim=-1)
        return self.out_proj(self.scale * cosine.unsqueeze(-1))


class TaskModel(nn.Module):
    """``backbone`` (an HF ``AutoModel``) + ``head`` (:class:`TaskHead`; :class:`SiameseHead` or
    :class:`CosineHead` for siamese pairs).

    ``forward`` takes ``input_ids``/``attention_mask``/(``token_type_ids``) shaped (B, T), or
    (B, C, T) for multiple choice and (B, 2, T) for siamese pairs, and returns logits (B, k), (B,)
    for regression, or (B, C).
    """

    def __init__(self, backbone: Backbone, head_type: str, num_labels: int, seed: int = 0,
                 pair_encoding: str = "cross"):
        super().__init__()
        if head_type not in HEAD_TYPES:
            raise ValueError(f"Unknown head type {head_type!r}; valid: {', '.join(HEAD_TYPES)}")
        if pair_encoding not in PAIR_ENCODINGS:
            raise ValueError(f"data.pair_encoding={pair_encoding!r}; valid: {', '.join(PAIR_ENCODINGS)}")
        if pair_encoding != "cross" and head_type == "multiple_choice":
            raise ValueError(f"data.pair_encoding={pair_encoding} needs a sentence-pair task; multiple choice is cross-encoded "
                             "(use data.pair_encoding=cross)")
        self.pair_encoding = pair_encoding
        self.backbone = backbone.model
        self.family = backbone.family
        self.head_type = head_type
        self.num_labels = num_labels
        self.uses_token_type_ids = backbone.uses_token_type_ids
        config = self.backbone.config
        dropout = getattr(config, "pooler_dropout", None) or config.hidden_dropout_prob
        num_outputs = 1 if head_type in ("regression", "multiple_choice") else num_labels
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)  # the head's init depends on the run seed only
        try:
            if pair_encoding == "siamese":
                self.head = SiameseHead(config.hidden_size, num_outputs, dropout)
            elif pair_encoding == "siamese_cosine":
                self.head = CosineHead(num_outputs)
            else:
                self.head = TaskHead(config.hidden_size, num_outputs, dropout)
            self.head.out_proj.weight.data.normal_(0.0, config.initializer_range)
            self.head.out_proj.bias.data.zero_()
        finally:
            torch.random.set_rng_state(generator_state)
        pooler = getattr(self.backbone, "pooler", None)
        if pooler is not None:
            if self.family == "bert" and hasattr(pooler, "dense") and pair_encoding == "cross":
                self.head.dense.load_state_dict(pooler.dense.state_dict())
            # The head replaces the backbone's pooler in every family (it is unused otherwise).
            self.backbone.pooler = None

    @property
    def hidden_size(self) -> int:
        return self.backbone.config.hidden_size

    def hidden_states(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """Final hidden states of the encoder, (N, T, d)."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self.uses_token_type_ids:
            kwargs["token_type_ids"] = token_type_ids
        return self.backbone(**kwargs).last_hidden_state

    def encode(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """Final hidden state of the first token, (N, d)."""
        return self.hidden_states(input_ids, attention_mask, token_type_ids)[:, 0]

    def encode_mean(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """Mean of the final hidden states over the unpadded tokens, (N, d)."""
        states = self.hidden_states(input_ids, attention_mask, token_type_ids)
        weights = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.pair_encoding != "cross":
            if input_ids.dim() != 3 or input_ids.shape[1] != 2:
                raise ValueError(f"a siamese model takes (B, 2, T) inputs (the two sentences), got {tuple(input_ids.shape)}")
            # Each side is trimmed to its own longest sequence: a short hypothesis is not padded to the
            # length of a long premise (padding never changes the pooled state, so this only saves time).
            pooled = []
            for side in (0, 1):
                length = max(int(attention_mask[:, side].sum(-1).max()), 1)
                trim = lambda t: None if t is None else t[:, side, :length]  # noqa: E731
                pooled.append(self.encode_mean(trim(input_ids), trim(attention_mask), trim(token_type_ids)))
            logits = self.head(pooled[0], pooled[1])
            return logits.squeeze(-1) if self.head_type == "regression" else logits
        if self.head_type == "multiple_choice":
            batch, choices, length = input_ids.shape
            flat = lambda t: None if t is None else t.reshape(batch * choices, length)  # noqa: E731
            states = self.encode(flat(input_ids), flat(attention_mask), flat(token_type_ids))
            return self.head(states).view(batch, choices)
        logits = self.head(self.encode(input_ids, attention_mask, token_type_ids))
        return logits.squeeze(-1) if self.head_type == "regression" else logits

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.head_type == "regression":
            return nn.functional.mse_loss(logits.float(), labels.float())
        return nn.functional.cross_entropy(logits.float(), labels.long())
