"""The method contract, for EVERY registered method x the four tiny families x classification and
multiple-choice heads and siamese sentence pairs (``data.pair_encoding=siamese``; AoT refuses it)
(methods registered later are picked up automatically):

* a few optimizer steps move only the method's parameters and the head; every other parameter
  stays bitwise unchanged;
* the number of ``requires_grad`` parameters equals ``expected_trainable_parameters`` (the formula);
* the trainable state survives a safetensors round trip exactly;
* ``prepare_for_inference`` leaves the logits unchanged (1e-5), after the method's parameters were
  moved away from their initialisation so the check is not trivial; padding never changes logits.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from aotp.methods import METHODS
from tests.conftest import make_tiny_task_model, tiny_batch

HEADS = ("classification", "multiple_choice", "siamese")
NUM_LABELS = 3
CHOICES = 3
PREMISES = ["the movie was good", "a bad story about life"]
CHOICE_TEXTS = [["it was great", "it was bad", "we go home"], ["people came", "no one did", "the man said yes"]]
SENTENCES = ["the movie was good and long", "a bad film", "what a great story, we like it", "no"]


def build(method_name: str, family: str, head_type: str, seed: int = 0):
    torch.manual_seed(seed)  # method parameters are initialised from the global generator
    model = tiny_model(family, head_type, seed)
    method = METHODS.get(method_name)()
    if head_type == "siamese" and method_name.startswith("aot"):
        with pytest.raises(ValueError, match=f"method={method_name} serves cross-encoded tasks only"):
            method.apply(model)
        pytest.skip("AoT P-Tuning serves cross-encoded tasks only (refusal checked)")
    method.apply(model)
    return model, method


def tiny_model(family: str, head_type: str, seed: int = 0):
    if head_type == "siamese":
        return make_tiny_task_model(family, "classification", num_labels=NUM_LABELS, seed=seed, pair_encoding="siamese")
    return make_tiny_task_model(family, head_type, num_labels=NUM_LABELS, seed=seed)


def batch_for(model, head_type: str):
    """A padded batch and its labels: (B, T) for classification, (B, C, T) for multiple choice, (B, 2, T)
    for siamese pairs (each sentence its own sequence)."""
    if head_type == "siamese":
        flat = tiny_batch(model, [s for pair in zip(SENTENCES[:2], SENTENCES[2:]) for s in pair])
        return {k: v.view(2, 2, -1) for k, v in flat.items()}, torch.tensor([0, 2])
    if head_type != "multiple_choice":
        return tiny_batch(model, SENTENCES), torch.tensor([0, 1, 2, 1])
    flat_a = [p for p, choices in zip(PREMISES, CHOICE_TEXTS) for _ in choices]
    flat_b = [c for choices in CHOICE_TEXTS for c in choices]
    flat = tiny_batch(model, flat_a, flat_b)
    return {k: v.view(len(PREMISES), CHOICES, -1) for k, v in flat.items()}, torch.tensor([0, 2])


def method_parameters(model):
    """Trainable parameters outside the head: the method's own."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]


def perturb(model, scale: float = 0.2, seed: int = 1):
    """Move the method's parameters away from their initialisation (e.g. LoRA's B = 0, AoT's zero output)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in method_parameters(model):
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(scale * noise)


def states_of(model, batch):
    """The encoder's first-token states (what the head reads), flattened to (N, d)."""
    model.eval()
    flat = {k: v.reshape(-1, v.shape[-1]) for k, v in batch.items()}
    with torch.no_grad():
        return model.encode(flat["input_ids"], flat["attention_mask"], flat.get("token_type_ids"))


def logits_of(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**batch)


matrix = pytest.mark.parametrize("head_type", HEADS)
every_method = pytest.mark.parametrize("method_name", METHODS.names())


@every_method
@matrix
def test_training_moves_only_method_and_head(method_name, tiny_family, head_type):
    model, method = build(method_name, tiny_family, head_type)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == method.expected_trainable_parameters(model), (
        f"{method_name}/{tiny_family}: requires_grad count {trainable} != formula "
        f"{method.expected_trainable_parameters(model)}")
    assert method_parameters(model), f"{method_name} trains no backbone-side parameter"

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch, labels = batch_for(model, head_type)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        loss = model.loss(model(**batch), labels)
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()

    after = dict(model.named_parameters())
    assert set(after) == set(before), "training must not add or remove parameters"
    frozen_moved = [n for n, p in after.items() if not p.requires_grad and not torch.equal(p, before[n])]
    assert not frozen_moved, f"frozen parameters changed: {frozen_moved[:5]}"
    moved = {n for n, p in after.items() if p.requires_grad and not torch.equal(p, before[n])}
    assert any(n.startswith("head.") for n in moved), "the head did not train"
    assert any(not n.startswith("head.") for n in moved), f"no parameter of {method_name} moved"


@every_method
@matrix
def test_trainable_state_round_trip_is_exact(method_name, tiny_family, head_type, tmp_path):
    model, method = build(method_name, tiny_family, head_type)
    perturb(model)
    state = method.trainable_state_dict(model)
    assert set(state) == {n for n, p in model.named_parameters() if p.requires_grad}
    save_file(state, tmp_path / "trainable.safetensors")
    batch, _ = batch_for(model, head_type)
    expected = logits_of(model, batch)

    fresh, fresh_method = build(method_name, tiny_family, head_type, seed=0)
    torch.manual_seed(123)  # the fresh method's own init differs; loading must overwrite all of it
    loaded = load_file(tmp_path / "trainable.safetensors")
    fresh_method.load_trainable_state_dict(fresh, loaded)
    for name, value in method.trainable_state_dict(fresh).items():
        assert torch.equal(value, state[name]), name
    assert torch.equal(logits_of(fresh, batch), expected)


@every_method
@matrix
def test_prepare_for_inference_keeps_logits(method_name, tiny_family, head_type, tmp_path):
    model, method = build(method_name, tiny_family, head_type)
    batch, _ = batch_for(model, head_type)
    plain = states_of(tiny_model(tiny_family, head_type), batch)
    perturb(model)
    changed = (states_of(model, batch) - plain).abs().max()
    assert changed > 1e-3, f"perturbing {method_name}'s parameters did not change the encoder output ({changed})"
    before = logits_of(model, batch)

    # padding never changes an example's logits (for P-Tuning v2: the prefix mask is right)
    single = {k: v[:1] for k, v in batch.items()}
    length = int(single["attention_mask"].sum(-1).max())
    single = {k: v[..., :length] for k, v in single.items()}
    torch.testing.assert_close(logits_of(model, single), before[:1], atol=1e-5, rtol=0)

    facts = method.prepare_for_inference(model, tmp_path)
    assert isinstance(facts, dict)
    after = logits_of(model, batch)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)


@every_method
@pytest.mark.parametrize("family", ["roberta", "deberta"])
def test_regression_head_trains(method_name, family):
    model, method = build(method_name, family, "regression")
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == method.expected_trainable_parameters(model)
    batch = tiny_batch(model, SENTENCES)
    model.train()
    logits = model(**batch)
    assert logits.shape == (len(SENTENCES),)
    model.loss(logits, torch.tensor([0.5, 1.0, 4.0, 2.5])).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and n.startswith("head."))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for _, p in method_parameters(model))
