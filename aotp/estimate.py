"""Expected compute of an experiment's sweep, from step times measured on this machine.

    aotp-estimate experiment=paper_glue_roberta_base trainer.device=cuda data.root=../shared/data
    aotp-estimate experiment=cpu_mini data.root=../shared/data compare=results/cpu_mini/runs
    aotp-estimate budget=true experiment=paper_glue_roberta_large [check_disk=results/runs jobs=8]

First the sweep's disk and memory budget (:mod:`aotp.budget`: runs, bytes written per run and in
total, checkpoints at peak, peak host RAM and GPU memory per run; no weights loaded, no download),
then its compute. ``budget=true`` stops after the budget (seconds); ``check_disk=DIR`` then exits 3
with the figures when the disk of DIR has less free space than the sweep needs (``make reproduce``).

Every run of the sweep (the experiment's ``hydra.sweeper.params``, narrowed or widened by sweep
overrides on the command line, as ``make reproduce`` runs it) is composed exactly as ``aotp.run``
composes it. Its cost is

    T(run) = sum_b t_train(rows_b, L_b) + n_evals * sum_e t_eval(rows_e, L_e) + t_build

over its training batches b (epochs x ceil(n_train / batch_size), each padded to its longest
sequence L_b as the collator does; rows_b = batch size x choices for multiple choice) and its
evaluation batches e (every eval split, n_evals = evaluations during training + the final one).
t_train (forward, backward, clipping, AdamW step) and t_eval (no-grad forward) are measured per
(model, method, rows) at a few lengths and interpolated linearly in L; t_build (backbone load +
method) once per (model, method).

Lengths come from the task's files when ``data.root`` holds them (tokenised with the model's
tokenizer, or MiniLM's WordPiece as a stand-in when the model's cannot load offline; the same
tokenisation cache as the runs). Without the files every batch is taken at ``data.max_length``
(an upper bound) and the example counts come from the specs' ``official_sizes``; ReCoRD, whose
example count is not published, is then left out with a warning. A hub model that cannot load is
timed with random weights of its shape (``model.architecture``): step time depends on the shape.

``compare=DIR`` sets each estimate beside the measured ``wall_seconds`` of the matching records.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from omegaconf import DictConfig, OmegaConf

from aotp.cli import KeyValueParser, Option, UsageError, guarded

def sweep_override_lists(overrides: list[str]) -> tuple[list[list[str]], list[str]]:
    """The sweep's runs as override lists (cartesian product, the BasicSweeper's order), and the
    plain overrides shared by every run. Sweep parameters come from the experiment's
    ``hydra.sweeper.params``; a command-line override of the same key replaces it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from aotp.run import compose

    parser = OverridesParser.create()
    parsed = parser.parse_overrides(overrides)
    plain = [o.input_line for o in parsed if not o.is_sweep_override()]
    command_line_sweeps = {o.get_key_element(): o for o in parsed if o.is_sweep_override()}
    cfg = compose(plain, return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=False) or {}
    sweeps = {o.get_key_element(): o for o in parser.parse_overrides([f"{k}={v}" for k, v in params.items()])}
    plain_keys = {o.get_key_element() for o in parsed if not o.is_sweep_override()}
    sweeps = {k: v for k, v in sweeps.items() if k not in plain_keys}  # a plain command-line value narrows it
    sweeps.update(command_line_sweeps)
    axes = [[f"{key}={value}" for value in (o.sweep_string_iterator() if o.is_sweep_override() else [o.value()])]
            for key, o in sweeps.items()]
    return [list(combo) for combo in itertools.product(*axes)], plain


@dataclass
class Workload:
    """What one run computes: its training and evaluation batches as (rows, padded length)."""
    train_batches: list[tuple[int, int]]
    eval_batches: list[tuple[int, int]]
    evaluations: int
    lengths_from: str  # "files" or "max_length bound"
    train_examples: int


def choices_per_example(spec) -> int:
    """Sequences one example feeds the encoder: its choices for multiple choice (COPA: 2), else 1."""
    if spec.head != "multiple_choice":
        return 1
    return len(spec.format_options.get("choice_fields") or []) or 1


