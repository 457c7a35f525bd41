"""Helpers of ``make gpu-bundle`` (scripts/gpu_bundle.sh) and ``scripts/gpu_check.sh`` (README "The GPU check").

    python scripts/gpu_check.py manifest BUNDLE              # bundle side: requirements checked, manifest.json, SHA256SUMS
    python scripts/gpu_check.py data SOURCE OUT              # bundle side: GLUE SST-2 files of >= 128-token examples
    python scripts/gpu_check.py env OUT.json SITE BUNDLE     # check side: what is imported from where, requirements met
    python scripts/gpu_check.py table OUT.json DEVICE MODEL  # check side: the full fp32 AoT table materialised, timed
    python scripts/gpu_check.py summary WORK OUT.json        # check side: every record -> one summary, exit 1 on a failure

The GPU machine (the device tool's KINDS.md) has Python 3.12, a CUDA torch and a set of packages, some in versions
aotp cannot use (transformers 5.x, tokenizers 0.23, huggingface_hub 1.x), no package registry and no hub. The bundle
carries the wheels aotp needs besides those the image has in a version that satisfies every requirement; ``IMAGE``
below is what the image was seen to hold (KINDS.md, 2026-11), and ``env`` checks the same requirements against what
is really importable on the machine. Only the standard library is imported at module level (``packaging`` for the
requirement checks is on the image and in .venv).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE_LIMIT_BYTES = 50 * 2**20
PYTHON = "3.12"  # the GPU image's Python (3.12.3): markers are evaluated for it
# the wheel platforms pip downloads for (the device tool's README); a wheel must carry one of them, or be pure
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")

# The GPU image's Python packages that matter to aotp and the bundle (KINDS.md: versions where a session read them,
# None where only the name is listed). The bundle carries a package only when this version fails a requirement.
IMAGE = {
    "torch": "2.11.0", "transformers": "5.17.0", "tokenizers": "0.23.2", "huggingface-hub": "1.33.0",
    "numpy": "2.5.2", "safetensors": "0.8.0", "sentencepiece": "0.2.2", "accelerate": "1.15.0",
    "scipy": None, "scikit-learn": None, "pyyaml": None, "tqdm": None, "protobuf": None, "packaging": None,
    "filelock": None, "fsspec": None, "hf-xet": None, "regex": None, "requests": None, "typing-extensions": None,
    "matplotlib": None, "pytest": None, "pytest-timeout": None, "pluggy": None, "iniconfig": None, "psutil": None,
}
# aotp requirements deliberately not carried, and why (the check never imports them).
NOT_CARRIED = {
    "torch": "the machine's CUDA torch is used as it is (its version is recorded; aotp pins 2.13.0 for .venv only)",
    "datasets": "imported only to load a task from the hub (no data.root); the check reads local GLUE files",
    "wandb": "imported only with logger=wandb; the check uses logger=jsonl",
}
# Importable names of the distributions the check verifies on the machine (env).
IMPORT_NAMES = {"transformers": "transformers", "tokenizers": "tokenizers", "huggingface-hub": "huggingface_hub",
                "adapters": "adapters", "hydra-core": "hydra", "omegaconf": "omegaconf",
                "antlr4-python3-runtime": "antlr4", "safetensors": "safetensors", "numpy": "numpy", "torch": "torch",
                "scipy": "scipy", "scikit-learn": "sklearn", "sentencepiece": "sentencepiece", "yaml": "yaml"}


def canonical(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wheel_metadata(path: Path) -> dict:
    """name, version, tags and Requires-Dist of a wheel, from its METADATA and WHEEL files."""
    from email.parser import Parser

    with zipfile.ZipFile(path) as archive:
        dist_info = next(n.split("/")[0] for n in archive.namelist() if n.split("/")[0].endswith(".dist-info"))
        meta = Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
        wheel = Parser().parsestr(archive.read(f"{dist_info}/WHEEL").decode())
    return {"name": canonical(meta["Name"]), "version": meta["Version"], "tags": wheel.get_all("Tag") or [],
            "requires": meta.get_all("Requires-Dist") or []}


def requirement_applies(requirement, python: str = PYTHON) -> bool:
    """Runtime requirements only: no extra, markers evaluated for CPython ``python`` on Linux x86_64."""
    if requirement.marker is None:
        return True
    environment = {"python_version": python, "python_full_version": python + ".3", "sys_platform": "linux",
                   "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                   "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
    return requirement.marker.evaluate(environment)


def check_requirements(owners: dict[str, list[str]], available: dict[str, tuple[str | None, str]],
                       python: str = PYTHON) -> list[dict]:
    """For each ``owner -> [requirement strings]``: which available distribution meets it.
    ``available``: canonical name -> (version or None when unknown, where it comes from). An unmet entry has
    ``met: False`` and says why."""
    from packaging.requirements import Requirement

    rows = []
    for owner, strings in owners.items():
        for text in strings:
            requirement = Requirement(text)
            if not requirement_applies(requirement, python):
                continue
            name = canonical(requirement.name)
            row = {"of": owner, "requirement": str(requirement), "name": name}
            if name in NOT_CARRIED and owner == "aotp":
                row.update(met=True, by="not carried: " + NOT_CARRIED[name])
            elif name not in available:
                row.update(met=False, by="missing: neither in the bundle nor on the image")
            else:
                version, source = available[name]
                if version is None:
                    row.update(met=True, by=f"{source} (version not recorded: the name is listed)")
                else:
                    ok = requirement.specifier.contains(version, prereleases=True)
                    row.update(met=ok, by=f"{source} {name} {version}" + ("" if ok else " does not satisfy it"))
            rows.append(row)
    return rows


# the extras the check uses: pytest for `pytest -m gpu`, AdapterHub for the adapter and P-Tuning v2 methods
CHECK_EXTRAS = ("test", "adapterhub")


def aotp_requirements() -> list[str]:
    """aotp's runtime requirements and those of the extras the check uses (pyproject.toml)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies") or {}
    return list(project["dependencies"]) + [r for name in CHECK_EXTRAS for r in extras.get(name, [])]


