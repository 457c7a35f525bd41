"""Every published recipe, as configs/recipes.yaml cites it, is what the paper experiments compose.

configs/recipes.yaml lists each cited value with its source (repo, path, line); EXPECTED below says which
harness setting each cited parameter becomes. Every run of every paper experiment (configs/experiment/paper_*)
whose (method, backbone, task) has a recipe is composed and checked; a cited value that no rule checks and no
`differs` entry explains fails the test, so a new citation cannot be silently ignored.
"""

from __future__ import annotations

import re

import pytest
import yaml
from omegaconf import OmegaConf

from tests.helpers import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"
RECIPES = yaml.safe_load((CONFIGS / "recipes.yaml").read_text())
PAPER = sorted(p.stem for p in (CONFIGS / "experiment").glob("paper_*.yaml"))
MIRROR_REPOS = {"microsoft/LoRA", "THUDM/P-tuning-v2", "facebookresearch/fairseq", "benzakenelad/BitFit"}


def compose(overrides, hydra=False):
    from aotp.run import compose as run_compose

    return run_compose(overrides, return_hydra_config=hydra)


def sweep_values(value: str) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (override,) = OverridesParser.create().parse_overrides([f"key={value}"])
    return list(override.sweep_string_iterator()) if override.is_sweep_override() else [str(override.value())]


def paper_runs() -> dict[tuple[str, str, str], str]:
    """(method, model, benchmark/task) of every run of every paper experiment -> the first experiment composing it."""
    runs = {}
    for experiment in PAPER:
        cfg = compose([f"experiment={experiment}"], hydra=True)
        params = {k: sweep_values(str(v)) for k, v in cfg.hydra.sweeper.params.items()}
        for method in params["method"]:
            for task in params["task"]:
                runs.setdefault((method, cfg.model.name, task), experiment)
    return runs


RUNS = paper_runs()


def _hidden_size(cfg) -> int:
    return int(cfg.model.architecture.hidden_size)


def expected_settings(cited: dict, cfg) -> tuple[dict[str, object], set[str]]:
    """What the cited values say the composed config must hold: {config key: value}, and the cited names used."""
    value = {name: entry["value"] for name, entry in cited.items()}
    expected, used = {}, set()

    def rule(names, key, result):
        if all(n in value for n in names):
            expected[key] = result(*(value[n] for n in names))
            used.update(names)

    # one device per run: the source's GPUs become accumulation steps (effective batch = batch x accumulation)
    rule(["num_gpus", "per_device_train_batch_size"], "effective_batch", lambda g, b: g * b)
    rule(["distributed_world_size", "batch_size"], "effective_batch", lambda g, b: g * b)
    if "batch_size" in value and "distributed_world_size" not in value:
        rule(["batch_size"], "effective_batch", lambda b: b)
    rule(["per_device_train_batch_size"], "trainer.batch_size", lambda b: b)
    for name in ("learning_rate", "lr"):
        rule([name], "lr_in_grid", lambda lr: lr)
    # fairseq counts the same 10 epochs twice: max_epoch and max_update (updates of 10 epochs of the full training set)
    rule(["max_epoch", "max_update"], "trainer.epochs", lambda e, _updates: e)
    for name in ("num_train_epochs", "epochs"):
        rule([name], "trainer.epochs", lambda e: e)
    for name in ("max_seq_length", "max_positions", "max_sequence_len"):
        rule([name], "data.max_length", lambda n: n)
    rule(["warmup_ratio"], "trainer.warmup_ratio", lambda w: w)
    rule(["warmup_updates"], "trainer.warmup_steps", lambda w: w)
    rule(["weight_decay"], "method.weight_decay", lambda w: w)
    rule(["adam_betas"], "trainer.adam_betas", lambda b: list(b))
    rule(["adam_eps"], "trainer.adam_eps", lambda e: e)
    rule(["clip_norm"], "trainer.max_grad_norm", lambda c: None if c == 0 else c)
    rule(["max_grad_norm"], "trainer.max_grad_norm", lambda c: c)
    rule(["lora_r"], "method.options.rank", lambda r: r)
    rule(["lora_alpha"], "method.options.alpha", lambda a: a)
    # --lora_path <roberta_*_mnli_lora.bin>: the run starts from this run's config trained on MNLI
    rule(["lora_path"], "method.init_from", lambda p: "task:glue/mnli" if "mnli" in p else p)
    rule(["pre_seq_len"], "method.options.prefix_length", lambda p: p)
    rule(["hidden_dropout_prob"], "method.options.dropout", lambda p: p)
    rule(["prefix_projection"], "method.options.reparametrize", lambda p: p)  # the MLP over the prefix
    rule(["adapter_size"], "method.options.reduction_factor", lambda m: _hidden_size(cfg) / m)
    return expected, used


