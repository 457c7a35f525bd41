"""Build the real-data samples shipped for the offline demo (``data/demo``).

    python scripts/make_demo_sample.py data.root=../shared/data

For each task (GLUE SST-2: 3,000 training rows; GLUE CoLA: 2,000) takes a seeded random subset of the
official train.tsv (rows kept byte for byte, in their original order, header kept where the file has
one) and the full dev.tsv, in the official layout, so ``data.root=data/demo`` reads it like the full set.
"""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

from aotp.cli import KeyValueParser, Option, guarded

# task folder -> (training rows kept, whether train.tsv has a header line)
SAMPLES = {"SST-2": (3000, True), "CoLA": (2000, False)}


def sample_task(source: Path, output: Path, task: str, size: int, has_header: bool, seed: int) -> None:
    source_dir, target_dir = source / "glue" / task, output / "glue" / task
    target_dir.mkdir(parents=True, exist_ok=True)
    lines = (source_dir / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    header, rows = (lines[:1], lines[1:]) if has_header else ([], lines)
    keep = sorted(random.Random(seed).sample(range(len(rows)), size))
    (target_dir / "train.tsv").write_text("".join(header) + "".join(rows[i] for i in keep), encoding="utf-8")
    shutil.copyfile(source_dir / "dev.tsv", target_dir / "dev.tsv")
    print(f"{task}: kept {size} of {len(rows)} training rows and the full dev set in {target_dir}")


@guarded
def main() -> None:
    args, _ = KeyValueParser("scripts/make_demo_sample.py", __doc__.split("\n\n")[0], [
        Option("data.root", "official-layout data root", Path("../shared/data"), Path, metavar="DIR", flags=("--source",)),
        Option("output", "", Path("data/demo"), Path, metavar="DIR"),
        Option("seed", "", 0, int),
    ]).parse(sys.argv[1:])
    for task, (size, has_header) in SAMPLES.items():
        sample_task(args["data.root"], args["output"], task, size, has_header, args["seed"])


if __name__ == "__main__":
    main()
