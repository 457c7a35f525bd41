"""The optimised AoT bias path (per-layer gathers into one reused buffer, grouped multi-task rows)
computes exactly what the dense (N, T, L, d) gather computed, bit for bit."""

from __future__ import annotations

import pytest
import torch

from aotp.inference import MultiTaskModel, TaskPack
from aotp.methods import METHODS
from aotp.methods.aot.injector import LayerBiases, MixedBiases, RowBiases, TableBiases, add_bias
from aotp.models import build_backbone
from tests.conftest import make_tiny_task_model, tiny_batch

TEXTS = ["the movie was good", "a bad film , really bad and long", "yes", "no it was not"]


def aot_model(family, method="aot_fc", seed=1, **options):
    model = make_tiny_task_model(family, num_labels=3, seed=seed)
    aot = METHODS.get(method)(**{"rank": 8 if method == "aot_fc" else 4, **options})
    aot.apply(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.aot.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
        model.head.out_proj.weight.copy_(torch.randn(model.head.out_proj.weight.shape, generator=generator))
    return model.eval(), aot


def dense_logits(model, batch):
    """Logits with the hooks fed the dense (N, T, L, d) lookup, the form used before."""
    provider = model.aot.hooks.provider
    model.aot.hooks.provider = model.aot.lookup
    try:
        with torch.no_grad():
            return model(**batch)
    finally:
        model.aot.hooks.provider = provider


@pytest.mark.parametrize("mode", ["materialized", "on_the_fly"])
@pytest.mark.parametrize("method", ["aot_fc", "aot_kron"])
def test_per_layer_path_equals_dense_gather_exactly(tiny_family, method, mode, tmp_path):
    model, aot = aot_model(tiny_family, method, inference_mode=mode)
    aot.prepare_for_inference(model, tmp_path)
    batch = tiny_batch(model, TEXTS)
    with torch.no_grad():
        biases = model.aot.biases(batch["input_ids"])
        got = model(**batch)
    assert isinstance(biases, TableBiases if mode == "materialized" else RowBiases)
    assert torch.equal(got, dense_logits(model, batch))
    dense = model.aot.lookup(batch["input_ids"])
    buffer = biases.new_layer_buffer()
    for layer in range(model.aot.num_layers):  # with and without a reused output buffer
        assert torch.equal(biases.layer(layer), dense[:, :, layer])
        assert torch.equal(biases.layer(layer, out=buffer), dense[:, :, layer])


def test_training_still_gets_one_differentiable_tensor():
    model, _ = aot_model("bert")
    model.train()
    batch = tiny_batch(model, TEXTS)
    biases = model.aot.biases(batch["input_ids"])
    assert isinstance(biases, torch.Tensor) and biases.requires_grad
    with torch.no_grad():
        assert isinstance(model.aot.biases(batch["input_ids"]), LayerBiases)


def test_low_precision_table_is_added_as_its_upcast(tmp_path):
    model, aot = aot_model("roberta", table_dtype="bf16")
    aot.prepare_for_inference(model, tmp_path)
    assert model.aot.table.dtype == torch.bfloat16
    batch = tiny_batch(model, TEXTS)
    with torch.no_grad():
        assert torch.equal(model(**batch), dense_logits(model, batch))
    hidden = torch.randn(2, 3, 4)
    bias = torch.randn(2, 3, 4).to(torch.bfloat16)
    assert add_bias(hidden, bias).dtype == torch.float32 and torch.equal(add_bias(hidden, bias), hidden + bias.float())


def test_run_without_encoder_is_the_hooks_work():
    model, _ = aot_model("bert")
    ids = tiny_batch(model, TEXTS)["input_ids"]
    hidden = torch.randn(*ids.shape, model.hidden_size)
    with torch.no_grad():
        got = model.aot.hooks.run_without_encoder(ids, hidden)
        assert torch.equal(got, hidden + model.aot.lookup(ids)[:, :, -1])
    assert model.aot.hooks.bias is None  # released, as after a forward


def tasks_for(family, tmp_path):
    models = []
    for seed, (method, options) in enumerate([("aot_fc", {}), ("aot_kron", {}), ("aot_fc", {"table_dtype": "fp16"}),
                                              ("aot_fc", {"inference_mode": "on_the_fly"})], start=1):
        model, aot = aot_model(family, method, seed=seed, **options)
        aot.prepare_for_inference(model, tmp_path / str(seed))
        models.append(model)
    packs = [TaskPack(f"t{i}", m.aot.table if m.aot.materialized else m.aot, m.head) for i, m in enumerate(models)]
    for model in models:
        if not model.aot.materialized:
            model.aot.hooks.detach()
    multi = MultiTaskModel(build_backbone({"source": "tiny", "name": f"tiny_{family}", "family": family}), packs)
    return models, multi


def test_mixed_rows_grouped_or_interleaved_equal_each_tasks_dense_rows(tmp_path):
    models, multi = tasks_for("bert", tmp_path)
    batch = tiny_batch(models[0], TEXTS + TEXTS)
    ids = batch["input_ids"]
    interleaved = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    grouped = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    for row_tasks in (interleaved, grouped):
        multi._row_tasks = row_tasks
        try:
            with torch.no_grad():
                biases = multi._bias_for_rows(ids)
        finally:
            multi._row_tasks = None
        assert isinstance(biases, MixedBiases) and biases.dtype == torch.float32  # fp16 + fp32 tables -> fp32
        kinds = {type(rows) for rows, _ in biases.parts}
        assert kinds == ({slice} if row_tasks is grouped else {torch.Tensor})
        for layer in range(multi.num_layers):
            expected = torch.stack([models[int(t)].aot.lookup(ids[r:r + 1])[0, :, layer].float()
                                    for r, t in enumerate(row_tasks)])
            assert torch.equal(biases.layer(layer), expected)
            assert torch.equal(biases.layer(layer, out=biases.new_layer_buffer()), expected)
    # encode() groups an interleaved batch by task and puts the states back in order.
    with torch.no_grad():
        states = multi.encode(ids, batch["attention_mask"], interleaved, batch.get("token_type_ids"))
        for r, t in enumerate(interleaved.tolist()):
            one = multi.encode(ids[r:r + 1], batch["attention_mask"][r:r + 1], torch.tensor([t]),
                               None if batch.get("token_type_ids") is None else batch["token_type_ids"][r:r + 1])
            torch.testing.assert_close(states[r], one[0], atol=1e-5, rtol=0)


def test_reused_input_buffer_leaves_recorded_hidden_states_alone(tiny_family, tmp_path):
    """The fast path hands every layer the same buffer; the hidden states a caller asks for
    (output_hidden_states) and the final states are those of the allocating path, bit for bit."""
    model, aot = aot_model(tiny_family)
    aot.prepare_for_inference(model, tmp_path)
    batch = {k: v for k, v in tiny_batch(model, TEXTS).items() if k != "token_type_ids" or model.uses_token_type_ids}
    with torch.no_grad():
        fast = model.backbone(**batch, output_hidden_states=True)
        model.aot.hooks.reuse_buffers = False
        slow = model.backbone(**batch, output_hidden_states=True)
    assert len(fast.hidden_states) == model.aot.num_layers + 1
    for a, b in zip(fast.hidden_states, slow.hidden_states):
        assert torch.equal(a, b)
    assert torch.equal(fast.last_hidden_state, slow.last_hidden_state)
