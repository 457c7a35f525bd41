"""What differs between the transformers majors of the support matrix, pinned down (README "Support matrix").

The same file runs in today's venv (``make test``: transformers 4.57.x) and in the current-majors venv
(``make test-current``: transformers 5.x), and must pass unchanged in both:

* ``from_pretrained``'s dtype keyword (``dtype`` vs ``torch_dtype``) and the fp32 load of a fp16 checkpoint
  (transformers 5 defaults to ``dtype="auto"``, the checkpoint's own dtype);
* the tokenizers of the stand-in hub's file sets, RoBERTa (BPE + tokenizer.json), DeBERTa v1 (GPT-2 BPE without
  tokenizer.json) and DeBERTa-v3 (``spm.model`` alone, converted by transformers), give the same ids, pieces and
  token types on both majors: exact values, computed once on 4.57 (the DeBERTa v1 pair layout is repaired on 5);
* the attention implementation each family runs, and that the methods' hooks do not depend on it: every method's
  logits are the same under ``sdpa`` and ``eager``.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from packaging.version import Version

from aotp.methods import METHODS
from aotp.models.builders import (attention_implementation, build_backbone, dtype_keyword, pretrained_kwargs,
                                  publisher_pair_layout)
from tests.conftest import make_tiny_task_model, tiny_batch
from tests.helpers import compose

MAJOR = Version(transformers.__version__).major
STANDINS = ["roberta_base", "deberta_xlarge", "deberta_v3_base"]  # one per publisher file set
HUB_IDS = {"roberta_base": "FacebookAI/roberta-base", "deberta_xlarge": "microsoft/deberta-xlarge",
           "deberta_v3_base": "microsoft/deberta-v3-base"}


@pytest.fixture(scope="module")
def standin_hub(tmp_path_factory):
    """Stand-ins of three hub checkpoints (aotp.standin.models), the process's HF cache pointed at them while
    this module runs (as tests/integration/test_standin_hub.py does)."""
    import huggingface_hub.constants
    import transformers.utils.hub

    from aotp.standin.models import build_model_hub

    home = tmp_path_factory.mktemp("support_matrix_hf_home")
    snapshots = build_model_hub(home, names=STANDINS)
    hub = str(home / "hub")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", hub)
        if hasattr(transformers.utils.hub, "TRANSFORMERS_CACHE"):  # transformers 4.x's own copy; 5 reads the hub's
            patch.setattr(transformers.utils.hub, "TRANSFORMERS_CACHE", hub)
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield snapshots


@pytest.fixture(scope="module")
def backbones(standin_hub):
    return {name: build_backbone(compose([f"model={name}"]).model) for name in STANDINS}


# --------------------------------------------------------------------------- from_pretrained's dtype keyword


@pytest.mark.parametrize("release,keyword", [((4, 55, 4), "torch_dtype"), ((4, 56, 0), "dtype"), ((4, 57, 6), "dtype"),
                                             ((5, 0, 0), "dtype"), ((5, 25, 0), "dtype")])
def test_the_dtype_keyword_follows_the_release(release, keyword):
    assert dtype_keyword(release) == keyword


def test_the_installed_transformers_gets_dtype():
    assert Version(transformers.__version__) >= Version("4.57.6")
    assert pretrained_kwargs() == {"dtype": torch.float32}
    assert pretrained_kwargs(torch.bfloat16) == {"dtype": torch.bfloat16}


def test_a_fp16_checkpoint_loads_in_fp32_with_either_keyword_and_by_default_only_on_4x(standin_hub):
    """DeBERTa's published tensors are fp16. Without a dtype, transformers 4.57 loads fp32 and 5 loads the
    checkpoint's fp16 ("auto"), which is why the builders pass one; both keywords still load fp32 on both."""
    from transformers import AutoModel

    weights = standin_hub["deberta_v3_base"] / "pytorch_model.bin"
    assert {t.dtype for t in torch.load(weights, map_location="cpu").values()} == {torch.float16}
    default = AutoModel.from_pretrained(HUB_IDS["deberta_v3_base"], revision="main")
    assert {p.dtype for p in default.parameters()} == {torch.float16 if MAJOR >= 5 else torch.float32}
    for keyword in ("dtype", "torch_dtype"):
        model = AutoModel.from_pretrained(HUB_IDS["deberta_v3_base"], revision="main", **{keyword: torch.float32})
        assert {p.dtype for p in model.parameters()} == {torch.float32}, keyword
        torch.testing.assert_close(model.get_input_embeddings().weight, default.get_input_embeddings().weight.float(),
                                   rtol=0, atol=0)


