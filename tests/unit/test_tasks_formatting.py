"""Formatters: the templates the field uses, hub-layout records, group-aware subsets, the tokenisation cache."""

from __future__ import annotations

import logging

import pytest

from aotp.models.tiny_tokenizer import build_tiny_tokenizer
from aotp.tasks.data import load_split, subset, tokenize
from aotp.tasks.formatting import FORMATTERS, select_evidence
from aotp.tasks.loading import DataFileError, load_raw_records
from aotp.tasks.spec import load_spec
from tests.helpers import FIXTURE_DATA


def fmt(task: str, records, labelled=True):
    spec = load_spec(task)
    return FORMATTERS.get(spec.formatter).format(spec, records, labelled)


def fixture_examples(task: str, split: str):
    spec = load_spec(task)
    return fmt(task, load_raw_records(spec, split, FIXTURE_DATA), split not in spec.test_splits)


def test_copa_connectors_and_choices():
    examples = fixture_examples("superglue/copa", "train")
    assert examples[0] == {"choices": [("The ice cream melted. because", "It was left in the sun."),
                                       ("The ice cream melted. because", "It was kept in the freezer.")],
                           "label": 0, "idx": 0}
    assert examples[1]["choices"][1] == ("The boy fell off his bike. so", "He scraped his knee.")
    assert examples[1]["label"] == 1
    with pytest.raises(DataFileError, match=r"question='reason' is not one of \['cause', 'effect'\]"):
        fmt("superglue/copa", [{"premise": "P.", "choice1": "a", "choice2": "b", "question": "reason", "label": 0}])


def test_wic_template():
    record = {"word": "bank", "sentence1": "We sat on the bank.", "sentence2": "The bank closed.", "idx": 3,
              "label": False, "start1": 14, "end1": 18, "start2": 4, "end2": 8}
    assert fmt("superglue/wic", [record]) == [{
        "text": ("We sat on the bank. The bank closed. Does bank have the same meaning in both sentences?",),
        "label": 0, "idx": 3}]


@pytest.mark.parametrize("text, target, marked", [
    ("The trophy would not fit in the suitcase because it was too big.",
     {"span1_index": 0, "span1_text": "The trophy", "span2_index": 9, "span2_text": "it"},
     "*The trophy* would not fit in the suitcase because #it# was too big."),
    ("Emma's mother had died long ago, and her place was taken.",  # possessive stays outside the marks
     {"span1_index": 0, "span1_text": "Emma", "span2_index": 7, "span2_text": "her"},
     "*Emma*'s mother had died long ago, and #her# place was taken."),
    ("Sam thanked the lawyer, because he helped him.",  # case and punctuation differ from the span text
     {"span1_index": 2, "span1_text": "The lawyer", "span2_index": 7, "span2_text": "him"},
     "Sam thanked *the lawyer*, because he helped #him#."),
    ("Put the pebble in the safe . Later they use it , then.",  # span2 index off by one: nearest occurrence
     {"span1_index": 5, "span1_text": "safe", "span2_index": 8, "span2_text": "it"},
     "Put the pebble in the *safe* . Later they use #it# , then."),
])
def test_wsc_marks_both_spans(text, target, marked):
    official = fmt("superglue/wsc", [{"text": text, "target": target, "idx": 0, "label": True}])
    hub = fmt("superglue/wsc", [{"text": text, **target, "idx": 0, "label": 1}])  # wsc.fixed: flat fields
    assert official == hub == [{"text": (marked,), "label": 1, "idx": 0}]


def test_wsc_realignment_is_logged_and_an_absent_span_is_an_error(caplog):
    record = {"text": "A b c d it e.", "idx": 0, "label": False,
              "target": {"span1_index": 0, "span1_text": "A", "span2_index": 1, "span2_text": "it"}}
    with caplog.at_level(logging.WARNING, logger="aotp.tasks.formatting"):
        fmt("superglue/wsc", [{**record, "_where": "x.jsonl:7"}])
    assert "1 span(s) not at their span index were marked where their words occur nearest (first: x.jsonl:7)" \
        in caplog.text
    record["target"]["span2_text"] = "she"
    with pytest.raises(DataFileError, match=r"x.jsonl:7: span2_text 'she' \(span2_index 1\) does not occur"):
        fmt("superglue/wsc", [{**record, "_where": "x.jsonl:7"}])


