"""The hand-written fixtures in tests/fixtures/data keep the official file layouts.

Always: every TSV row has its header's width, every labelled split covers the whole label space and
test files carry no labels. With the real files at ../shared/data: the fixtures' first line (BOM and
header), line endings, final newline and JSON keys/label types equal the real files'.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"

# file -> (label column (name, or index for headerless files), label values); None = unlabelled test file
GLUE = {
    "CoLA/train.tsv": (1, {"0", "1"}), "CoLA/dev.tsv": (1, {"0", "1"}), "CoLA/test.tsv": None,
    "SST-2/train.tsv": ("label", {"0", "1"}), "SST-2/dev.tsv": ("label", {"0", "1"}), "SST-2/test.tsv": None,
    "MRPC/train.tsv": ("Quality", {"0", "1"}), "MRPC/dev.tsv": ("Quality", {"0", "1"}), "MRPC/test.tsv": None,
    "STS-B/train.tsv": ("score", None), "STS-B/dev.tsv": ("score", None), "STS-B/test.tsv": None,
    "QQP/train.tsv": ("is_duplicate", {"0", "1"}), "QQP/dev.tsv": ("is_duplicate", {"0", "1"}), "QQP/test.tsv": None,
    "MNLI/train.tsv": ("gold_label", {"entailment", "neutral", "contradiction"}),
    "MNLI/dev_matched.tsv": ("gold_label", {"entailment", "neutral", "contradiction"}),
    "MNLI/dev_mismatched.tsv": ("gold_label", {"entailment", "neutral", "contradiction"}),
    "MNLI/test_matched.tsv": None, "MNLI/test_mismatched.tsv": None,
    "QNLI/train.tsv": ("label", {"entailment", "not_entailment"}), "QNLI/dev.tsv": ("label", {"entailment", "not_entailment"}),
    "QNLI/test.tsv": None,
    "RTE/train.tsv": ("label", {"entailment", "not_entailment"}), "RTE/dev.tsv": ("label", {"entailment", "not_entailment"}),
    "RTE/test.tsv": None,
    "WNLI/train.tsv": ("label", {"0", "1"}), "WNLI/dev.tsv": ("label", {"0", "1"}), "WNLI/test.tsv": None,
    "AX/diagnostic.tsv": None, "AX/diagnostic-full.tsv": ("Label", {"entailment", "neutral", "contradiction"}),
}
HEADERLESS = {"CoLA/train.tsv", "CoLA/dev.tsv"}
NLI2 = {"entailment", "not_entailment"}
SUPERGLUE = {  # task -> label values per example (MultiRC: per answer option); ReCoRD has answers instead
    "BoolQ": {True, False}, "CB": {"entailment", "contradiction", "neutral"}, "COPA": {0, 1}, "MultiRC": {0, 1},
    "RTE": NLI2, "WiC": {True, False}, "WSC": {True, False}, "ReCoRD": None,
}


def read_tsv(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return [row for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def labels_of(task: str, row: dict) -> list:
    if task == "MultiRC":
        return [a.get("label") for q in row["passage"]["questions"] for a in q["answers"]]
    return [row.get("label")]


@pytest.mark.parametrize("name", sorted(GLUE))
def test_glue_fixture_rows_and_labels(name):
    rows = read_tsv(FIXTURES / "glue" / name)
    header = None if name in HEADERLESS else rows.pop(0)
    width = len(rows[0]) if header is None else len(header)
    assert all(len(row) == width for row in rows), name
    spec = GLUE[name]
    if spec is None:
        assert header is not None and not {"label", "gold_label", "is_duplicate", "Quality", "score"} & set(header)
        return
    column, values = spec
    index = column if header is None else header.index(column)
    found = {row[index] for row in rows}
    if values is None:  # STS-B scores
        assert all(0.0 <= float(v) <= 5.0 for v in found) and len(found) > 3
    else:
        assert found == values, f"{name}: labels {found} should cover {values}"


@pytest.mark.parametrize("task", sorted(SUPERGLUE))
def test_superglue_fixture_labels(task):
    folder = FIXTURES / "super_glue" / task
    for split in ("train", "val"):
        rows = read_jsonl(folder / f"{split}.jsonl")
        if SUPERGLUE[task] is None:  # ReCoRD: every query has answers that are entity mentions of the passage
            for row in rows:
                text, entities = row["passage"]["text"], {(e["start"], e["end"]) for e in row["passage"]["entities"]}
                for qa in row["qas"]:
                    assert "@placeholder" in qa["query"] and qa["answers"]
                    for answer in qa["answers"]:
                        assert (answer["start"], answer["end"]) in entities
                        assert text[answer["start"]:answer["end"] + 1] == answer["text"]  # end is inclusive
            continue
        found = {label for row in rows for label in labels_of(task, row)}
        assert found == SUPERGLUE[task], f"{task}/{split}: labels {found}"
        assert all(type(v) is type(next(iter(SUPERGLUE[task]))) for v in found)
    test_rows = read_jsonl(folder / "test.jsonl")
    assert test_rows and all(label is None for row in test_rows for label in labels_of(task, row))
    assert all("answers" not in qa for row in test_rows for qa in row.get("qas", []))


def test_superglue_span_fields_point_at_their_words():
    for split in ("train", "val", "test"):
        for row in read_jsonl(FIXTURES / "super_glue/WiC" / f"{split}.jsonl"):
            for k in ("1", "2"):  # character offsets, end exclusive; the surface form may be inflected
                assert row[f"sentence{k}"][row[f"start{k}"]:row[f"end{k}"]].isalpha()
        for row in read_jsonl(FIXTURES / "super_glue/WSC" / f"{split}.jsonl"):
            tokens, target = row["text"].split(), row["target"]
            for k in ("1", "2"):  # token index into text.split(); case and attached punctuation may differ
                span = target[f"span{k}_text"].split()
                got = tokens[target[f"span{k}_index"]:target[f"span{k}_index"] + len(span)]
                assert [t.lower().rstrip(".,") for t in got] == [t.lower() for t in span]


def test_axg_pairs_and_axb_string_ids():
    from aotp.metrics import gender_parity_pairs

    rows = read_jsonl(FIXTURES / "super_glue/AX-g/AX-g.jsonl")
    pairs = gender_parity_pairs([row["pair_id"] for row in rows])
    assert sorted(pairs) == [(i, i + 1) for i in range(0, len(rows), 2)]
    assert all(rows[a]["hypothesis"] == rows[b]["hypothesis"] and rows[a]["label"] == rows[b]["label"] for a, b in pairs)
    assert {row["label"] for row in rows} == NLI2
    axb = read_jsonl(FIXTURES / "super_glue/AX-b/AX-b.jsonl")
    assert all(isinstance(row["idx"], str) for row in axb) and {row["label"] for row in axb} == NLI2


def _first_line_and_layout(path: Path) -> tuple[bytes, bool, bool]:
    data = path.read_bytes()
    return data.split(b"\n", 1)[0], b"\r\n" in data, data.endswith(b"\n")


@pytest.mark.parametrize("name", sorted(GLUE))
def test_glue_fixture_layout_equals_real_file(name, shared_data):
    real = shared_data / "glue" / name
    if not real.is_file():
        pytest.skip(f"{real} is not in the offline snapshot")
    real_first, real_crlf, real_final = _first_line_and_layout(real)
    fix_first, fix_crlf, fix_final = _first_line_and_layout(FIXTURES / "glue" / name)
    if name in HEADERLESS:
        assert real_first.count(b"\t") == fix_first.count(b"\t")
    else:
        assert fix_first == real_first  # header bytes, BOM included
    assert (fix_crlf, fix_final) == (real_crlf, real_final)


@pytest.mark.parametrize("path", ["BoolQ/val.jsonl", "BoolQ/test.jsonl", "COPA/train.jsonl", "COPA/test.jsonl",
                                  "MultiRC/train.jsonl", "MultiRC/test.jsonl", "RTE/train.jsonl", "RTE/test.jsonl",
                                  "WSC/train.jsonl", "WSC/test.jsonl", "AX-b/AX-b.jsonl", "AX-g/AX-g.jsonl"])
def test_superglue_fixture_keys_equal_real_file(path, shared_data):
    real_rows = read_jsonl(shared_data / "super_glue" / path)
    fix_rows = read_jsonl(FIXTURES / "super_glue" / path)

    def shape(row):
        out = {k: type(v).__name__ for k, v in row.items()}
        if "target" in row:  # WSC
            out["target"] = sorted(row["target"])
        if isinstance(row.get("passage"), dict):  # MultiRC
            question = row["passage"]["questions"][0]
            out["passage"] = (sorted(row["passage"]), sorted(question), sorted(question["answers"][0]))
        return out

    real_shapes = {json.dumps(shape(r), sort_keys=True) for r in real_rows}
    assert {json.dumps(shape(r), sort_keys=True) for r in fix_rows} <= real_shapes
    real_bytes, fix_bytes = (shared_data / "super_glue" / path).read_bytes(), (FIXTURES / "super_glue" / path).read_bytes()
    assert fix_bytes.endswith(b"\n") == real_bytes.endswith(b"\n")
    assert (b'":"' in fix_bytes) == (b'":"' in real_bytes)  # AX-g is written compactly
