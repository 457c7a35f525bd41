#!/usr/bin/env python
"""The inference benchmark: the ``aotp-bench`` command (code: aotp/bench/__main__.py, aotp/bench/inference.py).

    aotp-bench [key=value ...]          (= make bench; see aotp-bench --help)

Kept for old command lines (its --flags still work, with a deprecation note); it needs aotp installed.
"""

import sys

from aotp.bench.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
