"""Packed sweeps: the runs of a sweep that can share one frozen backbone train K at a time in one process.

    make reproduce EXPERIMENT=paper_glue_roberta_base PACK=4 ARGS="task=glue/rte"
    make reproduce EXPERIMENT=paper_glue_roberta_base PACK=4 LAUNCHER=local_gpus     # one job per GPU at a time
    python -m aotp.sweep_pack pack=4 experiment=paper_glue_roberta_base task=glue/rte

The sweep is exactly the one ``python -m aotp.run -m <same overrides>`` runs: the experiment's
``hydra.sweeper.params``, narrowed or widened by sweep overrides on the command line, in the Hydra
basic sweeper's order (:func:`aotp.estimate.sweep_override_lists`). Each run is composed from the very
overrides its Hydra job gets (the plain ones + its sweep values), so its config, run id, run folder and
record are those of the run launched alone. What changes is only how the runs are executed:

1. **Packable runs** are those whose method keeps the backbone frozen and can be routed per example
   inside one forward (:func:`aotp.trainer.packed.packable_method_names`: AoT FC / Kronecker), that do
   not warm-start from another run (``method.init_from``) and use ``data.pair_encoding=cross`` and fp32 or
   bf16 (:func:`aotp.trainer.packed.unpackable_reason`).
2. Packable runs whose composed configs are equal but for ``seed``, ``method.lr`` and the ``experiment``
   group (sweep bookkeeping such as ``experiment.lr_index``; :func:`aotp.trainer.packed.pack_key`) form
   a group: same task, model, method options, schedule, data. The group's runs that have not succeeded
   yet are cut, in sweep order, into packs of up to K; each pack trains in one process on one backbone
   copy (:func:`aotp.trainer.packed.execute_pack`).
3. Every other run, and a pack of one, trains alone (:func:`aotp.run.execute`), as the sweep would.

Jobs (packs and runs alone) are ordered by the place of their first run in the sweep order. Finished runs
(``result.json`` says ``success``) are skipped, packed or not; every run, packed or not, is trained under its
``run.lock``; an interrupted pack resumes each run from its own checkpoint (the single-run checkpoint
format), so a re-run of the same command after a kill ends with the records an uninterrupted sweep writes.
As in a Hydra multirun, a run that fails is recorded ``failed`` and the sweep goes on (exit code 0).

Launchers. ``hydra/launcher=basic`` (the default): the jobs run one after another in this process, as
Hydra's basic launcher runs a sweep, so the order constraints of a sweep (an MNLI LoRA run before the RTE
run that starts from it; runs with ``method.init_from`` are never packed) hold. ``hydra/launcher=local_gpus``
(``make reproduce PACK=K LAUNCHER=local_gpus``): one job per GPU at a time, as that launcher runs single
runs: ``hydra.launcher.n_jobs`` worker processes (the Makefile sets the number of GPUs), each pinned to a GPU
of its own for its lifetime through the lock files of :mod:`aotp.gpu_pool` (same pool: ``hydra.callbacks.
pin_gpu.gpus``, else the CUDA_VISIBLE_DEVICES the sweep started with, else 0..n_jobs-1; same ``lock_dir``,
so a packed and a single-run sweep on one machine never share a GPU), taking the jobs in order, a free
worker the next one (:func:`run_on_local_gpus`). Each job runs exactly as it does in this process (same
skips, locks, checkpoints, records, failures recorded and the sweep going on), so the records equal the
sequential sweep's; as with ``local_gpus`` for single runs, a warm-started run may start before its
source has finished (it then refuses, naming the run to do first: run ``ARGS="task=glue/mnli"`` first,
or rerun), and a worker killed outright (OOM killer, segfault) stops the sweep (exit 1; rerun the same
command: finished runs are skipped). ``slurm`` and ``submitit_local`` are refused with PACK > 1 (one
process per job on other machines; run PACK=1 for them). The budget that ``make reproduce`` prints first
(:mod:`aotp.budget`) counts K checkpoints per job at once (K x the GPUs with ``local_gpus``); its memory
figures are those of a run alone: a pack holds one backbone but K runs' activations (a K times larger batch).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from aotp.cli import ConfigError, KeyValueParser, Option, guarded, one_line

log = logging.getLogger("aotp.sweep_pack")


@dataclass
class Job:
    """One unit of the packed sweep: a pack (several runs) or a run alone; ``runs`` are the override lists
    of its Hydra jobs (the plain overrides excluded)."""

    runs: list[list[str]]
    position: int  # the sweep index of its first run: jobs run in this order
    names: list[str] = field(default_factory=list)  # run folder names, for the plan

    @property
    def packed(self) -> bool:
        return len(self.runs) > 1


def packable(cfg) -> bool:
    """Can this run share a backbone with others in one forward (module docstring, point 1;
    :func:`aotp.trainer.packed.unpackable_reason`)?"""
    from aotp.trainer.packed import unpackable_reason

    return unpackable_reason(cfg) is None


def plan(overrides: Sequence[str], pack: int) -> tuple[list[str], list[Job], list[str]]:
    """(plain overrides, jobs to run in order, names of the runs already finished)."""
    from aotp.budget import expand_runs
    from aotp.estimate import sweep_override_lists
    from aotp.results.record import read_record, run_dir_name, run_id
    from aotp.run import to_container
    from aotp.trainer.packed import pack_key

    _, plain = sweep_override_lists(list(overrides))
    groups: dict[str, list[tuple[int, list[str], str]]] = {}
    jobs, done = [], []
    for position, (run, cfg) in enumerate(expand_runs(list(overrides))):
        config = to_container(cfg)
        name = run_dir_name(config, run_id(config))
        record = read_record(Path(cfg.paths.results) / name / "result.json")
        if record is not None and record.succeeded and not cfg.get("force", False):
            done.append(name)
            continue
        if pack > 1 and packable(cfg):
            groups.setdefault(pack_key(config), []).append((position, run, name))
        else:
            jobs.append(Job(runs=[run], position=position, names=[name]))
    for members in groups.values():
        for start in range(0, len(members), pack):
            chunk = members[start:start + pack]
            jobs.append(Job(runs=[run for _, run, _ in chunk], position=chunk[0][0], names=[n for _, _, n in chunk]))
    return plain, sorted(jobs, key=lambda job: job.position), done


def run_job(job: Job, plain: list[str]) -> list[dict[str, Any]]:
    """Train one job; a failure is printed (its record says ``failed``) and the sweep goes on."""
    from aotp.results.lock import RunLocked
    from aotp.run import compose, execute
    from aotp.trainer.packed import execute_pack

    try:
        if job.packed:
            return execute_pack([compose([*plain, *run]) for run in job.runs])
        return [execute(compose([*plain, *job.runs[0]]), overrides=[*plain, *job.runs[0]])]
    except RunLocked as error:  # another process trains this run: nothing recorded, nothing trained twice
        print(f"Error: {one_line(str(error))}", file=sys.stderr, flush=True)
    except Exception as error:  # noqa: BLE001 - as a Hydra multirun: the run (or pack) is recorded failed, the sweep goes on
        what = f"pack of {len(job.runs)}" if job.packed else "run"
        print(f"{what.capitalize()} failed: {type(error).__name__}: {one_line(str(error))}; the sweep goes on",
              file=sys.stderr, flush=True)
    finally:
        gc.collect()  # the pack's backbone and data go before the next job's are built
        _empty_device_cache()
    return []


def local_gpu_pool(plain: Sequence[str]) -> tuple[list[str], str, float, int]:
    """(GPU ids, lock folder, wait seconds, workers) of ``hydra/launcher=local_gpus`` from the sweep's plain
    overrides, resolved as its ``pin_gpu`` callback resolves them for single runs (configs/hydra/launcher/
    local_gpus.yaml, :func:`aotp.gpu_pool.gpu_pool`): ``hydra.callbacks.pin_gpu.gpus`` > the parent's
    CUDA_VISIBLE_DEVICES > 0..n_jobs-1; workers = ``hydra.launcher.n_jobs``."""
    from hydra.utils import instantiate

    from aotp.gpu_pool import gpu_pool
    from aotp.run import compose

    cfg = compose(list(plain), return_hydra_config=True)
    pin = instantiate(cfg.hydra.callbacks.pin_gpu)
    try:
        pool = gpu_pool(pin.gpus, pin.num_gpus)
    except ValueError as error:
        raise ConfigError(f"hydra/launcher=local_gpus: {error}") from None
    return pool, pin.lock_dir, pin.wait_seconds, int(cfg.hydra.launcher.n_jobs)


def _job_in_worker(runner, index: int, total: int, job: Job, plain: list[str]) -> int:
    """One job in a :func:`aotp.gpu_pool.pinned_executor` worker: ``runner`` is :func:`run_job` (passed, so the
    worker runs the function the sweep was given)."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s",
                        stream=sys.stdout)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    print(f"[{index}/{total}] {'pack: ' if job.packed else ''}{', '.join(job.names)} "
          f"(GPU {os.environ.get('CUDA_VISIBLE_DEVICES')}, worker pid {os.getpid()})", flush=True)
    runner(job, plain)
    return index


