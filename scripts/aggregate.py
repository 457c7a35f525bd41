#!/usr/bin/env python
"""Run records -> comparison tables, plots and warnings: the ``aotp-tables`` command (code: aotp/results/aggregate.py).

    aotp-tables results=results/runs output=results/tables [experiment=NAME] [wandb=true]      (= make tables)

Kept for old command lines; it needs aotp installed (``make install``), as every command does.
"""

from aotp.results.aggregate import main

if __name__ == "__main__":
    raise SystemExit(main())
