"""Sweep configs (experiments, grids, specializations, launchers) and the one-GPU-per-worker pool."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from aotp.gpu_pool import NoFreeGpu, claim_gpu, gpu_pool, release_gpu
from aotp.results.record import run_id
from tests.helpers import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"
EXPERIMENTS = sorted((CONFIGS / "experiment").glob("*.yaml"))
PAPER = [p for p in EXPERIMENTS if p.stem.startswith("paper_")]
SPECIALIZATIONS = sorted((CONFIGS / "specialize").rglob("*.yaml"))
ALL_METHODS = ["full_ft", "bitfit", "lora", "adapter_houlsby", "adapter_pfeiffer", "ptuning_v2", "aot_fc", "aot_kron"]
GLUE = ["mnli", "cola", "sst2", "mrpc", "qqp", "stsb", "qnli", "rte", "wnli"]  # MNLI first: warm starts read it
SUPERGLUE = ["boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc"]


def compose(overrides, hydra=False):
    from aotp.run import compose as run_compose

    return run_compose(overrides, return_hydra_config=hydra)


def sweep_values(value: str) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (override,) = OverridesParser.create().parse_overrides([f"key={value}"])
    return list(override.sweep_string_iterator()) if override.is_sweep_override() else [str(override.value())]


def test_every_sweep_config_opens_with_the_command_that_runs_it():
    files = EXPERIMENTS + SPECIALIZATIONS + sorted((CONFIGS / "sweep").glob("*.yaml")) + [
        CONFIGS / "hydra" / "launcher" / "local_gpus.yaml", CONFIGS / "hydra" / "launcher" / "slurm.yaml"]
    assert PAPER and SPECIALIZATIONS
    for path in files:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        # Hydra only reads `# @package` in the leading run of `# @...` lines, so it comes first.
        body = [line for line in lines if not line.startswith("# @")]
        assert re.match(r"# (make reproduce|python -m aotp\.run)", body[0]), (path, body[0])
        if path.parent.name in ("experiment", "sweep") or "specialize" in path.parts:
            assert lines[0] == "# @package _global_", path


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_files_name_themselves(path):
    assert f"experiment_name: {path.stem}\n" in path.read_text()
    assert f"EXPERIMENT={path.stem} " in path.read_text().splitlines()[1]


def test_paper_experiments_cover_every_backbone_benchmark_task_and_method():
    expected = {f"paper_{b}_{m}" for b in ("glue", "superglue")
                for m in ("roberta_base", "roberta_large", "deberta_v3_base", "deberta_v3_large", "deberta_xlarge",
                          "deberta_v2_xlarge")}  # the paper's "DeBERTa-XL": v1 and v2, both
    assert expected <= {p.stem for p in PAPER}
    for path in PAPER:
        cfg = compose([f"experiment={path.stem}"], hydra=True)
        params = {k: sweep_values(str(v)) for k, v in cfg.hydra.sweeper.params.items()}
        benchmark, model = re.match(r"paper_(glue|superglue)_(.+)", path.stem).groups()
        assert cfg.model.name == model
        assert params["task"] == [f"{benchmark}/{t}" for t in (GLUE if benchmark == "glue" else SUPERGLUE)]
        assert params["method"] == ALL_METHODS
        assert params["seed"] == ["1", "2", "3", "4", "5"]
        for task in params["task"]:
            assert (CONFIGS / "task" / f"{task}.yaml").is_file(), task
        for method in params["method"]:
            assert (CONFIGS / "method" / f"{method}.yaml").is_file(), method
            grid = list(cfg.experiment.lr_grid[method])
            # one grid entry per lr_index value, all distinct and positive: no two sweep jobs coincide
            assert len(grid) == len(params["experiment.lr_index"]) and len(set(grid)) == len(grid)
            assert all(isinstance(lr, float) and lr > 0 for lr in grid)
            assert int(cfg.experiment.epochs[method]) > 0


def test_each_sweep_job_gets_its_grid_learning_rate_and_a_distinct_run_id():
    from aotp.methods import METHODS

    ids = {}
    for method in ALL_METHODS:
        METHODS.get(method)  # registered
        for index in (0, 1, 2):
            # deberta_v3_base has no per-(method, model, task) specialization, so the experiment's epochs apply
            cfg = compose(["experiment=paper_glue_deberta_v3_base", f"method={method}", "task=glue/cola",
                           f"experiment.lr_index={index}", "seed=1"])
            config = OmegaConf.to_container(cfg, resolve=True)
            assert config["method"]["lr"] == config["experiment"]["lr_grid"][method][index]
            assert config["trainer"]["epochs"] == config["experiment"]["epochs"][method]
            ids[(method, index)] = run_id(config)
    assert len(set(ids.values())) == len(ids)
    # the grid bookkeeping (experiment.*) is not part of the run id; the resulting lr is
    same = compose(["model=deberta_v3_base", "method=lora", "task=glue/cola", "seed=1", "trainer.epochs=20",
                    f"method.lr={OmegaConf.to_container(compose(['experiment=paper_glue_deberta_v3_base'])).get('experiment')['lr_grid']['lora'][1]}"])
    assert run_id(OmegaConf.to_container(same, resolve=True)) == ids[("lora", 1)]


def test_command_line_narrows_a_sweep():
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = compose(["experiment=paper_superglue_roberta_large"], hydra=True)
    arguments = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()] + ["task=superglue/rte", "seed=1,2"]
    (batch,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(arguments), None)
    assert len(batch) == len(ALL_METHODS) * 3 * 2
    assert all("task=superglue/rte" in job for job in batch)


def _specialized(path: Path) -> tuple[str, list[str]]:
    method, model, benchmark, task = path.relative_to(CONFIGS / "specialize").with_suffix("").parts
    return f"{method}/{model}/{benchmark}/{task}", [f"method={method}", f"model={model}", f"task={benchmark}/{task}"]


def method_of(name: str) -> str:
    return name.split("/")[0]


def _flatten(node, prefix=""):
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def _default_line_present() -> bool:
    return "optional specialize: ${method}/${model}/${task}" in (CONFIGS / "config.yaml").read_text()


@pytest.mark.parametrize("path", SPECIALIZATIONS, ids=lambda p: "/".join(p.relative_to(CONFIGS / "specialize").parts))
def test_specialization_only_changes_existing_keys_and_never_the_lr(path):
    name, base = _specialized(path)
    text = path.read_text()
    assert "Source:" in text and not re.search(r"^\s+lr:", text, re.M)
    experiment = ["experiment=paper_glue_roberta_base"]
    if _default_line_present():  # selected automatically: compare with a backbone that has no specialization
        method, model, benchmark, task = name.split("/")
        other = next(m.stem for m in sorted((CONFIGS / "model").glob("*.yaml")) if m.stem != model
                     and "source: hub" in m.read_text() and not (CONFIGS / "specialize" / method / m.stem / benchmark / f"{task}.yaml").exists())
        plain = compose([f"method={method}", f"model={other}", f"task={benchmark}/{task}"] + experiment)
        special = compose(base + experiment)
    else:
        plain = compose(base + experiment)
        special = compose(base + experiment + [f"+specialize={name}"])
    plain = _flatten(OmegaConf.to_container(plain, resolve=True))
    special = _flatten(OmegaConf.to_container(special, resolve=True))
    # a typo would add a key (model.* differs between backbones of other families: their architectures)
    special_keys = {k for k in special if not k.startswith("model.")}
    plain_keys = {k for k in plain if not k.startswith("model.")}
    assert special_keys == plain_keys, special_keys ^ plain_keys
    changed = {k for k in plain_keys if plain[k] != special[k]}
    assert changed, name
    # method.lr moves only with this method's grid (same length: one entry per lr_index), never on its own
    grid = f"experiment.lr_grid.{method_of(name)}"
    assert "method.lr" not in changed or (grid in changed and len(special[grid]) == len(plain[grid])), changed


def test_specializations_are_selected_automatically():
    if not _default_line_present():
        pytest.skip("configs/config.yaml lacks `- optional specialize: ${method}/${model}/${task}` (see "
                    "configs/specialize/README.md); until then specializations are applied with +specialize=...")
    cfg = compose(["method=lora", "model=roberta_base", "task=glue/rte"])
    assert cfg.trainer.epochs == 80 and cfg.method.weight_decay == 0.1
    assert compose(["method=lora", "model=roberta_base", "task=glue/sst2"]).trainer.epochs != 80


def test_local_gpus_launcher_is_joblib_with_one_worker_per_gpu(monkeypatch):
    monkeypatch.setenv("AOTP_NUM_GPUS", "3")
    cfg = compose(["hydra/launcher=local_gpus"], hydra=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("JoblibLauncher") and launcher["n_jobs"] == 3 and launcher["batch_size"] == "1"
    callback = OmegaConf.to_container(cfg.hydra.callbacks.pin_gpu, resolve=True)
    assert callback["_target_"] == "aotp.gpu_pool.PinGpuCallback" and callback["num_gpus"] == 3
    from hydra.utils import instantiate

    pin = instantiate(cfg.hydra.callbacks.pin_gpu)
    assert pin.num_gpus == 3 and pin.gpus is None


def test_slurm_launcher_writes_the_sbatch_options(tmp_path, monkeypatch):
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    cfg = compose(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=90",
                   "hydra.launcher.account=lab"], hydra=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert params["_target_"].endswith("SlurmLauncher") and params["max_num_timeout"] > 0
    # the same translation as hydra_submitit_launcher's BaseSubmititLauncher.launch
    executor = submitit.AutoExecutor(folder=str(tmp_path / "submitit"), cluster="slurm",
                                     slurm_max_num_timeout=params["max_num_timeout"])
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{(k if k in base else f"slurm_{k}"): v for k, v in params.items()
                                  if k not in ("submitit_folder", "max_num_timeout", "_target_", "name")})
    script = executor._executor._make_submission_file_text("python -m aotp.run", "uid")
    for line in ("--partition=gpu", "--time=90", "--gpus-per-node=1", "--account=lab", "--cpus-per-task=8",
                 "--signal=USR2@120"):
        assert f"#SBATCH {line}" in script, line


def test_makefile_reproduce_runs_the_experiment_with_the_launcher():
    result = subprocess.run(["make", "-n", "reproduce", "EXPERIMENT=smoke_tiny", "LAUNCHER=local_gpus", "NUM_GPUS=2",
                             "ARGS=seed=1"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert ("-m aotp.run -m experiment=smoke_tiny hydra/launcher=local_gpus hydra.launcher.n_jobs=2 paths.results=results/runs seed=1"
            in result.stdout), result.stdout
    missing = subprocess.run(["make", "-n", "reproduce"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert "EXPERIMENT=<name>" in missing.stdout + missing.stderr
    tables = subprocess.run(["make", "-n", "tables"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert "-m aotp.results.aggregate results=results/runs output=results/tables" in tables.stdout


def test_makefile_packed_reproduce_keeps_the_launcher_and_budgets_k_checkpoints_per_gpu():
    """PACK=K with LAUNCHER=local_gpus runs the packed sweep with the local_gpus launcher (one job per GPU) and
    budgets K x NUM_GPUS checkpoints at once; with the basic launcher K."""
    def dry(*extra):
        result = subprocess.run(["make", "-n", "reproduce", "EXPERIMENT=smoke_tiny", "PACK=4", *extra], cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    gpus = dry("LAUNCHER=local_gpus", "NUM_GPUS=2")
    assert ("-m aotp.sweep_pack pack=4 experiment=smoke_tiny hydra/launcher=local_gpus hydra.launcher.n_jobs=2 "
            "paths.results=results/runs") in gpus
    assert "budget=true check_disk=results/runs jobs=8 " in gpus
    assert "budget=true check_disk=results/runs jobs=4 experiment=smoke_tiny hydra/launcher=basic " in dry()


# ----------------------------------------------------------------------------------------- GPU pool


def test_gpu_pool_precedence():
    assert gpu_pool([2, "5"], 8, environ={"CUDA_VISIBLE_DEVICES": "0,1"}) == ["2", "5"]
    assert gpu_pool(None, 8, environ={"CUDA_VISIBLE_DEVICES": "3, 1"}) == ["3", "1"]
    assert gpu_pool(None, 2, environ={}) == ["0", "1"]
    with pytest.raises(ValueError, match="no GPU pool"):
        gpu_pool(None, None, environ={})
    with pytest.raises(ValueError, match="twice"):
        gpu_pool([1, 1], None, environ={})


CLAIMER = """
import sys
from aotp.gpu_pool import claim_gpu, NoFreeGpu
try:
    print(claim_gpu(sys.argv[1].split(","), sys.argv[2], wait_seconds=float(sys.argv[3]), poll_seconds=0.05), flush=True)
