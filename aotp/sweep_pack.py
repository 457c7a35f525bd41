"""Packed sweeps: the runs of a sweep that can share one frozen backbone train K at a time in one process.

    make reproduce EXPERIMENT=paper_glue_roberta_base PACK=4 ARGS="task=glue/rte"
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

Jobs (packs and runs alone) run one after another in this process, each at the place of its first run
in the sweep order, so the order constraints of a sweep (an MNLI LoRA run before the RTE run that starts
from it) hold: runs with ``method.init_from`` are never packed. Finished runs (``result.json`` says
``success``) are skipped, packed or not; every run, packed or not, is trained under its ``run.lock``;
an interrupted pack resumes each run from its own checkpoint (the single-run checkpoint format), so a
re-run of the same command after a kill ends with the records an uninterrupted sweep writes. As in a
Hydra multirun, a run that fails is recorded ``failed`` and the sweep goes on (exit code 0).

The execution is sequential in one process, as Hydra's basic launcher; the parallel launchers
(``local_gpus``, ``slurm``, ``submitit_local``) are refused with PACK > 1. The budget that ``make
reproduce`` prints first (:mod:`aotp.budget`) counts K checkpoints at once; its memory figures are
those of a run alone: a pack holds one backbone but K runs' activations (a K times larger batch).
"""

from __future__ import annotations

import gc
import logging
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
    if launcher != "basic":
        raise ConfigError(f"hydra/launcher={launcher}: a packed sweep runs its packs one after another in one "
                          f"process (LAUNCHER=basic); run PACK=1 for the {launcher} launcher")
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
    for index, job in enumerate(jobs, 1):
        print(f"[{index}/{len(jobs)}] {'pack: ' if job.packed else ''}{', '.join(job.names)}", flush=True)
        run_job(job, plain)
    return 0


if __name__ == "__main__":
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
