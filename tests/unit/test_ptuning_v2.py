"""P-Tuning v2 specifics: the prefix matters on every family, the reparametrization, a reference
computation through Hugging Face's own key/value cache (P-Tuning v2's official mechanism)."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicCache

from aotp.methods import METHODS
from tests.conftest import make_tiny_task_model, tiny_batch

SENTENCES = ["a good movie", "the film was bad and long, we said no"]


def build(family: str, seed: int = 0, **options):
    torch.manual_seed(seed)
    model = make_tiny_task_model(family, num_labels=2, seed=seed)
    method = METHODS.get("ptuning_v2")(**options)
    method.apply(model)
    model.eval()
    return model, method


def prefix_parameters(model):
    return [(n, p) for n, p in model.named_parameters() if n.startswith("backbone.prefix_encoder.")]


def test_changing_the_prefix_changes_logits_on_every_family(tiny_family):
    model, _ = build(tiny_family, prefix_length=4)
    batch = tiny_batch(model, SENTENCES)
    encode = lambda: model.encode(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))  # noqa: E731
    with torch.no_grad():
        before, before_logits = encode(), model(**batch)
        for _, parameter in prefix_parameters(model):
            parameter.mul_(-1.5)
        after, after_logits = encode(), model(**batch)
    assert (after - before).abs().max() > 1e-2  # the head's input moves clearly...
    assert (after_logits - before_logits).abs().max() > 1e-4  # ...and so do the (small, fresh-head) logits


def test_backbone_is_frozen_and_only_the_prefix_and_head_train(tiny_family):
    model, method = build(tiny_family, prefix_length=4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in prefix_parameters(model)} | {n for n, _ in model.named_parameters()
                                                                     if n.startswith("head.")}


@pytest.mark.parametrize("prefix_length", [1, 5])
def test_flat_prefix_formula(prefix_length):
    model, method = build("deberta", prefix_length=prefix_length)
    config = model.backbone.config
    head = sum(p.numel() for p in model.head.parameters())
    assert method.expected_trainable_parameters(model) == prefix_length * config.num_hidden_layers * 2 * 32 + head
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == method.expected_trainable_parameters(model)


def test_reparametrized_prefix_formula_and_materialisation(tiny_family, tmp_path):
    model, method = build(tiny_family, prefix_length=3, reparametrize=True, bottleneck_size=7)
    d, layers = 32, model.backbone.config.num_hidden_layers
    head = sum(p.numel() for p in model.head.parameters())
    expected = 3 * d + (d * 7 + 7) + (7 * 2 * layers * d + 2 * layers * d) + head
    assert method.expected_trainable_parameters(model) == expected
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected
    names = {n.removeprefix("backbone.prefix_encoder.") for n, _ in prefix_parameters(model)}
    assert names == {"embedding.weight", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"}

    batch = tiny_batch(model, SENTENCES)
    with torch.no_grad():
        for _, parameter in prefix_parameters(model):
            parameter.add_(0.3 * torch.randn_like(parameter))
        before = model(**batch)
    facts = method.prepare_for_inference(model, tmp_path)
    assert facts["prefix_parameters"] == 3 * layers * 2 * d  # the flat prefix, the MLP dropped
    remaining = [n for n, _ in prefix_parameters(model)]
    assert remaining == ["backbone.prefix_encoder.prefix"]
    with torch.no_grad():
        torch.testing.assert_close(model(**batch), before, atol=1e-5, rtol=0)


def test_dropout_acts_on_the_prefix_in_training_only():
    model, _ = build("bert", prefix_length=4, dropout=0.5)
    batch = tiny_batch(model, SENTENCES)
    with torch.no_grad():
        evals = [model(**batch) for _ in range(2)]
        model.train()
        for module in model.modules():  # keep the backbone's own dropout out of the comparison
            if isinstance(module, torch.nn.Dropout) and module.p != 0.5:
                module.p = 0.0
        trains = [model(**batch) for _ in range(2)]
    assert torch.equal(evals[0], evals[1])
    assert not torch.equal(trains[0], trains[1])


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_matches_hugging_face_past_key_values_reference(family):
    """P-Tuning v2's reference code feeds the prefix as ``past_key_values`` with a ones-prefixed mask;
    HF BERT/RoBERTa (not DeBERTa) still accept that, so it is an independent reference here. Position
    ids are passed explicitly: the reference code's implicit shift by the prefix length is an artefact."""
    prefix_length = 4
    model, _ = build(family, prefix_length=prefix_length, dropout=0.0)
    reference = make_tiny_task_model(family, num_labels=2, seed=0).eval()
    batch = tiny_batch(model, SENTENCES)
    config = reference.backbone.config
    layers, heads, d = config.num_hidden_layers, config.num_attention_heads, config.hidden_size
    (_, prefix), = prefix_parameters(model)
    rows, length = batch["input_ids"].shape
    with torch.no_grad():
        prefix.copy_(torch.randn_like(prefix))
        out = model.backbone(**batch).last_hidden_state
        key_values = prefix.view(prefix_length, 2 * layers, heads, d // heads).permute(1, 2, 0, 3)
        cache = DynamicCache()  # filled through update(), the cache API of transformers 4.57 and 5
        for i in range(layers):
            cache.update(key_values[2 * i].expand(rows, -1, -1, -1), key_values[2 * i + 1].expand(rows, -1, -1, -1), i)
        mask = torch.cat([torch.ones(rows, prefix_length, dtype=torch.long), batch["attention_mask"]], 1)
        offset = config.pad_token_id + 1 if family == "roberta" else 0
        positions = torch.arange(length).expand(rows, length) + offset
        expected = reference.backbone(input_ids=batch["input_ids"], attention_mask=mask, past_key_values=cache,
                                      position_ids=positions).last_hidden_state
        without_prefix = reference.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                            position_ids=positions).last_hidden_state
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(out[real], expected[real], atol=1e-5, rtol=0)
    assert (out[real] - without_prefix[real]).abs().max() > 1e-2  # the reference is not trivially equal


def test_invalid_prefix_length_names_the_option():
    with pytest.raises(ValueError, match="prefix_length"):
        METHODS.get("ptuning_v2")(prefix_length=0)
