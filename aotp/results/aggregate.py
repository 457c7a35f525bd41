"""Run records (``result.json``) -> the paper's comparison tables, plots and warnings.

    aotp-tables results=results/runs output=results/tables      (= make tables; or python -m aotp.results.aggregate)

Model selection (stated in every caption, :data:`PROTOCOL`): for each (backbone, method, task) the
learning rate with the best *mean* dev main metric over its successful seeds is selected (direction
from the metric registry's ``higher_is_better``); the cell reports that learning rate's mean ± sample
std over seeds, on the same dev set (GLUE/SuperGLUE test labels are hidden; there is no held-out split).

Nothing is averaged silently:

- the expected seeds of a table are the union of seeds seen in it (or ``seeds=``), the expected
  learning rates of a (backbone, method) the union over its tasks; a cell whose selected learning rate
  lacks seeds shows ``(k/n)``, one whose grid lacks runs at another learning rate gets ``*``; a cell with
  no successful run shows ``—``; every incomplete cell is spelled out in the notes (failed: the error);
- the macro average (unweighted mean over the table's tasks; spread = std over seeds of the per-seed
  macro) is only computed when every task cell of the row is complete, else ``— (c/T)``;
- records of an outdated task version (``task_version`` != the current ``configs/task`` spec) are left
  out and warned about; without a current spec, mixed versions keep only the newest and warn;
- runs from a dirty git tree are marked ``†`` and warned about; failed runs, missing seeds, run
  folders without a record and duplicate records are warned about.

Outputs (deterministic: fixed sort orders and float formats, no timestamps, PNG metadata fixed) under
``output``: ``<benchmark>_<backbone>.{md,tex,csv}``, ``summary.md`` (every table, notes and warnings),
``cells.csv`` (one tidy row per cell, numbers on the 0-1 scale), ``macro_<benchmark>.png`` and
``warnings.txt``. Where the runs saved their dev predictions, every cell is also tested against the task's
best constant prediction (``↑`` when the 95% paired-bootstrap interval of the gain excludes 0;
``baseline_gains.csv``) and each AoT cell against every other method's cell on the same task (the seed-mean
difference with its interval, in the table's Markdown and ``method_differences.csv``). ``references=``
(default: the shipped ``aotp/results/references.yaml``) puts published numbers (each with its source) beside
ours with the delta; ``wandb=true`` logs the tables as W&B tables.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from aotp.cli import KeyValueParser, Option, UsageError, guarded
from aotp.paths import config_root, references_file
from aotp.results.record import RecordError, RunRecord, read_record


PROTOCOL = ("Model selection: for each (backbone, method, task) the learning rate with the best mean dev main "
            "metric over seeds is selected; cells give that learning rate's dev main metric x100 as mean ± "
            "sample std over seeds (the dev set is also the reported set).")

# Canonical orders (anything else is appended in sorted order).
BENCHMARK_ORDER = ["glue", "superglue"]
TASK_ORDER = {
    "glue": ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"],
    "superglue": ["boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc"],
}
TASK_LABEL = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B", "mnli": "MNLI",
              "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI", "boolq": "BoolQ", "cb": "CB", "copa": "COPA",
              "multirc": "MultiRC", "record": "ReCoRD", "wic": "WiC", "wsc": "WSC"}
BENCHMARK_LABEL = {"glue": "GLUE", "superglue": "SuperGLUE"}
METHOD_ORDER = ["full_ft", "bitfit", "lora", "adapter_houlsby", "adapter_pfeiffer", "ptuning_v2", "aot_fc", "aot_kron"]
MODEL_ORDER = ["roberta_base", "roberta_large", "deberta_v3_base", "deberta_v3_large", "deberta_xlarge",
               "deberta_v2_xlarge"]

DASH = "—"
DIRTY_MARK = "†"
GRID_MARK = "*"
CLEARS_MARK = "↑"
BELOW_MARK = "↓"
# the paper's method: its cells are compared with every other method's (add_method_comparisons)
COMPARED_METHODS = ("aot_fc", "aot_kron")
BOOTSTRAP_DRAWS = 1000


def _ordered(values: Iterable[str], order: Sequence[str]) -> list[str]:
    values = set(values)
    return [v for v in order if v in values] + sorted(v for v in values if v not in order)


def format_lr(lr: float) -> str:
    """2e-05 -> '2e-5', 0.0003 -> '3e-4', 1.5e-05 -> '1.5e-5' (stable, short)."""
    text = f"{lr:.6g}"
    if "e" not in text:
        text = f"{lr:.2e}"
        mantissa, exponent = text.split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        text = f"{mantissa}e{exponent}"
    mantissa, exponent = text.split("e")
    return f"{mantissa}e{int(exponent)}"


def format_share(low: Optional[float], high: Optional[float]) -> str:
    if low is None:
        return DASH
    a, b = f"{100 * low:.3g}%", f"{100 * high:.3g}%"
    return a if a == b else f"{a}–{b}"


def _first_line(text: Optional[str], limit: int = 120) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else "unknown error"
    return line if len(line) <= limit else line[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Run:
    path: str
    status: str
    benchmark: str
    task: str  # name inside the benchmark, e.g. "rte"
    task_version: Any
    model: str
    method: str
    seed: int
    lr: float
    main: Optional[float]
    metrics: dict
    share: Optional[float]
    dirty: Optional[bool]
    error: Optional[str]
    run_id: str
    experiment: Optional[str]
    higher_is_better: bool
    subsets: Optional[str] = None  # "train <= N, dev <= M" when the run trained/evaluated on subsets

    @property
    def full_task(self) -> str:
        return f"{self.benchmark}/{self.task}"


def _direction(main_metric: Any) -> bool:
    names = [main_metric] if isinstance(main_metric, str) else list(main_metric or [])
    if not names:
        return True
    try:
        from aotp.metrics.base import main_metric_higher_is_better

        import aotp.metrics  # noqa: F401  (registers the metrics)

        return main_metric_higher_is_better(names)
    except Exception:  # noqa: BLE001 - an unknown metric name: assume the usual direction, warn elsewhere
        return True


def parse_record(record: RunRecord, path: str) -> Run:
    """The table's view of a typed record (read by :func:`aotp.results.record.read_record`)."""
    config = record.config
    if record.task is None or record.seed is None:
        raise RecordError(f"{path}: no task or seed (neither in the record nor in its config)")
    benchmark, _, task = record.task.partition("/")
    metrics = record.metrics or {}
    return Run(
        path=path, status=record.status, benchmark=benchmark, task=task, task_version=record.task_version,
        model=str(record.model), method=str(record.method), seed=int(record.seed), lr=float(config["method"]["lr"]),
        main=record.main, metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        share=float(record.params.share) if record.params is not None and record.params.share is not None else None,
        dirty=record.env.git.dirty, error=record.error, run_id=str(record.run_id), experiment=record.experiment,
        higher_is_better=_direction((config.get("task") or {}).get("main_metric")),
        subsets=subsets_of(config.get("data") or {}),
    )


