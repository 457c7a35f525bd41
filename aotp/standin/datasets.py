"""Offline stand-ins of the hub datasets ``nyu-mll/glue`` and ``aps/super_glue``, built from the official files.

What a GPU box has after ``load_dataset("nyu-mll/glue", "rte", revision="main")`` ran once online, and what
this module writes below ``<HF_HOME>`` from the local official files (``data.root`` layout):

1. the hub snapshot, as ``huggingface_hub`` downloads it::

       hub/datasets--nyu-mll--glue/refs/main                       (the commit sha)
       hub/datasets--nyu-mll--glue/snapshots/<sha>/README.md       (YAML: configs + dataset_info)
       hub/datasets--nyu-mll--glue/snapshots/<sha>/<config>/<split>-00000-of-00001.parquet

   This is the repositories' real Parquet layout (``nyu-mll/glue`` after "Convert dataset to Parquet",
   ``<config>/<split>-0000i-of-0000n.parquet``, one ``configs:`` entry per config with
   ``data_files: [{split, path: <config>/<split>-*}]``) with the real features: GLUE rows are
   ``{<text columns>, label: ClassLabel (float32 for stsb), idx: int32}``, label -1 on test and
   ``idx`` = the row number as the GLUE builder numbered it (MRPC train/validation: the row of
   ``msr_paraphrase_train.txt``); SuperGLUE rows follow the ``super_glue`` builder: MultiRC flattened to one
   row per answer with ``idx: {paragraph, question, answer}``, ReCoRD one row per query with ``entities``
   (sorted unique strings), ``entity_spans`` ({text, start, end} by start), ``answers`` (sorted unique)
   and ``idx: {passage, query}``, WSC with the ``target`` spans flattened (``wsc.fixed``: span texts
   corrected), COPA label ``choice1``/``choice2``, AX-b/AX-g a single ``test`` split (AX-g without
   ``pair_id``), booleans as ClassLabel ``False``/``True``.

2. the prepared Arrow cache, as ``datasets`` writes it on that first load::

       datasets/nyu-mll___glue/<config>/0.0.0/<sha>/{dataset_info.json, glue-<split>.arrow}

   built here by datasets' own Parquet builder from the snapshot's README (same config, features, split
   names, ``hash`` = the commit sha, ``dataset_name``/``repo_id`` as the hub factory sets them).

Why both: with ``HF_HUB_OFFLINE=1`` the installed ``datasets`` (5.0.1, ``datasets/load.py``) never reads the hub
snapshot. ``dataset_module_factory`` raises ``OfflineModeIsEnabled`` before any hub call and falls back to
``CachedDatasetModuleFactory``, which serves the newest ``<HF_DATASETS_CACHE>/<org>___<name>/<config>/*/*``
whose ``dataset_info.json`` names that config (``revision`` is not consulted). So the unchanged call
``load_dataset(path, name, revision="main", split=...)`` succeeds offline only from (2); (1) is what the
download left and what (2) is prepared from (and what ``hf download``/``snapshot_download`` mirror).

Caveat, found while checking the real repositories: the stored snapshots of ``aps/super_glue`` found (up to
"Delete legacy JSON metadata (#11)") still hold the loading script ``super_glue.py``, which ``datasets`` >= 4
refuses ("Dataset scripts are no longer supported"); if its ``main`` has not been converted to Parquet
since, a GPU box cannot load SuperGLUE from the hub with this ``datasets`` and must use ``data.root``.
The stand-in models the converted (Parquet) layout the brief and the GLUE repository use.

Only the configs the task specs use are built (``nyu-mll/glue`` also has ``mnli_matched``/``mnli_mismatched``,
views of the ``mnli`` splits). Not verified against the hub's files: whether ReCoRD ``entity_spans.end`` is
inclusive there (stored here as in the source file, inclusive; the harness reads only texts and order).

Build: ``python -m aotp.standin datasets output=DIR [data.root=[../shared/data,tests/fixtures/data]]
[max_rows=50]`` (:func:`run`); then ``HF_HOME=DIR HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

log = logging.getLogger(__name__)

csv.field_size_limit(1 << 24)

GLUE_REPO = "nyu-mll/glue"
SUPERGLUE_REPO = "aps/super_glue"
DEFAULT_MAX_ROWS = 50


class StandinDataError(ValueError):
    """A local file the stand-in needs is missing or malformed; the message names it."""


# --------------------------------------------------------------------------------------------------------
# The hub configs: features as the hub declares them, and where each split comes from in the official files


@dataclass(frozen=True)
class HubConfig:
    """One config of a hub dataset: its features (datasets' YAML/dict form), and per hub split the local
    file (relative to the task's official directory) its rows are converted from."""

    repo: str
    name: str
    local_dir: str
    features: dict[str, Any]
    splits: dict[str, str]  # hub split -> local file
    # TSV: (config, path, split, task_dir) -> rows; JSONL: (config, parsed lines) -> rows
    convert: Callable[..., Iterator[dict[str, Any]]]
    options: dict[str, Any] = field(default_factory=dict)


def _class_label(*names: str) -> dict[str, Any]:
    return {"_type": "ClassLabel", "names": list(names)}


def _value(dtype: str) -> dict[str, Any]:
    return {"_type": "Value", "dtype": dtype}


def _glue_features(text: Sequence[str], labels: Optional[Sequence[str]]) -> dict[str, Any]:
    features = {name: _value("string") for name in text}
    features["label"] = _class_label(*labels) if labels else _value("float32")
    features["idx"] = _value("int32")
    return features


# --- GLUE: the TSVs as the GLUE builder read them (DictReader, QUOTE_NONE, idx = row number) -------------


def _read_tsv(path: Path, header: bool = True) -> tuple[Optional[list[str]], list[list[str]]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = [row for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE) if row and row != [""]]
    if not header:
        return None, rows
    if not rows:
        raise StandinDataError(f"{path}: empty file (expected a header line)")
    return rows[0], rows[1:]


def _glue_label(config: HubConfig, raw: Optional[str]) -> Any:
    """The GLUE builder's label: a class name -> its index, ``"0"``/``"1"`` -> int, STS-B -> float;
    ``None`` marks a row the builder dropped (empty label)."""
    names = config.features["label"].get("names")
    if raw is None:
        return -1
    if names is None:
        return float(raw) if raw != "" else None
    if raw in names:
        return names.index(raw)
    return int(raw) if raw != "" else None


def convert_glue(config: HubConfig, path: Path, split: str, task_dir: Path) -> Iterator[dict[str, Any]]:
    headerless = split in config.options.get("headerless_splits", ())
    header, rows = _read_tsv(path, header=not headerless)
    for number, row in enumerate(rows):
        if header is not None:
            if len(row) != len(header):
                raise StandinDataError(f"{path}: row {number + 1} has {len(row)} columns, header has {len(header)}")
            by_name = dict(zip(header, row))  # a repeated column name keeps its last value, as csv.DictReader
            example = {hub: by_name[local] for hub, local in config.options["text"].items()}
            label_column = config.options.get("label")
            raw_label = by_name.get(label_column) if label_column else None
        else:  # CoLA train/dev: 0 source, 1 label, 2 original mark, 3 sentence
            example = {hub: row[index] for hub, index in config.options["text_by_index"].items()}
            raw_label = row[config.options["label_index"]]
        example["idx"] = number
        example["label"] = _glue_label(config, raw_label)
        if example["label"] is None:
            continue  # the builder's "Filter out corrupted rows"
        yield example


def convert_mrpc(config: HubConfig, path: Path, split: str, task_dir: Path) -> Iterator[dict[str, Any]]:
    """MRPC as the GLUE builder made it: train/validation from ``msr_paraphrase_train.txt`` split by
    ``dev_ids.tsv`` (idx = the row in the MSR file), test from the test file (label -1). Without the MSR
    files (the test fixtures) train.tsv/dev.tsv are used with idx = their row number."""
    msr_train, dev_ids_file = task_dir / "msr_paraphrase_train.txt", task_dir / "dev_ids.tsv"
    if split == "test" or not (msr_train.is_file() and dev_ids_file.is_file()):
        header, rows = _read_tsv(path)
        for number, row in enumerate(rows):
            by_name = dict(zip(header, row))
            label = -1 if split == "test" else int(by_name["Quality"])
            yield {"sentence1": by_name["#1 String"], "sentence2": by_name["#2 String"], "label": label,
                   "idx": number}
        return
    _, dev_rows = _read_tsv(dev_ids_file, header=False)
    dev_ids = {(row[0], row[1]) for row in dev_rows}
    header, rows = _read_tsv(msr_train)
    for number, row in enumerate(rows):
        by_name = dict(zip(header, row))
        if ((by_name["#1 ID"], by_name["#2 ID"]) in dev_ids) == (split == "validation"):
            yield {"sentence1": by_name["#1 String"], "sentence2": by_name["#2 String"],
                   "label": int(by_name["Quality"]), "idx": number}


def _glue(name: str, local_dir: str, text: dict[str, Any], label: Optional[str], labels: Optional[Sequence[str]],
          splits: dict[str, str], convert=convert_glue, **options) -> HubConfig:
    return HubConfig(GLUE_REPO, name, local_dir, _glue_features(list(text), labels), splits, convert,
                     {"text": text, "label": label, **options})


_TVT = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}

GLUE_CONFIGS: dict[str, HubConfig] = {c.name: c for c in [
    _glue("cola", "glue/CoLA", {"sentence": "sentence"}, None, ["unacceptable", "acceptable"], _TVT,
          headerless_splits=("train", "validation"), label_index=1, text_by_index={"sentence": 3}),
    _glue("sst2", "glue/SST-2", {"sentence": "sentence"}, "label", ["negative", "positive"], _TVT),
    _glue("mrpc", "glue/MRPC", {"sentence1": "#1 String", "sentence2": "#2 String"}, "Quality",
          ["not_equivalent", "equivalent"], _TVT, convert=convert_mrpc),
    _glue("qqp", "glue/QQP", {"question1": "question1", "question2": "question2"}, "is_duplicate",
          ["not_duplicate", "duplicate"], _TVT),
    _glue("stsb", "glue/STS-B", {"sentence1": "sentence1", "sentence2": "sentence2"}, "score", None, _TVT),
    _glue("mnli", "glue/MNLI", {"premise": "sentence1", "hypothesis": "sentence2"}, "gold_label",
          ["entailment", "neutral", "contradiction"],
          {"train": "train.tsv", "validation_matched": "dev_matched.tsv",
           "validation_mismatched": "dev_mismatched.tsv", "test_matched": "test_matched.tsv",
           "test_mismatched": "test_mismatched.tsv"}),
    _glue("qnli", "glue/QNLI", {"question": "question", "sentence": "sentence"}, "label",
          ["entailment", "not_entailment"], _TVT),
    _glue("rte", "glue/RTE", {"sentence1": "sentence1", "sentence2": "sentence2"}, "label",
          ["entailment", "not_entailment"], _TVT),
    _glue("wnli", "glue/WNLI", {"sentence1": "sentence1", "sentence2": "sentence2"}, "label",
          ["not_entailment", "entailment"], _TVT),
    # the hub's ax is the unlabelled diagnostic.tsv (the labelled diagnostic-full.tsv is not on the hub)
    _glue("ax", "glue/AX", {"premise": "sentence1", "hypothesis": "sentence2"}, None,
          ["entailment", "neutral", "contradiction"], {"test": "diagnostic.tsv"}),
]}


# --- SuperGLUE: the JSONL files as the super_glue builder read them -------------------------------------


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as error:
                    raise StandinDataError(f"{path}:{number}: not valid JSON ({error.msg})") from None


def _superglue_label(config: HubConfig, row: dict[str, Any]) -> Any:
    """The builder's ``_cast_label`` + ClassLabel: booleans -> ``"False"``/``"True"``, COPA 0/1 ->
    ``choice1``/``choice2``, names as they are; -1 where the file has no label (test)."""
    if "label" not in row or row["label"] is None:
        return -1
    raw = row["label"]
    names = config.features["label"]["names"]
    if config.name == "copa":
        return names.index("choice2" if raw else "choice1")
    if isinstance(raw, bool):
        raw = "True" if raw else "False"
    elif isinstance(raw, int):
        raw = str(raw)
    return names.index(raw)


def fix_wsc_spans(example: dict[str, Any]) -> dict[str, Any]:
    """``wsc.fixed``: span texts that are not substrings of the text get the case of the word at their
    index, lose a trailing ``.`` and have newlines replaced by spaces (the two "Kamenev ..." spans cannot be
    fixed and stay; the "theyscold" example gets span2_index 10, its text unchanged, as on the hub)."""
    example = dict(example)
    for key in ("span1", "span2"):
        text, index = example[f"{key}_text"], example[f"{key}_index"]
        if text in example["text"] or text in ("Kamenev and Zinoviev", "Kamenev, Zinoviev, and Stalin"):
            continue
        if "theyscold" in text:
            example["span2_index"] = 10
        first_word = example["text"].split()[index]
        text = (text[0].lower() if first_word[0].islower() else text[0].upper()) + text[1:]
        example[f"{key}_text"] = text.rstrip(".").replace("\n", " ")
    return example


def convert_superglue(config: HubConfig, lines: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    columns = [name for name in config.features if name not in ("idx", "label")]
    for row in lines:
        if config.name.startswith("wsc"):
            row = {**row, **row["target"]}
        example = {name: row[name] for name in columns}
        if config.name == "wsc.fixed":
            example = fix_wsc_spans(example)
        example["idx"] = int(row["idx"])  # AX-b writes its idx as a string ("0")
        example["label"] = _superglue_label(config, row)
        yield example


def convert_multirc(config: HubConfig, lines: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """One row per answer option; label -1 where the file has none (test)."""
    for row in lines:
        passage = row["passage"]
        for question in passage["questions"]:
            for answer in question["answers"]:
                label = answer.get("label")
                yield {"paragraph": passage["text"], "question": question["question"], "answer": answer["text"],
                       "idx": {"paragraph": row["idx"], "question": question["idx"], "answer": answer["idx"]},
                       "label": -1 if label is None else (1 if bool(label) else 0)}


def convert_record(config: HubConfig, lines: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """One row per query: entities = the sorted unique entity strings (``end`` inclusive), entity_spans =
    every mention {text, start, end} by start, answers = the sorted unique answer texts ([] on test)."""
    for row in lines:
        text = row["passage"]["text"]
        spans = sorted(({"text": text[e["start"]:e["end"] + 1], "start": e["start"], "end": e["end"]}
                        for e in row["passage"]["entities"]), key=lambda span: span["start"])
        for qa in row["qas"]:
            yield {"passage": text, "query": qa["query"], "entities": sorted({s["text"] for s in spans}),
                   "entity_spans": {key: [s[key] for s in spans] for key in ("text", "start", "end")},
                   "answers": sorted({a["text"] for a in qa.get("answers") or []}),
                   "idx": {"passage": row["idx"], "query": qa["idx"]}}


_BOOL = ("False", "True")
_SG_TVT = {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl"}


def _sg(name: str, local_dir: str, text: Sequence[str], labels: Sequence[str], splits=_SG_TVT,
        convert=convert_superglue, extra: Optional[dict[str, Any]] = None) -> HubConfig:
    features = {column: _value("string") for column in text}
    features.update(extra or {})
    features["idx"] = _value("int32")
    features["label"] = _class_label(*labels)
    return HubConfig(SUPERGLUE_REPO, name, local_dir, features, dict(splits), convert)


_WSC_FEATURES = {"text": _value("string"), "span1_index": _value("int32"), "span2_index": _value("int32"),
                 "span1_text": _value("string"), "span2_text": _value("string")}

SUPERGLUE_CONFIGS: dict[str, HubConfig] = {c.name: c for c in [
    _sg("boolq", "super_glue/BoolQ", ["question", "passage"], _BOOL),
    _sg("cb", "super_glue/CB", ["premise", "hypothesis"], ["entailment", "contradiction", "neutral"]),
    _sg("copa", "super_glue/COPA", ["premise", "choice1", "choice2", "question"], ["choice1", "choice2"]),
    HubConfig(SUPERGLUE_REPO, "multirc", "super_glue/MultiRC",
              {"paragraph": _value("string"), "question": _value("string"), "answer": _value("string"),
               "idx": {"paragraph": _value("int32"), "question": _value("int32"), "answer": _value("int32")},
               "label": _class_label(*_BOOL)}, dict(_SG_TVT), convert_multirc),
    HubConfig(SUPERGLUE_REPO, "record", "super_glue/ReCoRD",
              {"passage": _value("string"), "query": _value("string"),
               "entities": {"_type": "Sequence", "feature": _value("string")},
               "entity_spans": {"_type": "Sequence", "feature": {"text": _value("string"), "start": _value("int32"),
                                                                  "end": _value("int32")}},
               "answers": {"_type": "Sequence", "feature": _value("string")},
               "idx": {"passage": _value("int32"), "query": _value("int32")}}, dict(_SG_TVT), convert_record),
    _sg("rte", "super_glue/RTE", ["premise", "hypothesis"], ["entailment", "not_entailment"]),
    _sg("wic", "super_glue/WiC", ["word", "sentence1", "sentence2"], _BOOL,
        extra={k: _value("int32") for k in ("start1", "start2", "end1", "end2")}),
    _sg("wsc", "super_glue/WSC", [], _BOOL, extra=_WSC_FEATURES),
    _sg("wsc.fixed", "super_glue/WSC", [], _BOOL, extra=_WSC_FEATURES),
    _sg("axb", "super_glue/AX-b", ["sentence1", "sentence2"], ["entailment", "not_entailment"],
        splits={"test": "AX-b.jsonl"}),
    replace(_sg("axg", "super_glue/AX-g", ["premise", "hypothesis"], ["entailment", "not_entailment"],
                splits={"test": "AX-g.jsonl"}), options={"whole_pairs": True}),
]}

HUB_CONFIGS: dict[str, dict[str, HubConfig]] = {GLUE_REPO: GLUE_CONFIGS, SUPERGLUE_REPO: SUPERGLUE_CONFIGS}


# --------------------------------------------------------------------------------------------------------
# Writing the snapshot and preparing the datasets cache


@dataclass
class BuiltSplit:
    """Where one hub split of the stand-in came from: the local file and how many of its rows/lines were
    used (``source_units``: TSV data rows or JSONL lines; MultiRC/ReCoRD expand a line into several rows)."""

    repo: str
    config: str
    split: str
    source: Path
    rows: int
    source_units: int


def _find_source(config: HubConfig, split: str, roots: Sequence[Path]) -> Optional[Path]:
    for root in roots:
        path = Path(root) / config.local_dir / config.splits[split]
        if path.is_file():
            return path
    return None


def _first_units(config: HubConfig, path: Path, split: str, max_units: Optional[int]) -> tuple[list[dict], int]:
    """The converted rows of the first ``max_units`` source units (TSV data rows, JSONL lines; all when None)
    and the number of units used. TSV converters read their file (MRPC reads its neighbours too); JSONL
    converters get the parsed lines (a MultiRC passage / ReCoRD passage becomes several rows)."""
    if path.suffix == ".jsonl":
        lines = list(itertools.islice(_read_jsonl(path), max_units))
        return list(config.convert(config, lines)), len(lines)
    rows = list(itertools.islice(config.convert(config, path, split, path.parent), max_units))
    return rows, len(rows)


def snapshot_sha(repo: str, files: dict[str, bytes]) -> str:
    """A deterministic 40-hex commit id for the snapshot (sha1 over its file names and bytes)."""
    digest = hashlib.sha1(repo.encode())
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha1(files[name]).digest())
    return digest.hexdigest()


def _dataset_card(repo: str, configs: dict[str, HubConfig], split_rows: dict[str, dict[str, int]]) -> str:
    """README.md with the hub's YAML header (``configs:`` data_files, ``dataset_info:`` features and split
    sizes), written by datasets' own serialisers so the YAML is exactly what the hub card holds."""
    from datasets import DatasetInfo, Features, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    card_data = DatasetCardData(pretty_name=f"{repo} (offline stand-in)")
    MetadataConfigs({
        name: {"data_files": [{"split": split, "path": f"{name}/{split}-*"} for split in split_rows[name]]}
        for name in split_rows
    }).to_dataset_card_data(card_data)
    infos = {}
    for name, rows in split_rows.items():
        splits = SplitDict()
        for split, count in rows.items():
            splits.add(SplitInfo(name=split, num_examples=count))
        infos[name] = DatasetInfo(features=Features.from_dict(configs[name].features), splits=splits, config_name=name)
    DatasetInfosDict(infos).to_dataset_card_data(card_data)
    return (f"---\n{card_data.to_yaml()}\n---\n\n# {repo}: offline stand-in\n\nBuilt by `aotp.standin.datasets` "
            f"from the official GLUE/SuperGLUE files in the hub's Parquet layout; not the hub's data.\n")


def build_dataset_standin(out: Path, roots: Sequence[Path], max_rows: Optional[int] = DEFAULT_MAX_ROWS,
                          repos: Sequence[str] = (GLUE_REPO, SUPERGLUE_REPO),
                          configs: Optional[Sequence[str]] = None) -> list[BuiltSplit]:
    """Write the hub snapshots and the prepared datasets cache of ``repos`` below ``out`` (an HF_HOME).

    Each hub split is converted from the first root in ``roots`` that holds its official file (the first
    ``max_rows`` source rows/lines; ``None``/0 = all); splits without a file anywhere are left out (logged).
    ``configs`` limits the build to those config names. Returns what was built, so a caller can compare
    with the same local files.
    """
    import datasets
    from datasets import Dataset, Features

    datasets.disable_progress_bars()
    out = Path(out)
    built: list[BuiltSplit] = []
    for repo in repos:
        wanted = {name: config for name, config in HUB_CONFIGS[repo].items() if configs is None or name in configs}
        files: dict[str, bytes] = {}
        split_rows: dict[str, dict[str, int]] = {}
        for name, config in wanted.items():
            features = Features.from_dict(config.features)
            for split in config.splits:
                source = _find_source(config, split, roots)
                if source is None:
                    log.info("%s/%s[%s]: no %s/%s under %s; split left out", repo, name, split, config.local_dir,
                             config.splits[split], ", ".join(map(str, roots)))
                    continue
                limit = max_rows or None
                if limit and config.options.get("whole_pairs"):
                    limit += limit % 2  # AX-g rows are male/female pairs; the formatter pairs consecutive rows
                rows, units = _first_units(config, source, split, limit)
                if not rows:
                    raise StandinDataError(f"{source}: no rows for {repo}/{name}[{split}]")
                buffer = io.BytesIO()
                Dataset.from_list(rows, features=features).to_parquet(buffer)
                files[f"{name}/{split}-00000-of-00001.parquet"] = buffer.getvalue()
                split_rows.setdefault(name, {})[split] = len(rows)
                built.append(BuiltSplit(repo, name, split, source, len(rows), units))
        if not split_rows:
            continue
        files["README.md"] = _dataset_card(repo, wanted, split_rows).encode()
        sha = snapshot_sha(repo, files)
        repo_dir = out / "hub" / f"datasets--{repo.replace('/', '--')}"
        snapshot = repo_dir / "snapshots" / sha
        for name, data in files.items():
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            (snapshot / name).write_bytes(data)
        (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
        (repo_dir / "refs" / "main").write_text(sha)
        prepare_cache(repo, snapshot, sha, out / "datasets", list(split_rows))
    return built


def prepare_cache(repo: str, snapshot: Path, sha: str, cache_dir: Path, config_names: Sequence[str]) -> None:
    """Prepare ``<cache_dir>/<org>___<name>/<config>/0.0.0/<sha>/`` from the snapshot with datasets' own
    module and Parquet builder, as ``load_dataset(repo, config)`` does online after the download: the module
    is read from the snapshot's README (its ``configs``/``dataset_info``), the builder is named as the hub
    factory names it (``dataset_name`` = the repo name, ``hash`` = the commit sha) and writes
    ``<name>-<split>.arrow`` + ``dataset_info.json`` into the directory the hub builder would use
    (``<namespace>___<name>/<config>/<version>/<hash>``; ``repo_id`` is not passed because the builder then
    insists on ``hf://`` data file URLs, so that directory is given as ``output_dir``)."""
    from datasets import load
    from datasets.naming import camelcase_to_snakecase

    # datasets >= 4 (no loading scripts left) names it LocalDatasetModuleFactory; datasets 3 has the script-free
    # one as LocalDatasetModuleFactoryWithoutScript (same constructor, same module)
    factory = getattr(load, "LocalDatasetModuleFactory", None) or load.LocalDatasetModuleFactoryWithoutScript
    get_dataset_builder_class = load.get_dataset_builder_class
    module = factory(str(snapshot)).get_module()
    namespace, name = repo.split("/")
    dataset_name = camelcase_to_snakecase(name)
    builder_cls = get_dataset_builder_class(module, dataset_name=dataset_name)
    for config_name in config_names:
        builder = builder_cls(cache_dir=str(cache_dir), dataset_name=dataset_name, config_name=config_name,
                              hash=sha, info=module.dataset_infos.get(config_name), base_path=str(snapshot))
        output_dir = (Path(cache_dir) / f"{namespace}___{dataset_name}" / builder.config_id
                      / str(builder.config.version) / sha)
        builder.download_and_prepare(output_dir=str(output_dir))


def options() -> list:
    """The key=value options of ``python -m aotp.standin datasets`` (:mod:`aotp.standin.__main__`)."""
    from aotp.cli import Option

    return [Option("output", "the HF_HOME to write (hub/ and datasets/)", required=True, kind=Path, metavar="DIR",
                   flags=("--out",)),
            Option("data.root", "official-layout data directories, each a fallback for the one before (default: "
                   "../shared/data, then tests/fixtures/data)", None, Path, many=True, metavar="DIR",
                   flags=("--data-root",)),
            Option("max_rows", f"source rows (JSONL lines for MultiRC/ReCoRD) per split; 0 = all (default "
                   f"{DEFAULT_MAX_ROWS})", DEFAULT_MAX_ROWS, int, minimum=0)]


def run(args) -> int:
    """``python -m aotp.standin datasets``; a bad argument raises ValueError (one line, exit 2)."""
    roots = args.roots or [Path("../shared/data"), Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "data"]
    missing = [str(root) for root in roots if not root.is_dir()]
    if missing:
        raise ValueError(f"data.root: not a directory: {', '.join(missing)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    built = build_dataset_standin(args.out, roots, args.max_rows or None)
    for item in built:
        print(f"{item.repo}/{item.config}[{item.split}]: {item.rows} rows from {item.source}")
    print(f"HF_HOME={args.out.resolve()} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m aotp.run ... "
          f"(no data.root) now loads these through datasets.load_dataset")
    return 0


