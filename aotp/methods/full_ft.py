"""Full fine-tuning: every backbone and head parameter trains.

Trainable parameters: all of them, ``|theta_backbone| + |theta_head|``. Inference: unchanged.
"""

from __future__ import annotations

from aotp.methods.base import METHODS, Method
from aotp.models.task_model import TaskModel


@METHODS.register("full_ft")
class FullFineTuning(Method):
    name = "full_ft"

    def apply(self, model: TaskModel) -> TaskModel:
        self.freeze_all_but(model, lambda name: True)
        return model

    def expected_trainable_parameters(self, model: TaskModel) -> int:
        return sum(p.numel() for p in model.parameters())