def run_on_local_gpus(jobs: Sequence[Job], plain: list[str]) -> int:
    """Run the jobs one per GPU at a time (module docstring, "Launchers"); 0, or 1 when a worker died."""
    from concurrent.futures import as_completed
    from concurrent.futures.process import BrokenProcessPool

    from aotp.gpu_pool import pinned_executor

    pool, lock_dir, wait_seconds, workers = local_gpu_pool(plain)
    if not jobs:
        return 0
    workers = max(1, min(workers, len(jobs)))
    if workers > len(pool):
        log.warning("hydra.launcher.n_jobs=%d workers but only %d GPUs in the pool %s: %d workers will wait",
                    workers, len(pool), pool, workers - len(pool))
    print(f"local_gpus: {workers} worker(s), one job each at a time, GPU pool {pool}, locks in {lock_dir}", flush=True)
    lost = []
    with pinned_executor(pool, lock_dir, wait_seconds, workers) as executor:
        futures = {executor.submit(_job_in_worker, run_job, index, len(jobs), job, list(plain)): job
                   for index, job in enumerate(jobs, 1)}
        for future in as_completed(futures):
            try:
                future.result()
            except BrokenProcessPool:  # a worker died outright (or found no free GPU): its job left no record
                lost.append(futures[future])
    if lost:
        names = [name for job in lost for name in job.names]
        print(f"Error: a worker process died (killed, out of host memory, or no free GPU); {len(names)} run(s) not "
              f"done: {', '.join(names)}; rerun the same command (finished runs are skipped)", file=sys.stderr, flush=True)
        return 1
    return 0