# --------------------------------------------------------------------------- manifest (bundle side)


def cmd_manifest(bundle: str) -> int:
    """Check that the bundle's wheels + the image meet every runtime requirement of aotp and of the wheels (one
    version of each package, Python 3.12 tags), then write manifest.json and SHA256SUMS."""
    from packaging.tags import compatible_tags, cpython_tags

    bundle = Path(bundle)
    wheels = sorted((bundle / "wheels").glob("*.whl"))
    metas = {path: wheel_metadata(path) for path in wheels}
    names = [m["name"] for m in metas.values()]
    problems = [f"two versions of {n} in the bundle" for n in sorted(set(names)) if names.count(n) > 1]
    py312 = {str(t) for t in list(cpython_tags((3, 12), platforms=PLATFORMS))
             + list(compatible_tags((3, 12), "cp312", platforms=PLATFORMS))}
    for path, meta in metas.items():
        if not any(tag in py312 for tag in meta["tags"]):
            problems.append(f"{path.name}: tags {meta['tags']} do not install on CPython 3.12 manylinux x86_64")
    available = {name: (version, "image") for name, version in IMAGE.items()}
    available.update({m["name"]: (m["version"], "bundle") for m in metas.values()})
    owners = {"aotp": aotp_requirements(), **{f"{m['name']} {m['version']}": m["requires"] for m in metas.values()}}
    rows = check_requirements(owners, available)
    problems += [f"{r['of']} needs {r['requirement']}: {r['by']}" for r in rows if not r["met"]]
    # why each wheel is carried: the image lacks it, or its version there fails a requirement
    image_fails = check_requirements(owners, {n: (v, "image") for n, v in IMAGE.items() if v is not None})
    reasons = {}
    for meta in metas.values():
        failing = [r for r in image_fails if r["name"] == meta["name"] and not r["met"]]
        if meta["name"] not in IMAGE:
            reasons[meta["name"]] = "not on the image"
        elif failing:
            reasons[meta["name"]] = (f"the image's {IMAGE[meta['name']]} fails: "
                                     + "; ".join(f"{r['of']} needs {r['requirement']}" for r in failing))
        else:
            reasons[meta["name"]] = "on the image in a version that was not recorded"
    data = sorted(p for p in (bundle / "data").rglob("*") if p.is_file()) if (bundle / "data").is_dir() else []
    files = wheels + data
    total = sum(p.stat().st_size for p in files)
    if total > BUNDLE_LIMIT_BYTES:
        problems.append(f"the bundle holds {total / 2**20:.1f} MiB, over its {BUNDLE_LIMIT_BYTES / 2**20:.0f} MiB limit")
    try:  # the versions the test suite runs against, for comparison
        from importlib import metadata

        local = {m["name"]: metadata.version(m["name"]) for m in metas.values()}
    except Exception:  # noqa: BLE001 - a python without them
        local = {}
    manifest = {
        "what": "wheels and data for scripts/gpu_check.sh on a bare CUDA machine (README 'The GPU check')",
        "python": PYTHON, "platforms": list(PLATFORMS),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wheels": [{"file": p.name, "name": metas[p]["name"], "version": metas[p]["version"], "tags": metas[p]["tags"],
                    "sha256": sha256(p), "bytes": p.stat().st_size,
                    "source": "built here from the sdist (pip wheel)" if p.name.startswith("antlr4") else "PyPI wheel",
                    "why": reasons[metas[p]["name"]], "version_in_this_python": local.get(metas[p]["name"])}
                   for p in wheels],
        "data": [{"file": str(p.relative_to(bundle)), "sha256": sha256(p), "bytes": p.stat().st_size} for p in data],
        "total_bytes": total,
        "image_assumed": IMAGE,
        "not_carried": NOT_CARRIED,
        "requirements": rows,
        "problems": problems,
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (bundle / "SHA256SUMS").write_text("".join(f"{sha256(p)}  {p.relative_to(bundle)}\n" for p in files))
    for wheel in manifest["wheels"]:
        print(f"  {wheel['file']:<78} {wheel['bytes'] / 2**20:6.2f} MiB  ({wheel['why']})")
    print(f"  data: {len(data)} files, {sum(p.stat().st_size for p in data) / 2**20:.2f} MiB")
    print(f"bundle: {len(wheels)} wheels + data, {total / 2**20:.1f} MiB ({total:,} bytes)")
    for problem in problems:
        print(f"Error: {problem}", file=sys.stderr)
    return 1 if problems else 0


