"""The typed run record: every committed record and benchmark file loads through it, the JSON Schema file
is the one the dataclasses generate, migration keeps every value, and malformed records are named."""

from __future__ import annotations

import json

import pytest

from aotp.bench.report import load as load_bench
from aotp.results.record import read_record, run_id, write_record
from aotp.results.schema import (SCHEMA_VERSION, RecordError, RunRecord, committed_schema, json_schema, migrate,
                                 migrate_environment, validate)
from tests.helpers import REPO_ROOT

RECORDS = sorted((REPO_ROOT / "results").rglob("result.json"))
BENCH_FILES = sorted((REPO_ROOT / "results" / "bench").glob("*.json"))
ENVIRONMENT = {**json_schema(), "$ref": "#/$defs/Environment"}


def only_keys_of(value, like):
    """``value`` restricted (recursively, in objects) to the keys ``like`` has."""
    if isinstance(value, dict) and isinstance(like, dict):
        return {key: only_keys_of(value[key], like[key]) for key in like if key in value}
    return value


def test_the_committed_schema_file_is_the_generated_one():
    assert committed_schema() == json_schema()  # regenerate: aotp.results.schema.write_schema_file()


def test_every_committed_record_loads_validates_and_keeps_its_values():
    folders = {path.relative_to(REPO_ROOT / "results").parts[0] for path in RECORDS}
    assert {"cpu_mini", "cpu_small", "learning_check"} <= folders and len(RECORDS) >= 200
    for path in RECORDS:
        original = json.loads(path.read_text())
        record = read_record(path)
        assert isinstance(record, RunRecord) and record.schema_version == SCHEMA_VERSION
        written = record.to_dict()
        assert validate(written) == [], path
        assert RunRecord.from_dict(written).to_dict() == written  # the current schema reads back as written
        # migration adds keys (null: e.g. selection.skipped_steps, truncation), it changes no value of the old record
        assert only_keys_of(written, original) == {**original, "schema_version": SCHEMA_VERSION}, path
        assert set(written) - set(original) <= {"error", "traceback", "init_from", "truncation", "trainable_weights",
                                                "execution"}
        assert record.run_id == run_id(record.config) and record.run_id in path.parent.name


def test_every_committed_benchmark_environment_loads_as_the_run_records():
    assert BENCH_FILES
    for path in BENCH_FILES:
        data = json.loads(path.read_text())
        env = migrate_environment(data["env"], str(path))
        assert validate(env.to_dict(), ENVIRONMENT) == [], path
        if "git_sha" in data["env"]:  # the benchmark's own block (its schema 2)
            assert env.git.sha == data["env"]["git_sha"] and env.git.dirty_paths == data["env"]["dirty_paths"]
            assert env.git.dirty is bool(data["env"]["dirty_paths"])
            assert env.packages["transformers"] == data["env"]["transformers"] and env.extra["cpu"] == data["env"]["cpu"]
        else:  # aotp.results.record.environment() (scripts/bench_packed.py, the training benchmark): as written
            assert only_keys_of(env.to_dict(), data["env"]) == data["env"]
            assert env.git.dirty_paths == data["env"]["git"].get("dirty_paths")  # a v1 block has none
    inference = load_bench(REPO_ROOT / "results" / "bench" / "minilm_cpu_fp32.json")
    assert inference["env"].git.sha.startswith("dd05478302") and inference["env"].git.dirty is False


def test_write_then_read_is_the_identity(tmp_path):
    record = migrate(json.loads(RECORDS[0].read_text()))
    write_record(tmp_path / "result.json", record)
    assert read_record(tmp_path / "result.json") == record
    assert json.loads((tmp_path / "result.json").read_text())["schema_version"] == SCHEMA_VERSION == 3


def test_a_version_2_record_reads_with_the_schema_3_blocks_null():
    """Schema 3 (issue 26) added ``execution`` and ``inference.check_precision``; the committed version-2
    records (results/cpu_small) read with both null and every other value as written."""
    path = next(p for p in RECORDS if json.loads(p.read_text()).get("schema_version") == 2)
    original = json.loads(path.read_text())
    assert "execution" not in original and "check_precision" not in (original.get("inference") or {})
    record = read_record(path)
    assert record.execution is None and record.inference.check_precision is None
    assert only_keys_of(record.to_dict(), original) == {**original, "schema_version": 3}


def test_a_hand_written_record_takes_its_identity_from_its_config():
    config = {"task": {"benchmark": "glue", "name": "rte", "version": 3}, "model": {"name": "m"},
              "method": {"name": "lora", "lr": 1e-3}, "seed": 5}
    record = migrate({"status": "success", "config": config, "metrics": {"main": 0.5}})
    assert (record.task, record.task_version, record.model, record.method, record.seed) == ("glue/rte", 3, "m", "lora", 5)
    assert record.main == 0.5 and record.selection is None and record.env.git.sha is None
    assert validate(record.to_dict()) == []


def test_malformed_records_are_refused_with_the_file_and_key(tmp_path):
    path = tmp_path / "result.json"
    assert read_record(path) is None  # no record: a run not done
    path.write_text('{"status": "succ')
    with pytest.raises(RecordError, match=f"{path}: not JSON"):
        read_record(path)
    cases = [({"status": "running"}, r"record.status: 'running'; valid: 'success', 'failed'"),
             ({"config": {}}, "record: missing key.s. status"),
             ({"status": "success", "metric": {}}, "record: unknown key 'metric' .valid: schema_version, run_id"),
             ({"status": "success", "seed": "1"}, r"record.seed: expected int, got str '1'"),
             ({"status": "success", "params": {"share": "all"}}, r"record.params.share: expected float, got str"),
             ({"schema_version": 7, "status": "success"}, "schema_version 7; this aotp reads versions 1, 2, 3"),
             ([], "a run record is a JSON object, got list")]
    for data, message in cases:
        with pytest.raises(RecordError, match=message):
            migrate(data)
    current = migrate({"status": "failed"}).to_dict()
    del current["env"]
    with pytest.raises(RecordError, match="record: missing key.s. env"):  # the current schema: every key present
        RunRecord.from_dict(current)


def test_the_schema_checker_reports_each_violation():
    record = migrate({"status": "failed"}).to_dict()
    assert validate(record) == []
    bad = {**record, "status": "done", "seed": 1.5, "wall_seconds": "3", "colour": "red"}
    del bad["config"]
    assert sorted(validate(bad)) == sorted([
        "record: missing key 'config'",
        "record.status: 'done' is not one of ['success', 'failed']",
        "record.seed: fits none of the allowed forms (record.seed: expected integer, got float; "
        "record.seed: expected null, got float)",
        "record.wall_seconds: fits none of the allowed forms (record.wall_seconds: expected number, got str; "
        "record.wall_seconds: expected null, got str)",
        "record: unknown key 'colour'"])
    assert validate({**record, "env": {**record["env"], "loadavg_start": [1.0]}}) == []  # env takes a tool's facts
    with pytest.raises(ValueError, match="not supported by this checker"):
        validate(record, {"type": "object", "minProperties": 1})


def test_the_schema_does_not_depend_on_which_union_order_typing_cached_first():
    """typing caches equal unions: once some module built ``Optional[Union[str, int]]``, the record's
    ``Optional[Union[int, str]]`` evaluates to it; the generated schema must stay the committed one."""
    import subprocess
    import sys

    code = ("from typing import Optional, Union; Optional[Union[str, int]]; "  # built first, in a fresh interpreter
            "from aotp.results.schema import committed_schema, json_schema; "
            "assert json_schema() == committed_schema(), 'schema depends on the union order'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
