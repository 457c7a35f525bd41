"""Run identity, result records and aggregation into tables."""

from aotp.results.record import SCHEMA_VERSION, read_record, run_dir_name, run_id, write_json_atomic, write_record
from aotp.results.schema import RecordError, RunRecord, migrate

__all__ = ["SCHEMA_VERSION", "RecordError", "RunRecord", "migrate", "read_record", "run_dir_name", "run_id",
           "write_json_atomic", "write_record"]
