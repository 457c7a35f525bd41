"""``python -m aotp.standin models size=full``: the publisher's config.json dimensions, random weights.

The default suite checks the configs of every hub model at full size and the CLI option; building a
full-size checkpoint (RoBERTa-large: 1.42 GB, ~20 s on one thread) is a slow test that loads it through
the harness's own hub path and counts its parameters against the model config's ``architecture:``.
"""

from __future__ import annotations

import json

import pytest
import torch

from aotp.standin.models import PUBLISHERS, SMALL, SMALL_LAYERS, STATES_HEAD_SIZE, hub_models, publisher_config

DIMENSIONS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "max_position_embeddings", "type_vocab_size")


@pytest.mark.parametrize("model", hub_models(), ids=lambda m: m.name)
def test_full_size_config_is_the_publishers_shape(model):
    full, small = publisher_config(model, "full"), publisher_config(model)
    for key in DIMENSIONS:
        assert full[key] == model.architecture[key], key
    assert small["hidden_size"] == SMALL["hidden_size"] and small["num_hidden_layers"] == SMALL_LAYERS[model.size]
    assert full["hidden_size"] != small["hidden_size"]
    # the rest of config.json is the same publisher file: only the sizes differ
    sized = set(SMALL) | {"num_hidden_layers", "attention_head_size"}
    assert {k: v for k, v in full.items() if k not in sized} == {k: v for k, v in small.items() if k not in sized}
    assert full["model_type"] == PUBLISHERS[model.family].model_type
    if model.hub_id in STATES_HEAD_SIZE:  # deberta-v2-xlarge's config.json states 64 = 1536 / 24
        assert full["attention_head_size"] == 64


def test_roberta_large_full_size_is_the_published_config():
    model = next(m for m in hub_models() if m.name == "roberta_large")
    config = publisher_config(model, "full")
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"],
            config["intermediate_size"], config["vocab_size"]) == (24, 1024, 16, 4096, 50265)
    assert config["architectures"] == ["RobertaForMaskedLM"] and config["layer_norm_eps"] == 1e-05


def test_an_unknown_size_is_refused_with_the_choices(tmp_path, capsys):
    from aotp.standin.__main__ import main
    from aotp.standin.models import build_model_hub

    with pytest.raises(ValueError, match="valid: small, full"):
        build_model_hub(tmp_path, ["roberta_large"], size="huge")
    with pytest.raises(SystemExit) as exit_info:
        main(["models", f"output={tmp_path}", "size=huge"])
    assert exit_info.value.code == 2
    assert "size" in capsys.readouterr().err and not (tmp_path / "hub").exists()


@pytest.mark.slow
def test_full_size_roberta_large_builds_and_loads(tmp_path, monkeypatch):
    """~1.4 GB on disk, ~20 s: the checkpoint loads through build_hub with the publisher's 355M parameters."""
    import huggingface_hub.constants
    import transformers.utils.hub
    from transformers import AutoModel, RobertaConfig

    from aotp.models import build_backbone
    from aotp.standin.__main__ import main

    assert main(["models", f"output={tmp_path}", "only=[roberta_large]", "size=full"]) == 0
    snapshot = next((tmp_path / "hub" / "models--FacebookAI--roberta-large" / "snapshots").iterdir())
    config = json.loads((snapshot / "config.json").read_text())
    assert config["num_hidden_layers"] == 24 and config["hidden_size"] == 1024
    assert 1.40e9 < (snapshot / "model.safetensors").stat().st_size < 1.45e9  # 355M fp32 parameters + the LM head
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(transformers.utils.hub, "TRANSFORMERS_CACHE", str(tmp_path / "hub"))
    model = next(m for m in hub_models() if m.name == "roberta_large")
    backbone = build_backbone({"source": "hub", "name": "roberta_large", "hub_id": model.hub_id, "revision": "main"})
    architecture = {k: v for k, v in model.architecture.items() if k != "family"}
    with torch.device("meta"):
        reference = AutoModel.from_config(RobertaConfig(**architecture))
    loaded = sum(p.numel() for p in backbone.model.parameters())
    assert loaded == sum(p.numel() for p in reference.parameters()) == 355_359_744
