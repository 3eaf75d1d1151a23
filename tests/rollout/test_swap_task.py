"""Pipeline.swap_task: a new task between two frames, nothing lost, the old one handed back."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from edged.capture.slot import LatestSlot
from edged.config.settings import PipelineSettings
from edged.runtime.video import Pipeline
from edged.tasks import VisionResult
from edged.tasks.detection import DetectionTask
from edged.types import Frame
from tests.gate.test_motion import ssd_task
from tests.helpers.vision import read_rgb


class Named:
    """The real SSD task, remembering which name it had when it ran (to tell two apart)."""

    def __init__(self, task: DetectionTask, name: str, log: list[str]) -> None:
        self._task = task
        self.kind = task.kind
        self.name = name
        self._log = log

    def __call__(self, frame: Frame, threshold: float) -> VisionResult:
        self._log.append(self.name)
        return self._task(frame, threshold)


def pipeline(task: Any, emitted: list[tuple[int, str]], current: list[str]) -> Pipeline:
    settings = PipelineSettings(
        name="door", source="cam0", task="detection", model="m", publish="all", max_fps=240,
        track=False,
    )  # fmt: skip
    slot: LatestSlot[Frame] = LatestSlot()

    def emit(_p: Pipeline, frame: Frame, _r: VisionResult) -> str:
        emitted.append((frame.id, current[0]))
        return "id"

    return Pipeline(settings, task, slot, emit)


@pytest.fixture(scope="module")
def ssd(models_dir: Path) -> DetectionTask:
    return ssd_task(models_dir)


def test_swap_happens_between_frames_and_every_frame_is_published_once(
    ssd: DetectionTask, media_dir: Path
) -> None:
    """Frames before the swap ran on task a, after it on b; on_swap ran in between; none lost."""
    ran: list[str] = []
    current = ["a"]
    emitted: list[tuple[int, str]] = []
    a, b = Named(ssd, "a", ran), Named(ssd, "b", ran)
    p = pipeline(a, emitted, current)
    slot = p._slot
    image = read_rgb(media_dir / "people_group.jpg")
    p.start()
    try:
        for i in range(20):
            if i == 10:
                # What the app's on_swap does: results name the new model from now on.
                assert p.swap_task(b, lambda: current.__setitem__(0, "b")) is a
            slot.put(Frame(id=i, ts=time.time(), mono=time.monotonic(), source="cam0", image=image))
            # One frame at a time: the slot never replaces one, so none is dropped.
            deadline = time.monotonic() + 5
            while len(emitted) <= i and time.monotonic() < deadline:
                time.sleep(0.002)
    finally:
        p.stop()
    assert [fid for fid, _ in emitted] == list(range(20))
    # Every result is named after the task that computed it.
    assert [name for _, name in emitted] == ran
    assert ran == ["a"] * 10 + ["b"] * 10
    assert p.task is b


def test_a_pipeline_that_is_not_running_refuses_the_swap_and_keeps_its_task(
    ssd: DetectionTask,
) -> None:
    """No loop to reach a frame boundary: TimeoutError, the task is unchanged."""
    p = pipeline(ssd, [], ["a"])
    with pytest.raises(TimeoutError):
        p.swap_task(Named(ssd, "b", []), lambda: None, timeout=0.2)
    assert p.task is ssd
