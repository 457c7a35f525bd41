"""data.pair_encoding=siamese: the two sentences of a pair tokenised and encoded separately, mean-pooled,
and classified from [u; v; |u - v|] (Sentence-BERT); cross encoding stays the default and keeps run ids."""

from __future__ import annotations

import re

import pytest
import torch

from aotp.models.tiny_tokenizer import build_tiny_tokenizer
from aotp.results.record import run_id
from aotp.models import TaskModel, build_backbone
from aotp.run import ConfigError, to_container, validate
from aotp.tasks.data import Collator, load_split, tokenize
from aotp.tasks.spec import load_spec
from tests.helpers import FIXTURE_DATA, compose
from tests.unit.test_tasks_formatting import fixture_examples


def test_siamese_tokenisation_keeps_each_sentence_as_its_own_sequence():
    tokenizer = build_tiny_tokenizer()
    examples = fixture_examples("glue/rte", "train")
    features = tokenize(examples, tokenizer, 64, uses_token_type_ids=True, pair_encoding="siamese")
    for feature, example in zip(features, examples):
        first, second = example["text"]
        assert feature["input_ids"] == [tokenizer(first, truncation=True, max_length=64)["input_ids"],
                                         tokenizer(second, truncation=True, max_length=64)["input_ids"]]
        assert feature["token_type_ids"] == [[0] * len(ids) for ids in feature["input_ids"]]
        assert feature["label"] == example["label"]


@pytest.mark.parametrize("task, message", [
    ("glue/sst2", "this task has single sentences"),
    ("superglue/copa", "this task's examples are multiple choice"),
])
def test_siamese_tokenisation_refuses_non_pair_tasks(task, message):
    with pytest.raises(ValueError, match=message):
        tokenize(fixture_examples(task, "train"), build_tiny_tokenizer(), 64, uses_token_type_ids=True,
                 pair_encoding="siamese")


def test_unknown_pair_encoding_lists_the_choices():
    with pytest.raises(ValueError, match="data.pair_encoding='bi'; valid: cross, siamese, siamese_cosine"):
        tokenize(fixture_examples("glue/rte", "train"), build_tiny_tokenizer(), 64, True, pair_encoding="bi")


def test_the_tokenisation_cache_keeps_cross_and_siamese_apart(tmp_path):
    spec = load_spec("glue/rte")
    kwargs = dict(labelled=True, limit=None, seed=0, max_length=64, uses_token_type_ids=True, cache_dir=tmp_path)
    cross = load_split(spec, "validation", build_tiny_tokenizer(), FIXTURE_DATA, **kwargs)
    siamese = load_split(spec, "validation", build_tiny_tokenizer(), FIXTURE_DATA, pair_encoding="siamese", **kwargs)
    assert len(list((tmp_path / "tokenized").glob("*.pt"))) == 2
    assert isinstance(cross.features[0]["input_ids"][0], int) and len(siamese.features[0]["input_ids"]) == 2
    again = load_split(spec, "validation", build_tiny_tokenizer(), FIXTURE_DATA, pair_encoding="siamese", **kwargs)
    assert again.features == siamese.features


@pytest.mark.parametrize("pair_encoding", ["siamese", "siamese_cosine"])
@pytest.mark.parametrize("head_type, num_labels", [("classification", 3), ("regression", 1)])
def test_siamese_logits_equal_the_head_on_separately_encoded_mean_pooled_sentences(tiny_family, head_type, num_labels,
                                                                                  pair_encoding):
    backbone = build_backbone({"source": "tiny", "name": f"tiny_{tiny_family}", "family": tiny_family})
    siamese = TaskModel(backbone, head_type, num_labels, seed=1, pair_encoding=pair_encoding).eval()
    d = siamese.hidden_size
    head_size = 3 * d * num_labels + num_labels if pair_encoding == "siamese" else 2 * num_labels
    assert sum(p.numel() for p in siamese.head.parameters()) == head_size
    pairs = [("the cat sat on the mat today", "a cat sat"), ("dogs bark", "the dogs in the yard bark at night")]
    features = tokenize([{"text": pair, "label": 0} for pair in pairs], backbone.tokenizer, 32,
                        uses_token_type_ids=siamese.uses_token_type_ids, pair_encoding="siamese")
    batch = Collator(pad_token_id=backbone.tokenizer.pad_token_id, label_dtype=torch.long)(features)
    assert batch["input_ids"].shape[:2] == (2, 2)
    with torch.no_grad():
        logits = siamese(**{k: v for k, v in batch.items() if k != "labels"})
        for row, feature in enumerate(features):
            pooled = []
            for ids in feature["input_ids"]:  # one sentence alone, no padding
                states = siamese.backbone(input_ids=torch.tensor([ids]),
                                          attention_mask=torch.ones(1, len(ids), dtype=torch.long)).last_hidden_state
                pooled.append(states[0].mean(0))
            u, v = pooled
            if pair_encoding == "siamese":  # W_out [u; v; |u - v|] + b_out
                expected = siamese.head.out_proj(torch.cat([u, v, (u - v).abs()]))
            else:  # w * 20 cos(u, v) + b
                cosine = (u @ v) / (u.norm() * v.norm())
                expected = siamese.head.out_proj.weight[:, 0] * 20 * cosine + siamese.head.out_proj.bias
            expected = expected.squeeze(-1) if head_type == "regression" else expected
            torch.testing.assert_close(logits[row], expected, atol=1e-5, rtol=1e-5)


def test_siamese_model_refuses_multiple_choice_and_cross_shaped_inputs():
    backbone = build_backbone({"source": "tiny", "name": "tiny_bert", "family": "bert"})
    with pytest.raises(ValueError, match="multiple choice is cross-encoded"):
        TaskModel(backbone, "multiple_choice", 2, pair_encoding="siamese")
    model = TaskModel(backbone, "classification", 2, pair_encoding="siamese")
    with pytest.raises(ValueError, match=r"takes \(B, 2, T\) inputs"):
        model(input_ids=torch.ones(3, 5, dtype=torch.long), attention_mask=torch.ones(3, 5, dtype=torch.long))


@pytest.mark.parametrize("overrides, message", [
    (["task=glue/rte", "data.pair_encoding=bi"], "data.pair_encoding='bi'; valid: cross, siamese, siamese_cosine"),
    (["task=glue/rte", "method.head_lr=0"], "method.head_lr (the task head's learning rate; null = method.lr) must be"),
    (["task=glue/sst2", "data.pair_encoding=siamese"], "glue/sst2 is not one (use data.pair_encoding=cross)"),
    (["task=superglue/copa", "data.pair_encoding=siamese"], "superglue/copa is not one"),
    (["task=glue/rte", "method=aot_fc", "data.pair_encoding=siamese"], "method=aot_fc serves cross-encoded tasks only"),
])
def test_bad_pair_encoding_is_refused_before_loading_a_model(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose(["model=tiny_bert"] + overrides))


def test_the_default_cross_encoding_leaves_run_ids_unchanged():
    config = to_container(compose(["model=tiny_bert", "task=glue/rte"]))
    assert config["data"]["pair_encoding"] == "cross"
    without = {**config, "data": {k: v for k, v in config["data"].items() if k != "pair_encoding"}}
    assert run_id(config) == run_id(without)
    assert run_id({**config, "data": {**config["data"], "pair_encoding": "siamese"}}) != run_id(config)
