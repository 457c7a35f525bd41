"""The demo's whole path (three methods, table, plot, two AoT packs in one mixed batch) on a tiny model."""

import re

from aotp import demo


def test_demo_runs_end_to_end_on_a_tiny_backbone(tmp_path, capsys):
    demo.main(["model=tiny_bert", "max_steps=3", f"output={tmp_path}"])
    out = capsys.readouterr().out
    table = (tmp_path / "comparison.md").read_text()
    for method in demo.DEMO_METHODS:
        assert re.search(rf"\| {method} \| 0\.\d{{4}} \| [\d,]+ \| [\d.]+% \|", table), table
    assert (tmp_path / "comparison.png").stat().st_size > 1000
    assert "One frozen backbone, two AoT task packs (SST-2, CoLA), one mixed batch:" in out
    assert out.count("[sst2]") == 3 and out.count("[cola]") == 3
    difference = float(re.search(r"per-task batches: ([0-9.e+-]+)", out).group(1))
    assert difference <= 1e-5
