"""What aotp's own bottleneck adapters and prefixes keep from AdapterHub ``adapters``, the library they replace.

``adapter_houlsby``, ``adapter_pfeiffer`` and ``ptuning_v2`` were built on AdapterHub ``adapters`` 1.3
(which pins transformers 4.57); they are now aotp's own modules (:mod:`aotp.methods.bottleneck_adapters`,
:mod:`aotp.methods.ptuning_v2`), equal to the library's computation (``tests/unit/test_adapterhub_equivalence.py``
checks it where ``adapters`` is installed). Nothing here imports ``adapters``; this module holds the two
things the native modules need to stay the library's runs:

* **The random draws of ``adapters.init``.** ``adapters.init(backbone)`` re-creates some of every layer's
  ``nn.Linear`` modules as LoRA-capable ones (``LoRALinear.wrap`` / ``LoRAMergedLinear.wrap``); each
  re-creation runs ``nn.Linear.reset_parameters`` (Kaiming-uniform weight, uniform bias) on the global
  generator before the pretrained weight is copied back, so it moves the generator without changing the
  model. The adapters' own initialisation then draws from the moved generator. :func:`replay_init_draws`
  makes the same draws, in the same order (per layer: the :data:`INIT_DRAWS` modules), so that with one
  seed the native adapters and prefixes start from the library's values and every later draw (dropout,
  data order) is the library run's. On DeBERTa v1 the library re-creates the bias-free fused ``in_proj``
  *with* a freshly drawn bias (``LoRAMergedLinear.wrap`` passes no ``bias=False``), a random bias that the
  old glue removed again (it changed the pretrained model's outputs); the draw is replayed, the bias is not.
* **The parameter names.** :func:`native_state` renames a trainable state saved by the library-based methods
  (``...adapters.<name>.adapter_down.0.weight``, ``...prefix_tunings.<name>.self_prefix.control_trans``)
  to the native names, so warm starts (``method.init_from``) from runs made before the switch keep loading.
"""

from __future__ import annotations

import re
from typing import Iterable

import torch
from torch import nn

# family -> modules (paths inside ``encoder.layer.<i>``) that ``adapters.init`` re-creates, in the order it
# does so within a layer (``BertLayerAdaptersMixin`` first: the FFN's two projections; then the self-attention
# mixin: its projections). A trailing ``+bias`` marks a re-creation with a bias the original lacks.
INIT_DRAWS: dict[str, tuple[str, ...]] = {
    "bert": ("intermediate.dense", "output.dense", "attention.self.query", "attention.self.key",
             "attention.self.value"),
    "roberta": ("intermediate.dense", "output.dense", "attention.self.query", "attention.self.key",
                "attention.self.value"),
    "deberta": ("intermediate.dense", "output.dense", "attention.self.in_proj+bias"),
    "deberta_v2": ("intermediate.dense", "output.dense", "attention.self.query_proj", "attention.self.key_proj",
                   "attention.self.value_proj"),
}


def replay_init_draws(backbone: nn.Module, family: str) -> int:
    """Draw from the global generator what ``adapters.init(backbone)`` draws (see the module docstring);
    the backbone is not changed. Returns the number of ``nn.Linear`` re-creations replayed."""
    if family not in INIT_DRAWS:
        raise ValueError(f"no AdapterHub init draws known for family {family!r}; add it to "
                         f"aotp/methods/adapterhub.py:INIT_DRAWS (known: {', '.join(INIT_DRAWS)})")
    count = 0
    for layer in backbone.encoder.layer:
        for spec in INIT_DRAWS[family]:
            path, _, forced = spec.partition("+")
            module = layer.get_submodule(path)
            # exactly the library's re-creation: a default-device fp32 nn.Linear, reset_parameters() drawing
            nn.Linear(module.in_features, module.out_features, bias=bool(forced) or module.bias is not None)
            count += 1
    return count


# AdapterHub parameter name (suffix after the backbone path) -> native name
_BOTTLENECK_NAMES = ((re.compile(r"\.adapters\.[^.]+\.adapter_down\.0\.(weight|bias)$"), r".bottleneck.down.\1"),
                     (re.compile(r"\.adapters\.[^.]+\.adapter_up\.(weight|bias)$"), r".bottleneck.up.\1"))
_PREFIX_NAME = re.compile(r"^backbone\..*\.prefix_tunings\.[^.]+\.self_prefix\.(.+)$")
_PREFIX_PARTS = {"control_trans": "prefix", "wte.weight": "embedding.weight",
                 "control_trans.0.weight": "mlp.0.weight", "control_trans.0.bias": "mlp.0.bias",
                 "control_trans.2.weight": "mlp.2.weight", "control_trans.2.bias": "mlp.2.bias"}


def native_name(name: str) -> str:
    """The native parameter name of an AdapterHub bottleneck-adapter or prefix-tuning parameter (other names
    are returned unchanged)."""
    for pattern, replacement in _BOTTLENECK_NAMES:
        if pattern.search(name):
            return pattern.sub(replacement, name)
    match = _PREFIX_NAME.match(name)
    if match and match.group(1) in _PREFIX_PARTS:
        return "backbone.prefix_encoder." + _PREFIX_PARTS[match.group(1)]
    return name


def native_state(state: dict[str, torch.Tensor], parameters: Iterable[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``state`` with AdapterHub names renamed to the native ones and reshaped to the native parameters'
    shapes (the library's flat prefix is a vector, the native one (p, L, 2, d) in the same order)."""
    shapes = {name: parameter.shape for name, parameter in parameters}
    renamed = {}
    for name, value in state.items():
        new = native_name(name)
        if new in renamed:
            raise KeyError(f"two saved parameters map to {new!r}: was the state saved with several adapters?")
        if new != name and new in shapes and value.shape != shapes[new]:
            value = value.reshape(shapes[new])
        renamed[new] = value
    return renamed