def subsets_of(data: dict) -> Optional[str]:
    """How a run's data were cut (``data.max_train_samples``/``max_eval_samples``), or None for full sets."""
    train, dev = data.get("max_train_samples"), data.get("max_eval_samples")
    if not train and not dev:
        return None
    return f"train <= {train or 'all'}, dev <= {dev or 'all'} examples"


def load_runs(results_dir: Path, experiments: Optional[Sequence[str]] = None) -> tuple[list[Run], list[str]]:
    """Every ``result.json`` below ``results_dir`` (sorted), filtered by experiment name."""
    results_dir = Path(results_dir)
    warnings: list[str] = []
    runs: list[Run] = []
    if not results_dir.is_dir():
        return runs, [f"results directory {results_dir} does not exist"]
    for path in sorted(results_dir.rglob("result.json")):
        relative = str(path.relative_to(results_dir))
        try:
            record = read_record(path)
            if record is None:  # removed since the listing
                continue
            run = parse_record(record, relative)
        except (OSError, ValueError, KeyError, TypeError) as error:  # RecordError is a ValueError
            warnings.append(f"unreadable record {relative}: {type(error).__name__}: {error}")
            continue
        if experiments and run.experiment not in experiments:
            continue
        if run.status == "success" and run.main is None:
            warnings.append(f"record {relative} says success but has no metrics.main; ignored")
            continue
        runs.append(run)
    unfinished = sorted({str(p.parent.relative_to(results_dir)) for p in results_dir.rglob("checkpoint*")
                         if p.is_dir() and not (p.parent / "result.json").exists()})  # also checkpoint.tmp-<pid>
    if unfinished:
        warnings.append(f"{len(unfinished)} run folder(s) have a checkpoint but no record (running, or killed: "
                        f"rerun the sweep to resume them): {', '.join(unfinished[:5])}{' …' if len(unfinished) > 5 else ''}")
    return runs, warnings


def current_task_versions(config_dir: Path) -> dict[tuple[str, str], Any]:
    """(benchmark, task name) -> ``version`` of the task specs under ``<config_dir>/task``."""
    import yaml

    versions = {}
    for path in sorted((Path(config_dir) / "task").rglob("*.yaml")):
        try:
            spec = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            continue
        if isinstance(spec, dict) and "name" in spec and "benchmark" in spec:
            versions[(str(spec["benchmark"]), str(spec["name"]))] = spec.get("version")
    return versions


def filter_versions(runs: list[Run], versions: dict[tuple[str, str], Any]) -> tuple[list[Run], list[str]]:
    """Keep the current task version (or, without a current spec, the newest one seen); warn about the rest."""
    warnings, kept = [], []
    by_task: dict[tuple[str, str], set] = {}
    for run in runs:
        by_task.setdefault((run.benchmark, run.task), set()).add(run.task_version)
    for (benchmark, task), seen in sorted(by_task.items()):
        current = versions.get((benchmark, task))
        if (benchmark, task) not in versions and len(seen) > 1:
            newest = max(seen, key=lambda v: (str(type(v)), v))
            warnings.append(f"{benchmark}/{task}: records mix task versions {sorted(map(str, seen))} and there is no "
                            f"current spec in configs/task; only version {newest} is used")
            by_task[(benchmark, task)] = {newest}
        elif (benchmark, task) in versions and seen - {current}:
            counts = {}
            for run in runs:
                if (run.benchmark, run.task) == (benchmark, task) and run.task_version != current:
                    counts[str(run.task_version)] = counts.get(str(run.task_version), 0) + 1
            detail = ", ".join(f"{n} of version {v}" for v, n in sorted(counts.items()))
            warnings.append(f"{benchmark}/{task}: {detail} left out: outdated task version (current spec: "
                            f"version {current}); rerun them")
            by_task[(benchmark, task)] = {current}
    for run in runs:
        if run.task_version in by_task[(run.benchmark, run.task)]:
            kept.append(run)
    return kept, warnings


def deduplicate(runs: list[Run]) -> tuple[list[Run], list[str]]:
    """One run per (benchmark, task, model, method, lr, seed): success first, then the smallest run id."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault((run.benchmark, run.task, run.model, run.method, run.lr, run.seed), []).append(run)
    kept, conflicts = [], []
    for key, group in sorted(groups.items(), key=lambda item: tuple(map(str, item[0]))):
        group = sorted(group, key=lambda r: (r.status != "success", r.run_id))
        kept.append(group[0])
        if sum(r.status == "success" for r in group) > 1:
            conflicts.append(f"{key[0]}/{key[1]} {key[2]} {key[3]} lr={format_lr(key[4])} seed={key[5]}: "
                             f"{', '.join(r.run_id for r in group)}")
    warnings = []
    if conflicts:
        warnings.append(f"{len(conflicts)} (task, backbone, method, lr, seed) combination(s) have several successful "
                        f"records with different run ids (configs differ beyond lr and seed, e.g. another experiment); "
                        f"the smallest run id is used, select with --experiment: " + "; ".join(conflicts[:5])
                        + (" …" if len(conflicts) > 5 else ""))
    return kept, warnings


# ------------------------------------------------------------------------------------------ selection


@dataclass
class Cell:
    method: str
    task: str
    runs: list[Run]
    expected_seeds: tuple
    expected_lrs: tuple
    selected_lr: Optional[float] = None
    values: dict = field(default_factory=dict)  # seed -> main metric (0-1) at the selected lr
    lr_means: dict = field(default_factory=dict)  # lr -> (mean, successful seeds)
    notes: list = field(default_factory=list)
    grid_incomplete: bool = False
    dirty: bool = False
    gain: Optional[dict] = None  # gain of the seed-mean main over the best constant (add_baseline_gains)
    # the selected seeds' dev predictions, read once by add_baseline_gains (seed_predictions) for every test
    predictions: Optional[list] = None

    @property
    def mean(self) -> Optional[float]:
        return math.fsum(self.values.values()) / len(self.values) if self.values else None

    @property
    def std(self) -> Optional[float]:
        return statistics.stdev(self.values.values()) if len(self.values) > 1 else None

    @property
    def seeds_ok(self) -> int:
        return len(self.values)

    @property
    def complete(self) -> bool:
        return self.selected_lr is not None and self.seeds_ok == len(self.expected_seeds) and not self.grid_incomplete

    @property
    def failed(self) -> list[Run]:
        return [r for r in self.runs if r.status == "failed"]

    def text(self) -> str:
        if self.selected_lr is None:
            attempted = len(self.runs)
            return DASH if attempted == 0 else f"{DASH} (0/{len(self.expected_seeds)})"
        value = f"{100 * self.mean:.1f}"
        if self.std is not None:
            value += f"±{100 * self.std:.1f}"
        if self.seeds_ok < len(self.expected_seeds):
            value += f" ({self.seeds_ok}/{len(self.expected_seeds)})"
        if self.grid_incomplete:
            value += GRID_MARK
        if self.dirty:
            value += DIRTY_MARK
        if self.gain is not None and self.gain["clears"]:
            value += CLEARS_MARK
        return value

    def metric_mean(self, key: str) -> Optional[float]:
        """Mean over the selected learning rate's successful seeds of ``metrics[key]``."""
        values = [r.metrics.get(key) for r in self.runs if r.status == "success" and r.lr == self.selected_lr]
        if not values or any(v is None for v in values):
            return None
        return math.fsum(values) / len(values)


