"""Task specs (YAML data), loaders for hub and local official files, formatting, tokenisation and scoring."""

from aotp.tasks.data import TaskData, load_task_data
from aotp.tasks.formatting import FORMATTERS, Formatter
from aotp.tasks.loading import DataFileError, check_local_files
from aotp.tasks.spec import TaskSpec, load_spec, task_names

__all__ = ["TaskData", "load_task_data", "FORMATTERS", "Formatter", "DataFileError", "check_local_files", "TaskSpec",
           "load_spec", "task_names"]
