"""Stand-in hub checkpoints: every ``source: hub`` model config, in its publisher's own file set.

``build_model_hub(out)`` writes ``<out>/hub/models--<org>--<name>/`` exactly as the Hugging Face cache
holds a checkpoint after ``from_pretrained`` downloaded it (``blobs/<hash>``, ``snapshots/<revision>/<file>``
symlinked to the blob, ``refs/main`` naming the revision), so that with ``HF_HOME=<out> HF_HUB_OFFLINE=1``
the harness's own call ``AutoTokenizer/AutoModel.from_pretrained(hub_id, revision="main")`` resolves it.

What is real, per checkpoint (``PUBLISHERS`` below, checked against the hub's file listings):

* the file set that ``from_pretrained`` fetches from the publisher's repository:

  ==========================  ============================================================================
  FacebookAI/roberta-*        config.json, vocab.json + merges.txt (byte-level BPE), tokenizer.json,
                              tokenizer_config.json (``{"model_max_length": 512}``), model.safetensors
  microsoft/deberta-v3-*,     config.json, spm.model (SentencePiece; no tokenizer.json, so transformers
  microsoft/deberta-v2-xlarge converts it to a fast tokenizer, which needs ``sentencepiece`` + ``protobuf``),
                              tokenizer_config.json, pytorch_model.bin (fp16 tensors, as published)
  microsoft/deberta-xlarge    config.json, vocab.json + merges.txt (GPT-2 byte-level BPE with DeBERTa's
                              ``[CLS]``/``[SEP]`` specials), tokenizer_config.json, pytorch_model.bin (fp16)
  ==========================  ============================================================================

  (the publishers also ship files ``from_pretrained`` never reads: RoBERTa's fairseq ``dict.txt`` and its
  ``pytorch_model.bin`` beside the safetensors, DeBERTa v1's pickled ``bpe_encoder.bin`` for Microsoft's
  own code, TF/Flax/ONNX weights; the stand-in leaves them out, as a real download does);
* ``config.json`` with the publisher's keys and values, in the publisher's spelling (``"pos_att_type":
  "p2c|c2p"`` as a string, ``model_type: "deberta-v2"``): vocabulary size (50,265 / 128,100), positions
  (514 for RoBERTa, whose positions start after the padding index; 512 for DeBERTa), type vocabulary
  (1 / 0), pad/bos/eos ids, relative-attention options (``position_buckets``, ``norm_rel_ebd``,
  ``share_att_key``, ``max_relative_positions``, DeBERTa-v2-xlarge's ``conv_kernel_size``/``conv_act``),
  layer-norm epsilon;
* the special tokens and their ids: RoBERTa ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3; DeBERTa
  ``[PAD]`` 0, ``[CLS]`` 1, ``[SEP]`` 2, ``[UNK]`` 3; the mask token last, as in the publishers' files;
* the weights' parameter names: saved from the publisher's architecture class (``*ForMaskedLM``, so
  the keys carry the ``roberta.`` / ``deberta.`` prefix and an LM head that ``AutoModel`` drops).

What is small: hidden size, layers, heads, intermediate size (``SMALL``), and the tokenizers' learned
vocabularies, trained in process on the test fixtures' text (a few hundred pieces where the publishers
have 50k / 128k). The embedding matrices keep the real row counts (the AoT table is |V| x L x d, so |V|
is what matters for it): 128,100 x 32 floats = 16 MB in fp32, 8 MB as the fp16 file. Token ids beyond
the trained vocabulary are rows no input reaches, as the unused rows 128,001..128,099 are in the real
DeBERTa-v3. The mask token therefore sits at the end of the trained vocabulary, not at 50,264 / 128,000;
fine-tuning never feeds it.

``size="full"`` (``python -m aotp.standin models size=full``) keeps the publisher's dimensions instead:
config.json as published (RoBERTa-large: 24 layers, hidden 1,024, 16 heads, intermediate 4,096,
vocabulary 50,265; 355,359,744 parameters in ``RobertaForMaskedLM``), random weights, the same small
trained tokenizer. It is the checkpoint's real shape for timing and memory checks on a GPU
(``scripts/gpu_check.sh``): RoBERTa-large's ``model.safetensors`` is 1.42 GB (fp32), built in seconds.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

from aotp.paths import config_dir
from aotp.registry import Registry

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_CONFIGS = config_dir("model")
FIXTURE_TEXT = REPO_ROOT / "tests" / "fixtures" / "data"

# The backbone's size in the stand-ins; the rest of config.json is the publisher's. Layers differ between
# base and large checkpoints so that code depending on L (the AoT table, P-Tuning v2 prefixes) sees two values.
SMALL = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 128}
SMALL_LAYERS = {"base": 2, "large": 3}

# Stand-in sizes: "small" shrinks the backbone to SMALL / SMALL_LAYERS, "full" keeps the publisher's config.json.
SIZES = ("small", "full")

# Trained vocabulary sizes (learned pieces, specials included).
BPE_VOCAB_SIZE = 1000
SPM_VOCAB_SIZE = 1000


@dataclass(frozen=True)
class Publisher:
    """How one publisher ships a checkpoint family: the tokenizer format, the weights file, the dtype of
    the published tensors and the config.json keys the ``architecture:`` entry of our model config does
    not already give."""

    tokenizer: str           # registry key in TOKENIZER_WRITERS
    weights_file: str        # model.safetensors | pytorch_model.bin
    weights_dtype: str       # float32 | float16 (the published tensors)
    model_type: str          # config.json's spelling
    masked_lm_class: str     # the architecture the weights were saved from
    config_extras: dict      # further config.json keys, publisher's spelling
    tokenizer_config: dict   # tokenizer_config.json, as published


PUBLISHERS: dict[str, Publisher] = {
    "roberta": Publisher(
        tokenizer="roberta_bpe", weights_file="model.safetensors", weights_dtype="float32",
        model_type="roberta", masked_lm_class="RobertaForMaskedLM",
        config_extras={"architectures": ["RobertaForMaskedLM"], "attention_probs_dropout_prob": 0.1,
                       "bos_token_id": 0, "eos_token_id": 2, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
                       "initializer_range": 0.02, "layer_norm_eps": 1e-05},
        tokenizer_config={"model_max_length": 512},
    ),
    "deberta": Publisher(  # DeBERTa v1 (microsoft/deberta-xlarge)
        tokenizer="deberta_gpt2_bpe", weights_file="pytorch_model.bin", weights_dtype="float16",
        model_type="deberta", masked_lm_class="DebertaForMaskedLM",
        config_extras={"attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
                       "initializer_range": 0.02, "layer_norm_eps": 1e-7},
        tokenizer_config={"do_lower_case": False, "vocab_type": "gpt2"},
    ),
    "deberta_v2": Publisher(  # DeBERTa v2 and v3 (microsoft/deberta-v2-xlarge, microsoft/deberta-v3-*)
        tokenizer="deberta_spm", weights_file="pytorch_model.bin", weights_dtype="float16",
        model_type="deberta-v2", masked_lm_class="DebertaV2ForMaskedLM",
        config_extras={"attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
                       "initializer_range": 0.02, "layer_norm_eps": 1e-7},
        tokenizer_config={"do_lower_case": False, "vocab_type": "spm"},
    ),
}


# Checkpoints whose config.json states the head size (deberta-v2-xlarge: 64 = 1536 / 24); kept as
# hidden / heads at the small size.
STATES_HEAD_SIZE = {"microsoft/deberta-v2-xlarge"}


@dataclass(frozen=True)
class HubModel:
    name: str                # our config name (configs/model/<name>.yaml)
    hub_id: str
    family: str
    architecture: dict       # the real config.json values from the model config

    @property
    def size(self) -> str:
        return "base" if self.hub_id.endswith("-base") else "large"

    @property
    def cache_folder(self) -> str:
        return "models--" + self.hub_id.replace("/", "--")


def hub_models(config_dir: Path = MODEL_CONFIGS) -> list[HubModel]:
    """Every ``source: hub`` entry of configs/model, in name order."""
    models = []
    for path in sorted(config_dir.glob("*.yaml")):
        entry = yaml.safe_load(path.read_text())
        if entry.get("source") != "hub":
            continue
        architecture = dict(entry.get("architecture") or {})
        family = architecture.pop("family", None)
        if family not in PUBLISHERS:
            raise ValueError(f"{path}: architecture.family={family!r}; the stand-in hub knows {', '.join(PUBLISHERS)}")
        models.append(HubModel(name=entry["name"], hub_id=entry["hub_id"], family=family, architecture=architecture))
    return models


def publisher_config(model: HubModel, size: str = "small") -> dict[str, Any]:
    """config.json: the publisher's keys and values, with the backbone shrunk to ``SMALL`` (``size="small"``)
    or at the publisher's own dimensions (``size="full"``: ``architecture:`` of the model config, which
    holds the checkpoint's config.json shape)."""
    if size not in SIZES:
        raise ValueError(f"stand-in size {size!r}; valid: {', '.join(SIZES)}")
    publisher = PUBLISHERS[model.family]
    config = {**publisher.config_extras, **model.architecture, "model_type": publisher.model_type}
    if size == "full":
        missing = [key for key in (*SMALL, "num_hidden_layers", "vocab_size") if key not in config]
        if missing:
            raise ValueError(f"configs/model/{model.name}.yaml: architecture has no {', '.join(missing)}; a full-size "
                             f"stand-in needs the checkpoint's config.json dimensions")
    else:
        config.update(SMALL, num_hidden_layers=SMALL_LAYERS[model.size])
    if model.hub_id in STATES_HEAD_SIZE:
        config["attention_head_size"] = config["hidden_size"] // config["num_attention_heads"]
    if isinstance(config.get("pos_att_type"), list):
        config["pos_att_type"] = "|".join(config["pos_att_type"])  # the publisher writes "p2c|c2p"
    if model.family != "roberta" and config.get("pad_token_id") == 0:
        config.pop("pad_token_id")  # Microsoft's config.json files leave it to the default (0)
    return dict(sorted(config.items()))


