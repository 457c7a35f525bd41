"""The hub path of every task, proven offline on the dataset stand-in (issue 13, acceptance 4).

The stand-ins of ``nyu-mll/glue`` and ``aps/super_glue`` are built in a temporary HF_HOME from the first rows of
the official files (``../shared/data`` where present, else the fixtures in ``tests/fixtures/data``). A fresh
interpreter with only ``HF_HOME=<stand-in> HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1`` set then loads every split
of every task through the unchanged ``aotp.tasks.loading`` hub call (``datasets.load_dataset(path, name,
revision="main", split=...)``) and formats it; the examples must equal those read from the same local files.

Three differences are real properties of the hub data and are asserted as such, not skipped: the GLUE builder
numbers ``idx`` by row (QQP's files carry pair ids; MRPC train/validation count rows of
``msr_paraphrase_train.txt``); STS-B scores are float32 on the hub; the hub's AX-g has no ``pair_id``, so its
groups are numbered by the formatter's fallback and must induce the same male/female pairs. (ReCoRD answers
are compared as sorted lists: the hub keeps only the sorted set.)
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aotp.metrics.definitions import gender_parity_pairs
from aotp.standin.datasets import GLUE_REPO, SUPERGLUE_REPO, build_dataset_standin
from aotp.tasks.formatting import FORMATTERS
from aotp.tasks.loading import load_raw_records
from aotp.tasks.spec import load_spec
from tests.helpers import REPO_ROOT

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "data"
SHARED_DATA = (REPO_ROOT.parent / "shared" / "data").resolve()
TASKS = [f"{b}/{p.stem}" for b in ("glue", "superglue") for p in sorted((REPO_ROOT / "configs" / "task" / b).glob("*.yaml"))]
# source rows (JSONL lines for MultiRC/ReCoRD) per split: small enough for CI; AOTP_STANDIN_ROWS=0 compares all
MAX_ROWS = int(os.environ.get("AOTP_STANDIN_ROWS", 12))
# idx on the hub is the GLUE builder's row number, not the file's id column (QQP) / row (MRPC train, dev)
ROW_NUMBERED_IDX = {("glue/qqp", "train"), ("glue/qqp", "validation"), ("glue/mrpc", "train"),
                    ("glue/mrpc", "validation")}

# Runs in the fresh interpreter: every (task, split) the hub has, loaded and formatted by the harness.
HUB_SIDE = r"""
import json, sys
from aotp.tasks.formatting import FORMATTERS
from aotp.tasks.loading import load_raw_records
from aotp.tasks.spec import load_spec
result = {}
for task in sys.argv[1:]:
    spec = load_spec(task)
    for split in spec.all_splits:
        if split in (spec.hub.get("split_names") or {}) and spec.hub["split_names"][split] is None:
            continue
        records = load_raw_records(spec, split, None)
        examples = FORMATTERS.get(spec.formatter).format(spec, records, split not in spec.test_splits)
        result[f"{task}|{split}"] = examples