def select_cell(cell: Cell) -> Cell:
    from aotp.metrics.base import is_improvement

    by_lr: dict[float, dict[int, Run]] = {}
    for run in cell.runs:
        by_lr.setdefault(run.lr, {})[run.seed] = run
    higher = all(r.higher_is_better for r in cell.runs) if cell.runs else True
    best = None
    for lr in sorted(by_lr):
        ok = {seed: r.main for seed, r in by_lr[lr].items() if r.status == "success"}
        if ok:
            mean = math.fsum(ok.values()) / len(ok)
            cell.lr_means[lr] = (mean, len(ok))
            if is_improvement(mean, None if best is None else best[0], higher):  # the checkpoints' rule
                best = (mean, lr)
    if best is not None:
        cell.selected_lr = best[1]
        cell.values = {seed: r.main for seed, r in sorted(by_lr[best[1]].items()) if r.status == "success"}
        cell.dirty = any(r.dirty for r in by_lr[best[1]].values() if r.status == "success")
    # what is missing or failed, learning rate by learning rate
    for lr in cell.expected_lrs:
        runs = by_lr.get(lr, {})
        missing = [s for s in cell.expected_seeds if s not in runs]
        failed = sorted((s, r) for s, r in runs.items() if r.status == "failed")
        if not missing and not failed:
            continue
        if lr != cell.selected_lr:
            cell.grid_incomplete = True
        parts = []
        if failed:
            errors = sorted({_first_line(r.error) for _, r in failed})
            parts.append(f"seed{'s' if len(failed) > 1 else ''} {', '.join(str(s) for s, _ in failed)} failed "
                         f"({'; '.join(errors)})")
        if missing:
            parts.append(f"seed{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} missing")
        selected = " (selected)" if lr == cell.selected_lr else ""
        cell.notes.append(f"lr {format_lr(lr)}{selected}: {'; '.join(parts)}")
    if cell.dirty:
        cell.notes.append("includes runs from a dirty git tree")
    return cell


@dataclass
class Table:
    benchmark: str
    model: str
    tasks: list
    methods: list
    cells: dict  # (method, task) -> Cell
    shares: dict  # method -> (low, high)
    expected_seeds: tuple
    subsets: tuple = ()  # distinct data cuts of the table's runs (empty: full train and dev sets)
    # (method, other method, task) -> the seed-mean difference with its interval (add_method_comparisons)
    comparisons: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.benchmark}_{self.model}"

    def macro(self, method: str) -> tuple[Optional[float], Optional[float], dict]:
        """(mean, std over seeds, per-seed macro) when every task cell is complete, else (None, None, {})."""
        cells = [self.cells[(method, task)] for task in self.tasks]
        if not cells or not all(c.complete for c in cells):
            return None, None, {}
        per_seed = {seed: math.fsum(c.values[seed] for c in cells) / len(cells) for seed in self.expected_seeds}
        values = list(per_seed.values())
        std = statistics.stdev(values) if len(values) > 1 else None
        return math.fsum(values) / len(values), std, per_seed

    def macro_text(self, method: str) -> str:
        mean, std, _ = self.macro(method)
        if mean is None:
            done = sum(self.cells[(method, t)].complete for t in self.tasks)
            return f"{DASH} ({done}/{len(self.tasks)})"
        return f"{100 * mean:.1f}" + (f"±{100 * std:.1f}" if std is not None else "")


