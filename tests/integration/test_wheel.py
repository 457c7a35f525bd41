"""The built wheel, installed non-editable in a fresh venv, runs from a folder outside the repository.

The fresh venv borrows the dependencies (torch, transformers, hydra ...) of the interpreter running the tests
instead of downloading them: a ``deps.pth`` file in its site-packages names the running interpreter's
site-packages folder(s). A path line in a ``.pth`` file only extends ``sys.path``; the ``.pth`` files
*inside* the named folder are not processed, so an editable install of aotp there (whose finder a ``.pth``
file installs) stays inactive, and the venv's own site-packages comes first on ``sys.path``: ``import aotp``
can only find the installed wheel. The test asserts it (``aotp.__file__`` lies in the new venv). pip
installs the wheel before ``deps.pth`` exists, with ``--no-deps --no-index``, so it neither sees nor
touches the borrowed folder. The wheel is built from a copy of the sources (setuptools writes ``build/``
and ``*.egg-info`` beside the project), with no build isolation (nothing downloaded).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.helpers import FIXTURE_DATA, REPO_ROOT

SOURCES = ("pyproject.toml", "README.md", "LICENSE")


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    process = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=600, **kwargs)
    assert process.returncode == 0, f"{command}: exit {process.returncode}\n{process.stdout[-3000:]}\n{process.stderr[-3000:]}"
    return process


def build_wheel(tmp_path: Path) -> Path:
    pytest.importorskip("setuptools")
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        shutil.copy2(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "aotp", source / "aotp", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "-w", tmp_path / "dist", source])
    (wheel,) = (tmp_path / "dist").glob("aotp-*.whl")
    return wheel


def test_wheel_installs_and_runs_outside_the_repository(tmp_path):
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    configs = {f"aotp/configs/{p.relative_to(REPO_ROOT / 'aotp' / 'configs').as_posix()}"
               for p in (REPO_ROOT / "aotp" / "configs").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert "aotp/configs/config.yaml" in configs and not configs - set(names), sorted(configs - set(names))
    assert "aotp/results/references.yaml" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for command in ("aotp-run", "aotp-evaluate", "aotp-predict", "aotp-inference", "aotp-estimate", "aotp-tables",
                    "aotp-bench"):
        assert f"{command} = " in entry_points

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    # The running pip installs into the new venv (pip --python): the venv needs no pip of its own.
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--quiet", wheel])
    purelib = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    borrowed = [p for p in {sysconfig.get_path("purelib"), sysconfig.get_path("platlib"), *site.getsitepackages()}
                if Path(p).is_dir()]
    (purelib / "deps.pth").write_text("".join(f"{p}\n" for p in sorted(borrowed)))

    outside = tmp_path / "elsewhere"  # no configs/, no aotp/ here: only what the wheel installed
    outside.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false")
    where = run([python, "-c", "import aotp, aotp.paths as p; print(aotp.__file__, p.config_root(), p.references_file())"],
                cwd=outside, env=env).stdout.split()
    assert len(where) == 3 and Path(where[2]).is_file()
    assert all(Path(p).is_relative_to(purelib) for p in where), f"imported {where}, not the wheel in {purelib}"

    results = outside / "runs"
    process = run([venv / "bin" / "aotp-run", "model=tiny_bert", "task=glue/rte", "trainer.max_steps=2",
                   f"data.root={FIXTURE_DATA}", f"paths.results={results}", "paths.cache=cache"], cwd=outside, env=env)
    (record,) = results.glob("*/result.json")
    assert '"status": "success"' in record.read_text(), process.stdout[-2000:]
    help_text = run([venv / "bin" / "aotp-run", "--help"], cwd=outside, env=env).stdout
    assert "aotp-run model=" in help_text and "specialize" not in help_text
