#!/usr/bin/env python
"""The training benchmark (code: aotp/bench/train.py): ``make bench-train``, or

    OMP_NUM_THREADS=1 python -m aotp.bench.train data.root=../shared/data      # the committed CPU run

Kept for old command lines (its --flags still work, with a deprecation note); it needs aotp installed.
"""

import sys

from aotp.bench.train import main

if __name__ == "__main__":
    sys.exit(main())