def test_multirc_one_example_per_answer_grouped_by_question():
    examples = fixture_examples("superglue/multirc", "validation")
    spec = load_spec("superglue/multirc")
    records = load_raw_records(spec, "validation", FIXTURE_DATA)
    passage = records[0]["passage"]
    first_q = passage["questions"][0]
    assert len(examples) == sum(len(q["answers"]) for r in records for q in r["passage"]["questions"])
    assert examples[0] == {"text": (passage["text"], f"{first_q['question']} {first_q['answers'][0]['text']}"),
                           "label": first_q["answers"][0]["label"],
                           "idx": [records[0]["idx"], first_q["idx"], first_q["answers"][0]["idx"]],
                           "group": (records[0]["idx"], first_q["idx"])}
    assert len({e["group"] for e in examples}) == sum(len(r["passage"]["questions"]) for r in records)


def test_multirc_hub_rows_equal_the_nested_layout():
    nested = {"idx": 4, "passage": {"text": "P.", "questions": [{"question": "Q?", "idx": 9, "answers": [
        {"text": "yes", "idx": 20, "label": 1}, {"text": "no", "idx": 21, "label": 0}]}]}}
    flat = [{"paragraph": "P.", "question": "Q?", "answer": a, "idx": {"paragraph": 4, "question": 9, "answer": i},
             "label": label} for a, i, label in (("yes", 20, 1), ("no", 21, 0))]
    assert fmt("superglue/multirc", [nested]) == fmt("superglue/multirc", flat)


def test_select_evidence_keeps_the_rarest_shared_words_sentences_in_paragraph_order():
    paragraph = ("Force moves things. Force stops things. A force can turn things. "
                 "Heavy mass needs more force. The sky is blue today.")
    # "force" is in four sentences (weight 1/4 each), "mass" in one: the mass sentence wins.
    assert select_evidence(paragraph, "Does mass change the force needed?", 5) == "Heavy mass needs more force."
    # a larger budget adds the next best (earliest of the ties) and keeps paragraph order
    assert select_evidence(paragraph, "Does mass change the force needed?", 8) == \
        "Force moves things. Heavy mass needs more force."
    assert select_evidence(paragraph, "anything", 100) == paragraph  # fits: the paragraph unchanged
    # one sentence even when it alone exceeds the budget
    assert select_evidence(paragraph, "blue sky", 1) == "The sky is blue today."


def test_multirc_evidence_words_option_shortens_the_passage(monkeypatch):
    spec = load_spec("superglue/multirc")
    records = load_raw_records(spec, "validation", FIXTURE_DATA)
    whole = FORMATTERS.get("multirc").format(spec, records, True)
    monkeypatch.setitem(spec.format_options, "evidence_words", 6)
    short = FORMATTERS.get("multirc").format(spec, records, True)
    assert [e["text"][1] for e in short] == [e["text"][1] for e in whole]  # question + answer untouched
    assert [e["label"] for e in short] == [e["label"] for e in whole]
    for s, w in zip(short, whole):
        assert s["text"][0] == select_evidence(w["text"][0], s["text"][1], 6)
    assert any(len(s["text"][0]) < len(w["text"][0]) for s, w in zip(short, whole))
    monkeypatch.setitem(spec.format_options, "evidence_words", -1)
    with pytest.raises(ValueError, match="evidence_words must be >= 0"):
        FORMATTERS.get("multirc").format(spec, records, True)


def test_record_candidates_placeholder_and_labels():
    spec = load_spec("superglue/record")
    record = load_raw_records(spec, "train", FIXTURE_DATA)[0]
    text = record["passage"]["text"]
    examples = fmt("superglue/record", [record])
    mentions = [text[e["start"]:e["end"] + 1] for e in record["passage"]["entities"]]
    candidates = list(dict.fromkeys(mentions))  # unique surface forms, first-mention order
    qa = record["qas"][0]
    first = [e for e in examples if e["group"] == qa["idx"]]
    assert [e["entity"] for e in first] == candidates
    assert "@highlight" not in first[0]["text"][0] and "\n- " in first[0]["text"][0]
    assert first[0]["text"][1] == qa["query"].replace("@placeholder", candidates[0])
    gold = {a["text"] for a in qa["answers"]}
    assert {e["entity"] for e in first if e["label"] == 1} == gold == {"Ellen Park", "Park"}
    assert all(e["answers"] == ["Ellen Park", "Park"] and e["idx"] == qa["idx"] for e in first)
    assert len(examples) == len(candidates) * len(record["qas"])


