"""What a run needs to know about the GPU it asked for: is one usable, why not, and under which numerics.

* :func:`gpu_refusal` (issue 26): a paper experiment sets ``trainer.require_gpu=true``; when torch cannot use
  CUDA the run is refused before anything loads, in one line naming torch's CUDA build, the driver
  ``nvidia-smi`` reports and the fix. Without it a box whose torch build does not match its driver would train
  a whole sweep on the CPU (``trainer.device=auto`` falls back to the CPU).
* :func:`warn_cpu_fallback`: ``trainer.device=auto`` on the CPU although ``nvidia-smi`` lists GPUs says so,
  loudly, once per process.
* :func:`exact_precision`: the inference-form check (``aotp.run.finish_run``) scores both forms with
  TF32 off. Under TF32 (on by default for CUDA training, ``trainer.tf32``) a matmul rounds its inputs to a
  10-bit mantissa, so ``xW + s(xA)B`` (LoRA unmerged) and ``x(W + sBA)`` (merged) round differently: at
  RoBERTa-large shape the logits of the two forms differ by ~3e-3 (1e-2 at logits of 10) under TF32 against
  ~3e-6 in fp32, which fails the 1e-4 check although the merge is exact. Comparing like with like at full
  fp32 precision keeps the check able to catch a real merge bug (a wrong scaling factor moves logits by
  far more than 1e-4) on every device.
* :func:`reset_peak_memory` / :func:`peak_memory`: the CUDA allocator's peaks for the run record.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Optional

import torch

log = logging.getLogger("aotp.accelerator")

EXACT_PRECISION = "fp32, tf32 off"


@dataclass(frozen=True)
class NvidiaSmi:
    """What ``nvidia-smi`` says of this machine: the GPUs it lists and the driver (None when it is absent or fails)."""

    gpus: tuple[str, ...] = ()
    driver: Optional[str] = None
    cuda: Optional[str] = None  # the newest CUDA version the driver supports ("CUDA Version" of its banner)
    error: Optional[str] = None  # why nothing was read: not installed, or its own message


@lru_cache(maxsize=1)
def nvidia_smi() -> NvidiaSmi:
    """Query ``nvidia-smi`` once per process (a few tens of milliseconds; never raises)."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return NvidiaSmi(error="nvidia-smi not found (no NVIDIA driver on this machine)")
    try:
        listing = subprocess.run([executable, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
        banner = subprocess.run([executable], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as error:
        return NvidiaSmi(error=f"nvidia-smi failed: {error}")
    if listing.returncode != 0:
        message = (listing.stderr or listing.stdout).strip().splitlines()
        return NvidiaSmi(error=f"nvidia-smi failed: {message[0] if message else f'exit {listing.returncode}'}")
    rows = [line.rsplit(",", 1) for line in listing.stdout.strip().splitlines() if line.strip()]
    gpus = tuple(row[0].strip() for row in rows)
    driver = rows[0][1].strip() if rows and len(rows[0]) == 2 else None
    cuda = None
    for token_line in banner.stdout.splitlines():
        if "CUDA Version" in token_line:
            cuda = token_line.split("CUDA Version:")[1].split()[0].strip("|").strip() or None
            break
    return NvidiaSmi(gpus=gpus, driver=driver, cuda=cuda)


def describe_torch_cuda() -> str:
    """torch's build as far as CUDA is concerned: ``torch 2.13.0+cpu (a CPU-only build)`` or its CUDA version."""
    build = torch.version.cuda
    return f"torch {torch.__version__} ({'a CPU-only build' if build is None else f'built for CUDA {build}'})"


def describe_driver(smi: NvidiaSmi) -> str:
    if smi.error:
        return smi.error
    count = f"{len(smi.gpus)} GPU(s): {', '.join(sorted(set(smi.gpus)))}"
    return f"nvidia-smi lists {count}, driver {smi.driver or '?'} (supports CUDA up to {smi.cuda or '?'})"


def cuda_fix(smi: NvidiaSmi) -> str:
    """What to do about an unusable CUDA, given the build and the driver."""
    if smi.error or not smi.gpus:
        return "run on a machine with an NVIDIA GPU and driver, or set trainer.require_gpu=false to train on the CPU"
    if torch.version.cuda is None:
        return ("install torch's CUDA build in the venv (pip install --force-reinstall torch==<aotp's pin> from PyPI "
                "on Linux x86_64, or the build matching the driver from PyTorch's own wheel index), then check "
                "python -c 'import torch; print(torch.cuda.is_available())'")
    return (f"install a torch build for CUDA <= {smi.cuda or 'the driver'}'s version, or update the driver; "
            f"CUDA_VISIBLE_DEVICES must not hide every GPU")


def gpu_refusal(device: str) -> Optional[str]:
    """Why a run that requires a GPU (``trainer.require_gpu=true``) cannot have one, in one line; None when
    ``device`` (``trainer.device``) resolves to a usable CUDA device."""
    if device != "auto" and not str(device).startswith("cuda"):
        return (f"trainer.require_gpu=true but trainer.device={device}: a paper experiment trains on a GPU "
                f"(trainer.device=auto or cuda[:N]; trainer.require_gpu=false to run it on {device} anyway)")
    if torch.cuda.is_available():
        return None
    smi = nvidia_smi()
    return (f"trainer.require_gpu=true but torch cannot use CUDA: {describe_torch_cuda()}; {describe_driver(smi)}. "
            f"Fix: {cuda_fix(smi)}")


_warned_fallback = False


def warn_cpu_fallback() -> None:
    """``trainer.device=auto`` resolved to the CPU: say so loudly, once per process, when the machine has
    NVIDIA GPUs that torch cannot use (a silent CPU run of a GPU-sized sweep is the failure this prevents)."""
    global _warned_fallback
    if _warned_fallback:
        return
    smi = nvidia_smi()
    if not smi.gpus:
        return
    _warned_fallback = True
    message = (f"WARNING: trainer.device=auto is training on the CPU although {describe_driver(smi)}: "
               f"{describe_torch_cuda()} cannot use them. Fix: {cuda_fix(smi)}")
    log.warning(message)
    print(message, file=sys.stderr, flush=True)


# Only torch's per-backend flags are read and set (``allow_tf32``, the ones :func:`aotp.trainer.loop.setup_device`
# sets): torch >= 2.9 refuses to report ``get_float32_matmul_precision()`` once the legacy and the new
# (``fp32_precision``) APIs have been mixed, so this module never touches the global one.
def tf32_enabled() -> bool:
    """TF32 fp32 matmuls are allowed now (CUDA's flag; on a CPU it changes nothing, but it is the state
    the emulation in the tests reads)."""
    return bool(torch.backends.cuda.matmul.allow_tf32)


@contextmanager
def exact_precision() -> Iterator[str]:
    """fp32 matmuls and convolutions at full precision (TF32 off) inside the block, restored after;
    yields the settings' name for the record (``inference.check_precision``)."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield EXACT_PRECISION
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


def reset_peak_memory(device: torch.device) -> None:
    """Start a phase's peak-memory count (CUDA only; nothing elsewhere)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> Optional[dict[str, int]]:
    """The CUDA allocator's peaks since the last :func:`reset_peak_memory`; None off CUDA."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return {"peak_allocated_bytes": int(torch.cuda.max_memory_allocated(device)),
            "peak_reserved_bytes": int(torch.cuda.max_memory_reserved(device))}
