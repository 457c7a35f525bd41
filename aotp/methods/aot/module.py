"""``model.aot``: the bias source of one task (reparametrization or materialised table) + its hooks."""

from __future__ import annotations

from typing import Iterator, Optional, Union

import torch
from torch import nn

from aotp.methods.aot.injector import BiasHooks, LayerBiases, RowBiases, TableBiases


class AoTBias(nn.Module):
    """Per-token, per-layer biases P (|V| x L x d), either reparametrized or materialised.

    * reparametrized (training, and ``inference_mode: on_the_fly``): only rows the batch needs are
      computed (the reparametrization, all L layers at once), never the vocabulary:

      - on the CPU, and at inference (no autograd) on any device: the rows of the batch's *unique* token
        ids (``torch.unique``, then the rows expanded by the inverse index), with an IndexError for an id
        outside [0, |V|);
      - training on any other device (``rows_per_position``): one row per position, N*T rows, no
        ``torch.unique``. ``torch.unique`` has a data-dependent output size, so on CUDA it waits for
        the device (a host-device sync per training forward, plus the range check's reads, and a
        graph break under ``torch.compile``); the per-position rows have static shapes and the range
        check is ``torch._assert_async`` (a device-side assert: nothing is read back). The values
        are the same (the rows of the same ids; tests/unit/test_host_syncs.py: forward and gradients
        to 1e-6, FC and Kronecker). What it costs, at RoBERTa-large shape (e = d = 1,024, L = 24,
        batch 32 x 128 = 4,096 positions), against the frozen backbone's step (2 FLOP per
        non-embedding parameter and token forward, 2 more for the input gradients backward:
        4 x 303M x 4,096 = 5.0 TFLOP): FC at the default rank 128 computes ``e*r + r*L*d`` = 3.28M
        multiply-adds per row, forward + backward (about twice the forward) 3 x 2 x 3.28M x 4,096 =
        81 GFLOP = 1.6% of the step; Kronecker at rank 16, ``r^2*L*d`` = 6.29M per row: 155 GFLOP =
        3.1%. The unique rows cost U / 4,096 of that (U the batch's distinct ids), so what the static
        path adds is at most those 1.6% / 3.1%, against one sync per forward (the CPU's queue of
        launched work drained, the GPU idle until new work is queued) and a graph break. Memory is not
        higher: the dense (N, T, L, d) biases exist in both paths, and this one skips the (U, L, d)
        rows and their gather.
      - with dropout > 0 in the reparametrization while training, a device keeps the unique rows
        (and their sync), since the option's masks are one per unique token of the batch (no recipe
        sets it); ``rows_per_position`` True/False forces either path (tests emulate a device with it).
    * materialised: the table is the precomputed biases; a forward only gathers rows of it.

    :meth:`lookup` returns the dense (N, T, L, d) biases (one gather ``table[input_ids]``, the unique
    rows expanded by the inverse index, or the per-position rows). The hooks use :meth:`biases`, which
    is the same values but, at inference (no autograd), hands each layer its own gather
    (:class:`~aotp.methods.aot.injector.TableBiases` / ``RowBiases``) instead of allocating the
    (N, T, L, d) tensor; see :mod:`aotp.methods.aot.injector` for what is computed ahead of time.
    Inference keeps the unique rows on every device: an evaluation reads every batch's scores back
    anyway, and serving computes fewer rows.

    Not per step, so not changed: :meth:`materialized_rows`, :meth:`materialized_table` and
    :meth:`table_chunks` run once per run (the inference form and its check), and their reads
    (``torch.unique``, the range check, one ``searchsorted(...).tolist()`` per chunk) are paid once.
    """

    def __init__(self, reparam: Optional[nn.Module], vocab_size: int, num_layers: int, hidden_size: int,
                 table: Optional[torch.Tensor] = None):
        super().__init__()
        if (reparam is None) == (table is None):
            raise ValueError("AoTBias needs exactly one of a reparametrization or a table")
        self.vocab_size, self.num_layers, self.hidden_size = vocab_size, num_layers, hidden_size
        self.reparam = reparam
        self.register_buffer("table", None, persistent=False)
        # Set when the table holds only some tokens' rows (the run's check): token id -> row of the table.
        self.register_buffer("row_of", None, persistent=False)
        if table is not None:
            self.set_table(table)
        self.hooks = BiasHooks(self.biases)
        self.last_rows_computed = 0  # how many rows the last reparametrized lookup computed
        # Training rows per position (no torch.unique, no host read) instead of per unique id: None = by the
        # ids' device (CPU: unique; any other device: per position, unless dropout > 0); True/False force it.
        self.rows_per_position: Optional[bool] = None

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
            return self.table[self._table_rows(input_ids)]
        if self.computes_rows_per_position(input_ids):
            return self._position_rows(input_ids).view(*input_ids.shape, self.num_layers, self.hidden_size)
        rows, inverse = self._unique_rows(input_ids)
        return rows[inverse].view(*input_ids.shape, self.num_layers, self.hidden_size)

    def computes_rows_per_position(self, input_ids: torch.Tensor) -> bool:
        """Whether a training lookup of ``input_ids`` computes one row per position (class docstring):
        :attr:`rows_per_position` when set; else on any device but the CPU, unless the reparametrization
        trains with dropout (one mask per unique token needs the unique ids)."""
        if self.rows_per_position is not None:
            return bool(self.rows_per_position)
        if input_ids.device.type == "cpu":
            return False
        dropout = getattr(self.reparam, "dropout", None)
        return not (self.reparam.training and isinstance(dropout, nn.Dropout) and dropout.p > 0)

    def _position_rows(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The rows of every position, (N*T, L, d): static shapes and no read of the device. The range check
        is a device-side assert (on the CPU it raises RuntimeError at once; on CUDA it fails the next
        synchronising call): a negative id, or a Kronecker id in [|V|, a*b), would otherwise index a
        valid row of another token."""
        flat = input_ids.reshape(-1)
        if flat.numel():
            torch._assert_async(((flat >= 0) & (flat < self.vocab_size)).all(),
                                f"token id out of range [0, {self.vocab_size})")
        self.last_rows_computed = flat.numel()
        return self.reparam.rows(flat)

    def biases(self, input_ids: torch.Tensor) -> Union[torch.Tensor, LayerBiases]:
        """What the hooks add: :meth:`lookup`'s values; per-layer gathers when autograd is off."""
        if self.table is not None:
            if torch.is_grad_enabled() and self.table.requires_grad:
                return self.table[self._table_rows(input_ids)]
            return TableBiases(self.table, self._table_rows(input_ids))
        if torch.is_grad_enabled():
            return self.lookup(input_ids)  # training: one differentiable (N, T, L, d) tensor
        rows, inverse = self._unique_rows(input_ids)
        return RowBiases(rows, inverse, input_ids.shape)

    def _table_rows(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Rows of the table that hold ``input_ids``: the ids themselves, or through ``row_of`` for a
        table of some tokens only (an id without a row maps past the table's end: IndexError)."""
        return input_ids if self.row_of is None else self.row_of[input_ids]

    def _unique_rows(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows of the unique ids (U, L, d), index of each position's row (N*T,)). ``torch.unique`` and the
        range check's read (one ``tolist`` of the smallest and largest id) wait for a device: this is the
        CPU's path, and inference's (see the class docstring)."""
        flat = input_ids.reshape(-1)
        unique, inverse = torch.unique(flat, sorted=True, return_inverse=True)
        if unique.numel():
            low, high = unique[[0, -1]].tolist()
            if low < 0 or high >= self.vocab_size:
                raise IndexError(f"token id out of range [0, {self.vocab_size}): min {low}, max {high}")
        rows = self.reparam.rows(unique)  # (U, L, d): only the batch's unique tokens
        self.last_rows_computed = unique.numel()
        return rows, inverse

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

    @torch.no_grad()
    def materialized_table(self, chunk_size: int, dtype: torch.dtype = torch.float32,
                           device: Optional[torch.device] = None) -> torch.Tensor:
        """The full (|V|, L, d) table in ``dtype``, filled chunk by chunk into one preallocated tensor:
        peak memory is the table plus one fp32 chunk (never a list of chunks and their concatenation)."""
        device = device if device is not None else next(self.reparam.parameters()).device
        table = torch.empty((self.vocab_size, self.num_layers, self.hidden_size), dtype=dtype, device=device)
        start = 0
        for chunk in self.table_chunks(chunk_size):
            table[start:start + chunk.shape[0]] = chunk.to(device=device, dtype=dtype)
            start += chunk.shape[0]
        return table

    @torch.no_grad()
    def materialized_rows(self, token_ids: torch.Tensor, chunk_size: int,
                          dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows of the materialised table for ``token_ids`` only, and the map token id -> row.

        The rows come from the same chunks as :meth:`materialized_table` (``chunk_size`` consecutive
        ids; a chunk holding none of the ids is skipped), so each row equals that of the full table
        bit for bit. Peak memory: the U wanted rows plus one chunk, instead of all |V| rows
        (RoBERTa-large fp32: 50,265 x 24 x 1,024 x 4 B = 4.9 GB). Ids without a row map to U, past
        the end of the rows, so reading one raises IndexError instead of returning another token's row.
        """
        device = next(self.reparam.parameters()).device
        wanted = torch.unique(token_ids.reshape(-1).to(device))
        if wanted.numel() and (int(wanted[0]) < 0 or int(wanted[-1]) >= self.vocab_size):
            raise IndexError(f"token id out of range [0, {self.vocab_size}): min {int(wanted[0])}, max {int(wanted[-1])}")
        rows = torch.empty((wanted.numel(), self.num_layers, self.hidden_size), dtype=dtype, device=device)
        row_of = torch.full((self.vocab_size,), wanted.numel(), dtype=torch.long, device=device)
        row_of[wanted] = torch.arange(wanted.numel(), device=device)
        was_training = self.reparam.training
        self.reparam.eval()
        try:
            for start in range(0, self.vocab_size, chunk_size):
                stop = min(start + chunk_size, self.vocab_size)
                low, high = torch.searchsorted(wanted, torch.tensor([start, stop], device=device)).tolist()
                if low == high:
                    continue
                chunk = self.reparam.rows(torch.arange(start, stop, device=device)).float()
                rows[low:high] = chunk[wanted[low:high] - start].to(dtype)
        finally:
            self.reparam.train(was_training)
        return rows, row_of

    def set_table(self, table: torch.Tensor, row_of: Optional[torch.Tensor] = None) -> None:
        """Switch to the materialised table and drop the reparametrization. With ``row_of`` (token id
        -> row) the table holds only the rows of some tokens (:meth:`materialized_rows`)."""
        expected = (self.vocab_size, self.num_layers, self.hidden_size)
        if row_of is None and tuple(table.shape) != expected:
            raise ValueError(f"AoT table has shape {tuple(table.shape)}, expected {expected} (|V|, L, d)")
        if row_of is not None and (tuple(table.shape[1:]) != expected[1:] or tuple(row_of.shape) != (self.vocab_size,)):
            raise ValueError(f"AoT rows have shape {tuple(table.shape)} with a map of {tuple(row_of.shape)}; expected "
                             f"(U, {expected[1]}, {expected[2]}) and ({self.vocab_size},)")
        self.reparam = None
        self.table = table
        self.row_of = row_of
