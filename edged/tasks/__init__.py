"""Tasks: what a pipeline does to one input — preprocess, infer, decode.

A task is built once per pipeline from its resolved model, and checks at build
time that the model's tensors fit the task's decoder, so that a mismatched
model is refused at start (``edged check``) rather than failing per frame.
New tasks (pose, audio) register in :data:`TASKS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from edged.catalog.resolve import ResolvedModel
from edged.config.settings import PipelineSettings
from edged.errors import ModelError
from edged.infer.base import Model
from edged.types import Detection, Frame, Pose


@dataclass(frozen=True, slots=True)
class StageTimes:
    """Milliseconds spent in each stage for one input."""

    pre: float
    infer: float
    post: float


@dataclass(frozen=True, slots=True)
class VisionResult:
    """Decoded results of one frame."""

    kind: str  # "detections" | "pose": the topic suffix and payload key
    items: tuple[Detection, ...] | tuple[Pose, ...]
    timing: StageTimes


class Task(Protocol):
    """Any task: its ``kind`` names the result topic (detections, pose, audio)."""

    kind: str


class VisionTask(Protocol):
    """Turns a frame into results; called from one pipeline thread."""

    kind: str

    def __call__(self, frame: Frame, threshold: float) -> VisionResult: ...


TaskFactory = Callable[[ResolvedModel, Model], Task]

#: task name → "module:factory", imported on first use so that a device
#: running only audio never imports the vision stack (and vice versa).
TASKS: dict[str, str] = {
    "detection": "edged.tasks.detection:DetectionTask",
    "pose": "edged.tasks.pose:PoseTask",
    "audio": "edged.tasks.audio:AudioTask",
}


def build_task(pipeline: PipelineSettings, resolved: ResolvedModel, model: Model) -> Task:
    """Build the task of ``pipeline``; ModelError when the model does not fit it."""
    try:
        target = TASKS[pipeline.task]
    except KeyError:
        raise ModelError(f"task {pipeline.task!r} is not available in this build") from None
    module, _, attr = target.partition(":")
    factory: TaskFactory = getattr(importlib.import_module(module), attr)
    return factory(resolved, model)
