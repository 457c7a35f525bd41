"""``model.aot``: the bias source of one task (reparametrization or materialised table) + its hooks."""

from __future__ import annotations

from typing import Iterator, Optional

import torch
from torch import nn

from aotp.methods.aot.injector import BiasHooks


class AoTBias(nn.Module):
    """Per-token, per-layer biases P (|V| x L x d), either reparametrized or materialised.

    * reparametrized (training, and ``inference_mode: on_the_fly``): :meth:`lookup` computes the rows
      of the batch's *unique* token ids only (``torch.unique`` + inverse-index gather), never the vocabulary;
    * materialised: :meth:`lookup` is one gather ``table[input_ids]`` from a (memory-mapped) table.
    """

    def __init__(self, reparam: Optional[nn.Module], vocab_size: int, num_layers: int, hidden_size: int,
                 table: Optional[torch.Tensor] = None):
        super().__init__()
        if (reparam is None) == (table is None):
            raise ValueError("AoTBias needs exactly one of a reparametrization or a table")
        self.vocab_size, self.num_layers, self.hidden_size = vocab_size, num_layers, hidden_size
        self.reparam = reparam
        self.register_buffer("table", None, persistent=False)
        if table is not None:
            self.set_table(table)
        self.hooks = BiasHooks(self.lookup)
        self.last_rows_computed = 0  # how many rows the last reparametrized lookup computed

    @property
    def materialized(self) -> bool:
        return self.table is not None

    def attach(self, backbone: nn.Module) -> "AoTBias":
        self.hooks.attach(backbone)
        if self.hooks.num_layers != self.num_layers:
            self.hooks.detach()
            raise ValueError(f"AoT biases have {self.num_layers} layers but the backbone has {self.hooks.num_layers}")
        return self

    def lookup(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Biases for every position and layer: (*input_ids.shape, L, d)."""
        if self.table is not None:
            return self.table[input_ids]
        flat = input_ids.reshape(-1)
        unique, inverse = torch.unique(flat, sorted=True, return_inverse=True)
        if unique.numel() and (int(unique[0]) < 0 or int(unique[-1]) >= self.vocab_size):
            raise IndexError(f"token id out of range [0, {self.vocab_size}): min {int(unique[0])}, max {int(unique[-1])}")
        rows = self.reparam.rows(unique)  # (U, L, d): only the batch's unique tokens
        self.last_rows_computed = unique.numel()
        return rows[inverse].view(*input_ids.shape, self.num_layers, self.hidden_size)

    @torch.no_grad()
    def table_chunks(self, chunk_size: int) -> Iterator[torch.Tensor]:
        """The full table from the reparametrization, ``chunk_size`` token ids at a time (eval mode)."""
        if self.reparam is None:
            raise RuntimeError("already materialised: the reparametrization was dropped")
        if chunk_size < 1:
            raise ValueError(f"AoT option `method.options.chunk_size` must be positive, got {chunk_size}")
        was_training = self.reparam.training
        self.reparam.eval()
        device = next(self.reparam.parameters()).device
        try:
            for start in range(0, self.vocab_size, chunk_size):
                ids = torch.arange(start, min(start + chunk_size, self.vocab_size), device=device)
                yield self.reparam.rows(ids).float()
        finally:
            self.reparam.train(was_training)

    def set_table(self, table: torch.Tensor) -> None:
        """Switch to the materialised table and drop the reparametrization."""
        expected = (self.vocab_size, self.num_layers, self.hidden_size)
        if tuple(table.shape) != expected:
            raise ValueError(f"AoT table has shape {tuple(table.shape)}, expected {expected} (|V|, L, d)")
        self.reparam = None
        self.table = table
