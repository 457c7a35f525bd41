"""Helpers shared by tests: compose configs in process and run the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE_DATA = REPO_ROOT / "tests" / "fixtures" / "data"


def compose(overrides: list[str]):
    from aotp.run import compose as run_compose

    return run_compose(overrides)


def run_cli(args: list[str], timeout: int = 300, module: str = "aotp.run",
            env_overrides: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for key, value in (env_overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