def test_record_hub_rows_equal_the_nested_layout():
    text = "Ann met Bo.\n@highlight\nAnn smiles"
    nested = {"idx": 1, "source": "x", "passage": {"text": text, "entities": [
        {"start": 0, "end": 2}, {"start": 8, "end": 9}, {"start": 23, "end": 25}]},
        "qas": [{"query": "@placeholder waved.", "idx": 5, "answers": [{"start": 8, "end": 9, "text": "Bo"}]}]}
    flat = {"passage": text, "query": "@placeholder waved.", "entities": ["Ann", "Bo"], "answers": ["Bo"],
            "idx": {"passage": 1, "query": 5}}
    assert fmt("superglue/record", [nested]) == fmt("superglue/record", [flat])
    test = fmt("superglue/record", [flat], labelled=False)
    assert [e["label"] for e in test] == [None, None] and test[0]["answers"] is None


def test_record_query_without_gold_answer_is_refused():
    flat = {"passage": "Ann met Bo.", "query": "@placeholder waved.", "entities": ["Ann"], "answers": [],
            "idx": {"passage": 1, "query": 5}, "_where": "r.jsonl:3"}
    with pytest.raises(DataFileError, match="r.jsonl:3: query has no gold answers"):
        fmt("superglue/record", [flat])


def test_axg_pairs_from_pair_id_or_consecutive_hub_rows():
    local = fixture_examples("superglue/axg", "diagnostic")
    hub = fmt("superglue/axg", [{"premise": e["text"][0], "hypothesis": e["text"][1], "idx": e["idx"],
                                 "label": e["label"]} for e in local])
    from aotp.metrics import gender_parity_pairs

    assert gender_parity_pairs([e["group"] for e in local]) == gender_parity_pairs([e["group"] for e in hub]) \
        == [(i, i + 1) for i in range(0, len(local), 2)]


def test_subset_keeps_groups_whole_and_is_seeded():
    examples = fixture_examples("superglue/multirc", "train")
    picked = subset(examples, 8, seed=0)
    assert 0 < len(picked) <= 8 and picked == subset(examples, 8, seed=0)
    groups = {e["group"] for e in picked}
    assert all(sum(e["group"] == g for e in picked) == sum(e["group"] == g for e in examples) for g in groups)
    plain = fixture_examples("glue/rte", "train")
    assert len(subset(plain, 4, seed=1)) == 4 and subset(plain, 100, seed=1) == plain


def test_multiple_choice_tokenisation_keeps_one_sequence_per_choice():
    tokenizer = build_tiny_tokenizer()
    examples = fixture_examples("superglue/copa", "validation")
    features = tokenize(examples, tokenizer, 64, uses_token_type_ids=True)
    assert all(len(f["input_ids"]) == 2 and len(f["token_type_ids"]) == 2 for f in features)
    assert [f["label"] for f in features] == [e["label"] for e in examples]


def test_cache_round_trip_keeps_formatter_fields_and_keys_on_the_spec(tmp_path):
    tokenizer = build_tiny_tokenizer()
    spec = load_spec("superglue/record")
    kwargs = dict(labelled=True, limit=None, seed=0, max_length=64, uses_token_type_ids=True, cache_dir=tmp_path)
    fresh = load_split(spec, "validation", tokenizer, FIXTURE_DATA, **kwargs)
    files = list((tmp_path / "tokenized").glob("*.pt"))
    assert len(files) == 1
    cached = load_split(spec, "validation", tokenizer, FIXTURE_DATA, **kwargs)
    assert list((tmp_path / "tokenized").glob("*.pt")) == files  # a hit, though tokenising changed the tokenizer state
    assert cached.examples == fresh.examples and cached.features == fresh.features
    assert {"entity", "answers", "group"} <= set(cached.examples[0])
    # A formatting option is part of the cache key: changing it tokenises afresh.
    from dataclasses import replace

    changed = replace(spec, format_options={**spec.format_options, "highlight_replacement": "* "})
    again = load_split(changed, "validation", tokenizer, FIXTURE_DATA, **kwargs)
    assert len(list((tmp_path / "tokenized").glob("*.pt"))) == 2
    assert again.examples[0]["text"] != fresh.examples[0]["text"]
    unlabelled = load_split(spec, "validation", tokenizer, FIXTURE_DATA, **{**kwargs, "labelled": False})
    assert unlabelled.examples[0]["label"] is None and len(list((tmp_path / "tokenized").glob("*.pt"))) == 3
