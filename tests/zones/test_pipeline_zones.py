"""The zones step inside a real detection pipeline (real SSD model, frames from real media).

Occupancy must follow the objects whatever the publish policy lets through:
a zone that went ON must return to OFF when the people are gone, even when
``publish = "nonempty"`` publishes nothing for the empty frames.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from edged.capture.slot import LatestSlot
from edged.config.settings import PipelineSettings
from edged.runtime.video import Pipeline
from edged.tasks import VisionResult
from edged.tasks.detection import DetectionTask
from edged.types import Detection, Frame
from edged.zones.stage import ZoneUpdate
from tests.gate.test_motion import ssd_task
from tests.helpers.vision import read_rgb

WHOLE = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
LEFT_HALF = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]


@pytest.fixture(scope="module")
def task(models_dir: Path) -> DetectionTask:
    return ssd_task(models_dir)


@pytest.fixture(scope="module")
def images(media_dir: Path) -> dict[str, npt.NDArray[np.uint8]]:
    """``people``: a group photo; ``empty``: the walking clip's first frame (an empty room)."""
    cap = cv2.VideoCapture(str(media_dir / "person_walking_0-30s.mp4"))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    return {
        "people": read_rgb(media_dir / "people_group.jpg"),
        "empty": np.ascontiguousarray(bgr[:, :, ::-1]),
    }


class Recorder:
    """The app's side of the pipeline: what was published and what the zones changed."""

    def __init__(self) -> None:
        self.results: list[VisionResult] = []
        self.updates: list[ZoneUpdate] = []

    def emit(self, _p: Pipeline, _f: Frame, result: VisionResult) -> str:
        self.results.append(result)
        return "id"

    def zones(self, _p: Pipeline, _f: Frame, update: ZoneUpdate) -> None:
        self.updates.append(update)

    def occupied(self) -> list[bool]:
        return [c.occupied for u in self.updates for c in u.changed]


def run(
    task: DetectionTask,
    frames: list[tuple[npt.NDArray[np.uint8], float]],
    **settings: Any,
) -> tuple[Pipeline, Recorder]:
    """Push ``(image, mono)`` frames one at a time through a pipeline with ``settings``."""
    config = PipelineSettings.model_validate(
        {
            "name": "door",
            "source": "cam0",
            "task": "detection",
            "model": "ssd-mobilenet-v1-coco-int8",
            "labels": ["person"],
            "max_fps": 240,
            **settings,
        }
    )
    rec = Recorder()
    slot: LatestSlot[Frame] = LatestSlot()
    pipeline = Pipeline(config, task, slot, rec.emit)
    pipeline.emit_zones = rec.zones
    pipeline.start()
    try:
        for n, (image, mono) in enumerate(frames):
            # The frame's monotonic time is the tracker's clock: set here, so
            # that tracks expire in frame time, not test run time.
            slot.put(Frame(id=n, ts=time.time(), mono=mono, source="cam0", image=image))
            wait(lambda n=n: pipeline.processed > n)
    finally:
        pipeline.stop()
    assert pipeline.errors == 0, pipeline.failures.reason()
    return pipeline, rec


def wait(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("publish", ["all", "changes", "nonempty"])
def test_occupancy_returns_to_off_for_every_publish_policy(
    task: DetectionTask, images: dict[str, npt.NDArray[np.uint8]], publish: str
) -> None:
    """People, then an empty room until their tracks expire: ON, then OFF, under every policy."""
    people, empty = images["people"], images["empty"]
    frames = [(people, i * 0.1) for i in range(3)] + [(empty, 1.0), (empty, 3.0), (empty, 5.0)]
    _, rec = run(task, frames, publish=publish, zones=[{"name": "room", "polygon": WHOLE}])
    assert rec.occupied() == [False, True, False]
    # The last OFF came from an empty frame, published or not.
    if publish == "nonempty":
        assert all(r.items for r in rec.results)


def test_detections_carry_their_tracks_zones(
    task: DetectionTask, images: dict[str, npt.NDArray[np.uint8]]
) -> None:
    """Once tracked, each detection names the zones its anchor is in; before, none."""
    people = images["people"]
    frames = [(people, i * 0.1) for i in range(3)]
    _, rec = run(
        task,
        frames,
        publish="all",
        zones=[{"name": "left", "polygon": LEFT_HALF}, {"name": "all", "polygon": WHOLE}],
    )
    first, *later = rec.results
    assert all(d.zones == () for d in first.items if isinstance(d, Detection))  # not yet tracked
    for result in later:
        for d in result.items:
            assert isinstance(d, Detection)
            x = (d.box[0] + d.box[2]) / 2
            assert d.zones == (("left", "all") if x <= 0.5 else ("all",)), d


def test_a_mask_drops_detections_before_tracking_and_publishing(
    task: DetectionTask, images: dict[str, npt.NDArray[np.uint8]]
) -> None:
    """With the left half masked, no published detection has its anchor there."""
    people = images["people"]
    frames = [(people, i * 0.1) for i in range(2)]
    _, plain = run(task, frames, publish="all")
    _, masked = run(task, frames, publish="all", masks=[{"polygon": LEFT_HALF}])

    def left(r: VisionResult) -> list[Detection]:
        return [d for d in r.items if isinstance(d, Detection) and (d.box[0] + d.box[2]) / 2 <= 0.5]

    assert any(left(r) for r in plain.results)  # the photo has people on the left
    assert not any(left(r) for r in masked.results)
    assert any(r.items for r in masked.results)  # and on the right, kept


def test_disabling_the_pipeline_empties_its_zones(
    task: DetectionTask, images: dict[str, npt.NDArray[np.uint8]]
) -> None:
    """People in the zone, then 'disable': the next frame turns the zone OFF while the
    pipeline still runs (not only when it ends)."""
    config = PipelineSettings.model_validate(
        {
            "name": "door",
            "source": "cam0",
            "task": "detection",
            "model": "ssd-mobilenet-v1-coco-int8",
            "max_fps": 240,
            "zones": [{"name": "room", "polygon": WHOLE}],
        }
    )
    rec = Recorder()
    slot: LatestSlot[Frame] = LatestSlot()
    pipeline = Pipeline(config, task, slot, rec.emit)
    pipeline.emit_zones = rec.zones
    pipeline.start()
    try:
        for n in range(3):
            slot.put(Frame(n, time.time(), n * 0.1, "cam0", images["people"]))
            wait(lambda n=n: pipeline.processed > n)
        assert rec.occupied() == [False, True]
        pipeline.enabled = False  # what the 'disable' command does
        slot.put(Frame(3, time.time(), 0.3, "cam0", images["people"]))
        wait(lambda: len(rec.occupied()) == 3, 10)
        assert rec.occupied() == [False, True, False]
        assert pipeline.processed == 3
        assert pipeline.status == "running"
    finally:
        pipeline.stop()
