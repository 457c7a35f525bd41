"""Bottleneck adapters (Houlsby, Pfeiffer): sites, formula, options, placement relative to the residual and
the layer norm. (Equality with AdapterHub, the library they replace: ``test_adapterhub_equivalence.py``.)"""

from __future__ import annotations

import re

import pytest
import torch

from aotp.methods import METHODS
from aotp.methods.bottleneck_adapters import Bottleneck
from tests.conftest import make_tiny_task_model, tiny_batch

SENTENCES = ["a good movie", "the film was bad and long, we said no"]


def build(name: str, family: str, **options):
    torch.manual_seed(0)
    model = make_tiny_task_model(family, seed=0)
    method = METHODS.get(name)(**options)
    method.apply(model)
    return model, method


def adapter_sites(model, name):
    """(layer, site) for every adapter module's down projection."""
    pattern = re.compile(r"encoder\.layer\.(\d+)\.(.*)\.bottleneck\.down\.weight$")
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
    down = model.get_parameter(next(n for n, _ in model.named_parameters() if n.endswith(".bottleneck.down.weight")))
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


def test_non_linearity_option_reaches_the_adapters():
    model, _ = build("adapter_pfeiffer", "bert", non_linearity="tanh")
    assert isinstance(model.backbone.encoder.layer[0].output.bottleneck.act, torch.nn.Tanh)
    default, _ = build("adapter_pfeiffer", "bert")
    assert isinstance(default.backbone.encoder.layer[0].output.bottleneck.act, torch.nn.ReLU)
    houlsby, _ = build("adapter_houlsby", "bert")
    assert isinstance(houlsby.backbone.encoder.layer[1].attention.output.bottleneck.act, torch.nn.SiLU)  # swish


def _adapter(site) -> Bottleneck:
    return site.bottleneck


@pytest.mark.parametrize("name", ["adapter_houlsby", "adapter_pfeiffer"])
def test_placement_relative_to_residual_and_layer_norm(name, tiny_family):
    """The site's output, recomputed by hand from the sub-block's pieces: Houlsby LN(r + (h + A(h))),
    Pfeiffer LN(r + (h + A(LN(r + h)))) with the layer's own LN both times; h = dropout(dense(x))."""
    model, _ = build(name, tiny_family)
    model.eval()
    site = model.backbone.encoder.layer[1].output
    x = torch.randn(2, 5, site.dense.in_features, generator=torch.Generator().manual_seed(0))
    r = torch.randn(2, 5, site.dense.out_features, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for parameter in _adapter(site).parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
        h = site.dense(x)
        a = _adapter(site)
        expected = (site.LayerNorm((a(h) + h) + r) if name == "adapter_houlsby"
                    else site.LayerNorm((a(site.LayerNorm(h + r)) + h) + r))
        assert torch.equal(site(x, r), expected)
        plain = site.LayerNorm(h + r)
        assert (site(x, r) - plain).abs().max() > 1e-2  # the adapter acts


def test_adapter_initialisation_is_the_library_bert_init():
    """W_down, W_up ~ N(0, 0.02^2), biases zero (AdapterHub init_weights="bert")."""
    model, _ = build("adapter_houlsby", "bert", reduction_factor=0.25)  # m = 128: enough values to test the std
    weights = torch.cat([p.flatten() for n, p in model.named_parameters() if n.endswith(("down.weight", "up.weight"))])
    biases = [p for n, p in model.named_parameters() if ".bottleneck." in n and n.endswith(".bias")]
    assert abs(weights.std().item() - 0.02) < 0.002 and abs(weights.mean().item()) < 0.002
    assert all(torch.equal(b, torch.zeros_like(b)) for b in biases)


def test_unknown_option_is_rejected():
    with pytest.raises(TypeError, match="reduction"):
        METHODS.get("adapter_houlsby")(reduction=16)
    with pytest.raises(ValueError, match="reduction_factor"):
        METHODS.get("adapter_pfeiffer")(reduction_factor=0)
