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
batches), in bf16 and in fp16: every loss is finite and within ``LOSS_ROUNDINGS`` u x loss of the fp32
run's (measured at most 7e-4 absolute over 10 steps of the runner on real RTE, about 0.25 u x loss);
the dev scores of the two trained models agree within the logit tolerance and give the same label
wherever the fp32 margin is clear of it; the runner's inference check (dev scores in fp32 before and
after ``prepare_for_inference``, ``trainer.inference_tolerance``) passes, and so does the same check
under the training precision's autocast. fp16: the loss is scaled, the gradients are unscaled before
clipping, and a step whose gradients overflow is skipped (weights, schedule, scale). An AoT table
stored in bf16/fp16 moves the logits by its rounding only (``TABLE_LOGIT_ROUNDINGS``). DeBERTa v1
needs :mod:`aotp.models.mixed_precision` to run under autocast at all.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import pytest
import torch
from omegaconf import OmegaConf

from aotp.methods import METHODS
from aotp.methods.aot.method import TABLE_LOGIT_ROUNDINGS
from aotp.models.mixed_precision import UNIT_ROUNDOFF as FORMAT_ROUNDOFF
from aotp.models.mixed_precision import make_autocast_safe
from aotp.models import TaskModel
from aotp.models.tiny_tokenizer import build_tiny_tokenizer
from aotp.run import CONFIG_DIR, compose, execute
from aotp.tasks import load_spec, load_task_data
from aotp.trainer.checkpoint import load_checkpoint
from aotp.trainer.loop import PRECISIONS, Trainer, predict_scores
from tests.conftest import make_tiny_task_model
from tests.helpers import FIXTURE_DATA
from tests.unit.test_methods_matrix import batch_for, build, perturb

UNIT_ROUNDOFF = {name: FORMAT_ROUNDOFF[name] for name in ("bf16", "fp16")}  # u = 2^-8, 2^-11
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

    def start_at(self, step):  # a fresh run starts at step 0: nothing logged earlier to drop
        assert step == 0

    def losses(self):
        return [values["loss"] for kind, _, values in self.events if kind == "train"]


def trainer_config(precision: str, **overrides):
    cfg = OmegaConf.load(CONFIG_DIR / "trainer" / "default.yaml")
    cfg.merge_with({"precision": precision, "max_steps": STEPS, "batch_size": 4, "eval_batch_size": 16,
                    "eval_every": STEPS, "log_every": 1, "progress": False, "device": "cpu", **overrides})
    return cfg


class Fit(NamedTuple):
    model: TaskModel
    method: object
    trainer: Trainer
    state: dict
    losses: list


def fit(method_name, family, precision, run_dir, before_fit=None, **overrides) -> Fit:
    """``STEPS`` optimizer steps of ``Trainer.fit`` on fixture RTE; ``before_fit(model)`` may add hooks."""
    torch.manual_seed(0)  # the method's parameters are initialised from the global generator
    spec = load_spec("glue/rte")
    model = make_tiny_task_model(family, spec.head, num_labels=spec.num_labels)
    method = METHODS.get(method_name)()
    method.apply(model)
    if before_fit is not None:
        before_fit(model)
    loggers = RecordingLoggers()
    trainer = Trainer(trainer_config(precision, **overrides), model, method, fixture_rte(model.uses_token_type_ids),
                      run_dir, loggers, torch.device("cpu"), seed=0)
    torch.manual_seed(0)  # same dropout masks in every precision
    state = trainer.fit(1e-3, 0.01).state
    return Fit(model, method, trainer, state, loggers.losses())


def dev_scores(trainer, precision="fp32"):
    split = trainer.data[trainer.spec.eval_splits[0]]
    return torch.as_tensor(predict_scores(trainer.model, split, trainer.collator, 16, trainer.device, precision))


