"""CI runs both resolves (README "Support matrix"): ``make test`` in today's venv, then ``make test-current`` in the
current-majors venv, and a pytest that ran no test (exit 5) fails CI.

``make`` runs here with ``VENV`` / ``CURRENT_VENV`` pointing at a fake venv whose ``python`` records its arguments
and the offline switches, and exits with the status a test sets for pytest; nothing is installed or trained."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests import helpers
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")

FAKE_PYTHON = """#!/bin/sh
echo "python $* | HF_HUB_OFFLINE=${HF_HUB_OFFLINE-unset} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE-unset}"
if [ "$1" = "-m" ] && [ "$2" = "pytest" ]; then exit "${FAKE_PYTEST_STATUS:-0}"; fi
exit 0
"""


@pytest.fixture
def fake_venv(tmp_path):
    return helpers.fake_venv(tmp_path, FAKE_PYTHON)  # installed after pyproject.toml: make runs no install


def make(target: str, venv, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "MAKEFLAGS")}
    return subprocess.run(["make", "-s", "-C", str(REPO_ROOT), target, f"VENV={venv}", f"CURRENT_VENV={venv}"],
                          env={**base, **env}, capture_output=True, text=True, timeout=60)


def test_the_current_majors_run_is_offline_and_selects_its_marked_tests(fake_venv):
    result = make("test-current", fake_venv)
    assert result.returncode == 0, result.stderr
    (pytest_line,) = [line for line in result.stdout.splitlines() if line.startswith("python -m pytest")]
    assert '-m current_majors or not (slow or gpu)' in pytest_line
    for path in ("tests/unit/test_methods_matrix.py", "tests/unit/test_tasks_loading.py",
                 "tests/integration/test_standin_hub.py", "tests/integration/test_standin_datasets.py",
                 "tests/integration/test_support_matrix.py", "tests/integration/test_current_majors_minilm.py"):
        assert path in pytest_line and (REPO_ROOT / path).is_file(), path
    assert pytest_line.endswith("HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1")


@pytest.mark.parametrize("target", ["test", "test-current"])
@pytest.mark.parametrize("status", [1, 5])
def test_a_failing_or_empty_pytest_run_fails_the_target(fake_venv, target, status):
    """pytest exits 5 when no test ran; make passes that on as a failure (and .ci/run stops on it)."""
    result = make(target, fake_venv, FAKE_PYTEST_STATUS=str(status))
    assert result.returncode != 0 and f"Error {status}" in result.stderr


def test_ci_runs_both_resolves_in_order_and_stops_on_any_failure():
    script = (REPO_ROOT / ".ci" / "run").read_text()
    commands = [line.strip() for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert "set -euo pipefail" in commands
    assert commands.index("make test") < commands.index("make test-current")
    assert "|| true" not in script and "|| :" not in script
