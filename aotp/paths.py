"""Where aotp finds the data it ships: the Hydra configs (``aotp/configs``) and the published references.

The configs are package data (pyproject ``[tool.setuptools.package-data]``), so an installed wheel carries
them and every module finds them the same way, from a source checkout or a site-packages install, from any
working directory. The repository keeps a ``configs -> aotp/configs`` symlink for the Makefile, the docs
and users' paths. Light on imports: the run id (``aotp.results.record``) reads task files before torch loads.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path


@functools.lru_cache(maxsize=None)
def package_root() -> Path:
    """The installed ``aotp`` package folder (a real folder: pip and editable installs unpack packages, so a
    ``Traversable`` here is always a ``Path``; a zipped install would fail below with a clear message)."""
    root = resources.files("aotp")
    if not isinstance(root, Path):
        raise RuntimeError(f"aotp is installed as {root!r}, not as a folder; install it unzipped (pip install)")
    return root


def config_root() -> Path:
    """The Hydra config folder (``config.yaml`` and one folder per config group)."""
    root = package_root() / "configs"
    if not (root / "config.yaml").is_file():
        raise RuntimeError(f"{root}: the aotp configs are missing (a wheel built without its package data?)")
    return root


def config_dir(*parts: str) -> Path:
    """A folder (or file) under the config root: ``config_dir("task")``, ``config_dir("method", "lora.yaml")``."""
    return config_root().joinpath(*parts)


def references_file() -> Path:
    """The published numbers the tables set beside ours (``aotp/results/references.yaml``)."""
    return package_root() / "results" / "references.yaml"
