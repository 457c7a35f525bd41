"""Build the SST-2 sample shipped for the offline demo (``data/sst2_sample``).

    python scripts/make_demo_sample.py --source ../shared/data --size 3000

Takes a seeded random subset of GLUE SST-2 train.tsv (rows kept byte for byte, original order) and
the full dev.tsv, in the official layout, so ``data.root=data/sst2_sample`` reads it like the full set.
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path("../shared/data"), help="official-layout data root")
    parser.add_argument("--output", type=Path, default=Path("data/sst2_sample"))
    parser.add_argument("--size", type=int, default=3000, help="training sentences to keep")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    source = args.source / "glue" / "SST-2"
    target = args.output / "glue" / "SST-2"
    target.mkdir(parents=True, exist_ok=True)
    lines = (source / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    keep = sorted(random.Random(args.seed).sample(range(len(rows)), args.size))
    (target / "train.tsv").write_text(header + "".join(rows[i] for i in keep), encoding="utf-8")
    shutil.copyfile(source / "dev.tsv", target / "dev.tsv")
    print(f"wrote {args.size} of {len(rows)} training rows and the full dev set to {target}")


if __name__ == "__main__":
    main()
