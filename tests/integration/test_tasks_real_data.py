"""The real GLUE/SuperGLUE files in ../shared/data: every task present loads with the official split
sizes, labels parse into the known dev label distributions, and leaderboard files are written for the
real RTE and MultiRC test sets. Skips cleanly where the data (or one of its files) is absent."""

from __future__ import annotations

import pytest

from aotp.tasks.baselines import constant_baselines
from aotp.tasks.formatting import FORMATTERS
from aotp.tasks.loading import load_raw_records, local_path
from aotp.tasks.spec import load_spec
from tests.helpers import REPO_ROOT

# (task, split) -> official size (examples; MultiRC: answer options; test splits included): the specs'
# official_sizes, which aotp.estimate uses where the files are absent
TASKS = [f"{b}/{p.stem}" for b in ("glue", "superglue") for p in sorted((REPO_ROOT / "configs" / "task" / b).glob("*.yaml"))]
OFFICIAL_SIZES = {(task, split): n for task in TASKS for split, n in load_spec(task).official_sizes.items()}
# Dev-set constant baselines (the best "always predict k"), main metric and its parts
DEV_BASELINES = {
    "glue/rte": ("entailment", {"accuracy": 146 / 277}),
    "glue/mrpc": ("equivalent", {"f1": 2 * 279 / (279 + 408), "accuracy": 279 / 408}),
    "glue/wnli": ("not_entailment", {"accuracy": 40 / 71}),
    "superglue/copa": ("choice 0", {"accuracy": 0.55}),
    "superglue/wsc": ("false", {"accuracy": 66 / 104}),
    "superglue/boolq": ("true", {"accuracy": 2033 / 3270}),
    "superglue/rte": ("entailment", {"accuracy": 146 / 277}),
}


def present(shared_data, task, split):
    spec = load_spec(task)
    path = local_path(spec, split, shared_data)
    if not path.is_file():
        pytest.skip(f"{path} is not in the offline snapshot")
    return spec


@pytest.mark.parametrize("task, split", sorted(OFFICIAL_SIZES))
def test_official_split_sizes(task, split, shared_data):
    spec = present(shared_data, task, split)
    records = load_raw_records(spec, split, shared_data)
    examples = FORMATTERS.get(spec.formatter).format(spec, records, split not in spec.test_splits)
    assert len(examples) == OFFICIAL_SIZES[(task, split)]
    if split not in spec.test_splits:
        assert all(e["label"] is not None for e in examples)
        if spec.head == "classification":
            assert {e["label"] for e in examples} == set(range(spec.num_labels))
    else:
        assert all(e["label"] is None for e in examples)


@pytest.mark.parametrize("split, questions", [("train", 5131), ("validation", 953), ("test", 1820)])
def test_multirc_question_groups(split, questions, shared_data):
    spec = present(shared_data, "superglue/multirc", split)
    examples = FORMATTERS.get("multirc").format(spec, load_raw_records(spec, split, shared_data), split != "test")
    assert len({e["group"] for e in examples}) == questions


@pytest.mark.parametrize("task", sorted(DEV_BASELINES))
def test_dev_label_distributions_give_the_known_majority_baselines(task, shared_data):
    spec = present(shared_data, task, "validation")
    result = constant_baselines(spec, shared_data)
    label, metrics = DEV_BASELINES[task]
    assert result["best"] == label
    assert {k: v for k, v in result["best_metrics"].items() if k != "main"} == pytest.approx(metrics)


def test_multirc_constant_baselines(shared_data):
    spec = present(shared_data, "superglue/multirc", "validation")
    result = constant_baselines(spec, shared_data)
    examples = FORMATTERS.get("multirc").format(spec, load_raw_records(spec, "validation", shared_data), True)
    positives = sum(e["label"] for e in examples)
    groups: dict = {}
    for e in examples:
        groups.setdefault(e["group"], []).append(e["label"])
    all_true = result["constants"]["true"]
    assert all_true["multirc_f1a"] == pytest.approx(2 * positives / (positives + len(examples)))
    assert all_true["multirc_em"] == pytest.approx(sum(all(v) for v in groups.values()) / len(groups))
    assert result["constants"]["false"]["multirc_f1a"] == 0.0 and result["best"] == "true"


@pytest.mark.slow  # ~25 s of CPU: tokenising and predicting 3,000 + 9,693 real test examples
def test_real_rte_and_multirc_submissions(shared_data, tmp_path):
    """A 2-step tiny run per task, then its leaderboard file for the full real test set, read back."""
    from aotp.predict import predict_run, read_submission
    from aotp.run import execute
    from tests.helpers import compose

    for task, file, units, rows in (("glue/rte", "RTE.tsv", 3000, 3000),
                                    ("superglue/multirc", "MultiRC.jsonl", 9693, 166)):
        spec = present(shared_data, task, "test")
        present(shared_data, task, "train")
        record = execute(compose(["model=tiny_bert", f"task={task}", f"data.root={shared_data}", "trainer.max_steps=2",
                                  "data.max_train_samples=32", "data.max_eval_samples=32", "data.max_length=128",
                                  f"paths.results={tmp_path / 'runs'}", f"paths.cache={tmp_path / 'cache'}",
                                  "trainer.progress=false", "logger=none"]))
        written = predict_run(record["run_dir"], output=tmp_path / "submission")
        assert written == {"test": {"path": str(tmp_path / "submission" / file), "rows": rows, "units": units}}
        back = read_submission(spec, tmp_path / "submission" / file)
        assert len(back) == rows
        if task == "glue/rte":
            assert [r["idx"] for r in back] == list(range(3000))
            assert {r["label"] for r in back} <= {"entailment", "not_entailment"}
        else:
            assert sum(len(q["answers"]) for r in back for q in r["passage"]["questions"]) == units
            assert sum(len(r["passage"]["questions"]) for r in back) == 1820
