"""Bad input gets a clear error before any model is loaded."""

import pytest

from aotp.registry import UnknownChoiceError
from aotp.run import ConfigError, validate
from aotp.tasks import DataFileError
from tests.helpers import compose, run_cli

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
    ("trainer.adam_eps=0", "trainer.adam_eps (AdamW epsilon) must be positive, got 0"),
    ("data.max_train_samples=0", "data.max_train_samples must be a positive integer or null (null = the whole training "
                                 "split), got 0"),
    ("data.max_train_samples=-5", "data.max_train_samples must be a positive integer or null"),
    ("data.max_eval_samples=2.5", "data.max_eval_samples must be a positive integer or null"),
    ("data.max_length=2", "data.max_length must be an integer >= 4 or null"),
    ("trainer.max_steps=0", "trainer.max_steps must be a positive integer or null (null = trainer.epochs), got 0"),
    ("trainer.epochs=-1", "trainer.epochs must be an integer >= 0, got -1"),
    ("trainer.patience=0", "trainer.patience must be a positive integer or null"),
    ("trainer.log_every=0", "trainer.log_every must be a positive integer or null"),
    ("trainer.threads=abc", "trainer.threads must be a positive integer or null (null = torch's default), got 'abc'"),
    ("seed=-1", "seed must be an integer >= 0, got -1"),
    ("method.lr=abc", "method.lr (the learning rate) must be a number, got 'abc'"),
    ("method.lr=nan", "method.lr (the learning rate) must be finite"),
    ("method.weight_decay=-0.1", "method.weight_decay (decoupled weight decay) must be >= 0, got -0.1"),
    ("trainer.warmup_ratio=1.5", "trainer.warmup_ratio (share of the steps spent warming up) must be <= 1, got 1.5"),
    ("trainer.device=cuda:x", "trainer.device='cuda:x'; valid: auto, cpu, cuda, mps (cuda:N allowed)"),
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



def test_results_path_that_cannot_be_created_is_refused(tmp_path, no_model_loading):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"paths.results=.*a_file/runs cannot be created or written: Not a directory"):
        validate(compose(BASE + [f"paths.results={blocker}/runs"]))
    with pytest.raises(ConfigError, match=r"paths.cache=.*a_file is a file, not a folder"):
        validate(compose(BASE + [f"paths.cache={blocker}"]))


def test_group_choices_get_did_you_mean_and_the_list():
    from aotp.config_checks import check_group_choices

    with pytest.raises(ConfigError) as error:
        check_group_choices(["task=glue/rtee"])
    assert "Unknown task 'glue/rtee' (config option `task`). Did you mean 'glue/rte'" in str(error.value)
    assert "Valid choices: glue/ax, glue/cola," in str(error.value) and "superglue/wsc." in str(error.value)
    with pytest.raises(ConfigError, match="Unknown method 'lorra'.*Did you mean 'lora'"):
        check_group_choices(["method=full_ft,lorra"])  # each value of a sweep list
    check_group_choices(["task=glue/rte,superglue/copa", "+experiment=smoke_tiny", "method.lr=1", "hydra/launcher=basic",
                         "task=glob(glue/*)"])  # valid names, keys and sweep syntax pass


@pytest.mark.parametrize("arguments, message", [
    (["task=glue/rtee"], "Error: Unknown task 'glue/rtee' (config option `task`). Did you mean 'glue/rte'"),
    (["method=lorra"], "Error: Unknown method 'lorra' (config option `method`). Did you mean 'lora'?"),
    (["method.lr=abc"], "Error: method.lr (the learning rate) must be a number, got 'abc'"),
    (["method.lrr=1"], "Error: Could not override 'method.lrr'. To append to your config use +method.lrr=1"),
    (["data.max_train_samples=0"], "Error: data.max_train_samples must be a positive integer or null"),
    (["paths.results=/proc/no/such"], "Error: paths.results=/proc/no/such cannot be created or written"),
    # a multirun is checked on its first run before anything launches
    (["-m", "seed=1,2", "method.lr=abc"], "Error: method.lr (the learning rate) must be a number, got 'abc'"),
    (["-m", "seed=1,2", "method.lrr=1"], "Error: Could not override 'method.lrr'."),
])
def test_cli_refusals_are_one_line_with_exit_code_2(arguments, message):
    result = run_cli([*arguments, "model=tiny_bert", "task=glue/rte"], timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_cli_bad_value_exits_with_message_before_loading(tmp_path):
    result = run_cli(BASE + ["trainer.batch_size=0", f"paths.results={tmp_path}"], timeout=120)
    assert result.returncode == 2
    assert "Error: trainer.batch_size must be a positive integer, got 0" in result.stderr
    assert not any(tmp_path.iterdir())  # nothing was started


def test_hydra_writes_no_single_run_folder_and_names_multirun_folders():
    from aotp.run import compose as run_compose

    cfg = run_compose(BASE, return_hydra_config=True)
    assert cfg.hydra.run.dir == "." and cfg.hydra.output_subdir is None and cfg.hydra.sweep.subdir == "."
    assert "FileHandler" not in str(cfg.hydra.job_logging)  # the log goes to <run dir>/run.log instead
    assert cfg.hydra.sweep.dir.startswith("multirun/adhoc/20")  # no experiment_name: never multirun/None/
    named = run_compose(BASE + ["experiment_name=my_sweep"], return_hydra_config=True)
    assert named.hydra.sweep.dir.startswith("multirun/my_sweep/20")


def test_the_precisions_checked_are_the_loops():
    """config_checks keeps its own list (it must not import torch); it is the loop's."""
    from aotp.config_checks import PRECISIONS
    from aotp.trainer.loop import PRECISIONS as LOOP_PRECISIONS

    assert PRECISIONS == tuple(LOOP_PRECISIONS)