json.dump(result, sys.stdout)
"""


def _plain(examples):
    """JSON round trip: tuples -> lists, as the hub side's examples arrive."""
    return json.loads(json.dumps(examples))


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    roots = ([SHARED_DATA] if SHARED_DATA.is_dir() else []) + [FIXTURES]
    home = tmp_path_factory.mktemp("hf_home")
    built = build_dataset_standin(home, roots, max_rows=MAX_ROWS or None)
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    env.pop("HF_DATASETS_CACHE", None)
    env.pop("HF_HUB_CACHE", None)
    process = subprocess.run([sys.executable, "-c", HUB_SIDE, *TASKS], cwd=REPO_ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    sources = {(b.repo, b.config, b.split): b.source for b in built}
    return home, sources, json.loads(process.stdout)


def test_layout_is_the_hub_cache(standin):
    """hub/datasets--<org>--<name>/refs/main -> snapshots/<sha>/ with README.md and
    <config>/<split>-00000-of-00001.parquet; the prepared cache under datasets/<org>___<name>/<config>/0.0.0/<sha>."""
    home, sources, _ = standin
    for repo, name in ((GLUE_REPO, "glue"), (SUPERGLUE_REPO, "super_glue")):
        repo_dir = home / "hub" / f"datasets--{repo.replace('/', '--')}"
        sha = (repo_dir / "refs" / "main").read_text()
        assert len(sha) == 40 and int(sha, 16) >= 0
        snapshot = repo_dir / "snapshots" / sha
        readme = (snapshot / "README.md").read_text()
        assert readme.startswith("---\n") and "configs:" in readme and "dataset_info:" in readme
        for (built_repo, config, split) in sources:
            if built_repo == repo:
                assert (snapshot / config / f"{split}-00000-of-00001.parquet").is_file()
                prepared = home / "datasets" / f"{repo.split('/')[0]}___{name}" / config / "0.0.0" / sha
                assert (prepared / f"{name}-{split}.arrow").is_file(), prepared


def test_hub_features_are_the_hubs(standin):
    """The Parquet files carry the hub's features: ClassLabel names, int32 idx (a struct for MultiRC/ReCoRD),
    float32 STS-B scores, -1 labels on test."""
    import datasets

    home, sources, _ = standin
    snapshots = {repo: next((home / "hub" / f"datasets--{repo.replace('/', '--')}" / "snapshots").iterdir())
                 for repo in (GLUE_REPO, SUPERGLUE_REPO)}

    def features(repo, config, split="test"):
        path = snapshots[repo] / config / f"{split}-00000-of-00001.parquet"
        dataset = datasets.Dataset.from_parquet(str(path))
        return dataset.features, dataset

    rte, rows = features(GLUE_REPO, "rte")
    assert rte["label"].names == ["entailment", "not_entailment"] and rte["idx"].dtype == "int32"
    assert set(rows["label"]) == {-1}
    assert features(GLUE_REPO, "stsb", "train")[0]["label"].dtype == "float32"
    assert features(GLUE_REPO, "wnli")[0]["label"].names == ["not_entailment", "entailment"]
    assert features(SUPERGLUE_REPO, "cb")[0]["label"].names == ["entailment", "contradiction", "neutral"]
    assert features(SUPERGLUE_REPO, "boolq")[0]["label"].names == ["False", "True"]
    multirc, _ = features(SUPERGLUE_REPO, "multirc")
    assert set(multirc["idx"]) == {"paragraph", "question", "answer"}
    record, rows = features(SUPERGLUE_REPO, "record", "train")
    assert set(record) == {"passage", "query", "entities", "entity_spans", "answers", "idx"}
    assert all(row["entities"] == sorted(set(row["entities"])) for row in rows)
    assert "pair_id" not in features(SUPERGLUE_REPO, "axg")[0]


@pytest.mark.parametrize("task", TASKS)
def test_hub_path_gives_the_local_examples(task, standin):
    home, sources, hub = standin
    spec = load_spec(task)
    compared = 0
    for split in spec.all_splits:
        key = f"{task}|{split}"
        if key not in hub:  # a split the hub does not have (split_names: null), e.g. GLUE AX diagnostic_full
            assert (spec.hub.get("split_names") or {}).get(split, "") is None
            continue
        hub_split = (spec.hub.get("split_names") or {}).get(split, split)
        source = sources[(spec.hub["path"], spec.hub["name"], hub_split)]
        local_file = spec.local.split_file(split).file
        root = Path(str(source)[: -len(f"{spec.local.dir}/{local_file}")])
        labelled = split not in spec.test_splits
        local = FORMATTERS.get(spec.formatter).format(spec, load_raw_records(spec, split, root), labelled)
        hub_examples = hub[key]
        assert 0 < len(hub_examples) <= len(local)
        local = _plain(local[: len(hub_examples)])
        if (task, split) in ROW_NUMBERED_IDX:
            hub_idx = [example.pop("idx") for example in hub_examples]
            [example.pop("idx") for example in local]
            assert hub_idx == sorted(set(hub_idx)), "the builder's row numbers increase"
            if task == "glue/qqp" or not (root / spec.local.dir / "msr_paraphrase_train.txt").is_file():
                assert hub_idx == list(range(len(hub_idx)))
        if spec.format_options.get("group_fallback"):  # AX-g: the hub has no pair_id; rows pair up consecutively
            hub_groups = [example.pop("group") for example in hub_examples]
            local_groups = [example.pop("group") for example in local]
            assert sorted(gender_parity_pairs(hub_groups)) == sorted(gender_parity_pairs(local_groups))
        if spec.head == "regression":  # float32 on the hub
            for h, l in zip(hub_examples, local):
                assert (h["label"] is None) == (l["label"] is None)
                assert h["label"] is None or math.isclose(h["label"], l["label"], rel_tol=1e-6), (h, l)
                h["label"] = l["label"]
        if spec.formatter == "record":  # the hub stores a query's answers sorted; metrics take the max over them
            for example in local:
                example["answers"] = None if example["answers"] is None else sorted(example["answers"])
        for position, (h, l) in enumerate(zip(hub_examples, local)):
            assert h == l, f"{task} {split} example {position}: hub {h} != local {l}"
        compared += len(hub_examples)
    assert compared > 0


def test_tokenisation_cache_key_follows_the_hub_data(tmp_path, monkeypatch):
    """The hub source fingerprint (part of the tokenisation cache key) names the prepared files of the commit
    ``main`` resolved to, not just "main": rebuilding the stand-in with other rows changes it (before, a
    cached tokenisation of the old rows would have been served). In process: datasets reads its cache root
    from ``datasets.config`` at call time (the env-var route is proven by the fixture above)."""
    import datasets

    from aotp.tasks.data import source_fingerprint

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    spec = load_spec("glue/rte")
    build_dataset_standin(tmp_path, [FIXTURES], max_rows=3, repos=[GLUE_REPO], configs=["rte"])
    first = source_fingerprint(spec, "train", None)
    assert first.startswith("hub:nyu-mll/glue:rte:main:train:3:") and len(load_raw_records(spec, "train", None)) == 3
    build_dataset_standin(tmp_path, [FIXTURES], max_rows=5, repos=[GLUE_REPO], configs=["rte"])
    second = source_fingerprint(spec, "train", None)
    assert second != first and len(load_raw_records(spec, "train", None)) == 5
