"""Host-device syncs in the training hot loop (issue 26, item 3).

* The training benchmark's host-read counter (:func:`aotp.bench.train.count_host_reads`) sees every kind of
  read that waits for a GPU, not only ``item``/``tolist``/``bool``: before issue 26 an ``int(t)``, a
  ``torch.unique`` and a ``.numpy()`` were invisible to it.
* An AoT training step on a device makes no read in the AoT module: the rows are computed per position
  (static shapes, no ``torch.unique``, a device-side range check). A CPU emulates the device path through
  ``AoTBias.rows_per_position = True``; before issue 26 every training forward made a ``torch.unique`` and two
  ``int()`` reads there on every device.
* Both paths give the same biases and the same gradients (FC and Kronecker, to 1e-6), so which one runs
  does not change what a run trains.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from aotp.bench.train import count_cpu_reads, count_host_reads, host_only
from aotp.methods import METHODS
from tests.conftest import make_tiny_task_model, tiny_batch

AOT = ("aot_fc", "aot_kron")
SMALL = {"aot_fc": {"rank": 8}, "aot_kron": {"rank": 4}}
TEXTS_A = ["the movie was good", "a bad film , really bad and long", "yes"]
TEXTS_B = ["it was good", "no", "the story of a man who could not get back home"]


def build(method_name, seed=0, **options):
    torch.manual_seed(seed)
    model = make_tiny_task_model("roberta", num_labels=3, seed=seed)
    METHODS.get(method_name)(**{**SMALL[method_name], **options}).apply(model)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # non-zero output projections: the biases (and the factors' gradients) are not zero
        for parameter in model.aot.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model


def assert_close_to(got, want, tol=1e-6, name=""):
    """|got - want| <= tol x max(1, max|want|): 1e-6 absolute for values up to 1, relative to the tensor's
    scale above (a gradient summed over every position in another order rounds at about 1e-7 of its size)."""
    scale = max(1.0, want.abs().max().item())
    gap = (got - want).abs().max().item()
    assert gap <= tol * scale, f"{name}: {gap} > {tol} x {scale}"


def reads_in(sites, path_part):
    return {site: n for site, n in sites.items() if path_part in site}


def test_the_cpu_counter_counts_every_read_that_waits_for_a_gpu():
    """Every tensor-to-Python read and data-dependent op is counted once per call (a method that calls a
    counted function, ``Tensor.unique`` -> ``torch.unique``, once); indexing by position, an add and reads
    inside ``host_only`` are not; and every patched function is restored after."""
    tensor_dict = dict(vars(torch.Tensor))
    unique = torch.unique
    t = torch.tensor([3, 1, 3, 2])
    with count_cpu_reads() as sites:
        int(t[0])
        torch.unique(t)
        t.numpy()
        t.unique()
        float(t[1]), bool(t[2]), t[0].item(), t.tolist(), t.cpu()
        t[t > 1]  # boolean-mask indexing: a data-dependent shape
        t.nonzero()
        torch.where(t > 1)
        x = t + 1  # not reads: arithmetic, indexing by position, 3-argument where, a static repeat
        x[1:3], torch.where(t > 1, t, x), t.repeat_interleave(2)
        with host_only():
            int(t.sum())
    labels = sorted(site.split()[0] for site in sites)
    assert labels == sorted(["__int__", "torch.unique", "numpy", "unique", "__float__", "__bool__", "item", "tolist",
                             "cpu", "__getitem__", "nonzero", "torch.where"])
    assert all(n == 1 for n in sites.values())
    assert dict(vars(torch.Tensor)) == tensor_dict and torch.unique is unique


def test_count_host_reads_on_cuda_counts_the_sync_debug_warnings(monkeypatch):
    """On CUDA the figure is torch's own count of syncs: the sync debug mode is set to "warn" for the block and
    restored after; each of its warnings is one sync (by call site), other warnings are passed on."""
    modes = ["default"]
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", lambda mode: modes.append(mode))
    with pytest.warns(UserWarning, match="something else"):
        with count_host_reads(torch.device("cuda")) as sites:
            assert modes[-1] == "warn"
            for _ in range(2):
                warnings.warn("called a synchronizing CUDA operation", UserWarning)
            warnings.warn("something else", UserWarning)
    assert modes[-1] == 0 and sum(sites.values()) == 2 and all(site.startswith("sync ") for site in sites)
    with count_host_reads(torch.device("cpu")) as cpu_sites:  # elsewhere: the read counter
        int(torch.tensor(1))
    assert sum(cpu_sites.values()) == 1


@pytest.mark.parametrize("method_name", AOT)
def test_an_aot_training_step_on_a_device_reads_nothing_in_the_aot_module(method_name):
    """One training step (forward, backward, AdamW) with the device path: no read in aotp/methods/aot.
    Before issue 26 it made 3 (``torch.unique`` + two ``int()`` range checks), on every device. The CPU path
    keeps its ``torch.unique`` and one read of the smallest and largest id (a CPU has no device to wait on)."""
    counts, rows = {}, {}
    for per_position in (True, False):
        model = build(method_name)
        model.aot.rows_per_position = per_position
        batch, labels = tiny_batch(model, TEXTS_A, TEXTS_B), torch.tensor([0, 2, 1])
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        model.train()
        with count_cpu_reads() as sites:
            model.loss(model(**batch), labels).backward()
            optimizer.step()
        counts[per_position] = reads_in(sites, "aotp/methods/aot/")
        rows[per_position] = model.aot.last_rows_computed, batch["input_ids"]
    assert counts[True] == {}
    assert sum(counts[False].values()) == 2 and any("torch.unique" in site for site in counts[False])
    assert rows[True][0] == rows[True][1].numel() > rows[False][0] == torch.unique(rows[False][1]).numel()


@pytest.mark.parametrize("method_name", AOT)
def test_rows_per_position_equal_the_unique_rows_forward_and_gradients(method_name):
    """Same biases, logits and gradients of every trainable parameter from both paths, to 1e-6 (of the
    gradient's scale above 1): which one a device takes does not change the run (multiple-choice shaped ids
    too)."""
    results = {}
    for per_position in (False, True):
        model = build(method_name)
        model.aot.rows_per_position = per_position
        model.train()
        batch, labels = tiny_batch(model, TEXTS_A, TEXTS_B), torch.tensor([0, 2, 1])
        biases = model.aot.lookup(batch["input_ids"])
        upstream = torch.randn(biases.shape, generator=torch.Generator().manual_seed(3))
        (biases * upstream).sum().backward()
        bias_grads = {n: p.grad.clone() for n, p in model.aot.named_parameters()}
        model.zero_grad()
        logits = model(**batch)
        model.loss(logits, labels).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        choices = model.aot.lookup(batch["input_ids"].view(3, 1, -1).expand(3, 2, -1))  # (B, C, T) ids
        results[per_position] = biases.detach(), bias_grads, logits.detach(), grads, choices.detach()
    (b0, bg0, l0, g0, c0), (b1, bg1, l1, g1, c1) = results[False], results[True]
    assert_close_to(b1, b0, name="biases")
    assert_close_to(c1, c0, name="multiple-choice biases")
    assert_close_to(l1, l0, name="logits")
    assert b0.abs().max() > 0.1 and set(bg1) == set(bg0) and set(g1) == set(g0)
    for name in bg0:
        assert_close_to(bg1[name], bg0[name], name=name)
    for name in g0:
        assert g0[name].abs().max() > 0, name  # every trainable parameter gets a gradient: the check is not vacuous
        assert_close_to(g1[name], g0[name], name=name)


@pytest.mark.parametrize("method_name", AOT)
def test_the_device_path_still_refuses_an_id_out_of_range(method_name):
    """Without reading the device: a device-side assert (on the CPU it raises at once). A negative id, or a
    Kronecker id in [|V|, a*b), would otherwise silently take another token's row. The CPU path keeps its
    IndexError naming the smallest and largest id."""
    model = build(method_name)
    vocab = model.aot.vocab_size
    for bad in (-1, vocab):
        ids = torch.tensor([[5, bad, 7]])
        model.aot.rows_per_position = True
        with pytest.raises(RuntimeError, match=rf"token id out of range \[0, {vocab}\)"):
            model.aot.lookup(ids)
        model.aot.rows_per_position = None  # CPU ids: the unique path
        message = rf"token id out of range \[0, {vocab}\): min {min(5, bad)}, max {max(7, bad)}"
        with pytest.raises(IndexError, match=message):
            model.aot.lookup(ids)


def test_which_path_runs_by_default():
    """CPU ids: the unique rows; ids on any other device: per position, unless the reparametrization trains
    with dropout (its masks are one per unique token); eval mode with dropout: per position again."""
    model = build("aot_fc")
    aot = model.aot
    assert not aot.computes_rows_per_position(torch.zeros(2, 3, dtype=torch.long))
    on_device = torch.empty(2, 3, dtype=torch.long, device="meta")  # any device but the CPU
    assert aot.computes_rows_per_position(on_device)
    with_dropout = build("aot_fc", dropout=0.1).aot.train()
    assert not with_dropout.computes_rows_per_position(on_device)
    assert with_dropout.eval().computes_rows_per_position(on_device)
    with_dropout.rows_per_position = True
    assert with_dropout.train().computes_rows_per_position(on_device)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method_name", AOT)
def test_an_aot_training_step_on_cuda_makes_no_sync_in_the_aot_module(method_name):
    """The real thing, under torch's sync debug mode: no synchronising CUDA call from aotp/methods/aot in a
    training step, and the same logits as the CPU's unique rows."""
    model = build(method_name).eval()  # no dropout, so CPU and CUDA logits compare; autograd on: the training path
    batch, labels = tiny_batch(model, TEXTS_A, TEXTS_B), torch.tensor([0, 2, 1])
    expected = model(**batch).detach()
    model.cuda()
    batch, labels = {k: v.cuda() for k, v in batch.items()}, labels.cuda()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, fused=True)
    torch.cuda.synchronize()
    with count_host_reads(torch.device("cuda")) as sites:
        logits = model(**batch)
        model.loss(logits, labels).backward()
        optimizer.step()
    assert reads_in(sites, "aotp/methods/aot/") == {} and model.aot.computes_rows_per_position(batch["input_ids"])
    torch.testing.assert_close(logits.detach().cpu(), expected, atol=1e-5, rtol=1e-5)

