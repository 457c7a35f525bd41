"""LoRA specifics: exact identity at init, the per-family targets, DeBERTa v1's fused QKV rows,
the merge formula, options."""

from __future__ import annotations

import pytest
import torch

from aotp.methods import METHODS
from aotp.methods.lora import LORA_TARGETS, LoRALinear, fused_qkv_rows
from aotp.models.builders import FAMILIES
from tests.conftest import make_tiny_task_model, tiny_batch

SENTENCES = ["a good movie", "the film was bad and long, we said no"]


def build(family: str, **options):
    torch.manual_seed(0)
    model = make_tiny_task_model(family, num_labels=2, seed=0)
    method = METHODS.get("lora")(**options)
    method.apply(model)
    return model.eval(), method


def lora_factors(model):
    return [(n, p) for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n]


def test_every_family_has_targets():
    assert set(LORA_TARGETS) == set(FAMILIES)


def test_lora_at_init_reproduces_the_backbone_exactly(tiny_family):
    plain = make_tiny_task_model(tiny_family, num_labels=2, seed=0).eval()
    model, _ = build(tiny_family)
    batch = tiny_batch(model, SENTENCES)
    with torch.no_grad():
        assert torch.equal(model(**batch), plain(**batch))


def test_default_targets_are_query_and_value_of_every_layer(tiny_family):
    model, _ = build(tiny_family, rank=2)
    # "<layer>.<module path>.<role>" for every LoRA factor
    adapted = {n.split("encoder.layer.")[1].split(".lora_")[0] + "." + n.rsplit(".", 1)[1] for n, _ in lora_factors(model)}
    expected = {f"{layer}.{LORA_TARGETS[tiny_family][role].split(':')[0]}.{role}"
                for layer in range(2) for role in ("query", "value")}
    assert adapted == expected
    names = {n for n, _ in model.named_parameters()}  # base weights keep their names (no wrapper in the path)
    for role in ("query", "value"):
        assert f"backbone.encoder.layer.0.{LORA_TARGETS[tiny_family][role].split(':')[0]}.weight" in names


def test_fused_qkv_rows_follow_the_deberta_v1_layout():
    """HF's own DeBERTa v1 code splits ``in_proj.weight`` per head as [q_h | k_h | v_h] (the
    ``query_states`` branch of ``DisentangledSelfAttention.forward``); our rows must agree."""
    model = make_tiny_task_model("deberta")
    attention = model.backbone.encoder.layer[0].attention.self
    weight, heads = attention.in_proj.weight, attention.num_attention_heads
    chunks = weight.chunk(heads * 3, dim=0)
    for k, part in enumerate("qkv"):
        hf = torch.cat([chunks[i * 3 + k] for i in range(heads)], dim=0)
        assert torch.equal(weight[fused_qkv_rows(weight.shape[0], heads, part)], hf)


def test_deberta_v1_value_lora_updates_value_rows_only(tmp_path):
    model, method = build("deberta", targets=["value"], rank=2)
    in_proj = model.backbone.encoder.layer[0].attention.self.in_proj
    original = in_proj.weight.detach().clone()
    with torch.no_grad():
        for _, parameter in lora_factors(model):
            parameter.normal_()
    method.prepare_for_inference(model, tmp_path)
    changed = (in_proj.weight != original).any(dim=1).nonzero().flatten()
    value_rows = fused_qkv_rows(in_proj.out_features, 2, "v")
    assert sorted(changed.tolist()) == sorted(value_rows.tolist())


def test_merge_is_w_plus_alpha_over_r_b_a(tmp_path):
    model, method = build("bert", rank=4, alpha=6)
    query = model.backbone.encoder.layer[1].attention.self.query
    assert isinstance(query, LoRALinear)
    with torch.no_grad():
        for _, parameter in lora_factors(model):
            parameter.normal_()
    a, b = query.lora_A["query"].detach().clone(), query.lora_B["query"].detach().clone()
    expected = query.weight.detach() + (6 / 4) * b @ a
    facts = method.prepare_for_inference(model, tmp_path)
    assert facts == {"lora_merged_modules": 4}  # query + value in 2 layers
    assert type(query) is torch.nn.Linear and not lora_factors(model)
    torch.testing.assert_close(query.weight, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("targets,rank", [(["query"], 1), (["query", "key", "value"], 3)])
def test_targets_and_rank_in_the_formula(tiny_family, targets, rank):
    model, method = build(tiny_family, targets=targets, rank=rank)
    head = sum(p.numel() for p in model.head.parameters())
    expected = 2 * len(targets) * rank * (32 + 32) + head  # L * |targets| * r * (d_in + d_out) + head
    assert method.expected_trainable_parameters(model) == expected
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected


def test_dropout_acts_in_training_only():
    model, _ = build("roberta", dropout=0.5)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and module.p != 0.5:
            module.p = 0.0  # only LoRA's dropout stays
    with torch.no_grad():
        for _, parameter in lora_factors(model):
            parameter.normal_()
    batch = tiny_batch(model, SENTENCES)
    with torch.no_grad():
        evals = [model(**batch) for _ in range(2)]
        model.train()
        trains = [model(**batch) for _ in range(2)]
    assert torch.equal(evals[0], evals[1])
    assert not torch.equal(trains[0], trains[1])


@pytest.mark.parametrize("options,match", [({"targets": ["qeury"]}, "targets"), ({"rank": 0}, "rank"),
                                            ({"targets": []}, "targets")])
def test_bad_options_name_the_option(options, match):
    with pytest.raises(ValueError, match=match):
        METHODS.get("lora")(**options)
