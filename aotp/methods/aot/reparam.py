"""AoT P-Tuning reparametrizations: token id -> the L per-layer biases of that token.

Both map a 1-D tensor of token ids to rows of shape (U, L, d), one per id given, each row a function of its
id alone (and of its dropout mask, when training with dropout > 0). Only the rows asked for are computed:
training asks for the batch's unique ids on the CPU and for every position's id on other devices (no
data-dependent shape, hence no host-device sync: :class:`aotp.methods.aot.module.AoTBias`), materialisation
for chunks of the vocabulary.

FC (Gavrilov & Balagansky 2023, eq. for the "FC" reparametrization)::

    P[x] = W2 dropout(act(W1 E[x] + b1)) + b2,   reshaped (L, d)

E is the backbone's frozen word-embedding matrix (|V| x e), W1: e -> r, W2: r -> L*d. Trainable
parameters: ``e*r + r + r*L*d + L*d`` (e = d for every family here). W2 and b2 start at zero.

Kronecker::

    P[x] = dropout(A[x // b] kron B[x % b]) W,   reshaped (L, d)

with the vocabulary split as a = b = ceil(sqrt(|V|)), so a*b >= |V| and x -> (x // b, x % b) is
injective; A: a x r, B: b x r, W: r^2 -> L*d, no bias. Trainable parameters: ``a*r + b*r + r^2*L*d``.
W starts at zero; A and B start N(0, 1/r) so that ||A[i] kron B[j]|| is about 1.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "identity": nn.Identity}


def check_rank(rank) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"AoT option `method.options.rank` must be a positive integer, got {rank!r}")
    return rank


def check_dropout(dropout) -> float:
    if not isinstance(dropout, (int, float)) or not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"AoT option `method.options.dropout` must be in [0, 1), got {dropout!r}")
    return float(dropout)


class FCReparametrization(nn.Module):
    """``P[x] = W2 dropout(act(W1 E[x] + b1)) + b2`` over the frozen embedding matrix E."""

    def __init__(self, word_embeddings: nn.Embedding, num_layers: int, hidden_size: int, rank: int,
                 activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {activation!r} (config option `method.options.activation`); "
                             f"valid choices: {', '.join(ACTIVATIONS)}")
        self.num_layers, self.hidden_size, self.rank = num_layers, hidden_size, check_rank(rank)
        # E belongs to the frozen backbone: kept as a plain attribute, so it is neither a parameter
        # nor a buffer of this module (no duplicate in named_parameters or state_dict).
        self.__dict__["word_embeddings"] = word_embeddings
        self.vocab_size, embedding_dim = word_embeddings.weight.shape
        self.down = nn.Linear(embedding_dim, rank)  # W1, b1 (PyTorch's default init)
        self.act = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(check_dropout(dropout))
        self.up = nn.Linear(rank, num_layers * hidden_size)  # W2, b2: zero, so P = 0 at init
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def rows(self, token_ids: torch.Tensor) -> torch.Tensor:
        embedded = self.word_embeddings.weight.detach()[token_ids]  # E is frozen
        hidden = self.dropout(self.act(self.down(embedded.to(self.down.weight.dtype))))
        return self.up(hidden).view(-1, self.num_layers, self.hidden_size)

    @staticmethod
    def parameter_count(embedding_dim: int, num_layers: int, hidden_size: int, rank: int) -> int:
        return embedding_dim * rank + rank + rank * num_layers * hidden_size + num_layers * hidden_size


def kron_split(vocab_size: int) -> tuple[int, int]:
    """(a, b) with a = b = ceil(sqrt(|V|)), so a*b >= |V|."""
    side = math.isqrt(vocab_size - 1) + 1 if vocab_size > 1 else 1
    return side, side


def kron_index(token_ids: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id x -> (row of A, row of B) = (x // b, x % b)."""
    return torch.div(token_ids, b, rounding_mode="floor"), torch.remainder(token_ids, b)


class KroneckerReparametrization(nn.Module):
    """``P[x] = dropout(A[x // b] kron B[x % b]) W``, trained from scratch."""

    def __init__(self, vocab_size: int, num_layers: int, hidden_size: int, rank: int, dropout: float = 0.0):
        super().__init__()
        self.num_layers, self.hidden_size, self.rank = num_layers, hidden_size, check_rank(rank)
        self.vocab_size = vocab_size
        self.a, self.b = kron_split(vocab_size)
        self.left = nn.Parameter(torch.randn(self.a, rank) / math.sqrt(rank))   # A
        self.right = nn.Parameter(torch.randn(self.b, rank) / math.sqrt(rank))  # B
        self.dropout = nn.Dropout(check_dropout(dropout))
        self.proj = nn.Linear(rank * rank, num_layers * hidden_size, bias=False)  # W: zero, so P = 0 at init
        nn.init.zeros_(self.proj.weight)

    def rows(self, token_ids: torch.Tensor) -> torch.Tensor:
        i, j = kron_index(token_ids, self.b)
        # Row-wise Kronecker product of two vectors: (U, r) x (U, r) -> (U, r*r), index p*r + q.
        features = (self.left[i].unsqueeze(2) * self.right[j].unsqueeze(1)).reshape(-1, self.rank * self.rank)
        return self.proj(self.dropout(features)).view(-1, self.num_layers, self.hidden_size)

    @staticmethod
    def parameter_count(a: int, b: int, num_layers: int, hidden_size: int, rank: int) -> int:
        return a * rank + b * rank + rank * rank * num_layers * hidden_size
