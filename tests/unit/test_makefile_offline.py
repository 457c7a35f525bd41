"""Offline by default only for the tests, the demo and the benchmarks (issue 26, item 8): a first
``make reproduce`` on a connected box downloads its checkpoints and datasets, and SLURM jobs inherit that.

``make`` runs here with ``VENV`` pointing at a fake venv whose ``python`` prints the two switches as it sees
them, so the recipe's real environment is what is checked (no training, no install)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests import helpers
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")

FAKE_PYTHON = """#!/bin/sh
echo "seen: HF_HUB_OFFLINE=${HF_HUB_OFFLINE-unset} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE-unset}"
"""


@pytest.fixture
def fake_venv(tmp_path):
    return helpers.fake_venv(tmp_path, FAKE_PYTHON)  # installed after pyproject.toml: make runs no install


def make(target: list[str], venv, **env) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "MAKEFLAGS")}
    result = subprocess.run(["make", "-s", "-C", str(REPO_ROOT), *target, f"VENV={venv}"], env={**base, **env},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_sweep_is_online_unless_the_user_says_otherwise(fake_venv):
    sweep = ["reproduce", "EXPERIMENT=smoke_tiny", "DISK_CHECK=0"]
    assert "seen: HF_HUB_OFFLINE=unset HF_DATASETS_OFFLINE=unset" in make(sweep, fake_venv)
    assert "seen: HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1" in make(sweep, fake_venv, HF_HUB_OFFLINE="1",
                                                                    HF_DATASETS_OFFLINE="1")


@pytest.mark.parametrize("target", ["test", "demo"])
def test_tests_and_the_demo_are_offline_by_default(fake_venv, target):
    assert "seen: HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1" in make([target], fake_venv)