# --------------------------------------------------------------------------- data (bundle side)


def cmd_data(source: str, out: str, train_rows: int = 2048, dev_rows: int = 512, min_words: int = 160) -> int:
    """glue/SST-2/{train,dev}.tsv whose every example is at least ``min_words`` words (> 128 tokens for any
    subword tokenizer), so that a batch at data.max_length=128 is exactly B x 128 tokens (SST-2 sentences
    are ~20 tokens: length-grouped batches of them would time a much shorter sequence). Each example is
    consecutive sentences of data/demo's real SST-2 rows, labelled with its first sentence's label."""
    def rows(path: Path) -> list[tuple[str, str]]:
        lines = path.read_text(encoding="utf-8").splitlines()[1:]
        return [(cells[0].strip(), cells[1].strip()) for cells in (line.split("\t") for line in lines) if len(cells) >= 2]

    folder = Path(out) / "glue" / "SST-2"
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train_rows), ("dev", dev_rows)):
        sentences = rows(Path(source) / "glue" / "SST-2" / f"{split}.tsv")
        lines = ["sentence\tlabel"]
        for index in range(count):
            start = (index * 7) % len(sentences)
            words, label, offset = [], sentences[start][1], 0
            while len(words) < min_words:
                words += sentences[(start + offset) % len(sentences)][0].split()
                offset += 1
            lines.append(" ".join(words) + "\t" + label)
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (Path(out) / "README.md").write_text(
        f"Made by `python scripts/gpu_check.py data {source} <out>` from data/demo's SST-2 rows (GLUE; see "
        f"data/demo/README.md): {train_rows} train / {dev_rows} dev examples of >= {min_words} words each, "
        "consecutive real sentences joined, labelled with the first one's label. For timing at 128 tokens only.\n")
    print(f"data: {folder} ({train_rows} train, {dev_rows} dev examples of >= {min_words} words)")
    return 0