def test_the_harness_loads_every_stand_in_in_fp32(backbones):
    for name, backbone in backbones.items():
        assert {p.dtype for p in backbone.model.parameters()} == {torch.float32}, name


# --------------------------------------------------------------------------- tokenizers, the same on both majors

FIRST, SECOND = "The movie's ending surprised everyone.", "Nobody expected it!"
# (ids, token types) of the pair (FIRST, SECOND): computed with transformers 4.57.6 / tokenizers 0.22.2
GOLDEN = {
    "roberta_base": ([0, 270, 536, 89, 667, 515, 224, 683, 296, 998, 83, 85, 281, 269, 585, 454, 17, 2, 2, 864, 403,
                      878, 664, 326, 4, 2], [0] * 26),
    "deberta_xlarge": ([1, 270, 536, 89, 667, 515, 224, 683, 296, 998, 83, 85, 281, 269, 585, 454, 17, 2, 864, 403,
                        878, 664, 326, 4, 2], [0] * 18 + [1] * 7),
    "deberta_v3_base": ([1, 10, 722, 999, 34, 45, 12, 11, 139, 20, 37, 969, 14, 133, 367, 6, 2, 302, 155, 20, 25, 405,
                         14, 38, 3, 2], [0] * 17 + [1] * 9),
}
V3_PIECES = ["[CLS]", "\u2581The", "\u2581mov", "i", "e", "'", "s", "\u2581", "en", "d", "ing", "\u2581surpris", "ed",
             "\u2581every", "one", ".", "[SEP]", "\u2581No", "bo", "d", "y", "\u2581expect", "ed", "\u2581it", "[UNK]",
             "[SEP]"]


@pytest.mark.parametrize("name", STANDINS)
def test_each_file_set_tokenizes_a_pair_as_on_4_57(name, backbones):
    tokenizer = backbones[name].tokenizer
    encoded = tokenizer(FIRST, SECOND, return_token_type_ids=True)
    assert (encoded["input_ids"], encoded["token_type_ids"]) == GOLDEN[name]
    assert tokenizer.backend_tokenizer is not None  # a fast (Rust) tokenizer on both majors


def test_deberta_v3s_spm_model_alone_converts_to_the_same_fast_tokenizer(standin_hub, backbones):
    snapshot = standin_hub["deberta_v3_base"]
    assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "pytorch_model.bin", "spm.model",
                                                          "tokenizer_config.json"]
    tokenizer = backbones["deberta_v3_base"].tokenizer
    assert tokenizer.convert_ids_to_tokens(GOLDEN["deberta_v3_base"][0]) == V3_PIECES
    assert (tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.unk_token_id) == (0, 1, 2, 3)
    assert tokenizer.mask_token_id == len(tokenizer) - 1 == 1000
    assert tokenizer.decode(tokenizer(FIRST)["input_ids"], skip_special_tokens=True) == FIRST