except NoFreeGpu as error:
    print("none:", error, flush=True)
    sys.exit(3)
sys.stdin.readline()  # hold the GPU until told to exit
"""


def test_workers_get_distinct_gpus_and_a_dead_workers_gpu_is_reused(tmp_path):
    locks = tmp_path / "locks"

    def start(wait="0"):
        return subprocess.Popen([sys.executable, "-c", CLAIMER, "4,6", str(locks), wait], cwd=REPO_ROOT, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    first, second = start(), start()
    gpu_first, gpu_second = first.stdout.readline().strip(), second.stdout.readline().strip()
    assert {gpu_first, gpu_second} == {"4", "6"}
    third = start()
    out, _ = third.communicate(timeout=60)
    assert third.returncode == 3 and "all GPUs of the pool ['4', '6'] are locked" in out
    waiting = start(wait="60")  # waits for a GPU and takes the one the first worker frees when it exits
    first.stdin.write("\n")
    first.stdin.flush()
    first.wait(timeout=60)
    assert waiting.stdout.readline().strip() == gpu_first
    for process in (second, waiting):
        process.stdin.write("\n")
        process.stdin.flush()
        process.wait(timeout=60)


def test_claim_is_per_process_and_sets_cuda_visible_devices(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    release_gpu()
    try:
        assert claim_gpu(["1", "0"], tmp_path) == "1" and os.environ["CUDA_VISIBLE_DEVICES"] == "1"
        assert claim_gpu(["0"], tmp_path) == "1"  # a worker keeps its GPU: CUDA cannot be re-pinned
        assert (tmp_path / "gpu1.lock").read_text().strip() == str(os.getpid())
    finally:
        release_gpu()
    with pytest.raises(NoFreeGpu):
        holder = subprocess.Popen([sys.executable, "-c", CLAIMER, "1", str(tmp_path), "0"], cwd=REPO_ROOT, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert holder.stdout.readline().strip() == "1"
            claim_gpu(["1"], tmp_path, wait_seconds=0)
        finally:
            holder.stdin.write("\n")
            holder.stdin.flush()
            holder.wait(timeout=60)
            release_gpu()


def test_a_task_field_overridden_on_the_command_line_enters_the_run_id():
    from aotp.results.record import semantic_config

    base = OmegaConf.to_container(compose(["model=tiny_bert", "task=superglue/multirc"]), resolve=True)
    assert "overrides" not in semantic_config(base)["task"]  # the shipped file is named by its version
    changed = OmegaConf.to_container(compose(["model=tiny_bert", "task=superglue/multirc",
                                              "task.format_options.evidence_words=75"]), resolve=True)
    assert semantic_config(changed)["task"]["overrides"] == {
        "format_options": {"question_answer_template": "{question} {answer}", "evidence_words": 75}}
    assert run_id(changed) != run_id(base)
    # where the data come from is not part of the identity
    moved = OmegaConf.to_container(compose(["model=tiny_bert", "task=superglue/multirc",
                                            "task.local.dir=elsewhere/MultiRC"]), resolve=True)
    assert run_id(moved) == run_id(base)


def test_keys_added_for_recipes_and_force_leave_earlier_run_ids_unchanged():
    config = OmegaConf.to_container(compose(["model=tiny_bert", "task=glue/rte"]), resolve=True)
    # the config as it was before trainer.adam_betas/adam_eps and method.init_from existed
    before = {**config, "trainer": {k: v for k, v in config["trainer"].items() if k not in ("adam_betas", "adam_eps")},
              "method": {k: v for k, v in config["method"].items() if k != "init_from"}}
    assert run_id(config) == run_id(before)
    for key, value in (("trainer", {"adam_eps": 1e-6}), ("trainer", {"adam_betas": [0.9, 0.98]}),
                       ("method", {"init_from": "task:glue/mnli"})):
        assert run_id({**config, key: {**config[key], **value}}) != run_id(config), value
    # force=true reruns the same run (same id, same directory), it is not another run
    assert run_id({**config, "force": True}) == run_id(config)