# --------------------------------------------------------------------------- env (check side)


def cmd_env(out: str, site: str, bundle: str) -> int:
    """What each distribution is imported as and from where (the bundle's --target folder or the image), and
    every requirement of aotp and of the bundled wheels checked against the versions really importable."""
    import importlib
    from importlib import metadata

    site = Path(site).resolve()
    manifest = json.loads((Path(bundle) / "manifest.json").read_text())
    packages, problems = {}, []
    for dist, module in IMPORT_NAMES.items():
        entry = {}
        try:
            entry["version"] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            entry["version"] = None
        try:
            imported = importlib.import_module(module)
            where = Path(getattr(imported, "__file__", "") or "").resolve()
            entry["module_version"] = getattr(imported, "__version__", None)
            entry["from"] = "bundle" if site in where.parents else "image"
            entry["path"] = str(where)
        except Exception as error:  # noqa: BLE001 - recorded
            entry["import_error"] = f"{type(error).__name__}: {error}"
        packages[dist] = entry
    for wheel in manifest["wheels"]:
        got = packages.get(wheel["name"])
        if got is None:
            continue
        if got.get("version") != wheel["version"] or got.get("from") != "bundle":
            problems.append(f"{wheel['name']}: expected the bundle's {wheel['version']}, got {got}")
    available = {}
    for dist in metadata.distributions():
        name = canonical(dist.metadata["Name"] or "")
        if name and name not in available:  # the first on sys.path wins, as for imports
            path = Path(str(dist.locate_file(""))).resolve()
            available[name] = (dist.version, "bundle" if path == site or site in path.parents else "image")
    owners = {"aotp": aotp_requirements()}
    for wheel in manifest["wheels"]:
        owners[f"{wheel['name']} {wheel['version']}"] = metadata.requires(wheel["name"]) or []
    python = ".".join(map(str, sys.version_info[:2]))
    rows = check_requirements(owners, available, python=python)
    problems += [f"{r['of']} needs {r['requirement']}: {r['by']}" for r in rows if not r["met"]]
    import torch

    info = {
        "python": sys.version.split()[0], "executable": sys.executable, "site": str(site),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "gpu_memory_bytes": torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None,
        "cpu_count": os.cpu_count(), "packages": packages, "requirements": rows, "problems": problems,
        "aotp_path": str(Path(importlib.import_module("aotp").__file__).resolve().parent),
    }
    Path(out).write_text(json.dumps(info, indent=2) + "\n")
    print(f"python {info['python']}, torch {info['torch']} (cuda {info['torch_cuda']}, available "
          f"{info['cuda_available']}, {info['gpu']}); aotp from {info['aotp_path']}")
    for dist, entry in packages.items():
        print(f"  {dist:<24} {entry.get('version')!s:<12} {entry.get('from', entry.get('import_error'))}")
    for problem in problems:
        print(f"Error: {problem}", file=sys.stderr)
    return 1 if problems else 0


# --------------------------------------------------------------------------- table (check side)