def test_deberta_v1_pairs_get_the_publishers_layout_on_both_majors(standin_hub):
    """transformers 5's DebertaTokenizer builds ``[CLS] A [SEP] [SEP] B [SEP]`` (types all 0); the builder puts
    back ``[CLS] A [SEP] B [SEP]`` (types 0, then 1), which is what 4.57 loads. Truncation keeps to max_length."""
    from transformers import AutoTokenizer

    from aotp.tasks.data import tokenize

    loaded = AutoTokenizer.from_pretrained(HUB_IDS["deberta_xlarge"], revision="main")
    assert publisher_pair_layout(loaded, "deberta") == (MAJOR >= 5)  # changed only where the layout differed
    assert publisher_pair_layout(loaded, "deberta") is False  # and only once
    encoded = loaded(FIRST, SECOND, return_token_type_ids=True)
    assert (encoded["input_ids"], encoded["token_type_ids"]) == GOLDEN["deberta_xlarge"]
    assert loaded(FIRST)["input_ids"] == [1, *GOLDEN["deberta_xlarge"][0][1:17], 2]
    ids = tokenize([{"text": (" ".join([FIRST] * 30), SECOND), "label": 0}], loaded, 64, False)[0]["input_ids"]
    assert len(ids) == 64 and ids[0] == 1 and ids.count(2) == 2 and ids[-1] == 2
    roberta = AutoTokenizer.from_pretrained(HUB_IDS["roberta_base"], revision="main")
    assert publisher_pair_layout(roberta, "roberta") is False  # other families are left alone


# what each release's loaded tokenizer gets wrong, applied to a correct one: the repair must undo it on every major
BROKEN_LAYOUTS = {
    # transformers 5's DebertaTokenizer (v1)
    "deberta_xlarge": ("deberta", "[CLS]:0 $A:0 [SEP]:0", "[CLS]:0 $A:0 [SEP]:0 [SEP]:0 $B:0 [SEP]:0"),
    # transformers 5.0's conversion of DeBERTa-v2/v3's spm.model: no special token at all
    "deberta_v3_base": ("deberta_v2", "$A:0", "$A:0 $B:1"),
}


@pytest.mark.parametrize("name", sorted(BROKEN_LAYOUTS))
def test_the_pair_layout_repair_restores_the_publishers_ids(name, standin_hub):
    from tokenizers import processors
    from transformers import AutoTokenizer

    family, single, pair = BROKEN_LAYOUTS[name]
    tokenizer = AutoTokenizer.from_pretrained(HUB_IDS[name], revision="main")
    specials = [(token, tokenizer.convert_tokens_to_ids(token)) for token in ("[CLS]", "[SEP]")]
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(single=single, pair=pair,
                                                                               special_tokens=specials)
    assert tokenizer(FIRST, SECOND)["input_ids"] != GOLDEN[name][0]
    assert publisher_pair_layout(tokenizer, family) is True
    encoded = tokenizer(FIRST, SECOND, return_token_type_ids=True)
    assert (encoded["input_ids"], encoded["token_type_ids"]) == GOLDEN[name]
    assert publisher_pair_layout(tokenizer, family) is False


# --------------------------------------------------------------------------- attention implementation and hooks

DEFAULT_ATTENTION = {"bert": "sdpa", "roberta": "sdpa", "deberta": "eager", "deberta_v2": "eager"}


def test_each_family_runs_the_same_attention_implementation_on_both_majors(backbones, tiny_family):
    tiny = build_backbone({"source": "tiny", "name": f"tiny_{tiny_family}", "family": tiny_family})
    assert attention_implementation(tiny.model) == DEFAULT_ATTENTION[tiny_family]
    for backbone in backbones.values():
        assert attention_implementation(backbone.model) == DEFAULT_ATTENTION[backbone.family], backbone.name