@every_method
def test_mixed_precision_training_tracks_fp32_and_passes_the_inference_check(method_name, tiny_family, tmp_path):
    reference = fit(method_name, tiny_family, "fp32", tmp_path / "fp32")
    fp32_scores = dev_scores(reference.trainer)
    for precision, u in UNIT_ROUNDOFF.items():
        run = fit(method_name, tiny_family, precision, tmp_path / precision)
        assert len(run.losses) == len(reference.losses) == STEPS and all(map(math.isfinite, run.losses)), precision
        assert run.losses != reference.losses, f"{precision} autocast did not change the computation"
        for step, (loss, fp32_loss) in enumerate(zip(run.losses, reference.losses), start=1):
            assert abs(loss - fp32_loss) <= LOSS_ROUNDINGS * u * fp32_loss, (precision, step, loss, fp32_loss)
        assert run.state["skipped_steps"] == 0 and run.state["step"] == STEPS  # no fp16 overflow in a tiny model

        # dev: the model trained in low precision scores like the fp32-trained one (both evaluated in fp32)
        # and predicts the same label wherever the fp32 model's margin exceeds that tolerance
        before = dev_scores(run.trainer)
        tolerance = LOGIT_ROUNDINGS * u * max_abs(fp32_scores)
        assert max_abs(before - fp32_scores) <= tolerance, precision
        top2 = fp32_scores.topk(2, dim=-1).values
        clear = (top2[:, 0] - top2[:, 1]) > 2 * tolerance
        assert torch.equal(before.argmax(-1)[clear], fp32_scores.argmax(-1)[clear]), precision

        # the runner's inference check (fp32 dev scores before/after the inference form), and the same
        # check under the training precision's autocast
        before_autocast = dev_scores(run.trainer, precision)
        run.method.prepare_for_inference(run.model, tmp_path / precision / "inference")
        assert max_abs(dev_scores(run.trainer) - before) <= float(run.trainer.cfg.inference_tolerance), precision
        after_autocast = dev_scores(run.trainer, precision)
        assert max_abs(after_autocast - before_autocast) <= LOGIT_ROUNDINGS * u * max_abs(before), precision


# -- fp16: the loss scaler -----------------------------------------------------------------------------

def test_fp16_scales_the_loss_and_clips_the_unscaled_gradients(monkeypatch, tmp_path):
    """Gradients are 65,536 (the initial scale) times the true ones after backward, divided back
    before clipping: the norm clipping sees is the fp32 run's, up to fp16 rounding."""
    events = []
    unscale, clip = torch.amp.GradScaler.unscale_, torch.nn.utils.clip_grad_norm_

    def gradient_norm(optimizer):
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for group in optimizer.param_groups
                                                           for p in group["params"] if p.grad is not None])))

    def recording_unscale(self, optimizer):
        if not self.is_enabled():  # fp32: the trainer's scaler is a no-op
            return unscale(self, optimizer)
        norm_before = gradient_norm(optimizer)
        unscale(self, optimizer)
        events.append(("unscale", self.get_scale(), norm_before, gradient_norm(optimizer)))

    def recording_clip(parameters, max_norm, *args, **kwargs):
        total = clip(parameters, max_norm, *args, **kwargs)
        events.append(("clip", float(total)))
        return total

    monkeypatch.setattr(torch.amp.GradScaler, "unscale_", recording_unscale)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    fit("aot_fc", "roberta", "fp32", tmp_path / "fp32")
    fp32_norms = [event[1] for event in events]
    assert len(fp32_norms) == STEPS and all(norm > 0 for norm in fp32_norms)
    events.clear()
    run = fit("aot_fc", "roberta", "fp16", tmp_path / "fp16")
    assert [event[0] for event in events] == ["unscale", "clip"] * STEPS  # unscaled before every clip
    for step in range(STEPS):
        (_, scale, scaled_norm, unscaled_norm), (_, clip_norm) = events[2 * step], events[2 * step + 1]
        assert scale == 2.0 ** 16  # the initial scale; no overflow, and growth only after 2,000 good steps
        assert scaled_norm == pytest.approx(scale * unscaled_norm, rel=1e-5)
        assert clip_norm == pytest.approx(unscaled_norm, rel=1e-5)
        assert clip_norm == pytest.approx(fp32_norms[step], rel=16 * UNIT_ROUNDOFF["fp16"])
    assert run.state["skipped_steps"] == 0


@pytest.mark.parametrize("overflowing_steps", [1, STEPS])
def test_fp16_step_with_overflowing_gradients_is_skipped(overflowing_steps, tmp_path):
    """An inf in the gradients (injected into the head's output weights for the first steps): the
    optimizer step is skipped (weights unchanged), the LR schedule does not advance, the scale halves."""
    remaining = {"overflows": overflowing_steps}
    initial = {}

    def inject_overflow(model):
        initial.update({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})

        def overflow(gradient):
            if remaining["overflows"] > 0:
                remaining["overflows"] -= 1
                return gradient * float("inf")
            return gradient
        model.head.out_proj.weight.register_hook(overflow)

    run = fit("aot_fc", "roberta", "fp16", tmp_path, before_fit=inject_overflow)
    assert run.state["step"] == STEPS and run.state["skipped_steps"] == overflowing_steps
    assert all(map(math.isfinite, run.losses))  # the loss itself is finite; only its gradients overflowed
    checkpoint = load_checkpoint(run.trainer.checkpoint_dir)
    assert checkpoint["scaler"]["scale"] == 2.0 ** 16 * 0.5 ** overflowing_steps
    assert checkpoint["scheduler"]["last_epoch"] == STEPS - overflowing_steps
    moved = [n for n, p in run.model.named_parameters() if p.requires_grad and not torch.equal(p, initial[n])]
    if overflowing_steps == STEPS:
        assert not moved, f"a skipped step changed {moved[:3]}"
    else:
        assert moved and all(torch.isfinite(p).all() for p in run.model.parameters())


