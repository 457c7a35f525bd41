"""Truncation is counted per split, warned about above a threshold, and choices made identical refuse a run."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from aotp.models.tiny_tokenizer import build_tiny_tokenizer
from aotp.tasks import load_task_data
from aotp.tasks.spec import load_spec
from aotp.tasks.truncation import TruncationError, check_truncation, truncation_report, truncation_stats
from tests.helpers import FIXTURE_DATA, run_cli


def copa_data(max_length: int, **options):
    cfg = OmegaConf.create({"root": str(FIXTURE_DATA), "max_length": max_length, **options})
    return load_task_data(load_spec("superglue/copa"), build_tiny_tokenizer(), cfg, uses_token_type_ids=True, seed=0,
                          cache_dir=None)


def test_stats_on_known_sequences():
    examples = [{"choices": [("a", "x"), ("a", "y")]}, {"choices": [("b", "x"), ("b", "x")]}, {"choices": [("c", "z")]}]
    full = [{"input_ids": [[1, 2, 3, 4], [1, 2, 3, 5]]},  # differ only in the last token: cut away at 3
            {"input_ids": [[1, 2, 3, 4], [1, 2, 3, 4]]},  # identical before truncation: not counted as lost
            {"input_ids": [[1, 2]]}]
    cut = [{"input_ids": [s[:3] for s in f["input_ids"]]} for f in full]
    assert truncation_stats(examples, cut, full, 3) == {"examples": 3, "truncated": 2, "max_length": 3, "longest": 4,
                                                        "identical_choices": 1}
    single = [{"text": ("a",)}, {"text": ("b",)}]
    assert truncation_stats(single, [{"input_ids": [1, 2]}, {"input_ids": [1]}], [{"input_ids": [1, 2, 3]}, {"input_ids": [1]}],
                            2) == {"examples": 2, "truncated": 1, "max_length": 2, "longest": 3}


def test_copa_short_max_length_is_refused_unless_allowed():
    data = copa_data(12)
    train = data["train"].truncation
    assert train["examples"] == 10 and train["truncated"] == 10 and train["identical_choices"] > 0
    with pytest.raises(TruncationError, match=r"data.max_length=12 makes the choices of \d+ train, \d+ validation "
                                              r"multiple-choice examples identical.*data.allow_identical_choices=true"):
        check_truncation(truncation_report(data), {"max_length": 12})
    report = truncation_report(data)
    warnings = check_truncation(report, {"allow_identical_choices": True})
    assert report["train"] == train and len(warnings) == 2
    assert warnings[0].startswith("data.max_length=12 truncates 10 of 10 train examples (100.0% > "
                                  "data.truncation_warning=0.05")


def test_no_warning_under_the_threshold_and_none_without_truncation():
    data = copa_data(512)
    report = truncation_report(data)
    warnings = check_truncation(report, {})
    assert report["train"]["truncated"] == 0 and report["train"]["identical_choices"] == 0 and warnings == []
    data = copa_data(40)
    shares = {name: split.truncation["truncated"] / split.truncation["examples"] for name, split in data.splits.items()}
    highest = max(shares.values())
    assert 0 < highest < 1
    report = truncation_report(data)
    assert check_truncation(report, {"truncation_warning": highest}) == []  # at the threshold: no warning
    warned = check_truncation(report, {"truncation_warning": highest - 0.01})
    assert len(warned) == sum(share == highest for share in shares.values())


def test_run_with_identical_choices_exits_2_and_is_not_a_success(tmp_path):
    result = run_cli(["model=tiny_bert", "task=superglue/copa", f"data.root={FIXTURE_DATA}", "data.max_length=12",
                      f"paths.results={tmp_path}", f"paths.cache={tmp_path}/cache", "trainer.max_steps=1"], timeout=300)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: data.max_length=12 makes the choices of")
    assert result.stderr.count("\n") == 1
    assert "Truncated at max_length 12: train 10/10 (100.0%), " in result.stdout  # counted, then refused
    records = [json.loads(p.read_text()) for p in tmp_path.glob("*/result.json")]
    assert [r["status"] for r in records] == ["failed"]


@pytest.mark.parametrize("task,pair_encoding", [("glue/rte", "cross"), ("glue/rte", "siamese_cosine"),
                                                ("superglue/copa", "cross"), ("glue/sst2", "cross")])
@pytest.mark.parametrize("max_length", [8, 24, 512])
def test_features_equal_one_tokenisation_at_max_length(task, pair_encoding, max_length):
    """The loader tokenises untruncated once and again only the examples over max_length: its features are
    exactly those of tokenising every example at max_length."""
    from aotp.tasks.data import tokenize

    cfg = OmegaConf.create({"root": str(FIXTURE_DATA), "max_length": max_length, "pair_encoding": pair_encoding,
                            "allow_identical_choices": True, "truncation_warning": 1.0})
    tokenizer = build_tiny_tokenizer()
    data = load_task_data(load_spec(task), tokenizer, cfg, uses_token_type_ids=True, seed=0, cache_dir=None)
    for split in data.splits.values():
        assert split.features == tokenize(split.examples, tokenizer, max_length, True, pair_encoding)
    assert any(s.truncation["truncated"] for s in data.splits.values()) == (max_length < 512)


def test_a_cache_without_truncation_counts_is_redone_and_a_complete_cache_is_read(tmp_path, monkeypatch):
    """The tokenisation cache holds the truncation counts; a cache file written before they were counted is
    tokenised again and overwritten (same features, counts added), and a complete one is read as it is."""
    import torch

    import aotp.tasks.data as data_module

    cfg = OmegaConf.create({"root": str(FIXTURE_DATA), "max_length": 24, "allow_identical_choices": True,
                            "truncation_warning": 1.0})

    def load():
        return load_task_data(load_spec("superglue/copa"), build_tiny_tokenizer(), cfg, uses_token_type_ids=True,
                              seed=0, cache_dir=tmp_path)

    fresh = load()
    (cache_file, *others) = sorted((tmp_path / "tokenized").glob("superglue-copa-train-*.pt"))
    assert not others
    old_format = torch.load(cache_file, weights_only=False)
    counts = old_format.pop("truncation")
    assert counts["truncated"] > 0  # max_length 24 cuts COPA pairs: the counts are worth keeping
    torch.save(old_format, cache_file)
    redone = load()
    assert redone.splits["train"].truncation == counts
    assert redone.splits["train"].features == fresh.splits["train"].features
    assert torch.load(cache_file, weights_only=False)["truncation"] == counts  # written back complete

    def no_tokenising(*args, **kwargs):
        raise AssertionError("a complete cache must not be tokenised again")

    monkeypatch.setattr(data_module, "tokenize", no_tokenising)
    assert load().splits["train"].truncation == counts
