"""Score a finished run on a labelled task: its own dev split(s), or a diagnostic set its task can score.

    aotp-evaluate run=<run dir> [task=glue/ax] [data.root=DIR] [data.max_eval_samples=N|null]
                  [output=DIR] [device=auto] [batch_size=N]              (or python -m aotp.evaluate ...)

The run is rebuilt from its record (:func:`aotp.assembly.load_run`): the config in ``result.json`` gives the backbone
(:func:`aotp.models.build_backbone`), the head (:class:`aotp.models.TaskModel` for the trained task) and
the method (:func:`aotp.methods.build_method`, then ``apply``); ``trainable.safetensors`` is loaded with
``method.load_trainable_state_dict``. Without ``task=`` the run's own task is scored on its eval
split(s) with the run's data settings, which reproduces the record's dev metrics;
``data.max_eval_samples=null`` scores the whole split instead (a run trained and selected on a dev
subset, then reported on all of dev), ``=N`` a seeded N-example subset.

Beside the model's metrics the summary gives the task's best constant prediction scored on exactly
the same examples (:func:`aotp.tasks.baselines.constant_baselines`: the majority class, or for
MultiRC "always true"), the bar a trained model must clear, and how clearly the model clears it: the
main-metric difference with a 95% paired-bootstrap interval over the dev units (examples; MultiRC
questions) and the fraction of resamples without a gain (:func:`aotp.metrics.bootstrap.paired_bootstrap`).

Diagnostics (``glue/ax``, ``superglue/axb``, ``superglue/axg``) have no train split; their spec names
the trained tasks that may score them (``diagnostic.scored_with``: MNLI for AX, RTE for AX-b/AX-g).
The model's outputs are mapped from the trained task's label space to the diagnostic's by label name
(MNLI's and AX's label lists are the same names). A run of any other task is refused, naming the
tasks that would do.

Writes ``<output>/<benchmark>-<task>.json`` (metrics, main, label mapping, split sizes, run) and
``<output>/<benchmark>-<task>.<split>.jsonl`` (``idx``, ``prediction``, ``label`` per scored unit);
``output`` defaults to ``<run dir>/evaluations``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

from aotp.assembly import RunError, RunParts, load_run  # noqa: F401  (RunError, load_run: this module's API)
from aotp.cli import KeyValueParser, Option, Refusal

# The options of aotp-evaluate; aotp-predict takes the same but data.max_eval_samples (it predicts whole test splits).
RUN_OPTIONS = (
    Option("run", "a finished run's folder (holding result.json)", required=True, metavar="DIR"),
    Option("task", "score another task the run can score (a diagnostic: glue/ax, superglue/axb, superglue/axg); "
           "default: the run's own", metavar="BENCHMARK/TASK"),
    Option("data.root", "folder of the GLUE/SuperGLUE files (default: the run's data.root)", metavar="DIR"),
    Option("data.max_eval_samples", "N: a seeded N-example subset; null: the whole split (default: the run's "
           "setting)", metavar="N|null"),
    Option("output", "folder of the written files (default: inside the run folder)", metavar="DIR"),
    Option("device", "", "auto", metavar="auto|cpu|cuda|cuda:N|mps"),
    Option("batch_size", "default: the run's trainer.eval_batch_size", None, int, minimum=1),
)
BOOTSTRAP_DRAWS = 1000
# The run's own eval subset (its ``data.max_eval_samples``) unless the caller overrides it.
RUN_SETTING = object()


def label_mapping(trained, target, run_dir: Path | str = "the run") -> Optional[list[int]]:
    """Column order that maps the trained task's scores to ``target``'s labels (None: the same task).

    Refuses (``RunError``) a target the trained task may not score, or label spaces that differ.
    """
    if target.full_name == trained.full_name:
        return None
    scored_with = list((target.diagnostic or {}).get("scored_with") or [])
    if trained.full_name not in scored_with:
        if scored_with:
            raise RunError(f"run {run_dir} was trained on {trained.full_name}; task {target.full_name} is scored with "
                           f"a run of {' or '.join(scored_with)}")
        raise RunError(f"run {run_dir} was trained on {trained.full_name}; it can only score {trained.full_name} or a "
                       f"diagnostic set that lists it, not {target.full_name}")
    if trained.head != "classification" or target.head != "classification":
        raise RunError(f"{target.full_name} from {trained.full_name}: label mapping needs two classification tasks")
    if sorted(trained.label_names) != sorted(target.label_names):
        raise RunError(f"{target.full_name} labels {target.label_names} differ from {trained.full_name} labels "
                       f"{trained.label_names}; cannot map by name")
    return [trained.label_names.index(name) for name in target.label_names]


def target_spec(loaded: RunParts, task: Optional[str]):
    from aotp.tasks.spec import load_spec

    return loaded.spec if not task or task == loaded.spec.full_name else load_spec(task)


def data_root(loaded: RunParts, override: Optional[str]) -> Optional[Path]:
    root = override if override is not None else (loaded.config.get("data") or {}).get("root")
    if root and not Path(root).is_dir():
        from aotp.tasks.loading import DataFileError

        raise DataFileError(f"data.root={root} is not a directory (expected the official layout: glue/<TASK>/..., "
                            f"super_glue/<Task>/...)")
    return Path(root) if root else None


def split_scores(loaded: RunParts, spec, split: str, root: Optional[Path], *, labelled: bool, limit: Optional[int],
                 mapping: Optional[list[int]], batch_size: int):
    """(SplitData, scores in ``spec``'s label order) for one split of ``spec``."""
    from aotp.assembly import cache_dir
    from aotp.tasks.data import load_split
    from aotp.trainer.loop import predict_scores

    data_cfg = loaded.config.get("data") or {}
    split_data = load_split(spec, split, loaded.backbone.tokenizer, root, labelled=labelled, limit=limit,
                            seed=int(data_cfg.get("subset_seed", 0)),
                            max_length=int(data_cfg.get("max_length") or spec.max_length),
                            uses_token_type_ids=loaded.backbone.uses_token_type_ids, cache_dir=cache_dir(loaded.config),
                            pair_encoding=loaded.model.pair_encoding)
    scores = predict_scores(loaded.model, split_data, loaded.collator, batch_size, loaded.device)
    if mapping is not None:
        scores = scores[:, mapping]
    return split_data, scores


def evaluate_run(run_dir: Path | str, task: Optional[str] = None, data_root_override: Optional[str] = None,
                 output: Optional[Path | str] = None, device: str = "auto", batch_size: Optional[int] = None,
                 loaded: Optional[RunParts] = None, max_eval_samples: Any = RUN_SETTING) -> dict[str, Any]:
    """Score ``task`` (default: the run's own task) on its labelled eval split(s); returns the summary.

    ``max_eval_samples``: examples per split for the run's own task (None: all; default: as the run
    was evaluated); a diagnostic set is always scored whole."""
    from aotp.metrics.bootstrap import paired_bootstrap
    from aotp.results.record import write_json_atomic
    from aotp.tasks.baselines import constant_baselines, constant_scores
    from aotp.tasks.formatting import FORMATTERS
    from aotp.tasks.scoring import score_splits, write_predictions

    loaded = loaded or load_run(run_dir, device)
    spec = target_spec(loaded, task)
    mapping = label_mapping(loaded.spec, spec, loaded.run_dir)
    root = data_root(loaded, data_root_override)
    own_task = mapping is None
    if not own_task:
        limit = None
    elif max_eval_samples is RUN_SETTING:
        limit = (loaded.config.get("data") or {}).get("max_eval_samples")
    else:
        limit = max_eval_samples
    batch = int(batch_size or (loaded.config.get("trainer") or {}).get("eval_batch_size") or 128)
    out_dir = Path(output) if output else loaded.run_dir / "evaluations"
    stem = f"{spec.benchmark}-{spec.name}"
    formatter = FORMATTERS.get(spec.formatter)
    sizes, prediction_files, scored_examples, model_predictions = {}, {}, {}, {}
    for split in spec.eval_splits:
        split_data, scores = split_scores(loaded, spec, split, root, labelled=True, limit=limit, mapping=mapping,
                                          batch_size=batch)
        scored_examples[split] = split_data.examples
        formatted = formatter.predictions(spec, split_data.examples, scores)
        model_predictions[split] = formatted
        sizes[split] = len(formatted["predictions"])
        path = out_dir / f"{stem}.{split}.jsonl"
        write_predictions(path, formatted)
        prediction_files[split] = str(path)
    metrics = score_splits(spec, model_predictions)
    baseline = constant_baselines(spec, root, splits=scored_examples)
    pairs = {split: (model_predictions[split],
                     formatter.predictions(spec, examples, constant_scores(spec, examples, baseline["best_index"])))
             for split, examples in scored_examples.items()}
    gain = paired_bootstrap(spec.metrics, spec.main_metric, pairs, draws=BOOTSTRAP_DRAWS)
    summary = {"task": spec.full_name, "task_version": spec.version, "run_dir": str(loaded.run_dir),
               "run_id": loaded.record.run_id, "trained_task": loaded.spec.full_name,
               "label_mapping": None if mapping is None else
               {name: loaded.spec.label_names[column] for name, column in zip(spec.label_names, mapping)},
               "metrics": metrics, "data": sizes, "max_eval_samples": limit,
               "constant_baseline": {"prediction": baseline["best"], "metrics": baseline["best_metrics"]},
               "gain_over_constant": gain,
               "data_root": str(root) if root else None,
               "predictions": prediction_files, "summary_file": str(out_dir / f"{stem}.json")}
    write_json_atomic(out_dir / f"{stem}.json", summary)
    return summary


def run_parser(prog: str, summary: str, examples: tuple[str, ...], exclude: tuple[str, ...] = ()) -> KeyValueParser:
    """The key=value parser of a command that reopens a finished run (``aotp-evaluate``, ``aotp-predict``)."""
    return KeyValueParser(prog, summary, [o for o in RUN_OPTIONS if o.name not in exclude], examples=examples)


PARSER = run_parser("aotp-evaluate", "Score a finished run on its dev split(s) or a diagnostic set.",
                    ("aotp-evaluate run=results/runs/<run>", "aotp-evaluate run=<an MNLI run> task=glue/ax "
                     "data.root=../shared/data", "aotp-evaluate run=<run> data.max_eval_samples=null"))


def cli(action, argv: Optional[list[str]] = None, parser: KeyValueParser = PARSER) -> int:
    """Run ``action(args)``; expected errors print one line and exit 2, as ``aotp.run`` does."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from aotp.cli import EXIT_REFUSED, one_line

    try:
        args, _ = parser.parse(sys.argv[1:] if argv is None else argv)
        action(args)
    except Refusal as error:  # a run error, a data file error, an unknown name: one line
        print(f"Error: {one_line(str(error))}", file=sys.stderr)
        return EXIT_REFUSED
    return 0


def parse_sample_limit(value: str) -> Optional[int]:
    """``data.max_eval_samples=`` value: a positive integer, or ``null``/``none``/``all`` for the whole split."""
    if value.strip().lower() in ("null", "none", "all"):
        return None
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit <= 0:
        raise RunError(f"data.max_eval_samples={value!r}: expected a positive integer, or null for the whole split")
    return limit


def _metrics_text(metrics: dict[str, float]) -> str:
    return f"main={metrics['main']:.4f} (" + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "main") + ")"


def _evaluate_action(args: dict[str, str]) -> None:
    options = {}
    if args["data.max_eval_samples"] is not None:
        options["max_eval_samples"] = parse_sample_limit(args["data.max_eval_samples"])
    summary = evaluate_run(args["run"], task=args.get("task"), data_root_override=args.get("data.root"),
                           output=args.get("output"), device=args["device"],
                           batch_size=args["batch_size"], **options)
    mapping = f" (labels mapped from {summary['trained_task']})" if summary["label_mapping"] else ""
    print(f"{summary['task']} scored with run {summary['run_dir']}{mapping}: {_metrics_text(summary['metrics'])}")
    baseline = summary["constant_baseline"]
    print(f"Constant baseline on the same examples (always {baseline['prediction']!r}): "
          f"{_metrics_text(baseline['metrics'])}")
    gain = summary["gain_over_constant"]
    print(f"Gain in main over it: {gain['delta']:+.4f} (95% paired-bootstrap interval "
          f"[{gain['ci95'][0]:+.4f}, {gain['ci95'][1]:+.4f}] over {' + '.join(map(str, gain['units'].values()))} "
          f"resampled dev units, {gain['draws']} draws; no gain in {gain['p_not_better']:.1%} of them)")
    print(f"Scored {summary['data']}; summary: {summary['summary_file']}")


def main(argv: Optional[list[str]] = None) -> int:
    return cli(_evaluate_action, argv)


if __name__ == "__main__":
    sys.exit(main())
