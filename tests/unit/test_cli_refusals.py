"""Every aotp command refuses bad input with one line on stderr and exit code 2 (no traceback)."""

from __future__ import annotations

import json

import pytest

from aotp.cli import ArgumentParser, ConfigError, guarded


def refused(capsys, main, argv) -> str:
    """Run ``main(argv)``, expect exit code 2; return the one stderr line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def test_guarded_turns_refusals_and_message_exits_into_one_line(capsys):
    @guarded
    def bad_config(argv):
        raise ConfigError("trainer.batch_size must be\na positive integer")

    @guarded
    def message_exit(argv):
        raise SystemExit("no such\n  file")

    @guarded
    def bug(argv):
        raise RuntimeError("a bug keeps its traceback")

    assert refused(capsys, bad_config, []) == "Error: trainer.batch_size must be a positive integer"
    assert refused(capsys, message_exit, []) == "Error: no such file"
    with pytest.raises(RuntimeError):
        bug([])


def test_argument_parser_errors_are_one_line(capsys):
    parser = ArgumentParser(prog="tool")
    parser.add_argument("--n", type=int)
    assert refused(capsys, parser.parse_args, ["--n", "x"]) == "Error: tool: argument --n: invalid int value: 'x' (see --help)"


def test_inference_refusals(capsys, tmp_path):
    from aotp.inference.__main__ import main

    assert "result.json not found" in refused(capsys, main, [f"run={tmp_path / 'none'}"])
    assert "batch_size='0': expected a positive integer" in refused(capsys, main, ["run=x", "batch_size=0"])
    assert "device='tpu'; valid: auto, cpu, cuda, mps" in refused(capsys, main, ["run=x", "device=tpu"])
    assert f"input={tmp_path}/in.jsonl: no such file" in refused(capsys, main, ["run=x", f"input={tmp_path}/in.jsonl"])
    assert "aotp-inference: missing run=" in refused(capsys, main, ["batch_size=2"])
    record = {"status": "failed", "config": {}}
    (tmp_path / "result.json").write_text(json.dumps(record))
    assert "has status 'failed'; only a finished (success) run can be served" in refused(capsys, main, [f"run={tmp_path}"])


def test_key_value_parser_lists_nulls_bools_and_deprecated_flags(capsys):
    from aotp.cli import KeyValueParser, Option, UsageError

    parser = KeyValueParser("tool", "A tool.", [
        Option("run", required=True, many=True, flags=("--runs",)),
        Option("batch_size", default=32, kind=int, minimum=1),
        Option("limit", default=5, kind=int, nullable=True),
        Option("plots", default=True, kind=bool, flags=("--no-plots",), flag_value=False),
        Option("output", default="out", flags=("--out",)),
    ], examples=["tool run=a"])
    defaults = {"batch_size": 32, "limit": 5, "plots": True, "output": "out"}
    assert parser.parse(["run=[a,b]", "run=c"]) == ({"run": ["a", "b", "c"], **defaults}, [])
    assert parser.parse(["run=a", "limit=null", "plots=false", "batch_size=8"]) == (
        {"run": ["a"], "batch_size": 8, "limit": None, "plots": False, "output": "out"}, [])
    assert capsys.readouterr().err == ""
    assert parser.parse(["--runs", "a", "b", "--batch-size", "4", "--no-plots", "--out=x"]) == (
        {"run": ["a", "b"], "batch_size": 4, "plots": False, "output": "x", "limit": 5}, [])
    assert capsys.readouterr().err.splitlines() == [
        "tool: --runs is deprecated; use run=[a,b]", "tool: --batch-size is deprecated; use batch_size=4",
        "tool: --no-plots is deprecated; use plots=false", "tool: --out is deprecated; use output=x"]
    for argv, message in ((["run=a", "bogus=1"], "tool: unknown argument 'bogus'; valid: run, batch_size, limit, plots, "
                                                "output. usage: tool run=[VALUE,...] [batch_size=N]"),
                          (["run=a", "--bogus"], "tool: unknown argument '--bogus'; arguments are key=value"),
                          (["a"], "tool: argument 'a' is not key=value"),
                          (["batch_size=2"], "tool: missing run="),
                          (["run=a", "plots=maybe"], "plots='maybe': expected true or false"),
                          (["run=a", "batch_size=0"], "batch_size='0': expected a positive integer")):
        with pytest.raises(UsageError) as error:
            parser.parse(argv)
        assert str(error.value).startswith(message), (argv, str(error.value))
    with pytest.raises(SystemExit) as exit_info:
        parser.parse(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: tool run=[VALUE,...] [batch_size=N] [limit=N] [plots=true|false] [output=VALUE]\n")
    assert "  batch_size=N              (default: 32)" in text and "examples:\n  tool run=a" in text


def test_inference_input_lines_are_refused_by_line():
    from aotp.cli import UsageError
    from aotp.inference.__main__ import read_records

    with pytest.raises(UsageError, match=r"in.jsonl:2: truncated JSON: the line ends at column 15"):
        list(read_records(iter(['{"task": "rte"}\n', '{"task": "rte"\n']), "in.jsonl", ["rte"]))
    with pytest.raises(UsageError, match=r"in.jsonl:1: unknown task 'sst'; loaded tasks: rte"):
        list(read_records(iter(['{"task": "sst"}\n']), "in.jsonl", ["rte"]))


def test_evaluate_and_predict_refusals(capsys, tmp_path):
    from aotp.evaluate import main as evaluate_main
    from aotp.predict import main as predict_main

    assert evaluate_main([f"run={tmp_path}"]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    assert evaluate_main([f"run={tmp_path}", "batch_size=abc"]) == 2
    assert capsys.readouterr().err == "Error: batch_size='abc': expected a positive integer\n"
    assert predict_main([f"run={tmp_path}", "device=tpu"]) == 2
    assert capsys.readouterr().err.startswith("Error: device='tpu'; valid: auto, cpu, cuda, mps")


def test_estimate_refusals(capsys):
    from aotp.estimate import main

    assert "Unknown experiment 'smoke_tiy'" in refused(capsys, main, ["experiment=smoke_tiy"])
    assert "repeats='0': expected a positive integer" in refused(capsys, main, ["experiment=smoke_tiny", "repeats=0"])
    assert "expected experiment=<name>" in refused(capsys, main, ["method=lora"])


def test_aggregate_refusals(capsys, tmp_path):
    from aotp.results.aggregate import main

    assert f"results={tmp_path / 'none'}: no such folder" in refused(capsys, main, [f"results={tmp_path / 'none'}"])
    assert "aotp-tables: unknown argument '--bogus'; arguments are key=value: results, output" in refused(
        capsys, main, ["--bogus"])


def test_run_help_describes_aotp_and_lists_the_user_facing_groups_only(capsys, monkeypatch):
    import sys

    from aotp.run import cli

    monkeypatch.setattr(sys, "argv", ["aotp-run", "--help"])
    cli()
    text = capsys.readouterr().out
    assert text.startswith("aotp-run: train and evaluate one aotp run, or a sweep of them with -m.\n")
    assert "  aotp-run model=tiny_bert task=glue/rte trainer.max_steps=2 data.root=tests/fixtures/data" in text
    groups = [line.split(":")[0].strip() for line in text.split("config groups")[1].split("\n\n")[0].splitlines()[1:]
              if not line.startswith(" " * 18)]
    assert groups == ["model", "method", "task", "experiment", "trainer", "data", "logger", "hydra/launcher"]
    assert "specialize" not in text and "[minilm]" in text and "glue/rte" in text and "--hydra-help" in text


def test_bench_arguments_and_their_old_flags(capsys):
    from aotp.bench.__main__ import parse_args

    new = parse_args(["batch_sizes=[32]", "seq_lens=[128]", "tasks=[]", "memory=false", "output=x", "headline=[8,16]"])
    old = parse_args(["--batch-sizes", "32", "--seq-lens", "128", "--tasks", "--no-memory", "--out-dir", "x",
                      "--headline", "8", "16"])
    assert new == old and new["batch_sizes"] == [32] and new["tasks"] == [] and new["memory"] is False
    assert new["output"] == "x" and new["headline"] == [8, 16] and new["rounds"] == 6
    assert "--out-dir is deprecated; use output=x" in capsys.readouterr().err
