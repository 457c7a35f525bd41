"""AoT P-Tuning (aot_fc, aot_kron): exactness at init, what trains, materialisation, index map, cost."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from safetensors import safe_open

from aotp.methods import METHODS, build_method
from aotp.methods.aot import AoTMethod, kron_index, kron_split
from aotp.methods.aot import pack as packs
from aotp.methods.aot.table_io import load_tensor_mmap, write_table
from tests.conftest import REPO_ROOT, make_tiny_task_model, tiny_batch

AOT = ("aot_fc", "aot_kron")
TEXTS_A = ["the movie was good", "a bad film , really bad and long", "yes"]
TEXTS_B = ["it was good", "no", "the story of a man who could not get back home"]
SMALL = {"aot_fc": {"rank": 8}, "aot_kron": {"rank": 4}}


def build(family, method_name, head_type="classification", seed=0, **options):
    model = make_tiny_task_model(family, head_type=head_type, num_labels=1 if head_type == "multiple_choice" else 3, seed=seed)
    method = METHODS.get(method_name)(**{**SMALL[method_name], **options})
    method.apply(model)
    return model, method


def batch_for(model, head_type):
    if head_type == "multiple_choice":  # (B=2, C=3, T): every choice of an example is a (context, choice) pair
        from aotp.models.tiny_tokenizer import build_tiny_tokenizer
        tokens = build_tiny_tokenizer()(["the story"] * 3 + ["a film"] * 3, TEXTS_B + TEXTS_A, padding=True,
                                        return_tensors="pt", return_token_type_ids=model.uses_token_type_ids)
        return {k: v.view(2, 3, -1) for k, v in tokens.items()}
    return tiny_batch(model, TEXTS_A, TEXTS_B)


def perturb(model, scale=0.2, seed=1):
    """Random values in every AoT parameter, output projections included, so P != 0; and a head
    whose outputs depend clearly on its input (a fresh head's std-0.02 weights barely do)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.aot.named_parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
        model.head.out_proj.weight.copy_(torch.randn(model.head.out_proj.weight.shape, generator=generator))


def test_both_methods_registered():
    assert set(AOT) <= set(METHODS.names())
    assert all(issubclass(METHODS.get(name), AoTMethod) for name in AOT)


@pytest.mark.parametrize("head_type", ["classification", "multiple_choice"])
@pytest.mark.parametrize("method_name", AOT)
def test_fresh_model_equals_frozen_backbone_exactly(tiny_family, method_name, head_type):
    reference = make_tiny_task_model(tiny_family, head_type=head_type, num_labels=1 if head_type == "multiple_choice" else 3).eval()
    model, _ = build(tiny_family, method_name, head_type)
    model.eval()
    batch = batch_for(model, head_type)
    with torch.no_grad():
        expected, got = reference(**batch), model(**batch)
    assert torch.equal(expected, got)
    # ... and the hooks are live: non-zero biases change the logits.
    perturb(model)
    with torch.no_grad():
        assert not torch.allclose(model(**batch), expected, atol=1e-4)


@pytest.mark.parametrize("method_name", AOT)
def test_training_moves_only_aot_and_head(tiny_family, method_name):
    torch.manual_seed(0)
    model, method = build(tiny_family, method_name)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("aot.", "head.")) for n in trainable)
    assert any(n.startswith("aot.") for n in trainable)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == method.expected_trainable_parameters(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    batch, labels = tiny_batch(model, TEXTS_A, TEXTS_B), torch.tensor([0, 2, 1])
    model.train()
    for _ in range(3):  # W2/W start at zero: the factors before them get gradients from step 2 on
        optimizer.zero_grad()
        model.loss(model(**batch), labels).backward()
        optimizer.step()
    for name, parameter in model.named_parameters():
        if name in trainable:
            assert not torch.equal(parameter, before[name]), f"{name} did not train"
        else:
            assert parameter.grad is None, f"frozen {name} received a gradient"
            assert torch.equal(parameter, before[name]), f"frozen {name} changed"


def test_trainable_parameter_formulas():
    model, fc = build("bert", "aot_fc", rank=8)
    config = model.backbone.config
    vocab, d, layers = config.vocab_size, config.hidden_size, config.num_hidden_layers
    head = d * d + d + d * 3 + 3
    assert fc.expected_trainable_parameters(model) == d * 8 + 8 + 8 * layers * d + layers * d + head
    model, kron = build("bert", "aot_kron", rank=4)
    side = math.ceil(math.sqrt(vocab))
    assert kron.expected_trainable_parameters(model) == side * 4 + side * 4 + 16 * layers * d + head


@pytest.mark.parametrize("method_name", AOT)
def test_materialized_table_matches_reparametrization(tiny_family, method_name, tmp_path):
    model, method = build(tiny_family, method_name, chunk_size=50)  # several chunks, the last one partial
    perturb(model)
    model.eval()
    on_the_fly = copy.deepcopy(model)
    with_file = copy.deepcopy(model)
    batch = tiny_batch(model, TEXTS_A, TEXTS_B)
    with torch.no_grad():
        expected = model(**batch)
        full = model.aot.reparam.rows(torch.arange(model.aot.vocab_size))  # (|V|, L, d) in one go
    facts = method.prepare_for_inference(model, tmp_path)
    assert model.aot.materialized and model.aot.reparam is None
    assert not any(n.startswith("aot.") for n, _ in model.named_parameters())
    assert facts["table_dtype"] == "fp32" and facts["table_bytes"] == full.numel() * 4 and facts["table_path"] is None
    with torch.no_grad():
        got = model(**batch)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.aot.table, full, atol=1e-6, rtol=0)
    # By default the pack keeps what reproduces the table (the reparametrization), not the table.
    assert {p.name for p in tmp_path.iterdir()} == {packs.PACK_FILE, packs.REPARAM_FILE, packs.HEAD_FILE}
    # save_table: true also writes it, loadable with safetensors itself; the model's table is its memory map.
    file_method = METHODS.get(method_name)(**SMALL[method_name], chunk_size=50, save_table=True)
    facts = file_method.prepare_for_inference(with_file, tmp_path / "with_table")
    with safe_open(str(tmp_path / "with_table" / packs.TABLE_FILE), framework="pt") as handle:
        assert torch.equal(handle.get_tensor(packs.TABLE_TENSOR), with_file.aot.table)
    assert torch.equal(with_file.aot.table, model.aot.table) and facts["table_path"].endswith(packs.TABLE_FILE)
    assert {p.name for p in (tmp_path / "with_table").iterdir()} == {packs.PACK_FILE, packs.REPARAM_FILE,
                                                                    packs.TABLE_FILE, packs.HEAD_FILE}
    # on_the_fly keeps the reparametrization, so its logits are the reparametrized ones exactly.
    otf_method = METHODS.get(method_name)(**SMALL[method_name], inference_mode="on_the_fly")
    facts = otf_method.prepare_for_inference(on_the_fly, tmp_path / "otf")
    assert facts["inference_mode"] == "on_the_fly" and not on_the_fly.aot.materialized
    with torch.no_grad():
        assert torch.equal(on_the_fly(**batch), expected)
    assert (tmp_path / "otf" / packs.REPARAM_FILE).is_file()


