"""Mixed precision (``trainer.precision=bf16|fp16``, autocast over fp32 weights) on CPU, for EVERY
registered method x the four tiny families (methods registered later are picked up automatically).

Tolerances are in units of the format's unit roundoff u (half the spacing of its significand:
bf16 u = 2^-8, fp16 u = 2^-11), not widened blindly:

* encoder states (layer-normed, |h| about 2-6): within ``STATE_ROUNDINGS`` u x max|h|. The last layer
  norm's output is itself rounded (u/2), and the errors of the earlier roundings are renormalised by
  every layer norm; measured over this matrix: at most 1.84 u (bf16) and 1.60 u (fp16);
* logits: within ``LOGIT_ROUNDINGS`` u x max|logit|. The head adds two roundings to the states' and
  its freshly initialised weights (std 0.02) make logits small sums with cancellation, so their
  relative error is larger: measured at most 8.1 u (bf16) and 6.6 u (fp16);
* the low-precision forward differs from fp32 (autocast really ran), and its error is small next to
  the method's own contribution (the change the method's parameters make to the states), so a method
  whose bias/prefix/adapter were dropped under autocast cannot pass: measured ratio >= 48 (bf16).

Training (the real ``Trainer.fit``, fixture RTE, 3 optimizer steps from the same initialisation and
batches): every loss is finite and within ``LOSS_ROUNDINGS`` u x loss of the fp32 run's; the dev scores
of the two trained models agree within the logit tolerance; the runner's inference check (dev scores in
fp32 before and after ``prepare_for_inference``, ``trainer.inference_tolerance``) passes after bf16
training, and so does the same check under bf16 autocast. fp16: the grad-scaler path trains, clipping
sees the unscaled gradients, and a step whose gradients overflow is skipped (weights, schedule).
"""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from aotp.methods import METHODS
from aotp.models.mixed_precision import make_autocast_safe
from aotp.models.tiny_tokenizer import build_tiny_tokenizer
from aotp.run import CONFIG_DIR
from aotp.tasks import load_spec, load_task_data
from aotp.trainer.loop import PRECISIONS, Trainer, predict_scores
from tests.conftest import TINY_FAMILIES, make_tiny_task_model
from tests.helpers import FIXTURE_DATA
from tests.unit.test_methods_matrix import batch_for, build, method_parameters, perturb

UNIT_ROUNDOFF = {"bf16": 2.0 ** -8, "fp16": 2.0 ** -11}
STATE_ROUNDINGS = 4
LOGIT_ROUNDINGS = 16
LOSS_ROUNDINGS = 4
EFFECT_TO_ERROR = 8  # the method's contribution must exceed the rounding error this many times
STEPS = 3

every_method = pytest.mark.parametrize("method_name", METHODS.names())


