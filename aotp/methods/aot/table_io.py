"""Streaming safetensors writer and zero-copy memory-mapped reader for AoT bias tables.

The table is |V| x L x d, which for a large vocabulary and backbone does not fit twice in memory
(RoBERTa-large in fp32: 50265 x 24 x 1024 x 4 B = 4.9 GB). So it is never held whole in RAM:

* :class:`StreamingSafetensorsWriter` writes the safetensors header first (the shape and dtype are
  known up front) and then appends the table chunk by chunk; peak memory is one chunk.
* :func:`load_tensor_mmap` maps the file with ``mmap.ACCESS_COPY`` (a private copy-on-write map, so
  the tensor is writable for torch but the file is never modified) and wraps the tensor's byte range
  with ``torch.frombuffer``: no copy, pages are read from disk on first touch and shared with the
  page cache. (safetensors' own ``safe_open(...).get_tensor`` copies the tensor into fresh memory.)

The files are plain safetensors (8-byte little-endian header length, JSON header, raw little-endian
data) and load with ``safetensors.safe_open`` too.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
import sys
from pathlib import Path
from typing import Iterable

import torch

TABLE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_ST_DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}
_TORCH_DTYPE = {v: k for k, v in _ST_DTYPE.items()}


def resolve_table_dtype(name: str) -> torch.dtype:
    try:
        return TABLE_DTYPES[name]
    except KeyError:
        raise ValueError(f"Unknown table_dtype {name!r} (config option `method.options.table_dtype`); "
                         f"valid choices: {', '.join(TABLE_DTYPES)}") from None


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    tensor = tensor.detach().to("cpu").contiguous()
    if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
        raise RuntimeError("safetensors data is little-endian; big-endian hosts are not supported")
    return memoryview(tensor.view(torch.uint8).numpy())


class StreamingSafetensorsWriter:
    """Write one tensor ``name`` of ``shape``/``dtype`` to ``path`` in row chunks.

    Use as a context manager; call :meth:`write` with consecutive chunks along dimension 0 whose
    rows add up to ``shape[0]``. The file is written to ``path + ".tmp"`` and renamed on success.
    """

    def __init__(self, path: str | os.PathLike, name: str, shape: tuple[int, ...], dtype: torch.dtype,
                 metadata: dict[str, str] | None = None):
        self.path = Path(path)
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self.row_numel = math.prod(self.shape[1:])
        self.nbytes = math.prod(self.shape) * torch.empty((), dtype=dtype).element_size()
        header = {name: {"dtype": _ST_DTYPE[dtype], "shape": list(self.shape), "data_offsets": [0, self.nbytes]}}
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # keep the data 8-byte aligned, as safetensors does
        self._header = struct.pack("<Q", len(encoded)) + encoded
        self._rows_written = 0
        self._file = None

    def __enter__(self) -> "StreamingSafetensorsWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._file = open(self._tmp, "wb")
        self._file.write(self._header)
        return self

    def write(self, chunk: torch.Tensor) -> None:
        if tuple(chunk.shape[1:]) != self.shape[1:]:
            raise ValueError(f"chunk shape {tuple(chunk.shape)} does not match table rows {self.shape[1:]}")
        if self._rows_written + chunk.shape[0] > self.shape[0]:
            raise ValueError("more rows written than the declared table shape")
        self._file.write(_tensor_bytes(chunk.to(self.dtype)))
        self._rows_written += chunk.shape[0]

    def __exit__(self, exc_type, exc, tb) -> None:
        self._file.close()
        if exc_type is not None:
            self._tmp.unlink(missing_ok=True)
            return
        if self._rows_written != self.shape[0]:
            self._tmp.unlink(missing_ok=True)
            raise ValueError(f"table incomplete: {self._rows_written} of {self.shape[0]} rows written")
        os.replace(self._tmp, self.path)


def write_table(path: str | os.PathLike, name: str, chunks: Iterable[torch.Tensor], shape: tuple[int, ...],
                dtype: torch.dtype, metadata: dict[str, str] | None = None) -> int:
    """Stream ``chunks`` into a safetensors file; returns the data size in bytes."""
    with StreamingSafetensorsWriter(path, name, shape, dtype, metadata) as writer:
        for chunk in chunks:
            writer.write(chunk)
    return writer.nbytes


def read_header(path: str | os.PathLike) -> tuple[dict, int]:
    """The safetensors JSON header and the byte offset where the data starts."""
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (size,) = struct.unpack("<Q", prefix)
        if size > 100_000_000:
            raise ValueError(f"{path}: not a safetensors file (header size {size})")
        header = json.loads(handle.read(size))
    return header, 8 + size


def load_tensor_mmap(path: str | os.PathLike, name: str) -> tuple[torch.Tensor, dict[str, str]]:
    """Tensor ``name`` from a safetensors file, memory-mapped (zero-copy), and the file's metadata."""
    header, data_start = read_header(path)
    if name not in header:
        raise KeyError(f"{path}: no tensor {name!r}; it holds {sorted(k for k in header if k != '__metadata__')}")
    entry = header[name]
    dtype = _TORCH_DTYPE[entry["dtype"]]
    begin, end = entry["data_offsets"]
    shape = tuple(entry["shape"])
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
    numel = math.prod(shape)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if end - begin != numel * itemsize:
        raise ValueError(f"{path}: tensor {name!r} byte range does not match its shape {shape}")
    if numel == 0:
        return torch.empty(shape, dtype=dtype), header.get("__metadata__", {})
    tensor = torch.frombuffer(mapped, dtype=dtype, count=numel, offset=data_start + begin).view(shape)
    return tensor, header.get("__metadata__", {})