@pytest.mark.parametrize("method_name", AOT)
def test_rows_of_given_tokens_equal_the_full_table_and_serve_the_same_logits(method_name, tmp_path):
    """The runner's check: only the rows of the eval tokens are materialised (same chunks as the full
    table, so equal bit for bit); logits equal the full table's; a token without a row is refused."""
    model, method = build("roberta", method_name, chunk_size=37)
    perturb(model)
    model.eval()
    full_model = copy.deepcopy(model)
    batch = tiny_batch(model, TEXTS_A, TEXTS_B)
    with torch.no_grad():
        expected = model(**batch)
    METHODS.get(method_name)(**SMALL[method_name], chunk_size=37).prepare_for_inference(full_model, None)
    used = torch.unique(batch["input_ids"])
    facts = method.prepare_for_inference(model, tmp_path, token_ids=batch["input_ids"])
    assert model.aot.table.shape[0] == used.numel() < model.aot.vocab_size
    assert facts["table_bytes_in_memory"] * model.aot.vocab_size == facts["table_bytes"] * used.numel()
    assert torch.equal(model.aot.table, full_model.aot.table[used])
    with torch.no_grad():
        assert torch.equal(model(**batch), full_model(**batch))
        torch.testing.assert_close(model(**batch), expected, atol=1e-5, rtol=0)
    unused = next(i for i in range(model.aot.vocab_size) if i not in set(used.tolist()))
    other = {**batch, "input_ids": batch["input_ids"].clone()}
    other["input_ids"][0, 1] = unused
    with torch.no_grad(), pytest.raises(IndexError):
        model(**other)
    with pytest.raises(RuntimeError, match="only some tokens"):
        method.trainable_state_dict(model)
    assert not (tmp_path / packs.TABLE_FILE).exists()


