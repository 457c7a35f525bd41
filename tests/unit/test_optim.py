"""AdamW groups: weight decay on matrices only; method.head_lr gives the task head its own learning rate,
which the warmup/decay schedule scales like every other group."""

from __future__ import annotations

import pytest

from aotp.methods import METHODS
from aotp.trainer.optim import build_optimizer, build_scheduler
from tests.conftest import make_tiny_task_model


def named_groups(model, optimizer):
    names = {id(p): n for n, p in model.named_parameters()}
    return [({names[id(p)] for p in group["params"]}, group) for group in optimizer.param_groups]


def test_one_learning_rate_by_default_and_no_decay_on_biases_and_norms():
    model = make_tiny_task_model("bert")
    optimizer = build_optimizer(model, lr=2e-5, weight_decay=0.01)
    groups = named_groups(model, optimizer)
    assert [g["lr"] for _, g in groups] == [2e-5, 2e-5]
    decayed, plain = groups[0][0], groups[1][0]
    assert decayed | plain == {n for n, _ in model.named_parameters()} and not decayed & plain
    assert all(not n.endswith("bias") and "LayerNorm" not in n for n in decayed)
    assert "head.out_proj.bias" in plain and "head.out_proj.weight" in decayed


def test_head_lr_puts_only_the_head_at_its_rate_and_the_schedule_scales_it():
    model = make_tiny_task_model("roberta", pair_encoding="siamese_cosine")
    METHODS.get("bitfit")().apply(model)
    optimizer = build_optimizer(model, lr=2e-5, weight_decay=0.01, head_lr=5e-4)
    by_rate = {}
    for names, group in named_groups(model, optimizer):
        by_rate.setdefault(group["lr"], set()).update(names)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert by_rate[5e-4] == {"head.out_proj.weight", "head.out_proj.bias"}
    assert by_rate[2e-5] == trainable - by_rate[5e-4] and by_rate[2e-5]
    scheduler = build_scheduler(optimizer, total_steps=10, warmup_ratio=0.2)
    for _ in range(6):
        optimizer.step()
        scheduler.step()
    rates = sorted({group["lr"] for group in optimizer.param_groups})
    assert rates == pytest.approx([2e-5 * 0.5, 5e-4 * 0.5])  # linear decay: halfway after warmup