# --------------------------------------------------------------------------- tokenizer text


def fixture_sentences(root: Path = FIXTURE_TEXT) -> list[str]:
    """Every text field of the hand-written GLUE/SuperGLUE fixtures: a small English corpus that ships
    with the repository, so the stand-ins build from a clean clone without any download."""
    sentences: list[str] = []
    for path in sorted(root.rglob("*")):
        if path.suffix == ".tsv":
            for line in path.read_text(encoding="utf-8").splitlines()[1:]:
                sentences.extend(cell for cell in line.split("\t") if len(cell.split()) > 2)
        elif path.suffix == ".jsonl":
            for line in path.read_text(encoding="utf-8").splitlines():
                sentences.extend(_strings(json.loads(line)))
    if not sentences:
        raise FileNotFoundError(f"no fixture text under {root} to train the stand-in tokenizers on")
    return sentences


def _strings(value) -> Iterator[str]:
    if isinstance(value, str):
        if len(value.split()) > 2:
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


# --------------------------------------------------------------------------- tokenizer writers

TOKENIZER_WRITERS: Registry = Registry("stand-in tokenizer format")


def _byte_level_bpe(sentences: list[str], specials: list[str], mask: str) -> tuple[dict, list[str]]:
    """Train GPT-2 style byte-level BPE; specials take ids 0..k-1 and the mask token the last id."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB_SIZE, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(sentences, trainer)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.model.save(folder)
        vocab = json.loads(Path(folder, "vocab.json").read_text(encoding="utf-8"))
        merges = Path(folder, "merges.txt").read_text(encoding="utf-8").splitlines()
    vocab[mask] = len(vocab)
    merges = [line for line in merges if line and not line.startswith("#version")]
    return vocab, merges


def _write_bpe_files(folder: Path, vocab: dict, merges: list[str]) -> None:
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


@TOKENIZER_WRITERS.register("roberta_bpe")
def write_roberta_tokenizer(folder: Path, sentences: list[str]) -> None:
    """vocab.json + merges.txt, and the tokenizer.json the hub repository also ships: the same BPE with
    RoBERTa's ``<s> A </s></s> B </s>`` post-processor, byte-level pre-tokenizer and decoder, the four
    specials (normalized) and ``<mask>`` (lstrip), built with ``tokenizers`` directly. The file is byte for
    byte what transformers 4.57's ``RobertaTokenizerFast(vocab_file=..., merges_file=...)`` conversion
    saves; transformers 5 dropped those arguments (``vocab``/``merges`` instead) and would silently save an
    empty vocabulary, so the conversion no longer goes through transformers."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    vocab, merges = _byte_level_bpe(sentences, specials, "<mask>")
    _write_bpe_files(folder, vocab, merges)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(line.split(" ")) for line in merges], dropout=None,
                                     continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", vocab["</s>"]), ("<s>", vocab["<s>"]),
                                                            trim_offsets=True, add_prefix_space=False)
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=True) for token in specials]
                                 + [AddedToken("<mask>", special=True, lstrip=True, normalized=False)])
    tokenizer.save(str(folder / "tokenizer.json"))