def padded_batches(features: list[dict[str, Any]], batch_size: int, seed: int) -> list[tuple[int, int]]:
    """(rows, padded length) of each batch of one epoch in a seeded random order."""
    order = np.random.default_rng(seed).permutation(len(features))
    batches = []
    for start in range(0, len(order), batch_size):
        sequences = [s for i in order[start:start + batch_size]
                     for s in (features[i]["input_ids"] if isinstance(features[i]["input_ids"][0], list)
                               else [features[i]["input_ids"]])]
        batches.append((len(sequences), max(len(s) for s in sequences)))
    return batches


def bound_batches(count: int, batch_size: int, rows_per_example: int, length: int) -> list[tuple[int, int]]:
    full, rest = divmod(count, batch_size)
    return [(batch_size * rows_per_example, length)] * full + ([(rest * rows_per_example, length)] if rest else [])


def run_workload(cfg: DictConfig, spec, tokenizer, uses_token_type_ids: bool, warnings: list[str]) -> Optional[Workload]:
    from aotp.tasks import DataFileError, check_local_files, load_task_data

    batch_size = int(cfg.trainer.batch_size)
    eval_batch_size = int(cfg.trainer.eval_batch_size)
    max_length = int(cfg.data.get("max_length") or spec.max_length)
    root = Path(cfg.data.root) if cfg.data.get("root") else None
    have_files = root is not None and tokenizer is not None
    if have_files:
        try:
            check_local_files(spec, root, [spec.train_split, *spec.eval_splits])
        except DataFileError:  # absent files: the bound below
            have_files = False
    if have_files:
        data = load_task_data(spec, tokenizer, cfg.data, uses_token_type_ids=uses_token_type_ids, seed=int(cfg.seed),
                              cache_dir=Path(cfg.paths.cache) if cfg.data.get("cache", True) else None)
        train_features = data[spec.train_split].features
        epoch_batches = padded_batches(train_features, batch_size, int(cfg.seed))
        eval_batches = [b for split in spec.eval_splits for b in padded_batches(data[split].features, eval_batch_size, 0)]
        n_train, lengths_from = len(train_features), "files"
    else:
        sizes = spec.official_sizes
        if spec.train_split not in sizes or any(s not in sizes for s in spec.eval_splits):
            warnings.append(f"{spec.full_name}: left out: no files under data.root and no official_sizes "
                            f"(its examples are counted from the files)")
            return None
        limit_train, limit_eval = cfg.data.get("max_train_samples"), cfg.data.get("max_eval_samples")
        n_train = min(sizes[spec.train_split], int(limit_train or sizes[spec.train_split]))
        rows = choices_per_example(spec)
        epoch_batches = bound_batches(n_train, batch_size, rows, max_length)
        eval_batches = [b for split in spec.eval_splits
                        for b in bound_batches(min(sizes[split], int(limit_eval or sizes[split])), eval_batch_size,
                                               rows, max_length)]
        lengths_from = "max_length bound"
    steps_per_epoch = math.ceil(len(epoch_batches) / int(cfg.trainer.gradient_accumulation_steps))
    total_steps = int(cfg.trainer.max_steps) if cfg.trainer.get("max_steps") else int(cfg.trainer.epochs) * steps_per_epoch
    micro_batches = total_steps * int(cfg.trainer.gradient_accumulation_steps)
    train_batches = [epoch_batches[i % len(epoch_batches)] for i in range(micro_batches)]
    eval_every = int(cfg.trainer.eval_every) if cfg.trainer.get("eval_every") else steps_per_epoch
    evaluations = math.ceil(total_steps / eval_every) + 1  # during training, then the inference form's check
    return Workload(train_batches, eval_batches, evaluations, lengths_from, sum(r for r, _ in train_batches))