@pytest.mark.parametrize("table_dtype", [None, "fp16", "bf16"])
@pytest.mark.parametrize("method_name", AOT)
def test_a_pack_without_its_table_is_materialised_at_load(method_name, table_dtype, tmp_path):
    """Serving rebuilds the table from the saved reparametrization: equal to the training-time table
    (fp32: bit for bit; fp16/bf16: that table rounded once)."""
    from aotp.models import build_backbone

    model, method = build("bert", method_name, chunk_size=64)
    perturb(model)
    model.eval()
    method.prepare_for_inference(model, tmp_path)
    info = packs.read_pack_json(tmp_path)
    assert "table" not in info["files"]
    backbone = build_backbone({"source": "tiny", "name": "tiny_bert", "family": "bert"}).model
    served = METHODS.get(method_name)(**info["options"]).load_bias(backbone, tmp_path, info, table_dtype)
    dtype = {None: torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[table_dtype]
    assert served.dtype == dtype and torch.equal(served, model.aot.table.to(dtype))


@pytest.mark.parametrize("table_dtype", ["fp16", "bf16"])
def test_low_precision_tables(table_dtype, tmp_path):
    model, method = build("roberta", "aot_fc", table_dtype=table_dtype)
    perturb(model)
    model.eval()
    batch = tiny_batch(model, TEXTS_A)
    with torch.no_grad():
        expected = model(**batch)
        full = model.aot.reparam.rows(torch.arange(model.aot.vocab_size))
    facts = method.prepare_for_inference(model, tmp_path)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[table_dtype]
    assert model.aot.table.dtype == dtype and facts["table_bytes"] == full.numel() * 2
    assert torch.equal(model.aot.table, full.to(dtype))  # stored exactly as the fp32 table rounded once
    with torch.no_grad():
        got = model(**batch)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=5e-2, rtol=0)


def test_mmap_table_round_trip_is_exact_and_leaves_file_untouched(tmp_path):
    table = torch.randn(37, 3, 8)
    path = tmp_path / "t.safetensors"
    write_table(path, "table", table.split(10), tuple(table.shape), torch.float32, metadata={"k": "v"})
    raw = path.read_bytes()
    loaded, metadata = load_tensor_mmap(path, "table")
    assert torch.equal(loaded, table) and metadata == {"k": "v"}
    loaded.add_(1.0)  # copy-on-write mapping: writable, but the file never changes
    assert path.read_bytes() == raw
    with pytest.raises(ValueError, match="incomplete"):
        write_table(tmp_path / "short.safetensors", "table", [table[:5]], tuple(table.shape), torch.float32)
    assert not (tmp_path / "short.safetensors").exists()


@pytest.mark.parametrize("method_name", AOT)
def test_materialized_trainable_state_round_trips(method_name, tmp_path):
    source, method = build("deberta_v2", method_name)
    perturb(source)
    source.eval()
    method.prepare_for_inference(source, tmp_path)
    state = method.trainable_state_dict(source)
    assert "aot.table" in state
    target, target_method = build("deberta_v2", method_name, seed=5)  # another head init, fresh reparametrization
    target.eval()
    target_method.load_trainable_state_dict(target, state)
    assert target.aot.materialized
    batch = tiny_batch(source, TEXTS_A, TEXTS_B)
    with torch.no_grad():
        assert torch.equal(target(**batch), source(**batch))


