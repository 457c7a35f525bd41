"""Leaderboard submission files: test-set predictions of a finished run in the official format.

    aotp-predict run=<run dir> [task=<diagnostic>] [data.root=DIR] [output=DIR] [device=auto] [batch_size=N]
    (or python -m aotp.predict ...)

The model is rebuilt as in :mod:`aotp.evaluate`; every test split of the task (default: the run's
own task; ``task=glue/ax`` with an MNLI run, ``superglue/axb``/``axg`` with an RTE run) is predicted
and written where ``submission.files`` says, under ``output`` (default ``<run dir>/submission``):

- GLUE (``glue_tsv``): ``<TASK>.tsv`` with a header ``index<TAB>prediction`` and one line per test
  example: label names for MNLI (``MNLI-m.tsv``, ``MNLI-mm.tsv``), QNLI, RTE and AX; 0/1 for CoLA,
  SST-2, MRPC, QQP and WNLI; floats (3 decimals, clipped to [0, 5]) for STS-B.
- SuperGLUE (``superglue_jsonl``): ``<Task>.jsonl`` with one ``{"idx": ..., "label": ...}`` per line
  (BoolQ/WiC ``"true"``/``"false"``, WSC ``"True"``/``"False"``, CB/RTE/AX-b/AX-g label names, COPA
  0/1, ReCoRD the predicted entity string per query idx), MultiRC nested
  ``{"idx": p, "passage": {"questions": [{"idx": q, "answers": [{"idx": a, "label": 0/1}]}]}}``.

Every file is read back after writing and checked against the number of test units.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

from aotp.evaluate import RunError, cli, data_root, label_mapping, load_run, run_parser, split_scores, target_spec

PARSER = run_parser("aotp-predict", "Leaderboard submission files: a finished run's test-set predictions.",
                    ("aotp-predict run=results/runs/<run> data.root=../shared/data",
                     "aotp-predict run=<an RTE run> task=superglue/axb output=submission"),
                    exclude=("data.max_eval_samples",))


def write_submission(spec, rows: list[dict[str, Any]], path: Path) -> None:
    """Write one leaderboard file (atomically) in ``spec.submission.format``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fmt = spec.submission["format"]
    with open(temporary, "w", encoding="utf-8", newline="\n") as handle:
        if fmt == "glue_tsv":
            handle.write("index\tprediction\n")
            for row in rows:
                label = row["label"]
                value = f"{label:.3f}" if isinstance(label, float) else str(label)
                handle.write(f"{row['idx']}\t{value}\n")
        else:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
    os.replace(temporary, path)


def read_submission(spec, path: Path) -> list[dict[str, Any]]:
    """Parse a leaderboard file back into rows (``{"idx", "label"}``; MultiRC rows stay nested).

    Raises ``ValueError`` naming the file and line when a line is malformed.
    """
    rows = []
    fmt = spec.submission["format"]
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    if fmt == "glue_tsv":
        if not lines or lines[0] != "index\tprediction":
            raise ValueError(f"{path}:1: expected the header 'index<TAB>prediction', found {lines[:1]}")
        kind = spec.submission.get("labels", "names")
        for number, line in enumerate(lines[1:], start=2):
            parts = line.split("\t")
            if len(parts) != 2:
                raise ValueError(f"{path}:{number}: expected 2 tab-separated columns, found {len(parts)}")
            index, value = parts
            label: Any = float(value) if kind == "float" else int(value) if kind == "ids" else value
            rows.append({"idx": int(index) if index.lstrip("-").isdigit() else index, "label": label})
    else:
        for number, line in enumerate(lines, start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error.msg.removesuffix(' at')} at column {error.colno})") from None
            if not isinstance(row, dict) or "idx" not in row or ("label" not in row and "passage" not in row):
                raise ValueError(f"{path}:{number}: expected an object with idx and label (or passage), found {row!r}")
            rows.append(row)
    return rows


def _count_units(rows: list[dict[str, Any]]) -> int:
    """Scored units in submission rows: answer options for MultiRC, lines otherwise."""
    if rows and "passage" in rows[0]:
        return sum(len(q["answers"]) for row in rows for q in row["passage"]["questions"])
    return len(rows)


def predict_run(run_dir: Path | str, task: Optional[str] = None, data_root_override: Optional[str] = None,
                output: Optional[Path | str] = None, device: str = "auto", batch_size: Optional[int] = None,
                loaded=None) -> dict[str, dict[str, Any]]:
    """Write the submission file(s) of ``task``'s test split(s); returns ``{split: {path, rows, units}}``."""
    from aotp.tasks.formatting import FORMATTERS

    loaded = loaded or load_run(run_dir, device)
    spec = target_spec(loaded, task)
    if not spec.submission:
        raise RunError(f"task {spec.full_name} has no submission format ({spec.config_file} lacks `submission:`)")
    mapping = label_mapping(loaded.spec, spec, loaded.run_dir)
    root = data_root(loaded, data_root_override)
    batch = int(batch_size or (loaded.config.get("trainer") or {}).get("eval_batch_size") or 128)
    out_dir = Path(output) if output else loaded.run_dir / "submission"
    formatter = FORMATTERS.get(spec.formatter)
    written = {}
    for split in spec.test_splits:
        split_data, scores = split_scores(loaded, spec, split, root, labelled=False, limit=None, mapping=mapping,
                                          batch_size=batch)
        formatted = formatter.predictions(spec, split_data.examples, scores)
        rows = formatter.submission_rows(spec, formatted)
        path = out_dir / spec.submission["files"][split]
        write_submission(spec, rows, path)
        back = read_submission(spec, path)
        expected = len(formatted["predictions"])
        if len(back) != len(rows) or _count_units(back) != expected:
            raise RuntimeError(f"{path}: read back {len(back)} rows / {_count_units(back)} predictions, "
                               f"wrote {len(rows)} rows for {expected} test units")
        written[split] = {"path": str(path), "rows": len(rows), "units": expected}
    return written


def _predict_action(args: dict[str, str]) -> None:
    written = predict_run(args["run"], task=args.get("task"), data_root_override=args.get("data.root"),
                          output=args.get("output"), device=args["device"], batch_size=args["batch_size"])
    for split, facts in written.items():
        print(f"{split}: {facts['rows']} rows ({facts['units']} predictions) -> {facts['path']}")


def main(argv: Optional[list[str]] = None) -> int:
    return cli(_predict_action, argv, PARSER)


if __name__ == "__main__":
    sys.exit(main())