@TOKENIZER_WRITERS.register("deberta_gpt2_bpe")
def write_deberta_v1_tokenizer(folder: Path, sentences: list[str]) -> None:
    """DeBERTa v1's GPT-2 byte-level BPE as vocab.json + merges.txt, with its BERT-style specials."""
    vocab, merges = _byte_level_bpe(sentences, ["[PAD]", "[CLS]", "[SEP]", "[UNK]"], "[MASK]")
    _write_bpe_files(folder, vocab, merges)


@TOKENIZER_WRITERS.register("deberta_spm")
def write_deberta_spm_tokenizer(folder: Path, sentences: list[str]) -> None:
    """spm.model alone: a SentencePiece model whose ids 0..3 are ``[PAD] [CLS] [SEP] [UNK]`` (the
    publisher's layout; ``[MASK]`` is added by the tokenizer after the pieces)."""
    import sentencepiece

    model = io.BytesIO()
    with open(os.devnull, "w") as quiet:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=model, vocab_size=SPM_VOCAB_SIZE,
            hard_vocab_limit=False, model_type="unigram", character_coverage=1.0, num_threads=1,
            pad_id=0, bos_id=1, eos_id=2, unk_id=3,
            pad_piece="[PAD]", bos_piece="[CLS]", eos_piece="[SEP]", unk_piece="[UNK]",
            logstream=quiet)
    (folder / "spm.model").write_bytes(model.getvalue())