def check(cfg, expected: dict) -> list[str]:
    problems = []
    for key, want in expected.items():
        if key == "effective_batch":
            got = int(cfg.trainer.batch_size) * int(cfg.trainer.gradient_accumulation_steps)
        elif key == "lr_in_grid":
            grid = [float(lr) for lr in cfg.experiment.lr_grid[cfg.method.name]]
            if not any(abs(lr - want) < 1e-12 for lr in grid):
                problems.append(f"lr {want} not in the grid {grid}")
                continue
            # the sweep job at that grid index trains at exactly this lr
            cfg.experiment.lr_index = next(i for i, lr in enumerate(grid) if abs(lr - want) < 1e-12)
            got = float(cfg.method.lr)
            want = float(want)
        else:
            got = OmegaConf.select(cfg, key)
            got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
        if got != want and not (isinstance(got, float) and isinstance(want, (int, float)) and abs(got - want) < 1e-12):
            problems.append(f"{key}: composed {got!r}, recipe {want!r}")
    return problems


def test_recipe_file_names_its_sources_and_every_value_a_line():
    assert set(RECIPES["sources"]) == MIRROR_REPOS
    assert all(re.fullmatch(r"[0-9a-f]{40}", sha) for sha in RECIPES["sources"].values())
    for key, recipe in RECIPES["recipes"].items():
        assert recipe["source"]["repo"] in MIRROR_REPOS, key
        for name, entry in recipe["cited"].items():
            assert set(entry) <= {"value", "line", "path"}, (key, name)
            # a value without a line is a framework default, and the recipe's notes say so
            assert isinstance(entry["line"], int) or any("default" in note for note in recipe.get("notes", [])), (key, name)


def test_every_recipe_is_a_paper_run_and_every_specialization_has_a_recipe():
    specialized = {"/".join(p.relative_to(CONFIGS / "specialize").with_suffix("").parts)
                   for p in (CONFIGS / "specialize").rglob("*.yaml")}
    recipes = set(RECIPES["recipes"])
    assert specialized == recipes, specialized ^ recipes
    composed = {f"{m}/{model}/{task}" for m, model, task in RUNS}
    assert recipes <= composed, recipes - composed


@pytest.mark.parametrize("key", sorted(RECIPES["recipes"]))
def test_paper_run_composes_to_its_published_recipe(key):
    recipe = RECIPES["recipes"][key]
    method, model, benchmark, task = key.split("/")
    experiment = RUNS[(method, model, f"{benchmark}/{task}")]
    cfg = compose([f"experiment={experiment}", f"method={method}", f"task={benchmark}/{task}", "seed=1",
                   "experiment.lr_index=0"])
    expected, used = expected_settings(recipe["cited"], cfg)
    unexplained = set(recipe["cited"]) - used - set(recipe.get("differs", {}))
    assert not unexplained, f"{key}: cited values with no check and no `differs` entry: {sorted(unexplained)}"
    assert check(cfg, expected) == [], key


def test_paper_runs_without_a_recipe_keep_the_sweep_defaults():
    # a run with no specializing file composes to the experiment's general table, e.g. P-Tuning v2 without warmup
    cfg = compose(["experiment=paper_glue_roberta_large", "method=ptuning_v2", "task=glue/cola", "seed=1"])
    assert (cfg.trainer.warmup_ratio, cfg.trainer.epochs, cfg.method.options.prefix_length) == (0.0, 20, 8)
    assert cfg.method.init_from is None and list(cfg.trainer.adam_betas) == [0.9, 0.999]


