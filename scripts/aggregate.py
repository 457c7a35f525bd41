#!/usr/bin/env python
"""Run records -> comparison tables, plots and warnings (code: aotp/results/aggregate.py).

    python scripts/aggregate.py --results results/runs --out results/tables [--experiment NAME] [--wandb]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aotp.results.aggregate import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