# --------------------------------------------------------------------------- weights


def write_weights(folder: Path, model: HubModel, seed: int = 0) -> None:
    """Random weights of the publisher's architecture class, saved under the publisher's file name and
    tensor dtype (the config was written first; it is read back as transformers reads it)."""
    import torch
    import transformers
    from transformers import AutoConfig

    publisher = PUBLISHERS[model.family]
    config = AutoConfig.from_pretrained(folder)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        network = getattr(transformers, publisher.masked_lm_class)(config)
    finally:
        torch.random.set_rng_state(generator_state)
    dtype = getattr(torch, publisher.weights_dtype)
    # Tied tensors (the LM decoder shares the word embeddings and its bias) are written once, under
    # their first name, as save_pretrained does.
    state, seen = {}, set()
    for name, tensor in network.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        state[name] = tensor.detach().to(dtype).clone()
    if publisher.weights_file.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, str(folder / publisher.weights_file), metadata={"format": "pt"})
    else:
        torch.save(state, folder / publisher.weights_file)


# --------------------------------------------------------------------------- the cache layout


def _blob_name(path: Path) -> str:
    """The cache names a blob by its etag: sha256 for LFS files (weights, spm.model), the git blob sha1
    for the small text files."""
    data = path.read_bytes()
    if path.suffix in (".bin", ".safetensors", ".model"):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def revision_of(files: Iterable[Path]) -> str:
    """A 40-hex commit id derived from the snapshot's contents (deterministic for the same files)."""
    digest = hashlib.sha1()
    for path in sorted(files, key=lambda p: p.name):
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def install_snapshot(staging: Path, hub_cache: Path, model: HubModel, ref: str = "main") -> Path:
    """Move the files of ``staging`` into ``<hub_cache>/models--org--name`` as the cache lays out a
    download: blobs/<etag>, snapshots/<revision>/<file> -> ../../blobs/<etag>, refs/<ref>. Returns the
    snapshot folder."""
    files = sorted(p for p in staging.iterdir() if p.is_file())
    revision = revision_of(files)
    repo = hub_cache / model.cache_folder
    blobs, snapshot = repo / "blobs", repo / "snapshots" / revision
    blobs.mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in files:
        blob = blobs / _blob_name(path)
        if not blob.exists():
            os.replace(path, blob)
        link = snapshot / path.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(revision)
    return snapshot


def build_model(model: HubModel, hub_cache: Path, sentences: list[str] | None = None, size: str = "small") -> Path:
    """One stand-in checkpoint in the cache (``size``: :data:`SIZES`); returns its snapshot folder."""
    publisher = PUBLISHERS[model.family]
    sentences = sentences if sentences is not None else fixture_sentences()
    with tempfile.TemporaryDirectory(dir=hub_cache) as staging_name:
        staging = Path(staging_name)
        (staging / "config.json").write_text(json.dumps(publisher_config(model, size), indent=2) + "\n")
        (staging / "tokenizer_config.json").write_text(json.dumps(publisher.tokenizer_config) + "\n")
        TOKENIZER_WRITERS.get(publisher.tokenizer)(staging, sentences)
        write_weights(staging, model)
        return install_snapshot(staging, hub_cache, model)


def build_model_hub(out: Path, names: Iterable[str] | None = None, size: str = "small") -> dict[str, Path]:
    """Stand-ins of every ``source: hub`` model (or of ``names``) under ``<out>/hub`` (``HF_HOME=<out>``), at
    ``size`` (:data:`SIZES`). Returns model name -> snapshot folder."""
    if size not in SIZES:
        raise ValueError(f"stand-in size {size!r}; valid: {', '.join(SIZES)}")
    models = hub_models()
    if names is not None:
        wanted = list(names)
        known = {m.name for m in models}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise ValueError(f"unknown hub model(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        models = [m for m in models if m.name in wanted]
    hub_cache = Path(out) / "hub"
    hub_cache.mkdir(parents=True, exist_ok=True)
    sentences = fixture_sentences()
    return {model.name: build_model(model, hub_cache, sentences, size) for model in models}
