"""Bad input gets a clear error before any model is loaded."""

import pytest

from aotp.registry import UnknownChoiceError
from aotp.run import ConfigError, validate
from aotp.tasks import DataFileError
from tests.helpers import REPO_ROOT, compose, run_cli

BASE = ["model=tiny_bert", "task=glue/rte"]


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if validation tries to build a backbone."""
    import aotp.models.builders as builders

    def forbidden(*args, **kwargs):
        raise AssertionError("validation loaded a model")

    monkeypatch.setattr(builders, "build_backbone", forbidden)


@pytest.mark.parametrize("override, message", [
    ("method.lr=0", "method.lr (the learning rate) must be positive, got 0"),
    ("method.lr=-1e-3", "method.lr (the learning rate) must be positive"),
    ("trainer.batch_size=0", "trainer.batch_size must be a positive integer, got 0"),
    ("trainer.eval_batch_size=-4", "trainer.eval_batch_size must be a positive integer"),
    ("trainer.precision=fp8", "trainer.precision='fp8' is not one of fp32, bf16, fp16"),
    ("trainer.device=tpu", "trainer.device='tpu'; valid: auto, cpu, cuda, mps"),
    ("model.family=gpt2", "model.family='gpt2'; valid: bert, roberta, deberta, deberta_v2"),
    ("trainer.adam_betas=[0.9,1.0]", "trainer.adam_betas must be two numbers in [0, 1), got [0.9, 1.0]"),
    ("trainer.adam_betas=[0.9]", "trainer.adam_betas must be two numbers in [0, 1)"),
    ("trainer.adam_eps=0", "trainer.adam_eps must be positive, got 0"),
])
def test_bad_values_are_refused(override, message, no_model_loading):
    with pytest.raises(ConfigError) as error:
        validate(compose(BASE + [override]))
    assert message in str(error.value)


def test_unregistered_method_name_lists_choices(no_model_loading):
    with pytest.raises(UnknownChoiceError) as error:
        validate(compose(BASE + ["method.name=ful_ft"]))
    assert "Did you mean 'full_ft'?" in str(error.value) and "Valid choices:" in str(error.value)


def test_missing_data_file_names_the_expected_path(tmp_path, no_model_loading):
    (tmp_path / "glue" / "RTE").mkdir(parents=True)
    (tmp_path / "glue" / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n")
    with pytest.raises(DataFileError) as error:
        validate(compose(BASE + [f"data.root={tmp_path}"]))
    assert f"expected {tmp_path}/glue/RTE/dev.tsv" in str(error.value)


def test_missing_data_root_is_refused(tmp_path, no_model_loading):
    with pytest.raises(ConfigError, match="is not a directory"):
        validate(compose(BASE + [f"data.root={tmp_path / 'nowhere'}"]))


def test_cli_unknown_group_option_lists_valid_choices():
    result = run_cli(["model=tiny_bert", "method=lorra"], timeout=120)
    assert result.returncode != 0
    assert "Could not find 'method/lorra'" in result.stderr
    assert "full_ft" in result.stderr  # Hydra lists the available options


def test_cli_bad_value_exits_with_message_before_loading(tmp_path):
    result = run_cli(BASE + ["trainer.batch_size=0", f"paths.results={tmp_path}"], timeout=120)
    assert result.returncode == 2
    assert "Error: trainer.batch_size must be a positive integer, got 0" in result.stderr
    assert not any(tmp_path.iterdir())  # nothing was started