def forward(model, batch, precision: str, states: bool = False) -> torch.Tensor:
    model.eval()
    dtype = PRECISIONS[precision]
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        if states:
            return model.encode(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")).float()
        return model(**batch).float()


def max_abs(tensor) -> float:
    return float(torch.as_tensor(tensor).abs().max())


@every_method
def test_autocast_forward_is_the_fp32_forward_up_to_rounding(method_name, tiny_family):
    model, _ = build(method_name, tiny_family, "classification")
    batch, _ = batch_for(model, "classification")
    plain_states = forward(model, batch, "fp32", states=True)
    perturb(model)  # the method's parameters away from init (LoRA's B, AoT's output start at zero)
    states, logits = forward(model, batch, "fp32", states=True), forward(model, batch, "fp32")
    effect = max_abs(states - plain_states)
    for precision, u in UNIT_ROUNDOFF.items():
        state_error = max_abs(forward(model, batch, precision, states=True) - states)
        logit_error = max_abs(forward(model, batch, precision) - logits)
        assert 0 < state_error <= STATE_ROUNDINGS * u * max_abs(states), (precision, state_error / max_abs(states) / u)
        assert state_error * EFFECT_TO_ERROR < effect, f"{precision}: rounding {state_error:.2e} vs the method's {effect:.2e}"
        assert 0 < logit_error <= LOGIT_ROUNDINGS * u * max_abs(logits), (precision, logit_error / max_abs(logits) / u)


# -- the training loop under each precision --------------------------------------------------------

_DATA = {}


def fixture_rte(uses_token_type_ids: bool):
    """Fixture RTE (10 train, 6 dev pairs) tokenised by the tiny tokenizer every tiny family shares."""
    if uses_token_type_ids not in _DATA:
        _DATA[uses_token_type_ids] = load_task_data(
            load_spec("glue/rte"), build_tiny_tokenizer(), {"root": str(FIXTURE_DATA), "max_length": 64},
            uses_token_type_ids=uses_token_type_ids, seed=0, cache_dir=None)
    return _DATA[uses_token_type_ids]


class RecordingLoggers:
    """Collects what the trainer logs (every step: ``log_every=1``)."""

    def __init__(self):
        self.events = []

    def log(self, kind, step, values):
        self.events.append((kind, step, dict(values)))

    def losses(self):
        return [values["loss"] for kind, _, values in self.events if kind == "train"]


def trainer_config(precision: str, **overrides):
    cfg = OmegaConf.load(CONFIG_DIR / "trainer" / "default.yaml")
    cfg.merge_with({"precision": precision, "max_steps": STEPS, "batch_size": 4, "eval_batch_size": 16,
                    "eval_every": STEPS, "log_every": 1, "progress": False, "device": "cpu", **overrides})
    return cfg


def fit(method_name, family, precision, run_dir, **overrides):
    """(model, method, trainer, state, logged losses) after ``STEPS`` steps of ``Trainer.fit``."""
    torch.manual_seed(0)  # the method's parameters are initialised from the global generator
    spec = load_spec("glue/rte")
    model = make_tiny_task_model(family, spec.head, num_labels=spec.num_labels)
    method = METHODS.get(method_name)()
    method.apply(model)
    data = fixture_rte(model.uses_token_type_ids)
    loggers = RecordingLoggers()
    trainer = Trainer(trainer_config(precision, **overrides), model, method, data, run_dir, loggers,
                      torch.device("cpu"), seed=0)
    torch.manual_seed(0)
    state = trainer.fit(1e-3, 0.01)
    return model, method, trainer, state, loggers.losses()


def dev_scores(trainer, precision="fp32"):
    split = trainer.data[trainer.spec.eval_splits[0]]
    return predict_scores(trainer.model, split, trainer.collator, 16, trainer.device, precision)


@every_method
def test_bf16_training_tracks_fp32_and_passes_the_inference_check(method_name, tiny_family, tmp_path):
    reference = fit(method_name, tiny_family, "fp32", tmp_path / "fp32")
    model, method, trainer, state, losses = fit(method_name, tiny_family, "bf16", tmp_path / "bf16")
    u = UNIT_ROUNDOFF["bf16"]
    assert len(losses) == len(reference[4]) == STEPS and all(math.isfinite(loss) for loss in losses)
    assert losses != reference[4], "bf16 autocast did not change the computation"
    for step, (loss, fp32_loss) in enumerate(zip(losses, reference[4]), start=1):
        assert abs(loss - fp32_loss) <= LOSS_ROUNDINGS * u * fp32_loss, (step, loss, fp32_loss)
    assert state["skipped_steps"] == 0 and state["step"] == STEPS

    # dev: the bf16-trained model scores like the fp32-trained one (both evaluated in fp32) and predicts
    # the same label wherever the fp32 model's margin exceeds that tolerance
    before, fp32_trained = dev_scores(trainer), dev_scores(reference[2])
    tolerance = LOGIT_ROUNDINGS * u * max_abs(fp32_trained)
    assert max_abs(before - fp32_trained) <= tolerance
    top2 = torch.as_tensor(fp32_trained).topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * tolerance
    assert torch.equal(torch.as_tensor(before).argmax(-1)[clear], torch.as_tensor(fp32_trained).argmax(-1)[clear])

    # the runner's inference check (fp32 scores before/after the inference form) and the same under bf16
    before_bf16 = dev_scores(trainer, "bf16")
    method.prepare_for_inference(model, tmp_path / "inference")
    assert max_abs(dev_scores(trainer) - before) <= float(trainer.cfg.inference_tolerance)
    assert max_abs(dev_scores(trainer, "bf16") - before_bf16) <= LOGIT_ROUNDINGS * u * max_abs(before)
