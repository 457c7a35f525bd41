"""Full fine-tuning: every backbone and head parameter trains.

Trainable parameters: all of them, ``|theta_backbone| + |theta_head|``. Inference: unchanged, the
same computation as the backbone (benchmark variant ``same_as_backbone``); a batch cannot mix tasks
(every task has its own backbone weights).
"""

from __future__ import annotations

from aotp.methods.base import METHODS, Method
from aotp.models.task_model import TaskModel


@METHODS.register("full_ft")
class FullFineTuning(Method):
    name = "full_ft"
    benchmark_variants = ("same_as_backbone",)
    inference_note = "same computation as the backbone at inference (all weights differ, the architecture does not)"
    mixing_note = ("cannot mix tasks in one batch (task-specific backbone weights): served as T per-task batches "
                   "on T full models -- same computation as lora/merged per task (not timed separately)")

    @staticmethod
    def trains(name: str) -> bool:
        """Whether the parameter ``name`` trains: all do (BitFit narrows this to the biases)."""
        return True

    def apply(self, model: TaskModel) -> TaskModel:
        self.freeze_all_but(model, self.trains)
        return model

    def expected_trainable_parameters(self, model: TaskModel) -> int:
        return sum(p.numel() for p in model.parameters())