def build_tables(runs: list[Run], seeds: Optional[Sequence[int]] = None,
                 tasks: Optional[Sequence[str]] = None) -> tuple[list[Table], list[str]]:
    warnings = []
    tables = []
    expected_tasks: dict[str, set] = {}
    for run in runs:
        expected_tasks.setdefault(run.benchmark, set()).add(run.task)
    for full in tasks or []:
        benchmark, _, task = full.partition("/")
        expected_tasks.setdefault(benchmark, set()).add(task)
    if tasks:  # an explicit task list fixes the columns
        wanted = {}
        for full in tasks:
            benchmark, _, task = full.partition("/")
            wanted.setdefault(benchmark, set()).add(task)
        expected_tasks = wanted
    def rank(value: str, order: Sequence[str]) -> tuple:
        return (order.index(value), "") if value in order else (len(order), value)

    pairs = sorted({(r.benchmark, r.model) for r in runs if r.benchmark in expected_tasks},
                   key=lambda p: (rank(p[0], BENCHMARK_ORDER), rank(p[1], MODEL_ORDER)))
    for benchmark, model in pairs:
        table_runs = [r for r in runs if r.benchmark == benchmark and r.model == model
                      and r.task in expected_tasks[benchmark] and (not seeds or r.seed in seeds)]
        task_list = _ordered(expected_tasks[benchmark], TASK_ORDER.get(benchmark, []))
        methods = _ordered({r.method for r in table_runs}, METHOD_ORDER)
        expected_seeds = tuple(sorted(seeds)) if seeds else tuple(sorted({r.seed for r in table_runs}))
        cells, shares = {}, {}
        for method in methods:
            method_runs = [r for r in table_runs if r.method == method]
            lrs = tuple(sorted({r.lr for r in method_runs}))
            share_values = [r.share for r in method_runs if r.status == "success" and r.share is not None]
            shares[method] = (min(share_values), max(share_values)) if share_values else (None, None)
            for task in task_list:
                cell_runs = sorted((r for r in method_runs if r.task == task), key=lambda r: (r.lr, r.seed))
                cells[(method, task)] = select_cell(Cell(method, task, cell_runs, expected_seeds, lrs))
        subsets = tuple(sorted({r.subsets for r in table_runs if r.subsets}))
        table = Table(benchmark, model, task_list, methods, cells, shares, expected_seeds, subsets)
        tables.append(table)
        label = f"{BENCHMARK_LABEL.get(benchmark, benchmark)} / {model}"
        failed = sum(len(c.failed) for c in cells.values())
        if failed:
            warnings.append(f"{label}: {failed} failed run(s) (see the table notes)")
        missing = sum(1 for c in cells.values() for lr in c.expected_lrs for seed in c.expected_seeds
                      if not any(r.lr == lr and r.seed == seed for r in c.runs))
        if missing:
            warnings.append(f"{label}: {missing} expected run(s) missing (learning rates x seeds {list(expected_seeds)})")
        dirty = sum(1 for c in cells.values() for r in c.runs if r.dirty)
        if dirty:
            warnings.append(f"{label}: {dirty} run(s) from a dirty git tree (marked {DIRTY_MARK} where selected)")
    return tables, warnings


# ------------------------------------------------------------------------- gain over the constant


def read_predictions(path: Path) -> dict[str, Any]:
    """A run's ``predictions/<split>.jsonl`` -> ``{"predictions", "references", "groups", "ids"}``."""
    import numpy as np

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    grouped = bool(rows) and "group" in rows[0]
    return {"predictions": np.asarray([r["prediction"] for r in rows]), "references": [r["label"] for r in rows],
            "groups": [r["group"] for r in rows] if grouped else None, "ids": [r["idx"] for r in rows]}


def seed_predictions(cell: Cell, spec, results_dir: Path) -> Optional[list[dict[str, dict]]]:
    """The dev predictions of every successful seed of the cell's selected learning rate, read back from
    ``predictions/<split>.jsonl`` (written by every run): one ``{split: formatted predictions}`` per seed,
    all on the same examples. None when there is no such seed or one has no predictions file."""
    selected = [r for r in cell.runs if r.status == "success" and r.lr == cell.selected_lr]
    if not selected:
        return None
    seeds: list[dict[str, dict]] = []
    for run in selected:
        folder = (results_dir / run.path).parent / "predictions"
        files = {split: folder / f"{split}.jsonl" for split in spec.eval_splits}
        if not all(path.is_file() for path in files.values()):
            return None
        seeds.append({split: read_predictions(path) for split, path in files.items()})
    for split in spec.eval_splits:
        if any(seed[split]["ids"] != seeds[0][split]["ids"] for seed in seeds):
            raise ValueError(f"{cell.method} / {cell.task}: the seeds' {split} predictions cover different examples")
    return seeds


def _interval(result: dict, higher: bool) -> dict:
    low, high = result["ci95"]
    return {"delta": result["delta"], "ci95": [low, high], "clears": low > 0 if higher else high < 0,
            "falls_short": high < 0 if higher else low > 0, "draws": result["draws"],
            "units": sum(result["units"].values())}


def cell_gain(cell: Cell, spec, draws: int = BOOTSTRAP_DRAWS) -> Optional[dict]:
    """The cell's gain over the task's best constant prediction, with a 95% paired-bootstrap interval.

    The gain is ``mean_s main(seed s) - main(best constant)`` on the same dev examples, resampled together
    (:func:`aotp.metrics.bootstrap.paired_bootstrap` with the seeds of ``cell.predictions`` as predictor A).
    None when the cell has no predictions or the task has no constant prediction value (ReCoRD).
    """
    from aotp.metrics.base import main_metric_higher_is_better
    from aotp.metrics.bootstrap import paired_bootstrap
    from aotp.tasks.baselines import best_constant_predictions

    seeds = cell.predictions
    if seeds is None:
        return None
    constant = best_constant_predictions(spec, {split: seeds[0][split] for split in spec.eval_splits})
    if constant is None:
        return None
    pairs = {split: ([seed[split] for seed in seeds], constant["formatted"][split]) for split in spec.eval_splits}
    result = paired_bootstrap(spec.metrics, spec.main_metric, pairs, draws=draws)
    return {"constant": constant["name"], "constant_main": constant["metrics"]["main"], "seeds": len(seeds),
            **_interval(result, main_metric_higher_is_better(spec.main_metric))}


def method_difference(cell: Cell, other: Cell, spec, draws: int = BOOTSTRAP_DRAWS) -> dict:
    """``mean_s main(cell's seed s) - mean_t main(other's seed t)`` on the same dev examples with a 95%
    paired-bootstrap interval (both cells' ``predictions`` scored on every resample)."""
    from aotp.metrics.base import main_metric_higher_is_better
    from aotp.metrics.bootstrap import paired_bootstrap

    ours, theirs = cell.predictions, other.predictions
    for split in spec.eval_splits:
        if ours[0][split]["ids"] != theirs[0][split]["ids"]:
            raise ValueError(f"{cell.method} and {other.method} / {cell.task}: their {split} predictions cover "
                             "different examples")
    pairs = {split: ([seed[split] for seed in ours], [seed[split] for seed in theirs]) for split in spec.eval_splits}
    result = paired_bootstrap(spec.metrics, spec.main_metric, pairs, draws=draws)
    return {"seeds": len(ours), "other_seeds": len(theirs),
            **_interval(result, main_metric_higher_is_better(spec.main_metric))}


@functools.lru_cache(maxsize=None)
def _task_spec(config_dir: Path, full: str):
    from omegaconf import OmegaConf

    from aotp.tasks.spec import TaskSpec

    return TaskSpec.from_config(OmegaConf.load(config_dir / "task" / f"{full}.yaml"))