@dataclass
class StepTimer:
    """Measured seconds per training step / eval forward of one (model, method) at (rows, length)."""
    model: Any
    device: Any
    precision: str
    vocab_size: int
    repeats: int
    train_times: dict[tuple[int, int], float] = field(default_factory=dict)
    eval_times: dict[tuple[int, int], float] = field(default_factory=dict)

    def _inputs(self, rows: int, length: int):
        import torch

        generator = torch.Generator().manual_seed(rows * 1000 + length)
        input_ids = torch.randint(5, self.vocab_size, (rows, length), generator=generator)
        batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        if self.model.uses_token_type_ids:
            batch["token_type_ids"] = torch.zeros_like(input_ids)
        return {k: v.to(self.device) for k, v in batch.items()}, torch.zeros(rows, dtype=torch.long, device=self.device)

    def _synchronize(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _time(self, step, warmup: int = 2) -> float:
        samples = []
        for index in range(warmup + self.repeats):
            self._synchronize()
            tick = time.perf_counter()
            step()
            self._synchronize()
            if index >= warmup:
                samples.append(time.perf_counter() - tick)
        return statistics.median(samples)

    def train(self, rows: int, length: int) -> float:
        import torch

        from aotp.trainer.loop import autocast_context
        from aotp.trainer.optim import build_optimizer

        key = (rows, length)
        if key not in self.train_times:
            model = self.model
            batch, labels = self._inputs(rows, length)
            optimizer = build_optimizer(model, 1e-7, 0.0)
            trainable = [p for p in model.parameters() if p.requires_grad]

            def step():
                model.train()
                with autocast_context(self.device, self.precision):
                    loss = model.loss(model(**batch), labels)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            self.train_times[key] = self._time(step)
        return self.train_times[key]

    def eval(self, rows: int, length: int) -> float:
        import torch

        from aotp.trainer.loop import autocast_context

        key = (rows, length)
        if key not in self.eval_times:
            batch, _ = self._inputs(rows, length)

            def step():
                self.model.eval()
                with torch.no_grad(), autocast_context(self.device, self.precision):
                    self.model(**batch)

            self.eval_times[key] = self._time(step)
        return self.eval_times[key]


def length_grid(max_length: int) -> list[int]:
    grid = [16, 32, 64, 128, 256, 384, 512]
    return sorted({min(L, max_length) for L in grid} | {max_length})


def interpolated(measure, rows: int, length: int, grid: list[int]) -> float:
    """Linear interpolation of ``measure(rows, L)`` between the grid lengths around ``length``."""
    if length <= grid[0]:
        return measure(rows, grid[0]) * length / grid[0] if length < grid[0] else measure(rows, grid[0])
    for low, high in zip(grid, grid[1:]):
        if length <= high:
            t_low, t_high = measure(rows, low), measure(rows, high)
            return t_low + (t_high - t_low) * (length - low) / (high - low)
    return measure(rows, grid[-1]) * length / grid[-1]


def workload_seconds(timer: StepTimer, workload: Workload, max_length: int) -> tuple[float, float]:
    grid = length_grid(max_length)
    train = sum(interpolated(timer.train, rows, length, grid) for rows, length in workload.train_batches)
    evaluation = workload.evaluations * sum(interpolated(timer.eval, rows, length, grid)
                                            for rows, length in workload.eval_batches)
    return train, evaluation


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.3g}"


