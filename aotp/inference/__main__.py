"""``python -m aotp.inference --runs RUN_DIR [RUN_DIR ...]``: serve finished AoT runs on one backbone.

Reads JSON lines (``--input``, default stdin), one record per line naming its task and carrying the
task's text fields, e.g. ``{"task": "sst2", "sentence": "a gripping film"}`` or
``{"task": "rte", "sentence1": "...", "sentence2": "...", "id": 7}`` (multiple-choice tasks:
``"choices": [...]``). Writes one JSON line per record (``--output``, default stdout), in input
order: ``{"task", "prediction", "logits", "id"?}``. Records are batched ``--batch-size`` at a time,
tasks mixed freely within a batch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

from aotp.cli import ArgumentParser, UsageError, guarded

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m aotp.inference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="run directories (result.json + inference/)")
    parser.add_argument("--names", nargs="+", help="task names to use instead of config.task.name, one per run")
    parser.add_argument("--input", default="-", help="JSON-lines file of records (default: stdin)")
    parser.add_argument("--output", default="-", help="JSON-lines file of predictions (default: stdout)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=None,
                        help="truncate token sequences to this length (default: each task spec's max_length, else 512)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--table-dtype", choices=("fp32", "fp16", "bf16"), default=None,
                        help="dtype of each task's |V| x L x d table in memory, materialised from the run's saved "
                             "reparametrization (default: the run's method.options.table_dtype)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    for flag, value in (("--batch-size", args.batch_size), ("--max-length", args.max_length), ("--threads", args.threads)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be a positive integer, got {value}")
    return args


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

    check_device("--device", args.device)
    if args.input != "-" and not os.path.isfile(args.input):
        raise UsageError(f"--input {args.input}: no such file")
    import torch

    from aotp.inference.model import MultiTaskModel

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model = MultiTaskModel.from_runs(args.runs, names=args.names, device=args.device,
                                          table_dtype=args.table_dtype)
    except (FileNotFoundError, ValueError) as error:  # not a finished AoT run, mismatched backbones, bad --names
        raise UsageError(str(error)) from None
    source = "<stdin>" if args.input == "-" else args.input
    in_handle = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")
    try:
        out_handle = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    except OSError as error:
        raise UsageError(f"--output {args.output}: {error.strerror}") from None
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