def add_baseline_gains(tables: list[Table], results_dir: Path, config_dir: Path,
                       draws: int = BOOTSTRAP_DRAWS) -> list[str]:
    """Read the dev predictions of every cell whose selected seeds saved them (``cell.predictions``) and set
    ``cell.gain``; returns warnings.

    A table none of whose runs saved predictions is left as it is (no marker, no warning)."""
    warnings = []
    for table in tables:
        cells = [c for c in table.cells.values() if c.selected_lr is not None]
        have = [c for c in cells if all((results_dir / r.path).parent.joinpath("predictions").is_dir()
                                        for r in c.runs if r.status == "success" and r.lr == c.selected_lr)]
        if not have:
            continue
        for cell in have:
            spec = _task_spec(config_dir, f"{table.benchmark}/{cell.task}")
            cell.predictions = seed_predictions(cell, spec, results_dir)
            cell.gain = cell_gain(cell, spec, draws)
        missing = [c for c in cells if c.gain is None]
        if missing:
            names = ", ".join(f"{c.method}/{c.task}" for c in missing[:5]) + (" …" if len(missing) > 5 else "")
            warnings.append(f"{BENCHMARK_LABEL.get(table.benchmark, table.benchmark)} / {table.model}: "
                            f"{len(missing)} cell(s) without a gain over the constant baseline (a selected seed "
                            f"saved no dev predictions, or the task has no constant prediction): {names}")
    return warnings


def has_gains(table: Table) -> bool:
    return any(c.gain is not None for c in table.cells.values())


def add_method_comparisons(tables: list[Table], config_dir: Path, compared: Sequence[str] = COMPARED_METHODS,
                           draws: int = BOOTSTRAP_DRAWS) -> None:
    """Set ``table.comparisons[(method, other, task)]`` for every method of ``compared`` in the table
    against every other method of the table, on every task where both cells have predictions (read by
    :func:`add_baseline_gains`): the paper's claims are such comparisons (AoT against BitFit, LoRA,
    adapters, P-Tuning v2), and seed spreads alone cannot tell a difference from dev-sampling noise."""
    for table in tables:
        for method in [m for m in table.methods if m in compared]:
            # each pair of compared methods once (aot_fc − aot_kron, not also its mirror)
            others = [m for m in table.methods if m != method
                      and not (m in compared and table.methods.index(m) < table.methods.index(method))]
            for other in others:
                for task in table.tasks:
                    cell, other_cell = table.cells[(method, task)], table.cells[(other, task)]
                    if cell.predictions is None or other_cell.predictions is None:
                        continue
                    table.comparisons[(method, other, task)] = method_difference(
                        cell, other_cell, _task_spec(config_dir, f"{table.benchmark}/{task}"), draws)


def comparison_text(result: dict) -> str:
    return (f"{100 * result['delta']:+.1f} [{100 * result['ci95'][0]:+.1f}, {100 * result['ci95'][1]:+.1f}]"
            + (CLEARS_MARK if result["clears"] else BELOW_MARK if result["falls_short"] else ""))


def comparison_rows(table: Table) -> list[list[str]]:
    pairs = list(dict.fromkeys((method, other) for method, other, _ in table.comparisons))
    return [[f"{method} − {other}"] + [comparison_text(table.comparisons[(method, other, task)])
                                       if (method, other, task) in table.comparisons else DASH
                                       for task in table.tasks] for method, other in pairs]


def constant_row(table: Table) -> list[str]:
    """The best constant's dev main metric x100 per task (the bar every cell is tested against)."""
    values = []
    for task in table.tasks:
        gains = [table.cells[(m, task)].gain for m in table.methods if table.cells[(m, task)].gain is not None]
        values.append(f"{100 * gains[0]['constant_main']:.1f}" if gains else DASH)
    return ["best constant", "0%"] + values + [""]


def gain_rows(table: Table) -> list[list[str]]:
    out = []
    for method in table.methods:
        row = [method]
        for task in table.tasks:
            gain = table.cells[(method, task)].gain
            row.append(DASH if gain is None else
                       f"{100 * gain['delta']:+.1f} [{100 * gain['ci95'][0]:+.1f}, {100 * gain['ci95'][1]:+.1f}]"
                       + (CLEARS_MARK if gain["clears"] else ""))
        out.append(row)
    return out


def clears_count(table: Table) -> tuple[int, int]:
    gains = [c.gain for c in table.cells.values() if c.gain is not None]
    return sum(g["clears"] for g in gains), len(gains)


# -------------------------------------------------------------------------------------- references


@dataclass(frozen=True)
class Reference:
    benchmark: str
    model: str
    method: str
    task: str
    value: float  # x100, as published
    metric: str
    source: str
    std: Optional[float] = None


def load_references(path: Optional[Path]) -> tuple[list[Reference], list[str]]:
    if path is None or not Path(path).is_file():
        return [], []
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    references, warnings = [], []
    for i, entry in enumerate(data.get("references") or []):
        try:
            source = str(entry["source"]).strip()
            if not source:
                raise KeyError("source")
            for task, number in sorted((entry.get("tasks") or {}).items()):
                number = number if isinstance(number, dict) else {"value": number}
                references.append(Reference(str(entry["benchmark"]), str(entry["model"]), str(entry["method"]), str(task),
                                            float(number["value"]), str(number.get("metric") or entry.get("metric") or "main"),
                                            source, None if number.get("std") is None else float(number["std"])))
        except (KeyError, TypeError, ValueError) as error:
            warnings.append(f"{path}: reference entry {i} is malformed ({type(error).__name__}: {error}); every entry "
                            f"needs benchmark, model, method, source and tasks: {{task: {{value, metric}}}}")
    return references, warnings


def reference_rows(table: Table, references: list[Reference]):
    """[(method, task, reference, ours x100 or None, why-not text)] for this table."""
    rows = []
    for ref in references:
        if ref.benchmark != table.benchmark or ref.model != table.model or ref.task not in table.tasks:
            continue
        cell = table.cells.get((ref.method, ref.task))
        ours, why = None, ""
        if cell is None:
            why = "no runs"
        elif not cell.complete:
            why = "cell incomplete"
        else:
            value = cell.metric_mean(ref.metric)
            if value is None:
                why = f"metric {ref.metric!r} not in our records"
            else:
                ours = 100 * value
        rows.append((ref.method, ref.task, ref, ours, why))
    method_rank = {m: i for i, m in enumerate(_ordered({r[0] for r in rows}, METHOD_ORDER))}
    task_rank = {t: i for i, t in enumerate(_ordered({r[1] for r in rows}, TASK_ORDER.get(table.benchmark, [])))}
    return sorted(rows, key=lambda r: (method_rank[r[0]], task_rank[r[1]], r[2].metric, r[2].source))


