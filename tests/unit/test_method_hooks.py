"""The benchmark asks the method (``benchmark_variants``, ``inference_variant``, ``work_alone``,
``InferenceVariant.routing``): a method registered here, with no change to ``aotp/bench``, is
benchmarked single-task, has its added work timed alone, and is served in mixed batches."""

from __future__ import annotations

import re

import pytest

from aotp.bench.inference import BenchConfig, run_benchmarks
from aotp.bench.multitask import unserved_methods
from aotp.bench.variants import default_variants, resolve
from aotp.methods import METHODS, InferenceVariant, Method, head_parameter_count
from aotp.methods.bottleneck_adapters import PfeifferAdapter
from aotp.models import build_backbone
from aotp.trainer.packed import packable_method_names

TINY = {"source": "tiny", "name": "tiny_bert", "family": "bert"}
LAST_NORM = re.compile(r"^backbone\.encoder\.layer\.(\d+)\.output\.LayerNorm\.bias$")


class ToyLastNormBias(Method):
    """Toy: only the last encoder layer's output layer-norm bias trains. Trainable: ``d + |head|``."""

    name = "toy_norm"
    inference_note = "toy: the backbone with its last layer-norm bias changed"

    def is_trainable(self, name: str, layers: int) -> bool:
        match = LAST_NORM.match(name)
        return bool(match) and int(match.group(1)) == layers - 1

    def apply(self, model):
        layers = model.backbone.config.num_hidden_layers
        self.freeze_all_but(model, lambda name: self.is_trainable(name, layers))
        return model

    def expected_trainable_parameters(self, model) -> int:
        return model.backbone.config.hidden_size + head_parameter_count(model)

    def work_alone(self, model, variant, input_ids, hidden):
        bias = model.backbone.encoder.layer[-1].output.LayerNorm.bias
        return {variant: (lambda: hidden + bias, "toy: the bias added to the hidden states")}


class ToyAdapter(PfeifferAdapter):
    """Toy: a Pfeiffer bottleneck adapter with a wider bottleneck (reduction factor 4)."""

    name = "toy_adapter"
    inference_note = "toy: one bottleneck adapter per layer, m = d / 4"

    def __init__(self, reduction_factor: float = 4, **options):
        super().__init__(reduction_factor, **options)


@pytest.fixture
def toys():
    for cls in (ToyLastNormBias, ToyAdapter):
        METHODS.register(cls.name)(cls)
    try:
        yield
    finally:
        for cls in (ToyLastNormBias, ToyAdapter):
            METHODS._entries.pop(cls.name)


def config(tmp_path, **overrides) -> BenchConfig:
    options = dict(model="tiny_bert", model_config=TINY, batch_sizes=(4,), seq_lens=(16,), rounds=2, warmup=1,
                   lookup_repeats=2, headline_rounds=0, tasks=(), multitask_batch_size=4, multitask_seq_len=16,
                   out_dir=str(tmp_path), memory=False, command="pytest")
    options.update(overrides)
    return BenchConfig(**options)


def test_registered_methods_appear_in_the_default_variants(toys, tmp_path):
    variants = default_variants()
    assert variants[-2:] == ("toy_adapter/adapters", "toy_norm/prepared")  # after the tables' method order, by name
    assert config(tmp_path).variants == variants
    assert resolve("toy_norm") == ("toy_norm", InferenceVariant("prepared", note=ToyLastNormBias.inference_note,
                                                                 mixing=Method.mixing_note))
    with pytest.raises(ValueError, match=r"toy_norm variants: prepared \(got 'fused'\)"):
        resolve("toy_norm/fused")
    assert "toy_norm" in unserved_methods() and "toy_adapter" not in unserved_methods()  # no routing / stacked_adapters
    assert "toy_norm" not in packable_method_names() and set(packable_method_names()) == {"aot_fc", "aot_kron"}


def test_a_new_method_is_benchmarked_without_touching_bench(toys, tmp_path):
    cfg = config(tmp_path, variants=("toy_norm/prepared", "toy_adapter/adapters"), tasks=(1, 2),
                 multitask_variants=("toy_adapter/adapters",))
    records, _ = run_benchmarks(cfg, log=lambda message: None)
    single = {(r["method"], r["variant"]): r for r in records if r["kind"] == "single_task"}
    assert set(single) == {("backbone", "frozen"), ("toy_norm", "prepared"), ("toy_adapter", "adapters")}
    toy = single["toy_norm", "prepared"]
    assert toy["note"] == ToyLastNormBias.inference_note and toy["outputs_checked"]["differs_from_backbone"]
    hidden = build_backbone(TINY).model.config.hidden_size
    assert toy["facts"]["perturbed_values"] == hidden  # the one bias vector the toy trains, moved off its init
    lookup = [r for r in records if r["kind"] == "bias_lookup"]
    assert [(r["method"], r["variant"], r["note"]) for r in lookup] == [
        ("toy_norm", "prepared", "toy: the bias added to the hidden states")]
    mixed = [r for r in records if r["kind"] == "multi_task" and r["serving"] == "mixed"]
    assert [(r["method"], r["tasks"]) for r in mixed] == [("toy_adapter", 2)]
    assert mixed[0]["outputs_checked"]["matches_per_task"] and mixed[0]["mixing"].startswith("mixes: per-example adapter weights")
    not_timed = {r["method"]: r["mixing"] for r in records if r.get("serving") == "not_timed"}
    assert set(not_timed) == {"full_ft", "bitfit", "toy_norm"} and not_timed["toy_norm"] == Method.mixing_note


def test_without_the_toys_the_defaults_are_the_registered_methods_only():
    assert not any(v.startswith("toy_") for v in default_variants())
    assert default_variants()[:3] == ("full_ft/same_as_backbone", "bitfit/same_as_backbone", "lora/merged")