def estimate(overrides: list[str], repeats: int = 5, compare: Optional[Path] = None,
             out: Optional[Path] = None) -> dict[str, Any]:
    import torch

    from aotp.assembly import build_model
    from aotp.methods import build_method
    from aotp.models.builders import build_backbone, build_for_timing
    from aotp.results.record import read_record, run_dir_name, run_id
    from aotp.config_checks import check_values
    from aotp.run import compose, to_container
    from aotp.tasks.spec import TaskSpec
    from aotp.trainer.loop import setup_device

    runs, plain = sweep_override_lists(overrides)
    print(f"{len(runs)} runs in the sweep ({' '.join(plain)})", flush=True)
    warnings: list[str] = []
    groups: dict[tuple[str, str], list[tuple[DictConfig, Any]]] = {}
    for run_overrides in runs:
        cfg = compose([*plain, *run_overrides])
        check_values(cfg, paths=False)  # a count or number that cannot parse: refused before any timing
        groups.setdefault((str(cfg.model.name), str(cfg.method.name)), []).append((cfg, TaskSpec.from_config(cfg.task)))

    rows_out: list[dict[str, Any]] = []
    per_run: list[dict[str, Any]] = []
    device_name = None
    for (model_name, method_name), members in groups.items():
        first = members[0][0]
        device = setup_device(first.trainer)  # threads, device and TF32 as the runs set them
        device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type} ({torch.get_num_threads()} threads)"
        tick = time.perf_counter()
        backbone, weights = build_for_timing(first.model)
        model = build_model(backbone, build_method(first.method), "classification", 2).to(device)
        build_seconds = time.perf_counter() - tick
        tokenizer, tokenizer_note = backbone.tokenizer, "the model's"
        if tokenizer is None:  # offline hub model: MiniLM's WordPiece stands in for the lengths
            tokenizer, tokenizer_note = build_backbone(OmegaConf.create({"name": "minilm", "source": "package"})).tokenizer, "MiniLM's (stand-in)"
        timer = StepTimer(model, device, str(first.trainer.precision), int(backbone.model.config.vocab_size), repeats)
        totals = {"runs": 0, "train": 0.0, "eval": 0.0, "build": 0.0}
        bounded: set[str] = set()
        for cfg, spec in members:
            workload = run_workload(cfg, spec, tokenizer, backbone.uses_token_type_ids, warnings)
            if workload is None:
                continue
            if workload.lengths_from != "files":
                bounded.add(spec.full_name)
            train, evaluation = workload_seconds(timer, workload, int(cfg.data.get("max_length") or spec.max_length))
            totals["runs"] += 1
            totals["train"] += train
            totals["eval"] += evaluation
            totals["build"] += build_seconds
            config = to_container(cfg)
            per_run.append({"run_dir": run_dir_name(config, run_id(config)), "task": spec.full_name, "model": model_name,
                            "method": method_name, "seed": int(cfg.seed), "train_examples": workload.train_examples,
                            "estimated_seconds": train + evaluation + build_seconds,
                            "estimated_train_seconds": train, "estimated_eval_seconds": evaluation})
        total = totals["train"] + totals["eval"] + totals["build"]
        rows_out.append({"model": model_name, "method": method_name, "runs": totals["runs"], "weights": weights,
                         "tokenizer": tokenizer_note, "train_hours": totals["train"] / 3600,
                         "eval_hours": totals["eval"] / 3600, "build_hours": totals["build"] / 3600,
                         "total_hours": total / 3600, "max_length_bound_tasks": sorted(bounded)})
        print(f"  {model_name} + {method_name}: {totals['runs']} runs, {hours(total)} h "
              f"(train {hours(totals['train'])}, eval {hours(totals['eval'])}, load {hours(totals['build'])})", flush=True)
        del model, backbone, timer
        if device.type == "cuda":
            torch.cuda.empty_cache()

    result = {"overrides": overrides, "device": device_name, "repeats": repeats, "groups": rows_out,
              "total_hours": sum(r["total_hours"] for r in rows_out), "runs": per_run, "warnings": sorted(set(warnings))}
    if compare is not None:
        measured = []
        for run in per_run:
            record = read_record(Path(compare) / run["run_dir"] / "result.json")
            if record is not None and record.succeeded and record.wall_seconds is not None:
                measured.append((run["estimated_seconds"], float(record.wall_seconds)))
        if measured:
            ratios = [m / e for e, m in measured]
            result["comparison"] = {"records": len(measured), "estimated_hours": sum(e for e, _ in measured) / 3600,
                                    "measured_hours": sum(m for _, m in measured) / 3600,
                                    "median_measured_over_estimated": statistics.median(ratios),
                                    "p10_p90": [float(np.percentile(ratios, 10)), float(np.percentile(ratios, 90))]}
        else:
            result["comparison"] = {"records": 0}
    print(render_markdown(result))
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"Estimate: {out}")
    return result


