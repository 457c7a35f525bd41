"""Routing ``stacked_adapters`` (aotp.bench.multitask): bottleneck adapters and P-Tuning v2 prefixes of several
tasks on one backbone, every row adapted by its own task, on every tiny family: a mixed batch equals each
task's own model (built as the single-task benchmark builds it), and its rows really differ by task."""

from __future__ import annotations

import pytest
import torch

from aotp.bench.multitask import RoutedBottleneck, RoutedPrefixEncoder, StackedAdapterServer, form_of, task_heads
from aotp.bench.variants import base_model, build_variant
from aotp.models import build_backbone
from tests.conftest import TINY_FAMILIES, tiny_batch

SENTENCES = ["a good movie", "the film was bad and long, we said no", "what a great story", "no",
             "we go home", "it was great fun to watch"]
ROW_TASKS = torch.tensor([2, 0, 1, 0, 2, 1])
TASKS = 3
SPECS = ("adapter_houlsby/adapters", "adapter_pfeiffer/adapters", "ptuning_v2/prefix4")


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_mixed_batch_equals_each_tasks_own_model(spec, family, tmp_path):
    assert form_of(spec).routing == "stacked_adapters" and form_of(spec).mixes
    base = base_model(build_backbone({"source": "tiny", "name": f"tiny_{family}", "family": family}), 2, seed=0)
    heads = task_heads(base, TASKS, seed=0, scale=0.05)
    server = StackedAdapterServer(*spec.split("/"), base, TASKS, tmp_path, seed=10, scale=0.05, heads=heads)
    routed = [m for m in server.model.modules() if isinstance(m, (RoutedBottleneck, RoutedPrefixEncoder))]
    assert routed, "nothing was routed"
    batch = tiny_batch(base, SENTENCES)
    with torch.no_grad():
        mixed = server.encode_mixed(batch, ROW_TASKS)
        for task in range(TASKS):
            own = build_variant(spec, base, tmp_path / f"own{task}", seed=10 + task, scale=0.05).model
            expected = own.encode(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
            rows = ROW_TASKS == task
            torch.testing.assert_close(mixed[rows], expected[rows], atol=1e-5, rtol=0)
            torch.testing.assert_close(server.encode_single(batch, task), expected, atol=1e-5, rtol=0)
        task0 = server.encode_single(batch, 0)
    other = ROW_TASKS != 0
    assert (mixed[other] - task0[other]).abs().max() > 1e-3  # rows took their own task's adaptation
    assert len(server.weights(1)) < len(server.weights(TASKS)) or sum(
        w.numel() for w in server.weights(1) if isinstance(w, torch.Tensor)) < sum(
        w.numel() for w in server.weights(TASKS) if isinstance(w, torch.Tensor))


def test_routing_refuses_rows_that_are_not_examples():
    from aotp.bench.multitask import Router
    from aotp.methods.bottleneck_adapters import Bottleneck

    router = Router()
    routed = RoutedBottleneck([Bottleneck(8, 2, "relu"), Bottleneck(8, 2, "relu")], router)
    router.row_tasks = torch.tensor([0, 1, 1])
    with pytest.raises(ValueError, match="one leading row per example"):
        routed(torch.zeros(2, 4, 8))
