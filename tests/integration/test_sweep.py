"""A real sweep: submitit local launcher, one run made to fail, a rerun that trains nothing, the tables.

2 tasks x 2 methods x 2 seeds of the shipped ``smoke_tiny`` experiment on the tiny BERT, narrowed on the
command line. One job is made to crash in the forward pass (400 tokens overflow the tiny model's 254
positions) through an interpolation that gives only (full_ft, RTE, seed 2) ``data.max_length=400``.
The rerun goes through the other parallel launcher, ``local_gpus`` (joblib, 2 workers, fake GPU ids on
this CPU machine), which also checks that each worker is pinned to its own GPU id.
"""

from __future__ import annotations

import json
import re

from aotp.results.aggregate import aggregate
from tests.helpers import REPO_ROOT, run_cli

FAIL_ONE = ["data.max_length='${oc.select:\"experiment.fail.${method.name}_${task.name}_${seed}\",32}'",
            "+experiment.fail.full_ft_rte_2=400"]


def sweep_args(tmp_path, shared_data, launcher: list[str], sweep_dir: str) -> list[str]:
    return ["-m", "experiment=smoke_tiny", *launcher, f"hydra.sweep.dir={tmp_path / sweep_dir}",
            "task=glue/rte,glue/sst2", "method=full_ft,bitfit", "seed=1,2", "experiment.lr_index=0",
            f"data.root={shared_data}", f"paths.results={tmp_path / 'runs'}", f"paths.cache={tmp_path / 'cache'}",
            "trainer.max_steps=3", "data.max_train_samples=32", "data.max_eval_samples=16", "trainer.device=cpu",
            *FAIL_ONE]


def records(tmp_path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted((tmp_path / "runs").glob("*/result.json"))}


def test_sweep_records_failure_skips_finished_runs_and_aggregates(shared_data, tmp_path):
    first = run_cli(sweep_args(tmp_path, shared_data, ["hydra/launcher=submitit_local"], "sweep1"), timeout=900)
    assert first.returncode == 0, first.stderr[-4000:]  # a failed run does not stop the sweep
    assert (tmp_path / "sweep1" / ".submitit").is_dir()  # it really went through submitit
    done = records(tmp_path)
    assert len(done) == 8, sorted(done)
    failed = {name: r for name, r in done.items() if r["status"] == "failed"}
    assert list(failed) == [n for n in done if n.startswith("glue-rte__tiny_bert__full_ft__seed2__")]
    (bad,) = failed.values()
    assert "RuntimeError" in bad["error"] and "Traceback" in bad["traceback"]
    assert bad["config"]["data"]["max_length"] == 400
    succeeded = {n: r for n, r in done.items() if r["status"] == "success"}
    assert len(succeeded) == 7 and all(r["config"]["data"]["max_length"] == 32 for r in succeeded.values())
    assert {(r["method"], r["config"]["method"]["lr"]) for r in done.values()} == {("full_ft", 1e-5), ("bitfit", 1e-4)}
    before = {p: p.read_bytes() for p in (tmp_path / "runs").glob("*/result.json")}

    # Rerun: nothing that succeeded is retrained (records byte-identical); the failed run is retried.
    pool = ["hydra/launcher=local_gpus", "hydra.launcher.n_jobs=2", "hydra.callbacks.pin_gpu.gpus=[7,9]",
            f"hydra.callbacks.pin_gpu.lock_dir={tmp_path / 'locks'}"]
    second = run_cli(sweep_args(tmp_path, shared_data, pool, "sweep2"), timeout=900)
    assert second.returncode == 0, second.stderr[-4000:]
    output = second.stdout + second.stderr
    assert output.count("Skipping ") == 7 and output.count("already succeeded") == 7
    for path, content in before.items():
        if path.parent.name in failed:
            continue
        assert path.read_bytes() == content, path
    again = records(tmp_path)
    assert set(again) == set(done) and [n for n, r in again.items() if r["status"] == "failed"] == list(failed)
    # each joblib worker pinned itself to one GPU id of the pool, never two workers to one id
    pins = dict(re.findall(r"worker pid (\d+) pinned to GPU (\d+)", output))
    assert sorted(pins.values()) == ["7", "9"] and len(pins) == 2
    assert output.count("keeps GPU") == 8 - 2

    # Tables from these records: the failed seed is counted, never averaged over.
    result = aggregate(tmp_path / "runs", tmp_path / "tables", config_dir=REPO_ROOT / "configs")
    (table,) = result.tables
    assert (table.benchmark, table.model, table.methods, table.tasks) == ("glue", "tiny_bert", ["full_ft", "bitfit"],
                                                                          ["sst2", "rte"])
    rte = table.cells[("full_ft", "rte")]
    assert rte.seeds_ok == 1 and " (1/2)" in rte.text() and not rte.complete
    assert all(table.cells[(m, t)].complete for m, t in [("full_ft", "sst2"), ("bitfit", "sst2"), ("bitfit", "rte")])
    assert table.macro("full_ft")[0] is None and table.macro("bitfit")[0] is not None
    assert any("1 failed run(s)" in w for w in result.warnings)
    assert (tmp_path / "tables" / "glue_tiny_bert.md").is_file() and (tmp_path / "tables" / "macro_glue.png").is_file()
