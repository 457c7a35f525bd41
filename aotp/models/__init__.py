"""Backbone builders (hub checkpoints, the offline MiniLM, tiny random models) and the task model."""

from aotp.models.builders import BACKBONES, Backbone, build_backbone
from aotp.models.task_model import HEAD_TYPES, TaskHead, TaskModel

__all__ = ["BACKBONES", "Backbone", "build_backbone", "HEAD_TYPES", "TaskHead", "TaskModel"]