def render_markdown(result: dict[str, Any]) -> str:
    lines = [f"Estimated compute on {result['device']} (step times: median of {result['repeats']} measured steps)", "",
             "| model | method | runs | train h | eval h | load h | total h | lengths at max_length for |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for row in result["groups"]:
        lines.append(f"| {row['model']} | {row['method']} | {row['runs']} | {row['train_hours']:.3g} | "
                     f"{row['eval_hours']:.3g} | {row['build_hours']:.3g} | {row['total_hours']:.3g} | "
                     f"{', '.join(row['max_length_bound_tasks']) or '-'} |")
    lines.append(f"| **all** | | {sum(r['runs'] for r in result['groups'])} | | | | **{result['total_hours']:.3g}** | |")
    weights = {r["weights"] for r in result["groups"]} | {f"tokenizer: {r['tokenizer']}" for r in result["groups"]}
    lines += ["", "Backbones: " + "; ".join(sorted(weights))]
    comparison = result.get("comparison")
    if comparison and comparison.get("records"):
        low, high = comparison["p10_p90"]
        lines += [f"Against {comparison['records']} records: estimated {comparison['estimated_hours']:.3g} h, measured "
                  f"{comparison['measured_hours']:.3g} h; per run measured/estimated median "
                  f"{comparison['median_measured_over_estimated']:.2f} (p10 {low:.2f}, p90 {high:.2f})"]
    lines += [f"warning: {w}" for w in result["warnings"]]
    return "\n".join(lines)


@guarded
def main(argv: Optional[list[str]] = None) -> int:
    """Refusals (bad flags, an unknown experiment or group choice, an override Hydra cannot compose) are one
    line on stderr, exit 2."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from types import SimpleNamespace

    from aotp.config_checks import check_group_choices

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # as aotp-estimate (console script) as well
    # The estimate's own options; every other key=value is a Hydra override of the sweep (experiment=, model=, ...).
    parser = KeyValueParser("aotp-estimate", __doc__.split("\n\n")[0], [
        Option("repeats", "timed steps per (rows, length), after 2 warm-up steps", 5, int, minimum=1),
        Option("compare", "records folder: set the estimates beside the measured wall times", None, Path,
               nullable=True, metavar="DIR"),
        Option("output", "write the estimate (per run and per group) as JSON", None, Path, nullable=True,
               metavar="FILE", flags=("--out",)),
        Option("budget", "only the disk and memory budget (no timing)", False, bool),
        Option("check_disk", "exit 3 when the disk of this results folder cannot hold the sweep (its runs not yet "
               "done)", None, Path, nullable=True, metavar="DIR"),
        Option("jobs", "runs training at once (checkpoints at peak)", 1, int, minimum=1),
    ], examples=[line.strip() for line in __doc__.split("\n\n")[1].splitlines()],
        passthrough="experiment=<name> [Hydra overrides key=value ...]")
    values, overrides = parser.parse(sys.argv[1:] if argv is None else argv)
    args = SimpleNamespace(**values, out=values["output"])
    if not any(o.split("=", 1)[0] == "experiment" for o in overrides):
        raise UsageError(f"aotp-estimate: expected experiment=<name> and Hydra overrides key=value; got {overrides}. "
                         f"{parser.usage()}")
    if args.compare is not None and not args.compare.is_dir():
        raise UsageError(f"compare={args.compare}: not a folder of run records")
    check_group_choices(overrides)
    from aotp.budget import check_disk, render_budget, sweep_budget

    budget = sweep_budget(overrides, results=args.check_disk, jobs=args.jobs)
    print(render_budget(budget), flush=True)
    if args.check_disk is not None:
        refusal = check_disk(budget, args.check_disk)
        if refusal is not None:
            print(refusal, file=sys.stderr)
            return 3
    if args.budget:
        if args.out is not None:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(budget, indent=2) + "\n")
            print(f"Budget: {args.out}")
        return 0
    print()
    try:
        result = estimate(overrides, repeats=args.repeats, compare=args.compare, out=None)
    except (HydraException, OmegaConfBaseException) as error:  # an override the config cannot take
        raise UsageError(str(error)) from None
    if args.out is not None:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({**result, "budget": budget}, indent=2) + "\n")
        print(f"Estimate: {args.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
