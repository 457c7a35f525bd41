"""Multi-task inference: one frozen backbone + several AoT task packs (see :mod:`aotp.inference.model`).

CLI: ``python -m aotp.inference --runs RUN_DIR [RUN_DIR ...] [--input records.jsonl] [--output preds.jsonl]``
"""

from aotp.inference.model import MultiTaskModel, TaskPack, load_task_pack

__all__ = ["MultiTaskModel", "TaskPack", "load_task_pack"]
