"""Bottleneck adapters (Houlsby, Pfeiffer) and the AdapterHub glue."""

from __future__ import annotations

import re

import pytest
import torch

from aotp.methods import METHODS
from aotp.methods.adapterhub import init_adapterhub
from tests.conftest import make_tiny_task_model, tiny_batch

SENTENCES = ["a good movie", "the film was bad and long, we said no"]


def test_adapterhub_init_leaves_every_family_unchanged(tiny_family):
    """adapters.init gives DeBERTa v1's bias-free fused in_proj a random bias; init_adapterhub removes it."""
    model = make_tiny_task_model(tiny_family).eval()
    batch = tiny_batch(model, SENTENCES)
    names = {n for n, _ in model.named_parameters()}
    with torch.no_grad():
        before = model(**batch)
        init_adapterhub(model)
        after = model(**batch)
    assert torch.equal(after, before)
    assert {n for n, _ in model.named_parameters()} == names


def build(name: str, family: str, **options):
    torch.manual_seed(0)
    model = make_tiny_task_model(family, seed=0)
    method = METHODS.get(name)(**options)
    method.apply(model)
    return model, method


def adapter_sites(model, name):
    """(layer, site) for every adapter module's down projection."""
    pattern = re.compile(r"encoder\.layer\.(\d+)\.(.*)\.adapters\." + name + r"\.adapter_down\.0\.weight$")
    return sorted(m.groups() for n, _ in model.named_parameters() if (m := pattern.search(n)))


def test_houlsby_has_two_adapters_per_layer_pfeiffer_one(tiny_family):
    houlsby, _ = build("adapter_houlsby", tiny_family)
    pfeiffer, _ = build("adapter_pfeiffer", tiny_family)
    assert adapter_sites(houlsby, "adapter_houlsby") == [(str(i), s) for i in range(2) for s in ("attention.output", "output")]
    assert adapter_sites(pfeiffer, "adapter_pfeiffer") == [(str(i), "output") for i in range(2)]


@pytest.mark.parametrize("name,reduction_factor,train_layer_norm", [
    ("adapter_houlsby", 2, True), ("adapter_houlsby", 8, False), ("adapter_pfeiffer", 4, False),
    ("adapter_pfeiffer", 64, True),  # int(32 // 64) = 0, the library's floor is 1
])
def test_formula_follows_options(name, reduction_factor, train_layer_norm):
    model, method = build(name, "deberta_v2", reduction_factor=reduction_factor, train_layer_norm=train_layer_norm)
    d, layers, per_layer = 32, 2, 2 if name == "adapter_houlsby" else 1
    m = max(1, 32 // reduction_factor)
    down = model.get_parameter(next(n for n, _ in model.named_parameters() if f"adapters.{name}.adapter_down.0.weight" in n))
    assert down.shape == (m, d)
    head = sum(p.numel() for p in model.head.parameters())
    expected = layers * per_layer * (2 * d * m + m + d) + (layers * 2 * 2 * d if train_layer_norm else 0) + head
    assert method.expected_trainable_parameters(model) == expected
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected
    layer_norms = [n for n, p in model.named_parameters() if "LayerNorm" in n and p.requires_grad]
    assert len(layer_norms) == (layers * 2 * 2 if train_layer_norm else 0)


def test_houlsby_trains_layer_norms_by_default_pfeiffer_does_not():
    assert METHODS.get("adapter_houlsby")().train_layer_norm
    assert not METHODS.get("adapter_pfeiffer")().train_layer_norm


def test_non_linearity_option_reaches_the_library():
    model, _ = build("adapter_pfeiffer", "bert", non_linearity="tanh")
    down = model.backbone.encoder.layer[0].output.adapters["adapter_pfeiffer"].adapter_down
    assert isinstance(down[1].f, torch.nn.Tanh)
    default, _ = build("adapter_pfeiffer", "bert")
    assert isinstance(default.backbone.encoder.layer[0].output.adapters["adapter_pfeiffer"].adapter_down[1].f,
                      torch.nn.ReLU)


def test_unknown_option_is_rejected():
    with pytest.raises(TypeError, match="reduction"):
        METHODS.get("adapter_houlsby")(reduction=16)
    with pytest.raises(ValueError, match="reduction_factor"):
        METHODS.get("adapter_pfeiffer")(reduction_factor=0)
