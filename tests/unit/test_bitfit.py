"""BitFit specifics: the trainable set is exactly the bias terms, and the per-family bias formula
holds on architecture variants (DeBERTa position projections, conv layer, relative-embedding norm)."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel, DebertaConfig, DebertaModel, DebertaV2Config, DebertaV2Model

from aotp.methods import METHODS
from aotp.methods.bitfit import backbone_bias_count
from aotp.models import TaskModel
from aotp.models.builders import Backbone
from aotp.models.tiny_tokenizer import build_tiny_tokenizer
from tests.conftest import make_tiny_task_model

SMALL = dict(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
             max_position_embeddings=32)


def test_only_bias_terms_and_head_train(tiny_family):
    model = make_tiny_task_model(tiny_family)
    METHODS.get("bitfit")().apply(model)
    for name, parameter in model.named_parameters():
        leaf = name.rsplit(".", 1)[1]
        assert parameter.requires_grad == (name.startswith("head.") or leaf.endswith("bias")), name
    layer_norm_biases = [n for n, p in model.named_parameters() if "LayerNorm.bias" in n and p.requires_grad]
    assert layer_norm_biases, "BitFit trains the layer-norm biases too (Ben Zaken et al. 2022)"


VARIANTS = {
    "bert_wide_ffn": (BertModel, BertConfig(**{**SMALL, "intermediate_size": 40}), "bert"),
    "deberta_c2p_only": (DebertaModel, DebertaConfig(**SMALL, relative_attention=True, pos_att_type=["c2p"],
                                                     position_biased_input=False), "deberta"),
    "deberta_p2c_c2p": (DebertaModel, DebertaConfig(**SMALL, relative_attention=True, pos_att_type="p2c|c2p"),
                        "deberta"),
    "deberta_absolute": (DebertaModel, DebertaConfig(**SMALL, relative_attention=False), "deberta"),
    "deberta_v2_unshared_conv": (DebertaV2Model, DebertaV2Config(
        **SMALL, relative_attention=True, pos_att_type=["p2c", "c2p"], share_att_key=False, conv_kernel_size=3,
        norm_rel_ebd="none", position_buckets=8), "deberta_v2"),
    "deberta_v2_v3_like": (DebertaV2Model, DebertaV2Config(
        **SMALL, relative_attention=True, pos_att_type=["p2c", "c2p"], share_att_key=True,
        norm_rel_ebd="layer_norm", position_buckets=8, type_vocab_size=0), "deberta_v2"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_bias_formula_on_architecture_variants(variant):
    cls, config, family = VARIANTS[variant]
    torch.manual_seed(0)
    backbone = Backbone(model=cls(config), tokenizer=build_tiny_tokenizer(), family=family, name=variant)
    model = TaskModel(backbone, "classification", 2)
    actual = sum(p.numel() for n, p in model.backbone.named_parameters() if n.rsplit(".", 1)[1].endswith("bias"))
    assert backbone_bias_count(model.backbone.config, family) == actual
    method = METHODS.get("bitfit")()
    method.apply(model)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == method.expected_trainable_parameters(model)


def test_minilm_sized_bert_formula():
    """all-MiniLM-L6-v2's shape: L=6, d=384, f=1536 -> 6 * (7*384 + 1536) + 384 bias entries."""
    config = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    assert backbone_bias_count(config, "bert") == 6 * (7 * 384 + 1536) + 384 == 25728
