"""One GPU per sweep worker: the Hydra callback behind ``hydra/launcher=local_gpus``.

    make reproduce EXPERIMENT=paper_glue_roberta_base LAUNCHER=local_gpus          # all visible GPUs
    python -m aotp.run -m experiment=paper_glue_roberta_base hydra/launcher=local_gpus hydra.launcher.n_jobs=4

The ``local_gpus`` launcher is Hydra's joblib launcher with ``n_jobs`` = number of GPUs: a pool of
``n_jobs`` long-lived worker processes that take jobs from the sweep one at a time. This callback
runs in the worker at the start of every job (``on_job_start``, before the run touches CUDA) and pins
the *worker process* to one GPU for its lifetime:

- the pool of GPU ids is ``gpus`` if given, else the parent's ``CUDA_VISIBLE_DEVICES``, else
  ``0..num_gpus-1``;
- a worker claims the first id whose lock file ``<lock_dir>/gpu<id>.lock`` it can ``flock``
  exclusively, keeps the lock open for as long as it lives (the OS drops it when the process exits,
  also on a crash), and sets ``CUDA_VISIBLE_DEVICES=<id>``, so the run sees exactly one device, ``cuda:0``;
- later jobs in the same worker reuse its GPU (CUDA cannot be re-pinned once initialised anyway).

Pinning by lock rather than by job number is what makes it safe: joblib hands a job to whichever
worker is free, so "job k -> GPU k mod n" would put two running jobs on one GPU. Because the lock
directory is shared (default ``/tmp/aotp-gpu-locks-$USER``), two sweeps started on the same machine
also never share a GPU: a worker that finds every GPU taken waits (``wait_seconds``) for one to free up.

Packed sweeps (``make reproduce PACK=K LAUNCHER=local_gpus``, :mod:`aotp.sweep_pack`) do not go through
Hydra's launcher: :func:`pinned_executor` gives them the same pool, ``n_jobs`` fresh processes each pinned
by :func:`claim_gpu` (same lock files, so packed and single-run sweeps on one machine never share a GPU
either), taking one job (a pack or a run alone) at a time.
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Optional, Sequence

log = logging.getLogger("aotp.gpu_pool")

# The claim of this process: (gpu id, open lock file). Module-level, because Hydra unpickles a fresh
# callback object for every job while the worker process (and its CUDA context) lives on.
_CLAIM: Optional[tuple[str, Any]] = None


class NoFreeGpu(RuntimeError):
    """Every GPU of the pool stayed locked by other workers for ``wait_seconds``."""


def gpu_pool(gpus: Optional[Sequence[Any]] = None, num_gpus: Optional[int] = None,
             environ: Optional[dict] = None) -> list[str]:
    """The GPU ids workers may claim: explicit list > parent's CUDA_VISIBLE_DEVICES > range(num_gpus)."""
    environ = os.environ if environ is None else environ
    if gpus:
        pool = [str(g).strip() for g in gpus]
    elif environ.get("CUDA_VISIBLE_DEVICES", "").strip():
        pool = [g.strip() for g in environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    elif num_gpus and int(num_gpus) > 0:
        pool = [str(i) for i in range(int(num_gpus))]
    else:
        raise ValueError("no GPU pool: set hydra.callbacks.pin_gpu.gpus=[0,1,...], CUDA_VISIBLE_DEVICES, "
                         "or hydra.launcher.n_jobs (= the number of GPUs)")
    if len(set(pool)) != len(pool):
        raise ValueError(f"GPU pool {pool} lists a GPU twice")
    return pool


def claim_gpu(pool: Sequence[str], lock_dir: os.PathLike | str, wait_seconds: float = 0.0,
              poll_seconds: float = 2.0) -> str:
    """Pin this process to one free GPU of ``pool`` (idempotent) and return its id."""
    global _CLAIM
    if _CLAIM is not None:
        return _CLAIM[0]
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_seconds
    announced = False
    while True:
        for gpu in pool:
            handle = open(lock_dir / f"gpu{gpu}.lock", "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            _CLAIM = (gpu, handle)
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
            return gpu
        if time.monotonic() >= deadline:
            raise NoFreeGpu(f"all GPUs of the pool {list(pool)} are locked by other workers (lock files in "
                            f"{lock_dir}); lower hydra.launcher.n_jobs or wait for the other sweep")
        if not announced:
            log.warning("every GPU of %s is busy (locks in %s); waiting up to %.0f s", list(pool), lock_dir, wait_seconds)
            announced = True
        time.sleep(poll_seconds)


def _pin_worker(pool: Sequence[str], lock_dir: str, wait_seconds: float) -> None:
    """A :func:`pinned_executor` worker's start: claim its GPU before any job can touch CUDA."""
    gpu = claim_gpu(pool, lock_dir, wait_seconds)
    print(f"worker pid {os.getpid()} pinned to GPU {gpu} (CUDA_VISIBLE_DEVICES={gpu})", flush=True)


def pinned_executor(pool: Sequence[str], lock_dir: os.PathLike | str, wait_seconds: float, workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes, each pinned for its lifetime to its own GPU of ``pool`` (:func:`claim_gpu`,
    the lock files of ``local_gpus``) when it starts, before it takes a job: what ``local_gpus`` does for Hydra's
    joblib workers. The processes are spawned, not forked: each starts with no CUDA context and sets
    ``CUDA_VISIBLE_DEVICES`` before torch can read it. Jobs are taken in submission order, one per free worker;
    a worker never queues a second job while it runs one. A worker that finds every GPU locked waits up to
    ``wait_seconds`` (then :class:`NoFreeGpu` breaks the pool)."""
    return ProcessPoolExecutor(max_workers=int(workers), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_pin_worker, initargs=(list(pool), str(lock_dir), float(wait_seconds)))


def release_gpu() -> None:
    """Drop this process's claim (for tests; a worker normally keeps its GPU until it exits)."""
    global _CLAIM
    if _CLAIM is not None:
        _CLAIM[1].close()
        _CLAIM = None


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency; keep the module importable regardless
    Callback = object  # type: ignore[misc,assignment]


class PinGpuCallback(Callback):
    """Hydra callback: pin the job's worker process to one GPU before the run starts (see module doc)."""

    def __init__(self, gpus: Optional[Sequence[Any]] = None, num_gpus: Optional[int] = None,
                 lock_dir: str = "/tmp/aotp-gpu-locks", wait_seconds: float = 86400.0) -> None:
        self.gpus = list(gpus) if gpus else None
        self.num_gpus = num_gpus
        self.lock_dir = lock_dir
        self.wait_seconds = float(wait_seconds)

    def on_multirun_start(self, config, **kwargs) -> None:
        pool = gpu_pool(self.gpus, self.num_gpus)
        workers = config.hydra.launcher.get("n_jobs")
        if workers is not None and int(workers) > len(pool):
            log.warning("hydra.launcher.n_jobs=%s workers but only %d GPUs in the pool %s: %d workers will wait",
                        workers, len(pool), pool, int(workers) - len(pool))
        log.info("local_gpus: %s workers, GPU pool %s, locks in %s", workers, pool, self.lock_dir)

    def on_job_start(self, config, **kwargs) -> None:
        already = _CLAIM is not None
        pool = [] if already else gpu_pool(self.gpus, self.num_gpus)
        gpu = claim_gpu(pool, self.lock_dir, self.wait_seconds)
        job = config.hydra.job.get("num")
        message = f"job {job}: worker pid {os.getpid()} {'keeps' if already else 'pinned to'} GPU {gpu} (CUDA_VISIBLE_DEVICES={gpu})"
        log.info(message)  # Hydra's job logging: the console (configs/hydra/job_logging/aotp.yaml)