def cmd_table(out: str, device: str, model: str, method: str = "aot_fc") -> int:
    """The full |V| x L x d fp32 AoT table of ``model`` (the stand-in under HF_HOME) materialised on ``device``
    with ``AoTBias.materialized_table``: seconds (synchronised), bytes, the allocator's peak above what was
    allocated before (CUDA) or the process's peak RSS (CPU), and rows checked against the reparametrization."""
    import resource

    import torch
    import yaml

    from aotp.assembly import build_model
    from aotp.bench.variants import method_options
    from aotp.methods.base import build_method
    from aotp.models import build_backbone
    from aotp.paths import config_dir

    torch.manual_seed(0)
    model_cfg = yaml.safe_load(config_dir("model", f"{model}.yaml").read_text())
    backbone = build_backbone(model_cfg)
    aot_method = build_method({"name": method, "options": method_options(method)})
    task_model = build_model(backbone, aot_method, "classification", 2).to(device)
    aot = task_model.aot
    with torch.no_grad():  # move the reparametrization off its init so the rows are not trivially zero
        for parameter in aot.reparam.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    cuda = str(device).startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    allocated_before = torch.cuda.memory_allocated() if cuda else None
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tick = time.perf_counter()
    table = aot.materialized_table(aot_method.chunk_size, torch.float32, torch.device(device))
    sync()
    seconds = time.perf_counter() - tick
    record = {
        "model": model, "method": method, "device": str(device),
        "device_name": torch.cuda.get_device_name(0) if cuda else None,
        "shape": list(table.shape), "dtype": str(table.dtype), "chunk_size": aot_method.chunk_size,
        "table_bytes": table.numel() * table.element_size(),
        "expected_bytes": aot.vocab_size * aot.num_layers * aot.hidden_size * 4,
        "seconds": seconds,
        "gb_per_second": table.numel() * table.element_size() / seconds / 1e9,
    }
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        record.update(allocated_before_bytes=allocated_before, peak_allocated_bytes=peak,
                      peak_above_before_bytes=peak - allocated_before,
                      peak_reserved_bytes=torch.cuda.max_memory_reserved(),
                      overhead_above_table_bytes=peak - allocated_before - record["table_bytes"])
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        record.update(host_peak_rss_bytes=rss, host_peak_rss_growth_bytes=rss - rss_before)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, aot.vocab_size, (256,), generator=generator).to(device)
    with torch.no_grad():
        aot.reparam.eval()
        direct = aot.reparam.rows(ids).float()
    record["rows_checked"] = int(ids.numel())
    record["rows_max_abs_diff"] = float((table[ids] - direct).abs().max())
    record["rows_scale"] = float(direct.abs().max())
    record["finite"] = bool(torch.isfinite(table).all())
    record["ok"] = (record["finite"] and record["table_bytes"] == record["expected_bytes"]
                    and record["rows_max_abs_diff"] <= 1e-3 * max(record["rows_scale"], 1.0))
    Path(out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0 if record["ok"] else 1


# --------------------------------------------------------------------------- summary (check side)


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _records(folder: Path) -> list[dict]:
    records = []
    for path in sorted(Path(folder).glob("*/result.json")):
        record = _read_json(path)
        if record is not None:
            record["_dir"] = path.parent
            records.append(record)
    return records


def _first_time(run_dir: Path) -> float:
    """When a run's first metrics line was written (orders the runs of one sweep process)."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        return float(json.loads(path.read_text().splitlines()[0])["time"])
    except (OSError, ValueError, IndexError, KeyError):
        return float("inf")


def _losses(run_dir: Path) -> list[float]:
    losses = []
    path = Path(run_dir) / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("kind") == "train" and "loss" in entry:
                losses.append(float(entry["loss"]) if entry["loss"] is not None else float("nan"))
    return losses


def run_figures(record: dict) -> dict:
    """What one run's record says about the GPU: step time, memory, losses, the inference-form check."""
    selection = record.get("selection") or {}
    timings = record.get("timings") or {}
    inference = record.get("inference") or {}
    execution = record.get("execution") or {}
    train_memory = execution.get("train_memory") or {}
    eval_memory = execution.get("eval_memory") or {}
    steps = selection.get("steps_done") or 0
    losses = _losses(record["_dir"])
    config = record.get("config") or {}
    trainer, data = config.get("trainer") or {}, config.get("data") or {}
    train_truncation = ((record.get("truncation") or {}).get("splits") or {}).get("train") or {}
    diff, tolerance = inference.get("max_abs_logit_diff"), inference.get("tolerance")
    figures = {
        "status": record.get("status"), "error": record.get("error"), "run_id": record.get("run_id"),
        "precision": trainer.get("precision"), "batch_size": trainer.get("batch_size"),
        "gradient_accumulation_steps": trainer.get("gradient_accumulation_steps"),
        "max_length": data.get("max_length"),
        "train_examples_at_max_length": (train_truncation.get("truncated"), train_truncation.get("examples")),
        "steps_done": steps, "skipped_steps": selection.get("skipped_steps"),
        "train_seconds": timings.get("train_seconds"),
        "step_seconds": timings["train_seconds"] / steps if steps and timings.get("train_seconds") else None,
        "train_examples_per_second": timings.get("train_examples_per_second"),
        "wall_seconds": record.get("wall_seconds"),
        "train_peak_allocated_bytes": train_memory.get("peak_allocated_bytes"),
        "train_peak_reserved_bytes": train_memory.get("peak_reserved_bytes"),
        "eval_peak_allocated_bytes": eval_memory.get("peak_allocated_bytes"),
        "budget_gpu_bytes": execution.get("budget_gpu_bytes"),
        "device": execution.get("device") or (record.get("env") or {}).get("device"),
        "device_name": execution.get("device_name") or (record.get("env") or {}).get("device_name"),
        "memory_in_record": bool(train_memory),
        "losses_logged": len(losses), "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "loss_finite": bool(losses) and all(math.isfinite(x) for x in losses),
        "inference_max_abs_logit_diff": diff, "inference_tolerance": tolerance,
        "inference_check_precision": inference.get("check_precision"),
        "inference_ok": diff is not None and tolerance is not None and diff <= tolerance,
        "params_trainable": (record.get("params") or {}).get("trainable"),
        "dev_main": (record.get("metrics") or {}).get("main"),
    }
    figures["ok"] = figures["status"] == "success" and figures["loss_finite"] and figures["inference_ok"]
    return figures


def bench_figures(path: Path) -> dict:
    """The inference benchmark's headline ratios from its records file."""
    payload = _read_json(path)
    if payload is None:
        return {"ok": False, "error": f"no records at {path}"}
    records = payload if isinstance(payload, list) else payload.get("records", [])
    out: dict = {"records": len(records), "single_task": {}, "multi_task": {}}
    ok = bool(records)
    for record in records:
        kind = record.get("kind")
        key = f"{record.get('method')}/{record.get('variant')}"
        checked = record.get("outputs_checked") or {}
        if kind == "single_task":
            out["single_task"][key] = {k: record.get(k) for k in (
                "batch_size", "seq_len", "dtype", "rounds", "latency_ms_median", "latency_ms_p90", "gpu_ms_median",
                "cpu_ms_median", "overhead_vs_backbone", "overhead_vs_backbone_p10", "overhead_vs_backbone_p90",
                "overhead_vs_backbone_gpu", "overhead_vs_backbone_cpu", "throughput_examples_per_s",
                "peak_memory_bytes", "peak_memory_kind", "weights_bytes", "activation_peak_bytes")}
            out["single_task"][key]["outputs_finite"] = checked.get("finite")
            ok = ok and checked.get("finite", True) is not False
        elif kind == "multi_task" and record.get("serving") != "not_timed":
            key = f"{key}/{record.get('serving')}/tasks{record.get('tasks')}"
            out["multi_task"][key] = {k: record.get(k) for k in (
                "tasks", "serving", "batch_size", "seq_len", "latency_ms_median", "gpu_ms_median",
                "throughput_vs_single_task", "vs_single_task", "vs_single_task_p10", "vs_single_task_p90",
                "overhead_vs_backbone", "throughput_examples_per_s")}
            out["multi_task"][key]["matches_per_task"] = checked.get("matches_per_task")
            ok = ok and checked.get("matches_per_task", True) is not False and checked.get("finite", True) is not False
        elif kind is not None and kind != "multi_task":
            out.setdefault(kind, []).append({k: v for k, v in record.items() if not isinstance(v, (dict, list))})
    wanted = ("aot_fc/materialized", "aot_fc/on_the_fly", "lora/merged", "adapter_houlsby/adapters")
    missing = [w for w in wanted if w not in out["single_task"]]
    if missing:
        out["missing"] = missing
    out["ok"] = ok and not missing and any("tasks4" in k for k in out["multi_task"])
    return out


def headline_figures(summary: dict) -> dict:
    """The figures the issue asks for, one line each (the sections of the summary hold the rest)."""
    def gib(value):
        return None if value is None else round(value / 2**30, 3)

    figures: dict = {"device": ((summary.get("env") or {}).get("gpu") or "cpu"),
                     "torch": (summary.get("env") or {}).get("torch")}
    for name, run in (summary.get("methods") or {}).items():
        figures[f"{name} bf16: step ms, train peak GiB, loss finite, inference check"] = [
            None if run.get("step_seconds") is None else round(1000 * run["step_seconds"], 2),
            gib(run.get("train_peak_allocated_bytes")), run.get("loss_finite"), run.get("inference_ok")]
    fp16 = summary.get("full_ft_fp16") or {}
    figures["full_ft fp16: step ms, skipped steps, loss finite, inference check"] = [
        None if fp16.get("step_seconds") is None else round(1000 * fp16["step_seconds"], 2), fp16.get("skipped_steps"),
        fp16.get("loss_finite"), fp16.get("inference_ok")]
    pack = summary.get("packed") or {}
    figures["packed aot_fc x4: training time alone / packed, wall alone / packed"] = [
        pack.get("train_time_ratio_alone_over_packed"), pack.get("wall_ratio_alone_over_packed")]
    bench = summary.get("bench") or {}
    for key, row in (bench.get("single_task") or {}).items():
        if key != "backbone/frozen":
            figures[f"bench {key}: time / backbone (paired median; GPU time where timed)"] = (
                row.get("overhead_vs_backbone_gpu") or row.get("overhead_vs_backbone"))
    for key, row in (bench.get("multi_task") or {}).items():
        if "/mixed/" in key:
            figures[f"bench {key}: throughput / single task"] = row.get("throughput_vs_single_task")
    table = summary.get("table") or {}
    figures["full fp32 AoT table: GB, seconds, peak allocated above before GiB"] = [
        None if table.get("table_bytes") is None else round(table["table_bytes"] / 1e9, 3), table.get("seconds"),
        gib(table.get("peak_above_before_bytes"))]
    return figures


def cmd_summary(work: str, out: str) -> int:
    """Every step's exit status and every record the steps wrote, checked, in one JSON; exit 1 if any failed."""
    work = Path(work)
    records = work / "records"
    steps = {}
    for line in (records / "steps.jsonl").read_text().splitlines() if (records / "steps.jsonl").is_file() else []:
        entry = json.loads(line)
        steps[entry["step"]] = entry
    params = _read_json(records / "params.json") or {}
    summary: dict = {"check": "aotp GPU check (scripts/gpu_check.sh)", "params": params,
                     "env": _read_json(records / "env.json"), "steps": steps}
    checks: dict[str, bool] = {}

    def step_ok(name: str) -> bool:
        return name in steps and steps[name]["rc"] == 0

    for name in ("install", "env", "standin"):
        checks[name] = step_ok(name)

    # 1. pytest -m gpu
    junit = records / "pytest_gpu.xml"
    if junit.is_file():
        import xml.etree.ElementTree as ElementTree

        root = ElementTree.parse(junit).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")} if suite is not None else {}
        counts["passed"] = counts.get("tests", 0) - counts.get("failures", 0) - counts.get("errors", 0) - counts.get("skipped", 0)
        counts["skipped_tests"] = [f"{case.get('classname')}::{case.get('name')}: {skip.get('message')}"
                                   for case in root.iter("testcase") for skip in case.findall("skipped")]
        summary["pytest_gpu"] = counts
    checks["pytest_gpu"] = step_ok("pytest_gpu")

    # 2. every method, bf16. Step time = training seconds / steps: it includes each run's first step, and the
    # first run of the sweep process (sweep_position 0) also pays the process's first CUDA kernels (cuBLAS).
    expected = sorted(p.stem for p in (REPO / "configs" / "method").glob("*.yaml"))
    ordered = sorted(_records(work / "runs" / "methods"), key=lambda r: _first_time(r["_dir"]))
    methods = {r.get("method"): {**run_figures(r), "sweep_position": i} for i, r in enumerate(ordered)}
    summary["methods"] = {name: methods.get(name, {"ok": False, "error": "no record"}) for name in expected}
    checks["methods"] = step_ok("methods") and all(summary["methods"][n]["ok"] for n in expected)

    # 3. full FT, fp16 + loss scaler
    fp16 = _records(work / "runs" / "full_ft_fp16")
    summary["full_ft_fp16"] = run_figures(fp16[0]) if fp16 else {"ok": False, "error": "no record"}
    checks["full_ft_fp16"] = step_ok("full_ft_fp16") and summary["full_ft_fp16"]["ok"]

    # 4. packed vs alone
    alone = [run_figures(r) for r in _records(work / "runs" / "alone")]
    packed = [run_figures(r) for r in _records(work / "runs" / "packed")]
    pack = {"runs_alone": len(alone), "runs_packed": len(packed),
            "alone_ok": [f["ok"] for f in alone], "packed_ok": [f["ok"] for f in packed]}
    if alone and packed and all(f["train_seconds"] for f in alone + packed):
        pack["alone_train_seconds"] = sum(f["train_seconds"] for f in alone)
        pack["packed_train_seconds"] = sum(f["train_seconds"] for f in packed)
        pack["train_time_ratio_alone_over_packed"] = pack["alone_train_seconds"] / pack["packed_train_seconds"]
    for side in ("alone", "packed"):
        if f"packed_{side}" in steps:
            pack[f"{side}_command_seconds"] = steps[f"packed_{side}"]["seconds"]
    if pack.get("alone_command_seconds") and pack.get("packed_command_seconds"):
        pack["wall_ratio_alone_over_packed"] = pack["alone_command_seconds"] / pack["packed_command_seconds"]
    pack["dev_main_alone"] = [f["dev_main"] for f in alone]
    pack["dev_main_packed"] = [f["dev_main"] for f in packed]
    pack["ok"] = (len(alone) == 4 and len(packed) == 4 and all(pack["alone_ok"]) and all(pack["packed_ok"])
                  and "train_time_ratio_alone_over_packed" in pack)
    summary["packed"] = pack
    checks["packed"] = step_ok("packed_alone") and step_ok("packed_packed") and pack["ok"]

    # 5. the inference benchmark
    bench_files = sorted((work / "bench").glob("*.json")) if (work / "bench").is_dir() else []
    summary["bench"] = bench_figures(bench_files[0]) if bench_files else {"ok": False, "error": "no records"}
    checks["bench"] = step_ok("bench") and summary["bench"]["ok"]

    # 6. the full fp32 table
    table = _read_json(records / "table.json")
    summary["table"] = table if table is not None else {"ok": False, "error": "no record"}
    checks["table"] = step_ok("table") and bool(summary["table"].get("ok"))

    summary["figures"] = headline_figures(summary)
    failed = sorted(name for name, ok in checks.items() if not ok)
    summary["checks"] = checks
    summary["failed"] = failed
    summary["passed"] = not failed
    Path(out).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"summary: {out}")
    for name, ok in checks.items():
        print(f"  {name:<14} {'ok' if ok else 'FAILED'}")
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    commands = {"manifest": cmd_manifest, "data": cmd_data, "env": cmd_env, "table": cmd_table, "summary": cmd_summary}
    if not argv or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[argv[0]](*argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