def test_the_recipes_named_in_issue_14():
    rte = compose(["experiment=paper_glue_roberta_base", "method=lora", "task=glue/rte"])
    assert rte.trainer.batch_size * rte.trainer.gradient_accumulation_steps == 256 == 32 * 8
    assert (rte.trainer.epochs, rte.method.init_from) == (80, "task:glue/mnli")
    copa = compose(["experiment=paper_superglue_roberta_large", "method=ptuning_v2", "task=superglue/copa"])
    assert 9e-3 in list(copa.experiment.lr_grid.ptuning_v2)
    assert (copa.method.options.prefix_length, copa.trainer.epochs, copa.trainer.batch_size,
            copa.trainer.gradient_accumulation_steps, copa.trainer.warmup_ratio) == (8, 120, 16, 1, 0.0)
    wic = compose(["experiment=paper_superglue_roberta_large", "method=ptuning_v2", "task=superglue/wic"])
    assert (wic.method.options.prefix_length, wic.trainer.epochs, wic.trainer.batch_size) == (8, 50, 32)
    wsc = compose(["experiment=paper_superglue_roberta_large", "method=ptuning_v2", "task=superglue/wsc"])
    assert (wsc.method.options.prefix_length, wsc.trainer.epochs, wsc.trainer.batch_size) == (8, 10, 16)
    houlsby = compose(["experiment=paper_glue_roberta_large", "method=adapter_houlsby", "task=glue/mnli"])
    pfeiffer = compose(["experiment=paper_glue_roberta_large", "method=adapter_pfeiffer", "task=glue/mnli"])
    assert (1024 // houlsby.method.options.reduction_factor, 1024 // pfeiffer.method.options.reduction_factor) == (8, 16)
    full = compose(["experiment=paper_glue_roberta_large", "method=full_ft", "task=glue/sst2"])
    assert (list(full.trainer.adam_betas), full.trainer.adam_eps, full.trainer.max_grad_norm) == ([0.9, 0.98], 1e-6, None)


def test_published_figures_that_start_from_mnli_say_so_and_their_recipes_warm_start():
    references = yaml.safe_load((REPO_ROOT / "results" / "references.yaml").read_text())["references"]
    said = {f"{r['method']}/{r['model']}/{r['benchmark']}/{task}": number.get("starts_from")
            for r in references for task, number in r["tasks"].items() if isinstance(number, dict)}
    warm = {key for key, recipe in RECIPES["recipes"].items() if "lora_path" in recipe["cited"]}
    assert {key for key, source in said.items() if source} == warm & set(said) == {
        "lora/roberta_base/glue/rte", "lora/roberta_base/glue/mrpc", "lora/roberta_base/glue/stsb"}
    for key in warm:
        method, model, benchmark, task = key.split("/")
        cfg = compose([f"method={method}", f"model={model}", f"task={benchmark}/{task}"])
        assert cfg.method.init_from == "task:glue/mnli" and said.get(key) in (None, "glue/mnli"), key


def test_a_cited_value_the_config_does_not_hold_is_reported():
    cfg = compose(["experiment=paper_glue_roberta_base", "method=lora", "task=glue/rte",
                   "trainer.gradient_accumulation_steps=1", "trainer.epochs=20"])
    expected, _ = expected_settings(RECIPES["recipes"]["lora/roberta_base/glue/rte"]["cited"], cfg)
    assert check(cfg, expected) == ["effective_batch: composed 32, recipe 256", "trainer.epochs: composed 20, recipe 80"]


def test_a_sequential_sweep_trains_the_mnli_source_before_the_runs_that_start_from_it():
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = compose(["experiment=paper_glue_roberta_base"], hydra=True)
    arguments = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()] + ["method=lora", "seed=1"]
    (jobs,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(arguments), None)
    position = {tuple(sorted(job)): i for i, job in enumerate(jobs)}
    for job in jobs:
        if "task=glue/rte" in job:
            source = tuple(sorted(["task=glue/mnli" if a == "task=glue/rte" else a for a in job]))
            assert position[source] < position[tuple(sorted(job))]
