"""Every task YAML is a complete, valid spec; diagnostics cannot be trained; names resolve with hints."""

from __future__ import annotations

import pytest

from aotp.registry import UnknownChoiceError
from aotp.run import ConfigError, validate
from aotp.tasks.spec import TASK_CONFIG_DIR, TaskSpec, load_spec, task_names
from tests.helpers import compose

GLUE = ["ax", "cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "wnli"]
SUPERGLUE = ["axb", "axg", "boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc"]
ALL_TASKS = [f"glue/{t}" for t in GLUE] + [f"superglue/{t}" for t in SUPERGLUE]
DIAGNOSTICS = {"glue/ax": ["glue/mnli"], "superglue/axb": ["superglue/rte", "glue/rte"],
               "superglue/axg": ["superglue/rte", "glue/rte"]}
# The leaderboard file names (GLUE: <TASK>.tsv, SuperGLUE: <Task>.jsonl), per test split
SUBMISSION_FILES = {
    "glue/cola": {"test": "CoLA.tsv"}, "glue/sst2": {"test": "SST-2.tsv"}, "glue/mrpc": {"test": "MRPC.tsv"},
    "glue/qqp": {"test": "QQP.tsv"}, "glue/stsb": {"test": "STS-B.tsv"},
    "glue/mnli": {"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"}, "glue/qnli": {"test": "QNLI.tsv"},
    "glue/rte": {"test": "RTE.tsv"}, "glue/wnli": {"test": "WNLI.tsv"}, "glue/ax": {"test": "AX.tsv"},
    "superglue/boolq": {"test": "BoolQ.jsonl"}, "superglue/cb": {"test": "CB.jsonl"},
    "superglue/copa": {"test": "COPA.jsonl"}, "superglue/multirc": {"test": "MultiRC.jsonl"},
    "superglue/record": {"test": "ReCoRD.jsonl"}, "superglue/rte": {"test": "RTE.jsonl"},
    "superglue/wic": {"test": "WiC.jsonl"}, "superglue/wsc": {"test": "WSC.jsonl"},
    "superglue/axb": {"test": "AX-b.jsonl"}, "superglue/axg": {"test": "AX-g.jsonl"},
}
# GLUE leaderboard label format: names for MNLI/RTE/QNLI/AX, 0/1 for CoLA/SST-2/MRPC/QQP/WNLI, floats for STS-B
GLUE_LABELS = {"glue/mnli": "names", "glue/rte": "names", "glue/qnli": "names", "glue/ax": "names",
               "glue/cola": "ids", "glue/sst2": "ids", "glue/mrpc": "ids", "glue/qqp": "ids", "glue/wnli": "ids",
               "glue/stsb": "float"}
MAIN_METRICS = {  # leaderboard convention (mean of the listed ones)
    "glue/cola": ["mcc"], "glue/sst2": ["accuracy"], "glue/mrpc": ["f1", "accuracy"], "glue/qqp": ["f1", "accuracy"],
    "glue/stsb": ["pearson", "spearman"], "glue/mnli": ["validation_matched/accuracy"], "glue/qnli": ["accuracy"],
    "glue/rte": ["accuracy"], "glue/wnli": ["accuracy"], "glue/ax": ["mcc"], "superglue/boolq": ["accuracy"],
    "superglue/cb": ["macro_f1", "accuracy"], "superglue/copa": ["accuracy"],
    "superglue/multirc": ["multirc_f1a", "multirc_em"], "superglue/record": ["record_f1", "record_em"],
    "superglue/rte": ["accuracy"], "superglue/wic": ["accuracy"], "superglue/wsc": ["accuracy"],
    "superglue/axb": ["mcc"], "superglue/axg": ["gender_parity", "accuracy"],
}


def test_all_twenty_tasks_have_a_spec():
    assert task_names() == sorted(ALL_TASKS)


@pytest.mark.parametrize("task", ALL_TASKS)
def test_spec_is_complete(task):
    path = TASK_CONFIG_DIR / f"{task}.yaml"
    first_line = path.read_text().splitlines()[0]
    module = "aotp.evaluate" if task in DIAGNOSTICS else "aotp.run"
    assert first_line.startswith(f"# python -m {module} ") and f"task={task}" in first_line
    spec = load_spec(task)
    assert spec.full_name == task and spec.version >= 1 and spec.description
    assert spec.main_metric == MAIN_METRICS[task]
    assert spec.hub["path"] == ("nyu-mll/glue" if task.startswith("glue/") else "aps/super_glue")
    assert spec.hub["revision"] == "main" and spec.hub["name"]
    assert spec.local is not None and set(spec.all_splits) <= set(spec.local.files)
    assert spec.submission["files"] == SUBMISSION_FILES[task]
    assert spec.submission["format"] == ("glue_tsv" if task.startswith("glue/") else "superglue_jsonl")
    if task in GLUE_LABELS:
        assert spec.submission["labels"] == GLUE_LABELS[task]
    if spec.head == "classification":
        assert spec.num_labels == len(spec.label_names) >= 2
    assert (spec.train_split is None) == (task in DIAGNOSTICS)
    if task in DIAGNOSTICS:
        assert spec.diagnostic["scored_with"] == DIAGNOSTICS[task]


def test_heads_and_label_spaces_follow_the_hub_class_labels():
    assert load_spec("glue/stsb").head == "regression" and load_spec("glue/stsb").num_labels == 1
    assert load_spec("superglue/copa").head == "multiple_choice"
    assert load_spec("glue/mnli").label_names == ["entailment", "neutral", "contradiction"]
    assert load_spec("glue/wnli").label_names == ["not_entailment", "entailment"]
    assert load_spec("superglue/cb").label_names == ["entailment", "contradiction", "neutral"]
    assert load_spec("superglue/boolq").label_names == ["false", "true"]
    assert load_spec("glue/mnli").eval_splits == ["validation_matched", "validation_mismatched"]
    assert load_spec("glue/ax").label_names == load_spec("glue/mnli").label_names


@pytest.mark.parametrize("diagnostic", sorted(DIAGNOSTICS))
def test_training_a_diagnostic_is_refused_with_the_evaluate_command(diagnostic):
    with pytest.raises(ConfigError) as error:
        validate(compose(["model=tiny_bert", f"task={diagnostic}"]))
    message = str(error.value)
    assert "diagnostic set without a train split" in message
    assert f"python -m aotp.evaluate run=<run dir> task={diagnostic}" in message
    assert DIAGNOSTICS[diagnostic][0] in message


def test_unknown_task_name_suggests_the_closest():
    with pytest.raises(UnknownChoiceError) as error:
        load_spec("glue/mrcp")
    assert "Did you mean 'glue/mrpc'" in str(error.value) and "superglue/wsc" in str(error.value)


def _spec(**overrides) -> TaskSpec:
    base = dict(name="t", benchmark="glue", version=1, head="classification", label_names=["a", "b"],
                text_fields=["sentence"], metrics=["accuracy"], main_metric=["accuracy"],
                splits={"train": "train", "eval": ["validation"], "test": ["test"]})
    return TaskSpec.from_config({**base, **overrides})


@pytest.mark.parametrize("overrides, message", [
    ({"head": "ranking"}, "head 'ranking' is not one of"),
    ({"label_names": None}, "a classification task needs label_names"),
    ({"main_metric": ["f1"]}, "main_metric entry 'f1' must be one of metrics ['accuracy']"),
    ({"main_metric": ["test/accuracy"]}, "optionally prefixed by an eval split of ['validation']"),
    ({"splits": {"train": None, "eval": ["validation"]}}, "only a diagnostic task"),
    ({"splits": {"train": "train", "eval": []}}, "splits.eval must name at least one labelled split"),
    ({"splits": {"train": "train", "eval": ["validation"], "dev": ["x"]}}, "splits has unknown keys ['dev']"),
    ({"local": {"dir": "glue/T", "format": "tsv", "files": {"train": "train.tsv"}}},
     "local.files has no file for splits ['validation', 'test']"),
    ({"local": {"dir": "glue/T", "format": "csv", "files": {}}}, "local.format 'csv' is not one of tsv, jsonl"),
    ({"submission": {"format": "glue_tsv", "files": {"test": "T.tsv"}, "labels": "upper"}},
     "submission.labels 'upper' is not one of"),
    ({"submission": {"format": "glue_csv", "files": {"test": "T.tsv"}}}, "submission.format 'glue_csv'"),
    ({"submission": {"format": "glue_tsv", "files": {}}}, "submission.files must name one file per test split"),
    ({"diagnostic": {"scored_with": []}, "splits": {"train": None, "eval": ["validation"]}},
     "diagnostic.scored_with must list"),
])
def test_bad_specs_are_refused(overrides, message):
    with pytest.raises(ValueError) as error:
        _spec(**overrides)
    assert message in str(error.value)


def test_unknown_formatter_and_metric_list_choices():
    with pytest.raises(UnknownChoiceError, match="Did you mean 'multirc'"):
        _spec(formatter="multirx")
    with pytest.raises(UnknownChoiceError, match="Did you mean 'accuracy'"):
        _spec(metrics=["acuracy"], main_metric=[])


def test_every_registered_formatter_is_used_by_a_task():
    from aotp.tasks.formatting import FORMATTERS

    assert {load_spec(t).formatter for t in ALL_TASKS} == set(FORMATTERS.names())


def test_every_task_but_record_states_its_official_split_sizes():
    from tests.integration.test_tasks_real_data import OFFICIAL_SIZES, TASKS

    assert len(TASKS) == 20
    for task in TASKS:
        spec = load_spec(task)
        if spec.name == "record":  # examples are (query, candidate) pairs: counted from the files only
            assert spec.official_sizes == {}
            continue
        assert set(spec.official_sizes) == set(spec.all_splits), task
    assert OFFICIAL_SIZES[("glue/mnli", "validation_mismatched")] == 9832
    assert OFFICIAL_SIZES[("superglue/multirc", "train")] == 27243
