"""The six hub checkpoints, as their publishers ship them, through the harness's own hub path.

A session fixture builds the stand-in hub (:mod:`aotp.standin.models`) once and points the Hugging Face
cache at it; ``model=<hub model>`` then loads through ``build_hub``'s unchanged
``from_pretrained(hub_id, revision="main")`` with ``HF_HUB_OFFLINE=1``. Checked here:

* each snapshot holds its publisher's file set, ``config.json`` keeps the real values of the model
  config's ``architecture:`` entry (only the sizes are small), the cache layout resolves ``refs/main``;
* every hub model x every method trains RTE for 3 steps into a success record whose inference form
  leaves the dev logits unchanged; a single-sentence task (SST-2) and COPA (multiple choice) train,
  evaluate and predict for every model, the methods rotating so each occurs;
* the tokenisation conventions: RoBERTa pairs ``<s> A </s></s> B </s>`` without token type ids,
  DeBERTa-v3 / v2 ``[CLS] A [SEP] B [SEP]`` in SentencePiece pieces, DeBERTa v1 the same in GPT-2
  pieces; a long MultiRC input truncates to 512 tokens and runs, RoBERTa's 514 positions hold exactly
  512 tokens (513 overflow them);
* the unchanged CLI with ``HF_HOME=<stand-in>`` in a subprocess.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from aotp.methods import METHODS
from aotp.standin.models import PUBLISHERS, SMALL, STATES_HEAD_SIZE, hub_models
from tests.helpers import FIXTURE_DATA, REPO_ROOT, compose, run_cli

HUB_MODELS = [m.name for m in hub_models()]
METHOD_NAMES = METHODS.names()
FILE_SETS = {
    "roberta": {"config.json", "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "model.safetensors"},
    "deberta": {"config.json", "vocab.json", "merges.txt", "tokenizer_config.json", "pytorch_model.bin"},
    "deberta_v2": {"config.json", "spm.model", "tokenizer_config.json", "pytorch_model.bin"},
}


@pytest.fixture(scope="session")
def standin_build(tmp_path_factory):
    """The stand-in hub, built once per session: {"home": HF_HOME, "snapshots": name -> snapshot}."""
    from aotp.standin.models import build_model_hub

    home = tmp_path_factory.mktemp("standin_hf_home")
    return {"home": home, "snapshots": build_model_hub(home)}


@pytest.fixture(scope="module")
def standin_hub(standin_build):
    """The cache of this process points at the stand-in hub while this module's tests run, and only then
    (other tests expect hub models not to load offline). The libraries read HF_HOME when they are
    imported, so the resolved cache path is patched instead."""
    import huggingface_hub.constants
    import transformers.utils.hub

    hub = str(standin_build["home"] / "hub")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", hub)
        if hasattr(transformers.utils.hub, "TRANSFORMERS_CACHE"):  # transformers 4.x's own copy; 5 reads the hub's
            patch.setattr(transformers.utils.hub, "TRANSFORMERS_CACHE", hub)
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield standin_build


@pytest.fixture(scope="module")
def backbones(standin_hub):
    """name -> Backbone, loaded once through build_hub (the harness's hub path)."""
    from aotp.models import build_backbone

    return {name: build_backbone(compose([f"model={name}"]).model) for name in HUB_MODELS}


def model_config(name: str) -> dict:
    return yaml.safe_load((REPO_ROOT / "configs" / "model" / f"{name}.yaml").read_text())


def test_every_hub_model_config_has_a_stand_in():
    configs = sorted(p.stem for p in (REPO_ROOT / "configs" / "model").glob("*.yaml")
                     if yaml.safe_load(p.read_text()).get("source") == "hub")
    assert HUB_MODELS == configs == ["deberta_v2_xlarge", "deberta_v3_base", "deberta_v3_large", "deberta_xlarge",
                                     "roberta_base", "roberta_large"]


@pytest.mark.parametrize("name", HUB_MODELS)
def test_snapshot_is_the_publishers_file_set_in_the_cache_layout(name, standin_hub):
    entry = model_config(name)
    family = entry["architecture"]["family"]
    repo = standin_hub["home"] / "hub" / ("models--" + entry["hub_id"].replace("/", "--"))
    snapshot = standin_hub["snapshots"][name]
    assert (repo / "refs" / "main").read_text() == snapshot.name and len(snapshot.name) == 40
    assert {p.name for p in snapshot.iterdir()} == FILE_SETS[family]
    assert all(p.is_symlink() and p.resolve().parent == repo / "blobs" for p in snapshot.iterdir())
    config = json.loads((snapshot / "config.json").read_text())
    real = {k: v for k, v in entry["architecture"].items()
            if k not in ("family", *SMALL, "num_hidden_layers", "pos_att_type")}
    assert {k: config.get(k, 0 if k == "pad_token_id" else None) for k in real} == real
    assert config["model_type"] == PUBLISHERS[family].model_type
    if "pos_att_type" in entry["architecture"]:  # the publisher's spelling: one "|"-joined string
        assert config["pos_att_type"] == "|".join(entry["architecture"]["pos_att_type"])
    assert config["hidden_size"] == SMALL["hidden_size"] and config["num_hidden_layers"] in (2, 3)
    if entry["hub_id"] in STATES_HEAD_SIZE:
        assert config["attention_head_size"] * config["num_attention_heads"] == config["hidden_size"]


@pytest.mark.parametrize("name", HUB_MODELS)
def test_build_hub_loads_the_stand_in_with_the_real_shapes_and_special_ids(name, backbones):
    from transformers import PreTrainedTokenizerFast

    backbone, architecture = backbones[name], model_config(name)["architecture"]
    config = backbone.model.config
    assert backbone.family == architecture["family"]
    assert config.vocab_size == architecture["vocab_size"] == backbone.model.get_input_embeddings().num_embeddings
    assert config.max_position_embeddings == architecture["max_position_embeddings"]
    # DeBERTa's published tensors are fp16; the harness trains the loaded model in fp32.
    assert all(p.dtype == torch.float32 for p in backbone.model.parameters())
    assert isinstance(backbone.tokenizer, PreTrainedTokenizerFast) and not backbone.uses_token_type_ids
    tokenizer = backbone.tokenizer
    if backbone.family == "roberta":
        assert (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2, 3)
        assert tokenizer.model_max_length == 512 == config.max_position_embeddings - 2
    else:
        assert (tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.unk_token_id) == (0, 1, 2, 3)
        assert config.pad_token_id == 0 and config.relative_attention and not config.position_biased_input
    assert tokenizer.mask_token_id == len(tokenizer) - 1 < config.vocab_size


# --------------------------------------------------------------------------- tokenisation conventions


def pair_tokens(backbone, first: str, second: str) -> tuple[list[str], dict]:
    from aotp.tasks.data import tokenize

    feature = tokenize([{"text": (first, second), "label": 0}], backbone.tokenizer, 256,
                       backbone.uses_token_type_ids)[0]
    return backbone.tokenizer.convert_ids_to_tokens(feature["input_ids"]), feature


def single_tokens(backbone, text: str) -> list[str]:
    return backbone.tokenizer.tokenize(text)


@pytest.mark.parametrize("name", ["roberta_base", "roberta_large"])
def test_roberta_pairs_are_s_a_double_separator_b_without_token_types(name, backbones):
    backbone = backbones[name]
    tokens, feature = pair_tokens(backbone, "The cat sat.", "A dog ran.")
    first, second = single_tokens(backbone, "The cat sat."), single_tokens(backbone, "A dog ran.")
    assert tokens == ["<s>", *first, "</s>", "</s>", *second, "</s>"]
    assert feature["token_type_ids"] is None
    assert first[1].startswith("Ġ")  # byte-level BPE marks a preceding space with Ġ


@pytest.mark.parametrize("name", ["deberta_v3_base", "deberta_v3_large", "deberta_v2_xlarge", "deberta_xlarge"])
def test_deberta_pairs_are_cls_a_sep_b_sep(name, backbones):
    backbone = backbones[name]
    tokens, feature = pair_tokens(backbone, "The cat sat.", "A dog ran.")
    first, second = single_tokens(backbone, "The cat sat."), single_tokens(backbone, "A dog ran.")
    assert tokens == ["[CLS]", *first, "[SEP]", *second, "[SEP]"]
    assert feature["token_type_ids"] is None
    if backbone.family == "deberta_v2":  # SentencePiece: word starts carry ▁
        assert first[0].startswith("\u2581") and second[0].startswith("\u2581")
    else:  # DeBERTa v1: GPT-2 byte-level BPE
        assert first[1].startswith("Ġ")


def long_multirc_example() -> dict:
    """A fixture MultiRC question whose passage is repeated far past 512 tokens."""
    from aotp.tasks.formatting import FORMATTERS
    from aotp.tasks.loading import load_raw_records
    from aotp.tasks.spec import load_spec

    spec = load_spec("superglue/multirc")
    example = FORMATTERS.get(spec.formatter).format(spec, load_raw_records(spec, "validation", FIXTURE_DATA), True)[0]
    passage, rest = example["text"][0], example["text"][1]
    return {**example, "text": (" ".join([passage] * 40), rest)}


@pytest.mark.parametrize("name", HUB_MODELS)
def test_a_long_input_truncates_to_512_tokens_and_runs(name, backbones):
    from aotp.tasks.data import tokenize

    backbone = backbones[name]
    example = long_multirc_example()
    ids = tokenize([example], backbone.tokenizer, 512, backbone.uses_token_type_ids)[0]["input_ids"]
    assert len(ids) == 512 and ids[-1] == backbone.tokenizer.sep_token_id
    # Only the passage was cut: the question and answer survive whole after the first separator.
    tail = backbone.tokenizer(example["text"][1], add_special_tokens=False)["input_ids"]
    assert ids[-1 - len(tail):-1] == tail
    with torch.no_grad():
        hidden = backbone.model(input_ids=torch.tensor([ids])).last_hidden_state
    assert hidden.shape == (1, 512, SMALL["hidden_size"]) and torch.isfinite(hidden).all()


@pytest.mark.parametrize("name", ["roberta_base", "roberta_large"])
def test_roberta_positions_hold_512_tokens_and_not_513(name, backbones):
    """514 position rows, offset by padding_idx + 1 = 2: 512 tokens is RoBERTa's real limit."""
    model = backbones[name].model
    with torch.no_grad():
        model(input_ids=torch.full((1, 512), 5))
        # transformers 4.57's embedding lookup raises IndexError, 5's position-id gather RuntimeError
        with pytest.raises((IndexError, RuntimeError), match="out of (range|bounds)"):
            model(input_ids=torch.full((1, 513), 5))


# --------------------------------------------------------------------------- training runs on the stand-ins


def run(standin_hub, tmp_path_factory, model: str, method: str, task: str, steps: int = 3) -> dict:
    """One run as ``python -m aotp.run`` makes it. A recipe that warm-starts from another task's run
    (LoRA on RoBERTa: RTE from MNLI, ``method.init_from=task:glue/mnli``) gets that run trained first."""
    from aotp.run import execute

    base = tmp_path_factory.getbasetemp() / "standin_runs"
    overrides = [f"model={model}", f"method={method}", f"trainer.max_steps={steps}",
                 f"data.root={FIXTURE_DATA}", f"paths.results={base / 'runs'}", f"paths.cache={base / 'cache'}",
                 "trainer.progress=false", "logger=jsonl", "trainer.eval_batch_size=16",
                 f"trainer.eval_every={steps}"]  # one evaluation (and checkpoint), at the end
    cfg = compose([*overrides, f"task={task}"])
    source = cfg.method.get("init_from")
    if source:
        assert source.startswith("task:"), source
        execute(compose([*overrides, f"task={source.removeprefix('task:')}"]), [*overrides])
    record = execute(cfg, [*overrides, f"task={task}"])
    if source:
        assert record["init_from"]["task"] == source.removeprefix("task:")
    return record


def assert_trained(record: dict, model: str, method: str, steps: int = 3) -> None:
    assert record["status"] == "success" and (record["model"], record["method"]) == (model, method)
    assert record["selection"]["steps_done"] == steps
    assert record["inference"]["max_abs_logit_diff"] <= record["inference"]["tolerance"]
    assert record["params"]["trainable"] == record["params"]["expected_trainable"]
    # the stand-in backbone, not a tiny one: its embedding matrix has the publisher's row count
    vocab = model_config(model)["architecture"]["vocab_size"]
    assert record["params"]["total"] > vocab * SMALL["hidden_size"]


@pytest.mark.parametrize("method", METHOD_NAMES)
@pytest.mark.parametrize("model", HUB_MODELS)
def test_every_method_trains_rte_on_every_hub_model(model, method, standin_hub, tmp_path_factory):
    record = run(standin_hub, tmp_path_factory, model, method, "glue/rte")
    assert_trained(record, model, method)


# Every model with both tasks; the methods rotate so that each of them meets each family.
ROTATION = [(model, task, METHOD_NAMES[(2 * i + j) % len(METHOD_NAMES)])
            for i, model in enumerate(HUB_MODELS) for j, task in enumerate(["glue/sst2", "superglue/copa"])]


def test_the_rotation_covers_every_method():
    assert {method for _, _, method in ROTATION} == set(METHOD_NAMES)


@pytest.mark.parametrize("model,task,method", ROTATION)
def test_single_sentence_and_copa_train_evaluate_and_predict(model, task, method, standin_hub, tmp_path_factory,
                                                             tmp_path):
    from aotp.evaluate import evaluate_run, load_run
    from aotp.predict import predict_run

    record = run(standin_hub, tmp_path_factory, model, method, task)
    assert_trained(record, model, method)
    loaded = load_run(record["run_dir"], device="cpu")
    summary = evaluate_run(record["run_dir"], output=tmp_path, loaded=loaded)
    expected = {k: v for k, v in record["metrics"].items() if k != "best_step"}
    assert summary["metrics"] == pytest.approx(expected, abs=1e-6)
    written = predict_run(record["run_dir"], output=tmp_path, loaded=loaded)
    assert written and all(entry["rows"] > 0 for entry in written.values())


def test_the_unchanged_cli_runs_on_the_stand_in_hub_from_hf_home(standin_hub, tmp_path):
    result = run_cli(["model=roberta_large", "method=aot_kron", "task=glue/rte", "trainer.max_steps=3",
                      f"data.root={FIXTURE_DATA}", f"paths.results={tmp_path / 'runs'}",
                      f"paths.cache={tmp_path / 'cache'}", "trainer.progress=false"],
                     env_overrides={"HF_HOME": str(standin_hub["home"]), "HF_HUB_CACHE": None,
                                    "TRANSFORMERS_CACHE": None})
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(next((tmp_path / "runs").glob("*/result.json")).read_text())
    assert record["status"] == "success" and record["model"] == "roberta_large"
    assert record["config"]["model"]["hub_id"] == "FacebookAI/roberta-large"


def test_the_builder_cli_is_deterministic_and_names_bad_models(standin_hub, tmp_path, capsys):
    from aotp.standin.__main__ import main

    assert main(["models", f"output={tmp_path}", "only=[roberta_base]"]) == 0
    repo = "models--FacebookAI--roberta-base"
    assert (tmp_path / "hub" / repo / "refs" / "main").read_text() == standin_hub["snapshots"]["roberta_base"].name
    assert "HF_HOME=" in capsys.readouterr().out
    assert main(["models", "--out", str(tmp_path), "--only", "roberta_huge"]) == 2  # the old flags still work
    assert "unknown hub model(s) roberta_huge; valid: deberta_v2_xlarge" in capsys.readouterr().err



def test_the_install_declares_what_the_spm_only_checkpoints_need(backbones):
    """DeBERTa-v2/v3 ship spm.model alone; transformers converts it with sentencepiece + protobuf, so the
    one-resolve install must bring both (without them AutoTokenizer fails on every DeBERTa-v2/v3 run)."""
    import re
    import sys
    import tomllib

    assert "sentencepiece" in sys.modules  # loading the DeBERTa-v3 stand-in above needed it
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {"sentencepiece", "protobuf"} <= {re.split(r"[<>=~!;\[ ]", d)[0].lower() for d in dependencies}
