"""BitFit (Ben Zaken et al. 2022, arXiv 2106.10199): only the backbone's bias terms (and the head) train.

Every additive bias of the encoder trains, layer-norm biases included, as in the paper's
``b^{m,l}_{(.)}`` and ``b^l_{LN}`` terms: a parameter trains iff its name ends in ``bias``
(``bias``, and DeBERTa v1's ``q_bias``/``v_bias``). Layer-norm gains and all weights stay frozen.

Trainable parameters, with L layers, hidden size d, attention width A (= heads * head size; d in
these models) and FFN width f, per family:

* BERT / RoBERTa: ``L * (3A + 4d + f) + d``: per layer the query/key/value biases (3A), the
  attention-output dense and layer-norm biases (2d), the FFN biases (f + d) and the output
  layer-norm bias (d); plus the embedding layer norm (d).
* DeBERTa v1: ``L * (2A + [A if p2c] + 4d + f) + d``: the fused ``in_proj`` has no bias, the query
  and value biases are separate (``q_bias``, ``v_bias``); ``pos_q_proj`` (p2c) has a bias,
  ``pos_proj`` (c2p) has none.
* DeBERTa v2/v3: ``L * (3A + [A if c2p] + [A if p2c] + 4d + f) + d + [d if norm_rel_ebd has
  layer_norm] + [2d if conv_kernel_size > 0]``, the position projections existing only when
  ``share_att_key`` is false.

Plus the head. Inference: unchanged, the same computation as the backbone (benchmark variant
``same_as_backbone``); a batch cannot mix tasks (the bias values are task-specific).
"""

from __future__ import annotations

from aotp.methods.base import METHODS, head_parameter_count
from aotp.methods.full_ft import FullFineTuning
from aotp.models.task_model import TaskModel


def is_bias(name: str) -> bool:
    return name.startswith("backbone.") and name.rsplit(".", 1)[-1].endswith("bias")


def backbone_bias_count(config, family: str) -> int:
    """The number of bias entries in a bare encoder of ``family`` with ``config`` (formula above)."""
    d, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    heads = config.num_attention_heads
    attention_width = heads * (getattr(config, "attention_head_size", None) or d // heads)
    relative = bool(getattr(config, "relative_attention", False))
    pos_att = set(getattr(config, "pos_att_type", None) or []) if relative else set()
    common = 4 * d + f  # attention-output dense + LN, FFN intermediate + output dense, output LN
    if family in ("bert", "roberta"):
        per_layer = 3 * attention_width + common
        extra = 0
    elif family == "deberta":
        per_layer = 2 * attention_width + (attention_width if "p2c" in pos_att else 0) + common
        extra = 0
    elif family == "deberta_v2":
        position = 0 if getattr(config, "share_att_key", False) else attention_width * len(pos_att & {"c2p", "p2c"})
        per_layer = 3 * attention_width + position + common
        norm_rel_ebd = [x.strip() for x in str(getattr(config, "norm_rel_ebd", "none")).lower().split("|")]
        extra = d if "layer_norm" in norm_rel_ebd else 0
        extra += 2 * d if (getattr(config, "conv_kernel_size", 0) or 0) > 0 else 0
    else:
        raise ValueError(f"BitFit has no bias formula for backbone family {family!r}")
    return layers * per_layer + d + extra  # + d: the embedding layer norm


@METHODS.register("bitfit")
class BitFit(FullFineTuning):
    """Full fine-tuning of the bias terms only: the same inference form, the backbone's computation."""

    name = "bitfit"
    inference_note = "same computation as the backbone at inference (only bias values differ)"
    mixing_note = ("cannot mix tasks in one batch (task-specific bias values in the backbone): served as T per-task "
                   "batches on T models -- same computation as lora/merged per task (not timed separately)")

    trains = staticmethod(is_bias)

    def expected_trainable_parameters(self, model: TaskModel) -> int:
        return backbone_bias_count(model.backbone.config, model.family) + head_parameter_count(model)
