"""``aotp-inference run=[RUN_DIR,...]`` (or ``python -m aotp.inference``): serve finished AoT runs on one backbone.

Reads JSON lines (``input=``, default stdin), one record per line naming its task and carrying the
task's text fields, e.g. ``{"task": "sst2", "sentence": "a gripping film"}`` or
``{"task": "rte", "sentence1": "...", "sentence2": "...", "id": 7}`` (multiple-choice tasks:
``"choices": [...]``). Writes one JSON line per record (``output=``, default stdout), in input
order: ``{"task", "prediction", "logits", "id"?}``. Records are batched ``batch_size`` at a time,
tasks mixed freely within a batch.
"""

from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace
from typing import Optional, Sequence

from aotp.cli import KeyValueParser, Option, UsageError, guarded

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


PARSER = KeyValueParser("aotp-inference", __doc__.split("\n\n")[0].replace("``", ""), [
    Option("run", "finished AoT run folders (result.json + inference/)", required=True, many=True, metavar="DIR",
           flags=("--runs",)),
    Option("names", "task names to use instead of config.task.name, one per run", many=True, nullable=True),
    Option("input", "JSON-lines file of records (-: stdin)", "-", metavar="FILE"),
    Option("output", "JSON-lines file of predictions (-: stdout)", "-", metavar="FILE"),
    Option("batch_size", "", 32, int, minimum=1),
    Option("max_length", "truncate token sequences to this length (default: each task spec's max_length, else 512)",
           None, int, nullable=True, minimum=1),
    Option("device", "", "cpu", metavar="cpu|cuda|cuda:N|mps|auto"),
    Option("table_dtype", "dtype of each task's |V| x L x d table in memory, materialised from the run's saved "
           "reparametrization (default: the run's method.options.table_dtype)", None, choices=("fp32", "fp16", "bf16"),
           nullable=True),
    Option("threads", "torch CPU threads (default: torch's)", None, int, nullable=True, minimum=1),
], examples=["aotp-inference run=[results/runs/<sst2 run>,results/runs/<rte run>] < records.jsonl > predictions.jsonl",
             "aotp-inference run=<run> input=records.jsonl output=predictions.jsonl table_dtype=bf16"])


def parse_args(argv: Optional[Sequence[str]] = None) -> SimpleNamespace:
    args, _ = PARSER.parse(sys.argv[1:] if argv is None else argv)
    return SimpleNamespace(runs=args["run"], **{k: v for k, v in args.items() if k != "run"})


def read_records(handle, source: str, task_names: Sequence[str]):
    for line_number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            from aotp.tasks.loading import describe_json_error

            raise UsageError(f"{source}:{line_number}: {describe_json_error(error, line, last_line=False)}") from None
        if not isinstance(record, dict) or "task" not in record:
            raise UsageError(f"{source}:{line_number}: each line must be a JSON object with a 'task' key")
        if record["task"] not in task_names:
            raise UsageError(f"{source}:{line_number}: unknown task {record['task']!r}; loaded tasks: {', '.join(task_names)}")
        yield line_number, record


@guarded
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Serve the runs; a refusal (bad flag, unusable run, bad input line) is one line on stderr, exit 2."""
    args = parse_args(argv)
    from aotp.config_checks import check_device

    check_device("device", args.device)
    if args.input != "-" and not os.path.isfile(args.input):
        raise UsageError(f"input={args.input}: no such file")
    import torch

    from aotp.inference.model import MultiTaskModel

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model = MultiTaskModel.from_runs(args.runs, names=args.names, device=args.device,
                                          table_dtype=args.table_dtype)
    except (FileNotFoundError, ValueError) as error:  # not a finished AoT run, mismatched backbones, bad names=
        raise UsageError(str(error)) from None
    source = "<stdin>" if args.input == "-" else args.input
    in_handle = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")
    try:
        out_handle = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    except OSError as error:
        raise UsageError(f"output={args.output}: {error.strerror}") from None
    try:
        batch: list[tuple[int, dict]] = []

        def flush():
            try:
                predictions = model.predict([r for _, r in batch], max_length=args.max_length)
            except (KeyError, ValueError) as error:
                lines = f"{batch[0][0]}-{batch[-1][0]}"
                raise UsageError(f"{source}:{lines}: {error}") from None
            for prediction in predictions:
                out_handle.write(json.dumps(prediction) + "\n")
            batch.clear()

        for line_number, record in read_records(in_handle, source, model.task_names):
            batch.append((line_number, record))
            if len(batch) >= args.batch_size:
                flush()
        if batch:
            flush()
    finally:
        if in_handle is not sys.stdin:
            in_handle.close()
        if out_handle is not sys.stdout:
            out_handle.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
