"""Multi-task inference: a mixed batch on one backbone equals each task's own model."""

from __future__ import annotations

import json

import pytest
import torch

from aotp.inference import MultiTaskModel, TaskPack
from aotp.inference.__main__ import main as cli_main
from aotp.methods import METHODS
from aotp.models import build_backbone
from aotp.models.tiny_tokenizer import build_tiny_tokenizer
from tests.conftest import make_tiny_task_model

TOKENIZER = build_tiny_tokenizer()
# (name, method, head type, labels, options, texts): different lengths, so padding differs per task.
TASKS = [
    ("sent", "aot_fc", "classification", 2, {"rank": 8}, ["good", "a bad film", "the movie was very good"]),
    ("nli", "aot_kron", "classification", 3, {"rank": 4}, ["the man came back home after many years , it was a long story",
                                                           "no", "yes it is"]),
    ("sts", "aot_fc", "regression", 1, {"rank": 8, "table_dtype": "fp16"}, ["bad", "it was not what we would like"]),
]


def model_config(family):
    return {"source": "tiny", "name": f"tiny_{family}", "family": family}


def train_like(family, method_name, head_type, num_labels, options, seed):
    """A single-task AoT model with random (non-zero) AoT weights and its own head."""
    model = make_tiny_task_model(family, head_type=head_type, num_labels=num_labels, seed=seed)
    method = METHODS.get(method_name)(**options)
    method.apply(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.aot.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
        # A fresh head's outputs barely depend on the input (std 0.02 weights); make them sensitive.
        model.head.out_proj.weight.copy_(torch.randn(model.head.out_proj.weight.shape, generator=generator) * 3)
    return model.eval(), method


def single_task_logits(model, texts):
    batch = TOKENIZER(texts, padding=True, return_tensors="pt", return_token_type_ids=model.uses_token_type_ids)
    with torch.no_grad():
        return model(**batch)


def mixed_examples():
    """Examples of all tasks interleaved, each unpadded; predict_logits pads them to the batch maximum."""
    examples = []
    for i in range(3):
        for name, *_, texts in TASKS:
            if i < len(texts):
                encoded = TOKENIZER(texts[i], return_token_type_ids=True)
                examples.append(({"task": name, **encoded}, name, i))
    return examples


def prepared_tasks(family, tmp_path):
    models = {}
    for seed, (name, method_name, head_type, num_labels, options, texts) in enumerate(TASKS, start=1):
        model, method = train_like(family, method_name, head_type, num_labels, options, seed)
        expected = single_task_logits(model, texts)
        method.prepare_for_inference(model, tmp_path / name / "inference")
        torch.testing.assert_close(single_task_logits(model, texts), expected, atol=1e-2 if "table_dtype" in options else 1e-5, rtol=0)
        models[name] = model
    return models


def test_mixed_batch_equals_single_task_predictions(tiny_family, tmp_path):
    models = prepared_tasks(tiny_family, tmp_path)
    backbone = build_backbone(model_config(tiny_family))  # a separately built copy of the same frozen backbone
    multi = MultiTaskModel(backbone, [
        TaskPack(name, models[name].aot.table, models[name].head, head_type=head_type)
        for name, _, head_type, *_ in TASKS
    ])
    examples = mixed_examples()
    got = multi.predict_logits([e for e, _, _ in examples])
    expected = {name: single_task_logits(models[name], texts) for name, *_, texts in TASKS}
    assert len(got) == len(examples) == 8
    for value, (_, name, index) in zip(got, examples):
        torch.testing.assert_close(value, expected[name][index], atol=1e-5, rtol=0)
    # Each example really reads its own task's table: with the tables rotated among the tasks
    # (heads kept), every prediction moves by far more than the tolerance.
    rotated = MultiTaskModel(build_backbone(model_config(tiny_family)), [
        TaskPack(name, models[TASKS[(i + 1) % 3][0]].aot.table, models[name].head, head_type=head_type)
        for i, (name, _, head_type, *_) in enumerate(TASKS)
    ])
    for value, (_, name, index) in zip(rotated.predict_logits([e for e, _, _ in examples]), examples):
        assert (value - expected[name][index]).abs().max() > 1e-3
    with pytest.raises(RuntimeError, match="already carries AoT bias hooks"):
        MultiTaskModel(multi.backbone, [TaskPack("sent", models["sent"].aot.table, models["sent"].head)])


def test_low_level_tuples_on_the_fly_sources_and_multiple_choice(tmp_path):
    family = "bert"
    cls_model, _ = train_like(family, "aot_fc", "classification", 2, {"rank": 8}, seed=1)
    mc_model, mc_method = train_like(family, "aot_kron", "multiple_choice", 1, {"rank": 4, "inference_mode": "on_the_fly"}, seed=2)
    mc_method.prepare_for_inference(mc_model, None)  # on the fly: keeps A, B, W
    cls_method = METHODS.get("aot_fc")(rank=8)
    cls_method.prepare_for_inference(cls_model, None)
    choices = [["the story", "of a man"], ["the story", "no"], ["the story", "yes it was a good film"]]
    mc_batch = TOKENIZER([c[0] for c in choices], [c[1] for c in choices], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected_mc = mc_model(**{k: v.unsqueeze(0) for k, v in mc_batch.items()})[0]
    expected_cls = single_task_logits(cls_model, ["good", "a bad film"])
    backbone = build_backbone(model_config(family))
    multi = MultiTaskModel(backbone, [("cls", cls_model.aot.table, cls_model.head),
                                      TaskPack("mc", mc_model.aot, mc_model.head, head_type="multiple_choice")])
    mc_example = {"task": "mc", **{k: v for k, v in mc_batch.items()}}
    got = multi.predict_logits([{"task": "cls", **TOKENIZER("good")}, mc_example, {"task": "cls", **TOKENIZER("a bad film")}])
    torch.testing.assert_close(got[0], expected_cls[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(got[1], expected_mc, atol=1e-5, rtol=0)
    torch.testing.assert_close(got[2], expected_cls[1], atol=1e-5, rtol=0)
    with pytest.raises(KeyError, match="Unknown task 'mcq'.*Did you mean 'mc'"):
        multi.predict_logits([{**mc_example, "task": "mcq"}])
    with pytest.raises(ValueError, match="share|expected"):
        other = build_backbone({"source": "tiny", "name": "wide", "family": family, "hidden_size": 48, "num_heads": 2})
        MultiTaskModel(other, [("cls", cls_model.aot.table, cls_model.head)])


def write_run(run_dir, family, task_spec, method_cfg, status="success"):
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {"model": model_config(family), "task": task_spec, "method": method_cfg, "seed": 1}
    (run_dir / "result.json").write_text(json.dumps({"status": status, "config": config}))


def task_spec(name, head_type, num_labels):
    labels = [f"label_{i}" for i in range(num_labels)] if head_type == "classification" else None
    return {"name": name, "head": head_type, "num_labels": num_labels, "label_names": labels, "text_fields": ["sentence"]}


def test_from_runs_and_cli(tmp_path, capsys):
    family = "deberta"
    models = prepared_tasks(family, tmp_path)
    for name, method_name, head_type, num_labels, options, _ in TASKS:
        write_run(tmp_path / name, family, task_spec(name, head_type, num_labels), {"name": method_name, "lr": 1e-3, "options": options})
    runs = [tmp_path / name for name, *_ in TASKS]
    multi = MultiTaskModel.from_runs(runs)
    assert multi.task_names == ["sent", "nli", "sts"]
    records = [{"task": name, "sentence": text, "id": f"{name}-{i}"} for name, *_, texts in TASKS for i, text in enumerate(texts)]
    records = records[::2] + records[1::2]  # mix tasks
    predictions = multi.predict(records)
    for record, prediction in zip(records, predictions):
        name, index = record["task"], int(record["id"].split("-")[1])
        texts = next(t for n, *_, t in TASKS if n == name)
        expected = single_task_logits(models[name], texts)[index]
        assert prediction["task"] == name and prediction["id"] == record["id"]
        if name == "sts":
            assert prediction["prediction"] == pytest.approx(float(expected), abs=1e-5)
        else:
            assert prediction["logits"] == pytest.approx(expected.tolist(), abs=1e-5)
            assert prediction["prediction"] == f"label_{int(expected.argmax())}"
    # The runs keep no table: each is materialised at load, in the run's table_dtype unless asked otherwise.
    assert not any((run / "inference" / "aot_table.safetensors").exists() for run in runs)
    assert [source.table.dtype for source in multi.sources] == [torch.float32, torch.float32, torch.float16]
    half = MultiTaskModel.from_runs(runs, table_dtype="bf16")
    assert all(source.table.dtype == torch.bfloat16 for source in half.sources)
    for low, full in zip(half.predict(records), predictions):
        assert low.get("logits", [low["prediction"]]) == pytest.approx(full.get("logits", [full["prediction"]]), abs=0.1)
    # The CLI serves the same predictions from JSON lines, in input order.
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert cli_main([f"run=[{','.join(map(str, runs))}]", f"input={source}", f"output={target}", "batch_size=3"]) == 0
    served = [json.loads(line) for line in target.read_text().splitlines()]
    # the old flags still work (each with a one-line deprecation note)
    assert cli_main(["--runs", *map(str, runs), "--input", str(source), "--output", str(tmp_path / "bf16.jsonl"),
                     "--table-dtype", "bf16"]) == 0
    assert "--runs is deprecated; use run=[" in capsys.readouterr().err
    assert len((tmp_path / "bf16.jsonl").read_text().splitlines()) == len(records)
    assert [s["id"] for s in served] == [r["id"] for r in records]
    for a, b in zip(served, predictions):
        assert a["prediction"] == pytest.approx(b["prediction"], abs=1e-5) if a["task"] == "sts" else a["prediction"] == b["prediction"]
    source.write_text(json.dumps({"task": "qqp", "sentence": "x"}) + "\n")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli_main([*(f"run={r}" for r in runs), f"input={source}", f"output={target}"])
    assert exit_info.value.code == 2  # a refusal: one line on stderr
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and "in.jsonl:1: unknown task 'qqp'" in err and err.count("\n") == 1


def test_from_runs_refuses_other_backbones_methods_and_unfinished_runs(tmp_path):
    models = prepared_tasks("roberta", tmp_path)
    write_run(tmp_path / "sent", "roberta", task_spec("sent", "classification", 2), {"name": "aot_fc", "options": {"rank": 8}})
    # Same family, other backbone (a different tiny model): refused.
    write_run(tmp_path / "nli", "bert", task_spec("nli", "classification", 3), {"name": "aot_kron", "options": {"rank": 4}})
    with pytest.raises(ValueError, match="share one backbone"):
        MultiTaskModel.from_runs([tmp_path / "sent", tmp_path / "nli"])
    lora = tmp_path / "lora"
    write_run(lora, "roberta", task_spec("sent", "classification", 2), {"name": "lora", "options": {}})
    with pytest.raises(ValueError, match="method 'lora'.*AoT"):
        MultiTaskModel.from_runs([tmp_path / "sent", lora])
    unfinished = tmp_path / "unfinished"
    write_run(unfinished, "roberta", task_spec("x", "classification", 2), {"name": "aot_fc", "options": {}})
    with pytest.raises(FileNotFoundError, match="prepare"):
        MultiTaskModel.from_runs([unfinished])
    failed = tmp_path / "failed"
    write_run(failed, "roberta", task_spec("x", "classification", 2), {"name": "aot_fc", "options": {}}, status="failed")
    with pytest.raises(ValueError, match="status 'failed'"):
        MultiTaskModel.from_runs([failed])
    with pytest.raises(ValueError, match="given twice"):
        MultiTaskModel.from_runs([tmp_path / "sent", tmp_path / "sent"])
    assert MultiTaskModel.from_runs([tmp_path / "sent", tmp_path / "sent"], names=["a", "b"]).task_names == ["a", "b"]
    assert models  # the packs above were really written by prepare_for_inference


def test_from_runs_formats_records_with_the_runs_task_specs(tmp_path):
    """Runs written with real task specs (as the runner does): records go through the task's formatter
    and the training tokenisation, and predictions carry the spec's label names."""
    from omegaconf import OmegaConf

    from tests.conftest import REPO_ROOT

    family = "bert"
    specs = {name: OmegaConf.to_container(OmegaConf.load(REPO_ROOT / "configs" / "task" / "glue" / f"{name}.yaml"))
             for name in ("sst2", "rte")}
    sst2, sst2_method = train_like(family, "aot_fc", "classification", 2, {"rank": 8}, seed=1)
    rte, rte_method = train_like(family, "aot_kron", "classification", 2, {"rank": 4}, seed=2)
    for name, model, method, cfg in (("sst2", sst2, sst2_method, {"name": "aot_fc", "options": {"rank": 8}}),
                                     ("rte", rte, rte_method, {"name": "aot_kron", "options": {"rank": 4}})):
        method.prepare_for_inference(model, tmp_path / name / "inference")
        write_run(tmp_path / name, family, specs[name], cfg)
    multi = MultiTaskModel.from_runs([tmp_path / "sst2", tmp_path / "rte"])
    assert multi.task_info["rte"].task_spec is not None and multi.task_info["rte"].max_length == 256
    records = [{"task": "rte", "sentence1": "the man came back home", "sentence2": "he was at home"},
               {"task": "sst2", "sentence": "a bad film"},
               {"task": "rte", "sentence1": "no", "sentence2": "yes it is"}]
    predictions = multi.predict(records)
    expected_sst2 = single_task_logits(sst2, ["a bad film"])[0]
    pairs = TOKENIZER(["the man came back home", "no"], ["he was at home", "yes it is"], padding=True,
                      return_tensors="pt", return_token_type_ids=True)
    with torch.no_grad():
        expected_rte = rte(**pairs)
    for prediction, expected in zip(predictions, (expected_rte[0], expected_sst2, expected_rte[1])):
        assert prediction["logits"] == pytest.approx(expected.tolist(), abs=1e-5)
    assert predictions[1]["prediction"] == specs["sst2"]["label_names"][int(expected_sst2.argmax())]
    with pytest.raises(ValueError, match="sentence2"):
        multi.predict([{"task": "rte", "sentence1": "only one"}])
