"""The loop that does not wait on the host (issue 17): the loss read only at log steps and batches collated
by a DataLoader leave a CPU run bitwise what the plain per-step loop computes; length-grouped batches
are a seeded partition of the epoch; the fused optimizer and the new keys keep run ids."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from omegaconf import OmegaConf

from aotp.methods import METHODS
from aotp.models.tiny_tokenizer import build_tiny_tokenizer
from aotp.results.record import run_id
from aotp.run import CONFIG_DIR
from aotp.tasks import load_spec, load_task_data
from aotp.trainer.loop import Trainer, length_grouped_batches, model_inputs, padded_token_share
from aotp.trainer.optim import build_optimizer, build_scheduler
from tests.conftest import make_tiny_task_model
from tests.helpers import FIXTURE_DATA, RecordingLoggers

STEPS = 5  # batches of 4 over fixture RTE's 10 examples: 3 per epoch, so the run crosses an epoch




_DATA = {}


def fixture_rte():
    if not _DATA:
        _DATA["rte"] = load_task_data(load_spec("glue/rte"), build_tiny_tokenizer(),
                                      {"root": str(FIXTURE_DATA), "max_length": 64}, uses_token_type_ids=False, seed=0,
                                      cache_dir=None)
    return _DATA["rte"]


def trainer_config(**overrides):
    cfg = OmegaConf.load(CONFIG_DIR / "trainer" / "default.yaml")
    cfg.merge_with({"max_steps": STEPS, "batch_size": 4, "eval_batch_size": 16, "eval_every": 1000, "log_every": 1,
                    "progress": False, "device": "cpu", "warmup_ratio": 0.2, **overrides})
    return cfg


def build(method_name="aot_fc"):
    torch.manual_seed(0)
    model = make_tiny_task_model("roberta", num_labels=2)
    method = METHODS.get(method_name)()
    method.apply(model)
    return model, method


def trained(tmp_path, method_name="aot_fc", **overrides):
    model, method = build(method_name)
    loggers = RecordingLoggers()
    trainer = Trainer(trainer_config(**overrides), model, method, fixture_rte(), tmp_path, loggers, torch.device("cpu"),
                      seed=3)
    torch.manual_seed(1)  # dropout masks
    trainer.fit(1e-3, 0.01)
    return model, loggers.losses(), trainer


def reference_losses(method_name="aot_fc"):
    """The loop as it was before issue 17, written out plainly: consecutive slices of the seeded permutation,
    collated in this process, the loss read after every step, foreach AdamW."""
    model, _ = build(method_name)
    data = fixture_rte()
    features = data["train"].features
    probe = Trainer(trainer_config(), model, None, data, "unused", None, torch.device("cpu"), seed=3)
    optimizer = build_optimizer(model, 1e-3, 0.01, fused=False)
    scheduler = build_scheduler(optimizer, STEPS, 0.2)
    trainable = [p for p in model.parameters() if p.requires_grad]
    torch.manual_seed(1)
    losses, epoch = [], 0
    while len(losses) < STEPS:
        order = probe.epoch_order(epoch)
        for start in range(0, len(order), 4):
            model.train()
            batch = probe.collator([features[i] for i in order[start:start + 4]])
            loss = model.loss(model(**model_inputs(batch)), batch["labels"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if len(losses) == STEPS:
                break
        epoch += 1
    return model, losses


def test_the_loop_logs_and_trains_exactly_what_the_plain_per_step_loop_does(tmp_path):
    """Loss read at log steps only, batches through a DataLoader: same logged losses and weights, bitwise."""
    expected_model, expected = reference_losses()
    model, losses, _ = trained(tmp_path, group_by_length=False, fused_optimizer=False)
    assert losses == expected and len(losses) == STEPS
    for (name, ours), theirs in zip(model.named_parameters(), expected_model.parameters()):
        assert torch.equal(ours, theirs), name


def test_logged_losses_are_read_from_the_device_together_and_equal_the_per_step_reads(tmp_path, monkeypatch):
    """The loop reads tensor values back only to log losses: once per LOSS_READ_EVERY logged steps and
    before an evaluation/checkpoint, not once per step; the values are those of a read per step."""
    from aotp.trainer import loop

    reads = []
    originals = {name: getattr(torch.Tensor, name) for name in ("item", "tolist", "__bool__")}

    def counting(name):
        def read(self):
            caller = sys._getframe(1).f_code
            # reads made by the loop itself, less the epoch's permutation (drawn on the host, never on a device)
            if caller.co_filename == loop.__file__ and caller.co_name not in ("epoch_batches", "length_grouped_batches"):
                reads.append((name, self.numel()))
            return originals[name](self)
        return read

    expected_model, expected = reference_losses()
    monkeypatch.setattr(loop, "LOSS_READ_EVERY", 2)
    for name in originals:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    _, every, _ = trained(tmp_path / "every", group_by_length=False, fused_optimizer=False)
    assert reads == [("tolist", 2), ("tolist", 2), ("tolist", 1)]  # 5 logged steps read in 3 device reads
    reads.clear()
    _, sparse, _ = trained(tmp_path / "sparse", group_by_length=False, fused_optimizer=False, log_every=2)
    monkeypatch.undo()
    assert every == expected and sparse == expected[1::2]
    assert reads == [("tolist", 2)]  # steps 2 and 4, read together at the final evaluation


def test_collating_in_worker_processes_changes_nothing(tmp_path):
    model0, losses0, _ = trained(tmp_path / "w0", num_workers=0)
    model2, losses2, trainer = trained(tmp_path / "w2", num_workers=2)
    assert trainer.num_workers == 2 and losses2 == losses0
    for (name, a), b in zip(model0.named_parameters(), model2.parameters()):
        assert torch.equal(a, b), name


def test_length_grouped_batches_are_a_seeded_partition_of_similar_lengths():
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 120, (1000,), generator=generator).tolist()
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(1)).tolist()
    batches = length_grouped_batches(order, lengths, 8, torch.Generator().manual_seed(2), megabatch_factor=5)
    again = length_grouped_batches(order, lengths, 8, torch.Generator().manual_seed(2), megabatch_factor=5)
    assert batches == again  # a function of the permutation and the seed: resumes see the same batches
    assert sorted(i for b in batches for i in b) == list(range(1000)) and len(batches) == math.ceil(1000 / 8)
    megabatch_of = {i: position // 40 for position, i in enumerate(order)}
    for batch in batches:  # a batch never mixes megabatches, and is a run of its megabatch's sorted order
        assert len({megabatch_of[i] for i in batch}) == 1
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)
    starts = [megabatch_of[b[0]] for b in batches]
    assert starts != sorted(starts)  # the batch order is shuffled, not megabatch by megabatch
    plain = [order[i:i + 8] for i in range(0, 1000, 8)]
    assert padded_token_share(batches, lengths) < 0.5 * padded_token_share(plain, lengths)


def test_group_by_length_trains_on_the_grouped_batches_and_resumes_on_them(tmp_path):
    model, method = build()
    trainer = Trainer(trainer_config(group_by_length=True), model, method, fixture_rte(), tmp_path, RecordingLoggers(),
                      torch.device("cpu"), seed=3)
    batches = trainer.epoch_batches(0)
    assert batches == trainer.epoch_batches(0) and batches != trainer.epoch_batches(1)
    assert sorted(i for b in batches for i in b) == list(range(len(fixture_rte()["train"])))
    ungrouped = Trainer(trainer_config(group_by_length=False), model, method, fixture_rte(), tmp_path, None,
                        torch.device("cpu"), seed=3)
    assert ungrouped.epoch_batches(0) == [ungrouped.epoch_order(0)[i:i + 4] for i in range(0, 10, 4)]


def test_fused_adamw_where_the_device_has_it_and_the_same_update_up_to_rounding():
    model, _ = build("full_ft")
    assert build_optimizer(model, 1e-3, 0.01).defaults["fused"] is True  # cpu has the fused kernel (torch >= 2.4)
    assert not build_optimizer(model, 1e-3, 0.01, fused=False).defaults["fused"]
    results = []
    for fused in (True, False):
        model, _ = build("full_ft")
        optimizer = build_optimizer(model, 1e-3, 0.01, fused=fused)
        for step in range(3):
            torch.manual_seed(step)
            for p in model.parameters():
                p.grad = torch.randn_like(p)
            optimizer.step()
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_execution_keys_leave_run_ids_and_group_by_length_enters_them_only_when_on():
    config = {"seed": 1, "model": {"name": "minilm"}, "method": {"name": "aot_fc", "lr": 1e-3},
              "task": {"benchmark": "glue", "name": "sst2", "version": 1}, "trainer": {"batch_size": 16}}
    base = run_id(config)
    execution = {"num_workers": 4, "pin_memory": True, "fused_optimizer": False, "compile": True}
    assert run_id({**config, "trainer": {**config["trainer"], **execution}}) == base
    assert run_id({**config, "trainer": {**config["trainer"], "group_by_length": False}}) == base  # the legacy default
    assert run_id({**config, "trainer": {**config["trainer"], "group_by_length": True}}) != base


@pytest.mark.parametrize("experiment", ["cpu_small", "cpu_mini"])
def test_experiments_with_committed_records_pin_group_by_length_off(experiment):
    """Their records were trained without length grouping: the pin keeps their sweeps' run ids (skip-if-done)."""
    cfg = OmegaConf.load(CONFIG_DIR / "experiment" / f"{experiment}.yaml")
    assert cfg.trainer.group_by_length is False