def _reference_text(ref: Reference, ours: Optional[float], why: str) -> tuple[str, str, str]:
    published = f"{ref.value:.1f}" + (f"±{ref.std:.1f}" if ref.std is not None else "")
    mine = f"{ours:.1f}" if ours is not None else DASH
    delta = f"{ours - ref.value:+.1f}" if ours is not None else f"n/a ({why})"
    return published, mine, delta


# ---------------------------------------------------------------------------------------- rendering


def caption(table: Table) -> str:
    seeds = len(table.expected_seeds)
    return (f"{BENCHMARK_LABEL.get(table.benchmark, table.benchmark)} dev, backbone {table.model}. {PROTOCOL} "
            f"Expected seeds: {seeds} ({', '.join(map(str, table.expected_seeds))}). "
            f"(k/n): only k of the n seeds of the selected learning rate succeeded; {GRID_MARK}: runs missing or failed "
            f"at another learning rate of the grid; {DASH}: no successful run; {DIRTY_MARK}: includes runs from a dirty "
            f"git tree. Macro: unweighted mean over the {len(table.tasks)} tasks (spread: std over seeds of the "
            f"per-seed macro), only when every task cell is complete, else {DASH} (complete/total). "
            f"Params: trainable share of the backbone + head parameters."
            + (f" Data subsets (fixed, seeded; from the records): {'; '.join(table.subsets)}." if table.subsets else "")
            + (f" {CLEARS_MARK}: the 95% paired-bootstrap interval of the cell's gain over the task's best constant "
               f"prediction (row 'best constant', scored on the same dev examples) excludes 0 (gain of the seed-mean "
               f"main metric; {BOOTSTRAP_DRAWS:,} resamples of the dev examples, groups whole); "
               f"{clears_count(table)[0]} of {clears_count(table)[1]} cells." if has_gains(table) else ""))


def header(table: Table) -> list[str]:
    return ["Method", "Params"] + [TASK_LABEL.get(t, t) for t in table.tasks] + ["Macro"]


def rows(table: Table) -> list[list[str]]:
    out = []
    for method in table.methods:
        out.append([method, format_share(*table.shares[method])]
                   + [table.cells[(method, t)].text() for t in table.tasks] + [table.macro_text(method)])
    if has_gains(table):
        out.append(constant_row(table))
    return out


def notes(table: Table) -> list[str]:
    lines = []
    for method in table.methods:
        for task in table.tasks:
            cell = table.cells[(method, task)]
            if cell.selected_lr is None and not cell.runs:
                lines.append(f"{method} / {TASK_LABEL.get(task, task)}: no runs")
            elif cell.notes:
                lines.append(f"{method} / {TASK_LABEL.get(task, task)}: {'; '.join(cell.notes)}")
    return lines


def selected_lrs(table: Table) -> list[str]:
    lines = []
    for method in table.methods:
        parts, grid = [], ""
        for task in table.tasks:
            cell = table.cells[(method, task)]
            grid = ", ".join(format_lr(lr) for lr in cell.expected_lrs)
            if cell.selected_lr is not None:
                parts.append(f"{TASK_LABEL.get(task, task)} {format_lr(cell.selected_lr)}")
        if parts:
            lines.append(f"{method} (grid {grid}): " + ", ".join(parts))
    return lines