@pytest.mark.parametrize("method_name", METHODS.names())
@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_every_methods_hooks_give_the_same_logits_under_sdpa_and_eager(method_name, family):
    """AoT's per-layer biases, LoRA's module swap, the adapters' and prefixes' seams: none may depend on which
    attention path the major picks for BERT/RoBERTa (sdpa by default, eager the other). The two models have the
    same weights (same seeds); transformers 4.57 fixes the path when the model is built."""
    batch, logits = None, {}
    for implementation in ("sdpa", "eager"):
        torch.manual_seed(0)
        model = make_tiny_task_model(family, "classification", num_labels=3, attn_implementation=implementation)
        assert attention_implementation(model.backbone) == implementation
        METHODS.get(method_name)().apply(model)
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():  # move the method's parameters off their (often output-neutral) initialisation
            for name, parameter in model.named_parameters():
                if parameter.requires_grad and not name.startswith("head."):
                    parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))
        batch = batch or tiny_batch(model, ["the movie was good and long", "a bad film", "no"])
        model.eval()
        with torch.no_grad():
            logits[implementation] = model(**batch)
    torch.testing.assert_close(logits["sdpa"], logits["eager"], rtol=0, atol=1e-5)
    assert logits["sdpa"].std() > 0


# --------------------------------------------------------------------------- datasets: the hub datasets offline

HUB_SIDE = r"""
import json, sys
import datasets
from aotp.tasks.formatting import FORMATTERS
from aotp.tasks.loading import load_raw_records
from aotp.tasks.spec import load_spec
out = {"datasets": datasets.__version__}
for task in sys.argv[1:]:
    spec = load_spec(task)
    records = load_raw_records(spec, "validation", None)
    out[task] = [[list(e["text"]) if e.get("text") else None, e.get("choices"), e["label"]]
                 for e in FORMATTERS.get(spec.formatter).format(spec, records, True)]
json.dump(out, sys.stdout)
"""


