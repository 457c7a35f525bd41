"""``trainer.micro_batch_size`` (issue 26, item 6): an optimizer step's examples stay the
``gradient_accumulation_steps`` logical batches of ``batch_size`` the loop always built; only how many of
them share one forward/backward changes, each example keeping its loss weight 1 / (len(its batch) x
accumulation). So every split trains what one logical batch per forward trains, up to float rounding (tiny
models, dropout 0), which is why the option is not in the run id; ``auto`` halves on CUDA out-of-memory."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from aotp.cli import ConfigError
from aotp.config_checks import check_values
from aotp.methods import METHODS
from aotp.models.tiny_tokenizer import build_tiny_tokenizer
from aotp.results.record import run_id
from aotp.run import CONFIG_DIR
from aotp.tasks import load_spec, load_task_data
from aotp.tasks.data import SplitData, TaskData
from aotp.trainer import loop
from aotp.trainer.loop import MicroBatch, Trainer, split_step
from tests.conftest import make_tiny_task_model
from tests.helpers import FIXTURE_DATA, RecordingLoggers, compose




_DATA: dict[str, TaskData] = {}


def task_data(name: str, copies: int = 1, extra: int = 0) -> TaskData:
    """A fixture task whose training split is its examples ``copies`` times + the first ``extra`` again (the
    fixtures hold ~10 examples; batches of 4 x 8 accumulation need more)."""
    key = f"{name}-{copies}-{extra}"
    if key not in _DATA:
        data = load_task_data(load_spec(name), build_tiny_tokenizer(), {"root": str(FIXTURE_DATA), "max_length": 64},
                              uses_token_type_ids=False, seed=0, cache_dir=None)
        train = data[data.spec.train_split]
        features = train.features * copies + train.features[:extra]
        examples = train.examples * copies + train.examples[:extra]
        splits = {**data.splits, data.spec.train_split: SplitData(train.name, examples, features, train.labelled)}
        _DATA[key] = TaskData(data.spec, splits)
    return _DATA[key]


def trainer_config(**overrides):
    cfg = OmegaConf.load(CONFIG_DIR / "trainer" / "default.yaml")
    cfg.merge_with({"eval_batch_size": 16, "eval_every": 1000, "log_every": 1, "progress": False, "device": "cpu",
                    "warmup_ratio": 0.2, "fused_optimizer": False, **overrides})
    return cfg


def train(tmp_path, data: TaskData, forward_hook=None, **overrides):
    """(trained model, logged losses, Fitted, sizes of the forwards' batches) of aot_fc on a tiny RoBERTa, dropout 0."""
    torch.manual_seed(0)
    model = make_tiny_task_model("roberta", head_type=data.spec.head, num_labels=data.spec.num_labels, dropout=0.0)
    method = METHODS.get("aot_fc")()
    method.apply(model)
    sizes = []
    original = model.forward

    def counted(*args, **kwargs):
        rows = kwargs["input_ids"].shape[0]
        if model.training:
            sizes.append(rows)
            if forward_hook is not None:
                forward_hook(rows, len(sizes))
        return original(*args, **kwargs)

    model.forward = counted
    loggers = RecordingLoggers()
    trainer = Trainer(trainer_config(**overrides), model, method, data, tmp_path, loggers, torch.device("cpu"), seed=3)
    torch.manual_seed(1)
    fitted = trainer.fit(1e-3, 0.01)
    return model, loggers.losses(), fitted, sizes


def logical_batches(data: TaskData, epochs: int, **overrides) -> list[list[int]]:
    """The sizes of the logical batches of each step, over ``epochs`` epochs, as the loop builds them."""
    cfg = trainer_config(**overrides)
    trainer = Trainer(cfg, make_tiny_task_model("roberta"), None, data, "unused", None, torch.device("cpu"), seed=3)
    steps = []
    for epoch in range(epochs):
        batches = trainer.epoch_batches(epoch)
        steps += [[len(b) for b in batches[i:i + trainer.accumulation]] for i in range(0, len(batches), trainer.accumulation)]
    return steps


def assert_same_training(a, b, atol=1e-5, skip=()):
    (model_a, losses_a, fitted_a, _), (model_b, losses_b, fitted_b, _) = a, b
    assert len(losses_a) == len(losses_b) == fitted_a.state["step"]
    assert losses_a == pytest.approx(losses_b, abs=atol, rel=0)
    moved = 0
    for (name, p), q in zip(model_a.named_parameters(), model_b.parameters()):
        if p.requires_grad and name not in skip:
            torch.testing.assert_close(p, q, atol=atol, rtol=0, msg=name)
            moved += 1
    assert moved and fitted_a.state["train_examples"] == fitted_b.state["train_examples"]


def test_split_step_keeps_every_example_and_its_logical_batch():
    step = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # the epoch's last step: a partial last batch
    assert split_step(step, None) == [MicroBatch([0, 1, 2, 3], ((4, 4, False),)), MicroBatch([4, 5, 6, 7], ((4, 4, False),)),
                                      MicroBatch([8, 9], ((2, 2, True),))]
    assert split_step(step, 32) == [MicroBatch(list(range(10)), ((4, 4, False), (4, 4, False), (2, 2, True)))]
    assert split_step(step, 3) == [MicroBatch([0, 1, 2], ((3, 4, False),)), MicroBatch([3, 4, 5], ((1, 4, False), (2, 4, False))),
                                   MicroBatch([6, 7, 8], ((2, 4, False), (1, 2, True))), MicroBatch([9], ((1, 2, True),))]
    for size in (1, 2, 3, 5, 7, 10):
        micro = split_step(step, size)
        assert [i for m in micro for i in m.indices] == list(range(10)) and all(len(m.indices) <= size for m in micro)
        # each logical batch's pieces add up to it: its examples' weights sum to what the batch weighs alone
        for b, batch in enumerate(step):
            assert sum(rows for m in micro for rows, total, _ in m.parts if total == len(batch)) >= len(batch)
        assert sum(rows / total for m in micro for rows, total, _ in m.parts) == pytest.approx(len(step))


def test_micro_batches_of_32_train_what_4_x_8_accumulation_trains(tmp_path):
    """batch 4 x 8 accumulation: one forward of 32 (and uneven splits of 5 and 1) end with the trainable weights
    and logged losses of 8 forwards of 4 (1e-5). 42 examples: 11 batches per epoch, one of 2 (weight 1/16 per
    example against 1/32), so steps of 8 and 3 batches; 4 steps cross an epoch."""
    data = task_data("glue/rte", copies=4, extra=2)
    common = {"batch_size": 4, "gradient_accumulation_steps": 8, "max_steps": 4}
    steps = logical_batches(data, 2, **common)
    # length grouping shuffles the short batch anywhere into its epoch: here into a full step of 8 batches too
    assert [len(step) for step in steps] == [8, 3, 8, 3] and [2 in step for step in steps] == [True, False, False, True]
    plain = train(tmp_path / "plain", data, **common)
    assert plain[3] == sum(steps, []) and plain[2].micro_batch == {
        "micro_batch_size": 4, "micro_batch_source": "batch_size", "accumulation_steps": 8}
    one = train(tmp_path / "one", data, micro_batch_size=32, **common)
    assert one[3] == [sum(step) for step in steps]  # one forward per step, the epoch's short step included
    assert one[2].micro_batch == {"micro_batch_size": 32, "micro_batch_source": "config", "accumulation_steps": 1}
    assert_same_training(one, plain)
    for size in (5, 1):
        split = train(tmp_path / f"m{size}", data, micro_batch_size=size, **common)
        assert max(split[3]) == size and sum(split[3]) == 84
        assert split[2].micro_batch["accumulation_steps"] == -(-32 // size)
        assert_same_training(split, plain)
    # without length grouping too (batches are slices of the permutation)
    assert_same_training(train(tmp_path / "ug32", data, micro_batch_size=32, group_by_length=False, **common),
                         train(tmp_path / "ug4", data, group_by_length=False, **common))


@pytest.mark.parametrize("task", ["superglue/copa", "glue/stsb"])
def test_other_heads_split_the_same_way(task, tmp_path):
    """Multiple choice (one row of choice scores per example) and regression: batch 2 x 3 accumulation over 10
    examples (a short last step of 2 batches) equals one forward per step, and slices of 4 across batches.
    Multiple choice's output bias is left out: it adds the same number to every choice score, so the softmax
    over choices gives it an exactly zero gradient, and AdamW turns the rounding noise of that zero into steps
    of about the learning rate (2e-5 here) whatever the split; every other weight agrees to ~1e-8."""
    data = task_data(task)
    skip = {"head.out_proj.bias"} if data.spec.head == "multiple_choice" else set()
    common = {"batch_size": 2, "gradient_accumulation_steps": 3, "max_steps": 4}
    plain = train(tmp_path / "plain", data, **common)
    whole = train(tmp_path / "whole", data, micro_batch_size="6", **common)
    assert whole[3] == [6, 4, 6, 4]
    assert_same_training(whole, plain, skip=skip)
    assert_same_training(train(tmp_path / "four", data, micro_batch_size=4, **common), plain, skip=skip)


def test_micro_batch_null_is_bitwise_the_loop_before_it(tmp_path):
    """micro_batch_size=null, a size equal to the logical batch (accumulation 1) and auto off CUDA run one logical
    batch per forward: the very same computation, bitwise."""
    data = task_data("glue/rte", copies=2)
    common = {"batch_size": 4, "gradient_accumulation_steps": 1, "max_steps": 6}
    plain = train(tmp_path / "plain", data, **common)
    for option in (4, "auto"):
        same = train(tmp_path / str(option), data, micro_batch_size=option, **common)
        assert same[1] == plain[1] and same[3] == plain[3]
        for p, q in zip(same[0].parameters(), plain[0].parameters()):
            assert torch.equal(p, q)
    assert same[2].micro_batch == {"micro_batch_size": 4, "micro_batch_source": "batch_size", "accumulation_steps": 1}


def test_auto_halves_on_cuda_out_of_memory_and_records_what_it_settled_on(tmp_path, monkeypatch, capsys):
    """auto, as on CUDA (the search's start is monkeypatched in on this CPU), with a forward that raises
    torch.cuda.OutOfMemoryError above 16 rows, and once more on the 6th forward (the second micro-batch of a
    step, after the first one's backward: a longer batch, say). 32 -> 16 on the first step; 16 -> 8 in the
    third step, whose partial gradients are dropped and which is redone. The run ends with the weights and
    losses of 8 forwards of 4 per step, and records the size it settled on."""
    monkeypatch.setattr(loop, "auto_micro_batch_start", lambda device, step_examples: step_examples)

    def out_of_memory(rows, call):
        if rows > 16 or call == 6:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (emulated: {rows} rows)")

    data = task_data("glue/rte", copies=4, extra=2)
    common = {"batch_size": 4, "gradient_accumulation_steps": 8, "max_steps": 4, "group_by_length": False}
    assert logical_batches(data, 1, **common) == [[4] * 8, [4, 4, 2]]
    auto = train(tmp_path / "auto", data, forward_hook=out_of_memory, micro_batch_size="auto", **common)
    assert auto[3] == [32, 16, 16, 10, 16, 16, 8, 8, 8, 8, 8, 2]  # tried sizes; the 1st and 6th forwards failed
    assert auto[2].micro_batch == {"micro_batch_size": 8, "micro_batch_source": "auto", "accumulation_steps": 4}
    assert auto[2].state["step"] == 4 and auto[2].state["train_examples"] == 84
    assert "micro-batch of 32 examples ran out of GPU memory; redoing the step with 16" in capsys.readouterr().out
    assert_same_training(auto, train(tmp_path / "plain", data, **common))

    # down to 1 and still out of memory: the error is the run's (recorded failed by the runner)
    def always(rows, call):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (emulated)")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        train(tmp_path / "none", data, forward_hook=always, micro_batch_size="auto", **common)
    # a configured size is not searched: its out-of-memory error is the run's at once
    tried = []
    with pytest.raises(torch.cuda.OutOfMemoryError):
        train(tmp_path / "fixed", data, forward_hook=lambda rows, call: (tried.append(rows), always(rows, call)),
              micro_batch_size=8, **common)
    assert tried == [8]


def test_a_redone_step_draws_the_random_numbers_the_step_started_with(tmp_path):
    data = task_data("glue/rte")
    model = make_tiny_task_model("roberta", num_labels=2)
    trainer = Trainer(trainer_config(batch_size=4, gradient_accumulation_steps=2, micro_batch_size=8), model, None, data,
                      tmp_path, None,
                      torch.device("cpu"), seed=3)
    trainer.micro_batch_source = "auto"
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    next(model.parameters()).grad = torch.ones_like(next(model.parameters()))
    state = (torch.get_rng_state(), None)
    first = torch.rand(4)
    trainer._halve_micro_batch(optimizer, state)
    assert torch.equal(torch.rand(4), first) and trainer.micro_batch_size == 4
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("value", [0, -2, 2.5, "big", "Auto", True, [4]])
def test_bad_micro_batch_sizes_are_refused_in_one_line(value):
    with pytest.raises(ConfigError) as error:
        check_values({"trainer": {"micro_batch_size": value}}, paths=False)
    message = str(error.value)
    assert message.startswith(f"trainer.micro_batch_size={value!r}; valid: an integer >= 1") and "\n" not in message
    assert "null" in message and "auto" in message


@pytest.mark.parametrize("override", ["trainer.micro_batch_size=auto", "trainer.micro_batch_size=8",
                                      "trainer.micro_batch_size=null"])
def test_micro_batch_sizes_compose_validate_and_leave_the_run_id(override):
    base = compose(["model=tiny_bert", "task=glue/rte", "method=lora"])
    cfg = compose(["model=tiny_bert", "task=glue/rte", "method=lora", override])
    check_values(cfg, paths=False)
    assert "micro_batch_size" in cfg.trainer and base.trainer.micro_batch_size is None
    as_dict = OmegaConf.to_container(cfg, resolve=True)
    assert run_id(as_dict) == run_id(OmegaConf.to_container(base, resolve=True))
    without = OmegaConf.to_container(base, resolve=True)
    del without["trainer"]["micro_batch_size"]  # a config from before the key: its id is unchanged
    assert run_id(without) == run_id(as_dict)


def test_packed_runs_refuse_a_micro_batch_size_and_a_packed_sweep_trains_them_alone(tmp_path):
    from aotp.sweep_pack import plan
    from aotp.trainer.packed import unpackable_reason

    base = ["experiment=smoke_tiny", "hydra/launcher=basic", "task=glue/rte", "method=aot_fc", "seed=1,2",
            "experiment.lr_index=0,1", f"data.root={FIXTURE_DATA}", "trainer.device=cpu",
            f"paths.results={tmp_path / 'runs'}"]
    assert unpackable_reason(compose(["model=tiny_bert", "method=aot_fc", "task=glue/rte"])) is None
    reason = unpackable_reason(compose(["model=tiny_bert", "method=aot_fc", "task=glue/rte",
                                        "trainer.micro_batch_size=auto"]))
    assert reason.startswith("trainer.micro_batch_size=auto: packed runs take one logical batch") and "\n" not in reason
    assert [len(job.runs) for job in plan(base, 4)[1]] == [4]
    assert [len(job.runs) for job in plan([*base, "trainer.micro_batch_size=8"], 4)[1]] == [1, 1, 1, 1]