def _md_table(head: list[str], body: list[list[str]], align_first: int = 1) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("*", "\\*")

    lines = ["| " + " | ".join(esc(h) for h in head) + " |",
             "|" + "|".join([":---"] * align_first + ["---:"] * (len(head) - align_first)) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def render_markdown(table: Table, references: list[Reference]) -> str:
    title = f"## {BENCHMARK_LABEL.get(table.benchmark, table.benchmark)} — {table.model}"
    parts = [title, "", caption(table), "", _md_table(header(table), rows(table), 2), ""]
    lr_lines = selected_lrs(table)
    if lr_lines:
        parts += ["Selected learning rates:", ""] + [f"- {line}" for line in lr_lines] + [""]
    note_lines = notes(table)
    if note_lines:
        parts += ["Notes (incomplete cells):", ""] + [f"- {line}" for line in note_lines] + [""]
    if has_gains(table):
        parts += ["Gain over the best constant prediction (x100, seed-mean main metric minus the constant's, "
                  "with its 95% paired-bootstrap interval):", "",
                  _md_table(["Method"] + [TASK_LABEL.get(t, t) for t in table.tasks], gain_rows(table)), ""]
    if table.comparisons:
        parts += [f"Method against method (x100, difference of the seed-mean main metrics on the same dev examples, "
                  f"with its 95% paired-bootstrap interval; {CLEARS_MARK}: the interval lies above 0, {BELOW_MARK}: "
                  "below 0):", "",
                  _md_table(["Difference"] + [TASK_LABEL.get(t, t) for t in table.tasks], comparison_rows(table)), ""]
    ref_rows = reference_rows(table, references)
    if ref_rows:
        sources = _ordered({r[2].source for r in ref_rows}, [])
        number = {s: i + 1 for i, s in enumerate(sources)}
        body = []
        for method, task, ref, ours, why in ref_rows:
            published, mine, delta = _reference_text(ref, ours, why)
            body.append([method, TASK_LABEL.get(task, task), ref.metric, f"{published} [{number[ref.source]}]", mine, delta])
        parts += ["Published numbers beside ours (delta = ours − published; ours: mean over seeds of the same "
                  "metric at the selected learning rate, complete cells only):", "",
                  _md_table(["Method", "Task", "Metric", "Published", "Ours", "Delta"], body, 3), ""]
        parts += [f"- [{number[s]}] {s}" for s in sources] + [""]
    return "\n".join(parts)


def _tex(text: str) -> str:
    replacements = [("\\", "\\textbackslash{}"), ("_", "\\_"), ("%", "\\%"), ("&", "\\&"), ("#", "\\#"),
                    ("±", "$\\pm$"), ("—", "---"), ("–", "--"), ("−", "$-$"), (DIRTY_MARK, "$^\\dagger$"),
                    (GRID_MARK, "$^*$"), (CLEARS_MARK, "$^\\uparrow$"), ("…", "\\ldots{}"), ("{", "\\{"), ("}", "\\}")]
    out = []
    for char in text:
        for old, new in replacements:
            if char == old:
                out.append(new)
                break
        else:
            out.append(char)
    return "".join(out)


def render_latex(table: Table, references: list[Reference]) -> str:
    head = header(table)
    spec = "ll" + "r" * (len(head) - 2)
    lines = ["\\begin{table}[t]", "\\centering", "\\small", f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
             " & ".join(_tex(h) for h in head) + " \\\\", "\\midrule"]
    lines += [" & ".join(_tex(c) for c in row) + " \\\\" for row in rows(table)]
    lines += ["\\bottomrule", "\\end{tabular}"]
    extra = [f"Selected learning rates: {line}." for line in selected_lrs(table)]
    extra += [f"{line}." for line in notes(table)]
    ref_rows = reference_rows(table, references)
    sources = _ordered({r[2].source for r in ref_rows}, [])
    for method, task, ref, ours, why in ref_rows:
        published, mine, delta = _reference_text(ref, ours, why)
        extra.append(f"Published {method} {TASK_LABEL.get(task, task)} ({ref.metric}): {published} "
                     f"[{sources.index(ref.source) + 1}], ours {mine}, delta {delta}.")
    extra += [f"[{i + 1}] {source}." for i, source in enumerate(sources)]
    if extra:
        lines += ["\\par\\footnotesize"] + [_tex(line) + "\\\\" for line in extra]
    lines += [f"\\caption{{{_tex(caption(table))}}}", f"\\label{{tab:{table.benchmark}-{table.model.replace('_', '-')}}}",
              "\\end{table}", ""]
    return "\n".join(lines)


def _csv(head: list[str], body: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(head)
    writer.writerows(body)
    return buffer.getvalue()


def _num(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.6f}"


CELL_COLUMNS = ["benchmark", "model", "method", "task", "selected_lr", "mean", "std", "seeds_ok", "seeds_expected",
                "lrs_expected", "runs", "failed_runs", "complete", "grid_incomplete", "dirty", "params_share_min",
                "params_share_max", "text"]


def cell_rows(tables: list[Table]) -> list[list[str]]:
    out = []
    for table in tables:
        for method in table.methods:
            low, high = table.shares[method]
            for task in table.tasks:
                c = table.cells[(method, task)]
                out.append([table.benchmark, table.model, method, task,
                            "" if c.selected_lr is None else format_lr(c.selected_lr), _num(c.mean), _num(c.std),
                            str(c.seeds_ok), str(len(c.expected_seeds)), str(len(c.expected_lrs)), str(len(c.runs)),
                            str(len(c.failed)), str(c.complete).lower(), str(c.grid_incomplete).lower(),
                            str(c.dirty).lower(), _num(low), _num(high), c.text()])
            mean, std, _ = table.macro(method)
            out.append([table.benchmark, table.model, method, "macro", "", _num(mean), _num(std),
                        str(len(table.expected_seeds)) if mean is not None else "0", str(len(table.expected_seeds)),
                        "", "", "", str(mean is not None).lower(), "", "", _num(low), _num(high),
                        table.macro_text(method)])
    return out


GAIN_COLUMNS = ["benchmark", "model", "method", "task", "selected_lr", "seeds", "mean", "constant", "constant_main",
                "gain", "gain_ci95_low", "gain_ci95_high", "clears", "draws", "dev_units"]


def gain_csv_rows(tables: list[Table]) -> list[list[str]]:
    out = []
    for table in tables:
        for method in table.methods:
            for task in table.tasks:
                c = table.cells[(method, task)]
                g = c.gain
                if g is None:
                    continue
                out.append([table.benchmark, table.model, method, task, format_lr(c.selected_lr), str(g["seeds"]),
                            _num(c.mean), g["constant"], _num(g["constant_main"]), _num(g["delta"]),
                            _num(g["ci95"][0]), _num(g["ci95"][1]), str(g["clears"]).lower(), str(g["draws"]),
                            str(g["units"])])
    return out


COMPARISON_COLUMNS = ["benchmark", "model", "method", "other", "task", "seeds", "other_seeds", "difference",
                      "ci95_low", "ci95_high", "verdict", "draws", "dev_units"]


def comparison_csv_rows(tables: list[Table]) -> list[list[str]]:
    out = []
    for table in tables:
        for (method, other, task), r in table.comparisons.items():
            verdict = "higher" if r["clears"] else "lower" if r["falls_short"] else "unresolved"
            out.append([table.benchmark, table.model, method, other, task, str(r["seeds"]), str(r["other_seeds"]),
                        _num(r["delta"]), _num(r["ci95"][0]), _num(r["ci95"][1]), verdict, str(r["draws"]),
                        str(r["units"])])
    return out


def plot_macro(tables: list[Table], benchmark: str, path: Path) -> None:
    """Methods on x, one marker per backbone: mean macro (diamond), std over seeds (error bar), seeds (dots).

    Rows whose macro is undefined (an incomplete task cell) are not drawn; their tick says "incomplete".
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = [t for t in tables if t.benchmark == benchmark]
    methods = _ordered({m for t in tables for m in t.methods}, METHOD_ORDER)
    label = BENCHMARK_LABEL.get(benchmark, benchmark)
    with plt.rc_context({"font.family": "DejaVu Sans", "font.size": 8, "figure.dpi": 100}):
        fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(methods) + 2.0), 3.2))
        width = 0.7 / max(1, len(tables))
        complete_methods = set()
        for j, table in enumerate(tables):
            color = f"C{j % 10}"
            first = True
            for i, method in enumerate(methods):
                mean, std, per_seed = table.macro(method) if method in table.methods else (None, None, {})
                if mean is None:
                    continue
                complete_methods.add(method)
                x = i - 0.35 + width * (j + 0.5)
                seeds = [100 * v for _, v in sorted(per_seed.items())]
                ax.scatter([x] * len(seeds), seeds, s=8, color=color, alpha=0.5, linewidths=0, zorder=2)
                ax.errorbar([x], [100 * mean], yerr=[100 * (std or 0.0)], fmt="D", color=color, markersize=4,
                            capsize=3, zorder=3, label=table.model if first else None)
                first = False
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels([m if m in complete_methods else f"{m}\n(incomplete)" for m in methods],
                           rotation=30, ha="right")
        ax.set_xlim(-0.6, len(methods) - 0.4)
        ax.set_ylabel(f"{label} macro average, dev (x100)")
        ax.set_title(f"{label}: mean ± std over seeds (dots: seeds)", fontsize=8)
        ax.grid(axis="y", linewidth=0.3)
        if complete_methods:
            ax.legend(fontsize=7, frameon=False, loc="best")
        else:
            ax.text(0.5, 0.5, "no row has every task cell complete", ha="center", va="center", transform=ax.transAxes)
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100, metadata={"Software": None})
        plt.close(fig)


def log_wandb(tables: list[Table], warnings: list[str], project: str, entity: Optional[str] = None) -> None:
    import wandb

    run = wandb.init(project=project, entity=entity, job_type="aggregate", name="tables",
                     config={"protocol": PROTOCOL, "tables": [t.name for t in tables]})
    for table in tables:
        run.log({f"tables/{table.name}": wandb.Table(columns=header(table), data=rows(table))})
    run.log({"tables/cells": wandb.Table(columns=CELL_COLUMNS, data=cell_rows(tables))})
    if warnings:
        run.log({"tables/warnings": wandb.Table(columns=["warning"], data=[[w] for w in warnings])})
    run.finish()


# -------------------------------------------------------------------------------------------- driver


@dataclass
class Aggregation:
    tables: list
    warnings: list
    references: list
    files: list


def aggregate(results_dir: Path, out_dir: Path, *, experiments: Optional[Sequence[str]] = None,
              references_path: Optional[Path] = None, config_dir: Optional[Path] = None,
              seeds: Optional[Sequence[int]] = None, tasks: Optional[Sequence[str]] = None,
              plots: bool = True) -> Aggregation:
    config_dir = Path(config_dir) if config_dir is not None else config_root()
    runs, warnings = load_runs(results_dir, experiments)
    runs, version_warnings = filter_versions(runs, current_task_versions(config_dir))
    runs, duplicate_warnings = deduplicate(runs)
    tables, table_warnings = build_tables(runs, seeds, tasks)
    table_warnings += add_baseline_gains(tables, Path(results_dir), Path(config_dir))
    add_method_comparisons(tables, Path(config_dir))
    references, reference_warnings = load_references(references_path)
    warnings = sorted(set(warnings + version_warnings + duplicate_warnings + table_warnings + reference_warnings))
    if not runs:
        warnings.append(f"no usable records under {results_dir}" + (f" for experiment(s) {list(experiments)}" if experiments else ""))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []

    def write(name: str, text: str) -> None:
        (out_dir / name).write_text(text, encoding="utf-8")
        files.append(out_dir / name)

    summary = ["# Results", "", PROTOCOL, ""]
    for table in tables:
        markdown = render_markdown(table, references)
        write(f"{table.name}.md", markdown + "\n")
        write(f"{table.name}.tex", render_latex(table, references))
        write(f"{table.name}.csv", _csv(header(table), rows(table)))
        summary += [markdown, ""]
    write("cells.csv", _csv(CELL_COLUMNS, cell_rows(tables)))
    if any(has_gains(t) for t in tables):
        write("baseline_gains.csv", _csv(GAIN_COLUMNS, gain_csv_rows(tables)))
    if any(t.comparisons for t in tables):
        write("method_differences.csv", _csv(COMPARISON_COLUMNS, comparison_csv_rows(tables)))
    summary += ["## Warnings", ""] + ([f"- {w}" for w in warnings] or ["- none"]) + [""]
    write("summary.md", "\n".join(summary))
    write("warnings.txt", "".join(f"{w}\n" for w in warnings))
    if plots:
        for benchmark in _ordered({t.benchmark for t in tables}, BENCHMARK_ORDER):
            path = out_dir / f"macro_{benchmark}.png"
            plot_macro(tables, benchmark, path)
            files.append(path)
    return Aggregation(tables, warnings, references, files)


@guarded
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Refusals (bad arguments, a results folder that is not there) are one line on stderr, exit 2."""
    from types import SimpleNamespace

    values, _ = KeyValueParser("aotp-tables", __doc__.split("\n\n")[0], [
        Option("results", "folder searched (recursively) for result.json", "results/runs", metavar="DIR"),
        Option("output", "output folder", "results/tables", metavar="DIR", flags=("--out",)),
        Option("experiment", "only records of these experiment_name values", None, many=True, nullable=True),
        Option("references", "published numbers to show beside ours (null: none)", str(references_file()),
               nullable=True, metavar="FILE"),
        Option("configs", "config dir with the current task specs", str(config_root()), metavar="DIR"),
        Option("seeds", "expected seeds (default: every seed seen in the table)", None, int, many=True, nullable=True),
        Option("tasks", "expected tasks as benchmark/name (default: every task seen in the benchmark)", None,
               many=True, nullable=True),
        Option("plots", "the PNG plots", True, bool, flags=("--no-plots",), flag_value=False),
        Option("wandb", "also log the tables as W&B tables", False, bool),
        Option("wandb_project", "", "aotp"),
        Option("wandb_entity", "", None, nullable=True),
    ], examples=["aotp-tables results=results/cpu_mini/runs output=results/cpu_mini/tables",
                 "aotp-tables experiment=[paper_glue_roberta_base] seeds=[1,2,3] plots=false"]).parse(
        sys.argv[1:] if argv is None else argv)
    args = SimpleNamespace(**values, out=values["output"], no_plots=not values["plots"])
    if not Path(args.results).is_dir():
        raise UsageError(f"results={args.results}: no such folder (run records are searched under it)")
    if args.references and not Path(args.references).is_file():
        raise UsageError(f"references={args.references}: no such file (null = none)")
    if not Path(args.configs).is_dir():
        raise UsageError(f"configs={args.configs}: no such folder")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"output={args.out}: is a file, not a folder")
    result = aggregate(Path(args.results), Path(args.out), experiments=args.experiment,
                       references_path=Path(args.references) if args.references else None,
                       config_dir=Path(args.configs), seeds=args.seeds, tasks=args.tasks, plots=not args.no_plots)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{len(result.tables)} table(s) -> {args.out}: " + ", ".join(t.name for t in result.tables))
    if args.wandb:
        log_wandb(result.tables, result.warnings, args.wandb_project, args.wandb_entity)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