@pytest.mark.parametrize("vocab_size", [1, 2, 10, 99, 100, 101, 360, 30522, 50265, 128100])
def test_kron_index_map_is_a_bijection_onto_pairs(vocab_size):
    a, b = kron_split(vocab_size)
    assert a == b == math.ceil(math.sqrt(vocab_size)) and a * b >= vocab_size
    ids = torch.arange(vocab_size)
    rows, cols = kron_index(ids, b)
    assert int(rows.min()) >= 0 and int(rows.max()) < a and int(cols.min()) >= 0 and int(cols.max()) < b
    pairs = rows * b + cols
    assert torch.unique(pairs).numel() == vocab_size  # no two ids share a (row_a, row_b) pair


def test_kron_table_reaches_every_token_with_a_distinct_row():
    model, method = build("bert", "aot_kron")
    perturb(model)
    model.eval()
    method.prepare_for_inference(model, None)  # in memory
    table = model.aot.table.reshape(model.aot.vocab_size, -1)
    assert table.shape[0] == model.backbone.get_input_embeddings().num_embeddings
    assert torch.unique(table, dim=0).shape[0] == table.shape[0]


@pytest.mark.parametrize("head_type", ["classification", "multiple_choice"])
@pytest.mark.parametrize("method_name", AOT)
def test_training_computes_rows_of_unique_tokens_only(method_name, head_type):
    model, _ = build("roberta", method_name, head_type)
    seen = []
    rows = model.aot.reparam.rows
    model.aot.reparam.rows = lambda ids: (seen.append(ids.clone()), rows(ids))[1]
    batch = batch_for(model, head_type)
    model.train()
    model.loss(model(**batch), torch.zeros(batch["input_ids"].shape[0], dtype=torch.long)).backward()
    unique = torch.unique(batch["input_ids"])
    assert len(seen) == 1 and torch.equal(seen[0], unique)
    assert unique.numel() < model.aot.vocab_size / 4


def test_bias_uses_hidden_states_keyword_too():
    """Layers called with hidden_states= get the bias as when it is passed positionally."""
    model, _ = build("bert", "aot_fc")
    perturb(model)
    model.eval()
    layer = model.backbone.encoder.layer[0]
    hidden = torch.randn(2, 5, model.hidden_size)
    bias = torch.randn(2, 5, model.aot.num_layers, model.hidden_size)
    model.aot.hooks.bias = bias
    try:
        with torch.no_grad():
            by_keyword = layer(hidden_states=hidden)[0]
            by_position = layer(hidden)[0]
    finally:
        model.aot.hooks.bias = None
    model.aot.hooks.detach()
    with torch.no_grad():
        plain = layer(hidden + bias[:, :, 0])[0]
    assert torch.equal(by_keyword, plain) and torch.equal(by_position, plain)


def test_errors_name_the_option():
    with pytest.raises(ValueError, match="table_dtype.*fp32"):
        METHODS.get("aot_fc")(table_dtype="fp8")
    with pytest.raises(ValueError, match="inference_mode.*on_the_fly"):
        METHODS.get("aot_kron")(inference_mode="lazy")
    with pytest.raises(ValueError, match="activation.*relu"):
        METHODS.get("aot_fc")(activation="swishy")
    with pytest.raises(ValueError, match="rank"):
        METHODS.get("aot_kron")(rank=0)
    with pytest.raises(TypeError):
        METHODS.get("aot_kron")(activation="relu")  # Kronecker has no activation
    model, method = build("bert", "aot_fc")
    with pytest.raises(RuntimeError, match="once"):
        method.apply(model)
    with pytest.raises(ValueError, match="input_ids"):
        model.backbone(inputs_embeds=torch.randn(1, 3, model.hidden_size))