# -- the runner, end to end --------------------------------------------------------------------------

@pytest.mark.parametrize("precision, table_dtype", [("bf16", "bf16"), ("fp16", "fp32")])
def test_runner_records_a_mixed_precision_run(precision, table_dtype, tmp_path):
    """``python -m aotp.run trainer.precision=...`` on DeBERTa v1 (the family that needed the repair),
    AoT (its table materialised and checked): success, the inference check passed, no skipped step."""
    record = execute(compose(["model=tiny_deberta_v1", "method=aot_fc", "task=glue/rte", f"trainer.precision={precision}",
                              f"method.options.table_dtype={table_dtype}", "trainer.max_steps=3", "trainer.batch_size=4",
                              "trainer.progress=false", "logger=none", f"data.root={FIXTURE_DATA}",
                              f"paths.results={tmp_path}", "data.cache=false"]))
    assert record["status"] == "success" and record["config"]["trainer"]["precision"] == precision
    inference = record["inference"]
    assert inference["table_dtype"] == table_dtype and inference["max_abs_logit_diff"] <= inference["tolerance"]
    if table_dtype == "fp32":
        assert inference["tolerance"] == 1e-4 and "logit_relative_tolerance" not in inference
    else:
        assert inference["logit_relative_tolerance"] == TABLE_LOGIT_ROUNDINGS * FORMAT_ROUNDOFF[table_dtype]
        assert inference["tolerance"] >= 1e-4
    assert record["selection"]["skipped_steps"] == 0 and record["selection"]["steps_done"] == 3


@pytest.mark.parametrize("table_dtype", ["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("method_name", ["aot_fc", "aot_kron"])
def test_low_precision_aot_table_moves_logits_by_its_rounding_only(method_name, table_dtype, tmp_path):
    """A table stored in bf16/fp16 moves trained-size logits by more than the absolute 1e-4 of
    ``trainer.inference_tolerance`` (a real run with ``table_dtype=bf16`` failed its inference check),
    and by no more than the stated ``TABLE_LOGIT_ROUNDINGS`` u x max|logit|; an fp32 table is exact."""
    torch.manual_seed(0)
    model = make_tiny_task_model("roberta", "classification", num_labels=3)
    with torch.no_grad():
        model.head.out_proj.weight.mul_(50)  # logits of a trained head (max |logit| a few units), not 0.05
    method = METHODS.get(method_name)(table_dtype=table_dtype)
    method.apply(model)
    perturb(model, scale=1.0)
    batch, _ = batch_for(model, "classification")
    before = forward(model, batch, "fp32")
    facts = method.prepare_for_inference(model, tmp_path)
    change = max_abs(forward(model, batch, "fp32") - before)
    if table_dtype == "fp32":
        assert "logit_relative_tolerance" not in facts and change <= 1e-5
        return
    relative = facts["logit_relative_tolerance"]
    assert relative == TABLE_LOGIT_ROUNDINGS * FORMAT_ROUNDOFF[table_dtype]
    assert change <= relative * max_abs(before)
    if table_dtype == "bf16":
        assert change > 1e-4, "the rounding is visible at the default absolute tolerance"


def test_deberta_v1_attention_runs_under_autocast_with_unchanged_parameters():
    """Without the repair, DeBERTa v1 under bf16/fp16 autocast fails in every forward (fp32 finfo.min
    into bf16/fp16 attention scores); with it, the forward runs, the gradients reach the fp32 biases,
    and parameter names and fp32 outputs are unchanged."""
    from transformers.models.deberta.modeling_deberta import DisentangledSelfAttention

    model = make_tiny_task_model("deberta")
    attention = [m for m in model.modules() if isinstance(m, DisentangledSelfAttention)]
    assert attention and all(getattr(m, "_aotp_autocast_safe", False) for m in attention)
    assert make_autocast_safe(model) == len(attention)  # idempotent: no second set of hooks
    batch, labels = batch_for(model, "classification")
    names = [n for n, _ in model.named_parameters()]
    fp32 = forward(model, batch, "fp32")
    for handle_dict in (m._forward_pre_hooks for m in attention):
        saved = dict(handle_dict)
        handle_dict.clear()
        with pytest.raises(RuntimeError, match="cannot be converted"):
            forward(model, batch, "bf16")
        handle_dict.update(saved)
        break
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.loss(model(**batch), labels[:1].expand(len(labels)) * 0)
    loss.backward()
    assert all(isinstance(m.q_bias, torch.nn.Parameter) and m.q_bias.dtype == torch.float32 for m in attention)
    assert all(m.q_bias.grad is not None and m.q_bias.grad.abs().sum() > 0 for m in attention)
    assert [n for n, _ in model.named_parameters()] == names
    assert torch.equal(forward(model, batch, "fp32"), fp32)
