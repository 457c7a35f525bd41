"""The inference-form check under TF32 (issue 26, item 1).

On an Ampere+ GPU training runs with TF32 matmuls (``trainer.tf32=true``). LoRA's two forms, ``xW + s(xA)B``
and ``x(W + sBA)``, round differently under TF32, so a check that scores them under TF32 fails an exact
merge. These tests emulate TF32 on the CPU (``tests.helpers.EmulatedTF32``: fp32 linear inputs rounded to a
10-bit mantissa while CUDA's TF32 flag is on) at a width where the emulated gap is ~1e-3, far above the
1e-4 tolerance, and run the runner's own check (:func:`aotp.run.finish_run`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aotp.accelerator import EXACT_PRECISION, exact_precision, tf32_enabled
from aotp.methods.lora import LoRALinear
from tests.helpers import FIXTURE_DATA, EmulatedTF32, compose

WIDE = ["model=tiny_roberta", "model.hidden_size=512", "model.num_layers=4", "model.num_heads=8",
        "model.intermediate_size=1024", "method=lora", "task=glue/rte", f"data.root={FIXTURE_DATA}",
        "trainer.progress=false", "data.cache=false"]


def trained_looking_lora(precision: str = "fp32"):
    """A built run (``aotp.assembly.build_run``) whose LoRA factors look trained (B != 0) and whose logits
    reach ~5, as a fine-tuned head's do; its dev scores computed the way the loop computes them now."""
    from aotp.assembly import build_run

    cfg = compose([*WIDE, f"trainer.precision={precision}"])
    parts = build_run(cfg)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in parts.model.named_parameters():
            if ".lora_B." in name:
                parameter.normal_(0.0, 0.05)
        parts.model.head.out_proj.weight.mul_(20.0)
    return cfg, parts


def fitted_with(parts, best_scores):
    from aotp.trainer.loop import Fitted

    state = {"best_step": 1, "best_main": 0.5, "stopped_early": False, "step": 1, "skipped_steps": 0,
             "history": [], "train_seconds": 1.0, "eval_seconds": 0.0, "train_examples": 4}
    return Fitted(state, 1, best_scores)


def dev_scores(parts):
    from aotp.trainer.loop import predict_scores

    return predict_scores(parts.model, parts.data["validation"], parts.collator, 64, parts.device)


def finish(cfg, parts, fitted, tmp_path):
    from aotp.assembly import parameter_counts
    from aotp.run import finish_run

    return finish_run(cfg, parts, fitted, parameter_counts(parts.model, parts.method), tmp_path)


def test_the_emulation_separates_the_two_lora_forms_under_tf32_only():
    """The premise: under emulated TF32 the merged and unmerged forms differ by far more than the
    tolerance (as at RoBERTa-large shape on a GPU); at full fp32 they agree to ~1e-7."""
    cfg, parts = trained_looking_lora()
    with EmulatedTF32(allowed=True):
        unmerged = dev_scores(parts)
    with EmulatedTF32(allowed=False):
        exact_unmerged = dev_scores(parts)
    for module in parts.model.modules():
        if isinstance(module, LoRALinear):
            with torch.no_grad():
                module.weight += module.delta_weight()
            module.lora_A.clear()
    with EmulatedTF32(allowed=True):
        merged = dev_scores(parts)
    with EmulatedTF32(allowed=False):
        exact_merged = dev_scores(parts)
    assert np.abs(unmerged - merged).max() > 5 * float(cfg.trainer.inference_tolerance)
    assert np.abs(exact_unmerged - exact_merged).max() < 1e-5
    assert np.abs(unmerged).max() > 1.0


def test_an_exact_merge_passes_the_check_after_tf32_training(tmp_path):
    """Training under TF32 left dev scores computed under TF32 (the loop's best_scores) and the flag on;
    the check must score both forms at full precision, restore the flag, and say so in the record.
    Today's main compared TF32 scores of the two forms: ~1e-3 > 1e-4, the run failed."""
    cfg, parts = trained_looking_lora()
    with EmulatedTF32(allowed=True):
        tf32_scores = {"validation": dev_scores(parts)}
        outcome = finish(cfg, parts, fitted_with(parts, tf32_scores), tmp_path)
        assert tf32_enabled()  # restored after the check
    inference = outcome["inference"]
    assert inference.check_precision == EXACT_PRECISION
    assert inference.max_abs_logit_diff < 1e-5 < float(cfg.trainer.inference_tolerance)
    assert outcome["execution"].precision == "fp32"


@pytest.mark.parametrize("precision,tf32", [("fp32", False), ("fp32", True), ("bf16", True), ("fp16", False)])
def test_the_check_still_catches_a_wrong_merge_scaling_in_every_precision(tmp_path, monkeypatch, precision, tf32):
    """A merge with the wrong scaling factor (alpha/r applied twice) moves the logits far beyond the
    tolerance; the check refuses it whatever precision trained the run and whether TF32 was on."""
    cfg, parts = trained_looking_lora(precision)
    correct = LoRALinear.delta_weight
    monkeypatch.setattr(LoRALinear, "delta_weight", lambda self: correct(self) * self.lora_scaling)
    with EmulatedTF32(allowed=tf32):
        with pytest.raises(RuntimeError, match="prepare_for_inference changed dev logits"):
            finish(cfg, parts, fitted_with(parts, None), tmp_path)


def test_exact_precision_turns_tf32_off_inside_and_restores_every_flag():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        with exact_precision() as name:
            assert name == EXACT_PRECISION
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
            assert not tf32_enabled()
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        with pytest.raises(ValueError), exact_precision():
            raise ValueError("restored on an error too")
        assert torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
