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

    assert "result.json not found" in refused(capsys, main, ["--runs", str(tmp_path / "none")])
    assert "--batch-size must be a positive integer, got 0" in refused(capsys, main, ["--runs", "x", "--batch-size", "0"])
    assert "--device='tpu'; valid: auto, cpu, cuda, mps" in refused(capsys, main, ["--runs", "x", "--device", "tpu"])
    assert f"--input {tmp_path}/in.jsonl: no such file" in refused(capsys, main, ["--runs", "x", "--input",
                                                                                  str(tmp_path / "in.jsonl")])
    record = {"status": "failed", "config": {}}
    (tmp_path / "result.json").write_text(json.dumps(record))
    assert "has status 'failed'; only finished runs can be served" in refused(capsys, main, ["--runs", str(tmp_path)])


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
    assert "--repeats must be >= 1, got 0" in refused(capsys, main, ["experiment=smoke_tiny", "--repeats", "0"])
    assert "expected experiment=<name>" in refused(capsys, main, ["method=lora"])


def test_aggregate_refusals(capsys, tmp_path):
    from aotp.results.aggregate import main

    assert "--results " + str(tmp_path / "none") + ": no such folder" in refused(
        capsys, main, ["--results", str(tmp_path / "none")])
    assert "unrecognized arguments: --bogus" in refused(capsys, main, ["--bogus"])