def test_the_dataset_stand_in_cli_serves_glue_and_superglue_to_the_unchanged_hub_call(tmp_path):
    """``python -m aotp.standin datasets`` writes nyu-mll/glue and aps/super_glue (Parquet snapshot + prepared
    cache); a fresh offline interpreter then reads RTE and COPA through ``load_dataset(path, name, revision=...)``
    with the installed datasets (3.x to 5.x) and gets the examples of the local files."""
    import json
    import os
    import subprocess
    import sys
    from importlib import metadata

    from aotp.tasks.formatting import FORMATTERS
    from aotp.tasks.loading import load_raw_records
    from aotp.tasks.spec import load_spec
    from tests.helpers import FIXTURE_DATA, REPO_ROOT, run_cli

    home = tmp_path / "hf_home"
    built = run_cli(["datasets", f"output={home}", f"data.root=[{FIXTURE_DATA}]", "max_rows=5"], module="aotp.standin")
    assert built.returncode == 0, built.stderr[-2000:]
    assert "nyu-mll/glue/rte[validation]: 5 rows" in built.stdout and "aps/super_glue/copa[validation]" in built.stdout
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for key in ("HF_DATASETS_CACHE", "HF_HUB_CACHE"):
        env.pop(key, None)
    tasks = ["glue/rte", "superglue/copa"]
    process = subprocess.run([sys.executable, "-c", HUB_SIDE, *tasks], cwd=REPO_ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    hub = json.loads(process.stdout)
    assert hub["datasets"] == metadata.version("datasets")
    for task in tasks:
        spec = load_spec(task)
        local = FORMATTERS.get(spec.formatter).format(spec, load_raw_records(spec, "validation", FIXTURE_DATA), True)[:5]
        expected = [[list(e["text"]) if e.get("text") else None, e.get("choices"), e["label"]] for e in local]
        assert hub[task] == json.loads(json.dumps(expected)), task


def test_the_deberta_v1_autocast_repair_still_finds_its_modules_and_is_needed():
    """Both majors' DeBERTa v1 attention adds fp32 ``q_bias``/``v_bias`` and masks with the query's dtype minimum
    (aotp.models.mixed_precision): the repair's hooks are on every layer, and a bf16 autocast forward runs."""
    from aotp.models.mixed_precision import make_autocast_safe

    model = make_tiny_task_model("deberta", "classification", num_labels=2)
    assert make_autocast_safe(model.backbone) == model.backbone.config.num_hidden_layers == 2
    batch = tiny_batch(model, ["the movie was good and long", "no"])  # padded: the mask fill is exercised
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(**batch)
    assert torch.isfinite(logits).all()
    bare = build_backbone({"source": "tiny", "name": "tiny_deberta", "family": "deberta"}).model
    for module in bare.modules():  # the same forward without the hooks fails on both majors
        module._forward_pre_hooks.clear()
        module._forward_hooks.clear()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(RuntimeError, match="overflow"):
        bare(**{k: v for k, v in batch.items() if k != "token_type_ids"})


# --------------------------------------------------------------------------- the same weights train the same way

GOLDEN_TRAINED = {  # transformers 4.57.6, torch 2.13.0: logits (4 sentences x 2 labels) after 3 AdamW steps
    "adapter_houlsby": [-0.066933, 0.128625, -0.067403, 0.128594, -0.067176, 0.128776, -0.067411, 0.128472],
    "adapter_pfeiffer": [-0.055523, 0.141458, -0.056005, 0.141415, -0.055794, 0.141604, -0.056088, 0.141384],
    "aot_fc": [-0.066105, 0.130803, -0.066597, 0.130769, -0.06639, 0.130945, -0.066588, 0.130654],
    "aot_kron": [-0.084291, 0.132594, -0.084661, 0.132426, -0.084494, 0.132704, -0.084638, 0.132285],
    "bitfit": [-0.063113, 0.131119, -0.063605, 0.131085, -0.063383, 0.131269, -0.063609, 0.130979],
    "full_ft": [-0.161496, 0.019711, -0.151084, 0.017178, -0.162125, 0.0198, -0.148492, 0.016608],
    "lora": [-0.050851, 0.143101, -0.050783, 0.140927, -0.051101, 0.14422, -0.050785, 0.140502],
    "ptuning_v2": [-0.053192, 0.137301, -0.053347, 0.137282, -0.053213, 0.137304, -0.053415, 0.137327],
}


def canonical_weights(model, seed: int = 0) -> None:
    """Backbone weights drawn by name, not by the library's construction order: transformers 5 builds a tiny
    RoBERTa's embeddings in another order than 4.57 (4.57 also constructs ``position_embeddings`` twice), so the
    same seed gives other random weights there; BERT's and both DeBERTas' draws are equal on both majors."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in sorted(model.backbone.named_parameters()):
            if name.endswith("LayerNorm.weight"):
                parameter.fill_(1.0)
            elif name.endswith("bias"):
                parameter.zero_()
            else:
                parameter.copy_(0.02 * torch.randn(parameter.shape, generator=generator))


@pytest.mark.parametrize("method_name", sorted(GOLDEN_TRAINED))
def test_the_same_weights_train_to_the_same_logits_on_both_majors(method_name):
    """A tiny RoBERTa with by-name weights, each method applied (its own init from the seeded global
    generator), 3 AdamW steps without dropout: the logits equal those transformers 4.57 gave (1e-5)."""
    model = make_tiny_task_model("roberta", "classification", num_labels=2)
    canonical_weights(model)
    torch.manual_seed(0)
    METHODS.get(method_name)().apply(model)
    batch = tiny_batch(model, ["the movie was good and long", "a bad film", "what a great story, we like it", "no"])
    labels = torch.tensor([1, 0, 1, 0])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    model.eval()  # no dropout: the three steps are deterministic
    for _ in range(3):
        optimizer.zero_grad()
        model.loss(model(**batch), labels).backward()
        optimizer.step()
    with torch.no_grad():
        logits = model(**batch).flatten()
    torch.testing.assert_close(logits, torch.tensor(GOLDEN_TRAINED[method_name]), rtol=0, atol=1e-5)
