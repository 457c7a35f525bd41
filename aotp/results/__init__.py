"""Run identity, result records and aggregation into tables."""

from aotp.results.record import SCHEMA_VERSION, read_record, run_dir_name, run_id, write_json_atomic

__all__ = ["SCHEMA_VERSION", "read_record", "run_dir_name", "run_id", "write_json_atomic"]