def _empty_device_cache() -> None:
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@guarded
def main(argv: Optional[Sequence[str]] = None) -> int:
    from aotp.config_checks import check_group_choices

    parser = KeyValueParser("python -m aotp.sweep_pack", __doc__.split("\n\n")[0], [
        Option("pack", "runs per pack (K >= 1; 1 = every run alone)", None, int, required=True, minimum=1)],
        examples=("python -m aotp.sweep_pack pack=4 experiment=paper_glue_roberta_base task=glue/rte",),
        passthrough="experiment=<name> [Hydra overrides key=value ...]")
    argv = sys.argv[1:] if argv is None else list(argv)
    values, overrides = parser.parse([a for a in argv if a not in ("-m", "--multirun")])  # the sweep is implied
    pack = values["pack"]
    launcher = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "hydra/launcher"), "basic")
    if launcher not in ("basic", "local_gpus"):
        raise ConfigError(f"hydra/launcher={launcher}: a packed sweep runs its jobs in this process (LAUNCHER=basic) "
                          f"or one per local GPU (LAUNCHER=local_gpus); run PACK=1 for the {launcher} launcher")
    check_group_choices(overrides)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s",
                        stream=sys.stdout)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    plain, jobs, done = plan(overrides, pack)
    packs = [job for job in jobs if job.packed]
    print(f"Packed sweep (K={pack}): {sum(len(j.runs) for j in jobs) + len(done)} runs: {len(done)} already "
          f"succeeded, {sum(len(j.runs) for j in packs)} in {len(packs)} pack(s) "
          f"(sizes {[len(j.runs) for j in packs]}), {len(jobs) - len(packs)} alone", flush=True)
    for name in done:
        print(f"Skipping {name}: already succeeded", flush=True)
    if launcher == "local_gpus":
        return run_on_local_gpus(jobs, plain)
    for index, job in enumerate(jobs, 1):
        print(f"[{index}/{len(jobs)}] {'pack: ' if job.packed else ''}{', '.join(job.names)}", flush=True)
        run_job(job, plain)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