@pytest.mark.parametrize("method_name", AOT)
def test_config_file_builds_the_method(method_name):
    from omegaconf import OmegaConf

    path = REPO_ROOT / "configs" / "method" / f"{method_name}.yaml"
    assert path.read_text().startswith("# python -m aotp.run")
    config = OmegaConf.load(path)
    assert config.name == method_name and float(config.lr) > 0
    method = build_method(OmegaConf.to_container(config))
    assert isinstance(method, METHODS.get(method_name))
    assert method.table_dtype in ("fp32", "fp16", "bf16") and method.inference_mode == "materialized"


@pytest.mark.parametrize("method_name", AOT)
def test_deberta_v2_convolution_reads_the_biased_layer_input(method_name):
    """DeBERTa-v2 with conv_kernel_size (deberta-v2-xlarge): layer 0's ConvLayer reads the embedding output;
    with AoT it reads what layer 0 reads, h_0 + P_0. Zero biases: the backbone exactly."""
    def conv_model(seed=0):
        return make_tiny_task_model("deberta_v2", num_labels=3, seed=seed, conv_kernel_size=3)

    reference = conv_model().eval()
    assert reference.backbone.encoder.conv is not None
    model = conv_model()
    METHODS.get(method_name)(**SMALL[method_name]).apply(model)
    model.eval()
    batch = tiny_batch(model, TEXTS_A, TEXTS_B)
    with torch.no_grad():
        assert torch.equal(reference(**batch), model(**batch))  # zero-initialised AoT = the frozen backbone
    perturb(model)
    seen = {}

    def record(name):
        def hook(module, args, kwargs):
            seen[name] = (kwargs.get("hidden_states") if "hidden_states" in kwargs else args[0]).detach().clone()
        return hook

    encoder = model.backbone.encoder
    handles = [encoder.layer[0].register_forward_pre_hook(record("layer0"), with_kwargs=True),
               encoder.conv.register_forward_pre_hook(record("conv"), with_kwargs=True),
               model.backbone.embeddings.register_forward_hook(lambda m, a, out: seen.update(embeddings=out.detach().clone()))]
    try:  # hooks registered after AoT's run after them: they see the inputs the modules compute with
        with torch.no_grad():
            model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    assert not torch.allclose(seen["conv"], seen["embeddings"])  # the bias changes the convolution's input ...
    assert torch.equal(seen["conv"], seen["layer0"])             # ... to exactly what layer 0 reads


def test_deberta_v2_convolution_keeps_its_bias_in_the_materialised_table(tmp_path):
    model = make_tiny_task_model("deberta_v2", num_labels=3, conv_kernel_size=3)
    method = METHODS.get("aot_fc")(**SMALL["aot_fc"])
    method.apply(model)
    perturb(model)
    model.eval()
    batch = tiny_batch(model, TEXTS_A, TEXTS_B)
    with torch.no_grad():
        expected = model(**batch)
    method.prepare_for_inference(model, tmp_path)  # per-layer gathers from the table, the reused buffers
    assert model.aot.materialized
    with torch.no_grad():
        torch.testing.assert_close(model(**batch), expected, atol=1e-5, rtol=0)


def test_only_deberta_v2_has_a_convolution():
    with pytest.raises(ValueError, match="model.conv_kernel_size=3: only the deberta_v2 family has a convolution"):
        make_tiny_task_model("roberta", conv_kernel_size=3)


def test_save_table_is_not_part_of_the_run_id():
    """Whether a run also writes its table is about its outputs, not what it computes: the same id (a
    finished run is skipped), and the ids of runs recorded before the option existed stay valid."""
    from aotp.results.record import run_id
    from aotp.run import compose, to_container

    def identity(*overrides):
        return run_id(to_container(compose(["model=tiny_bert", "method=aot_fc", *overrides])))

    plain = identity()
    assert identity("method.options.save_table=true") == plain
    assert identity("~method.options.save_table") == plain  # a record from before the option
    assert identity("method.options.table_dtype=fp16") != plain
    with pytest.raises(ValueError, match="save_table.*true or false"):
        METHODS.get("aot_fc")(save_table="yes")
