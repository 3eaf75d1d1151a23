"""A failing stage never ends a pipeline thread: caught, counted by stage, logged once per burst.

Issue 13.6: when ``emit`` raised, the video pipeline thread died while
``state`` still said running. Both pipeline kinds now count every stage
failure, show ``degraded`` (with the last error) while they keep coming, and
are ``running`` again after a few clean inputs. Real models throughout; the
failing emit and task are injected callables (what the loop calls).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from edged.capture.audio_factory import open_audio_source
from edged.capture.slot import LatestSlot
from edged.config.settings import PipelineSettings, SourceSettings
from edged.errors import DecodeError
from edged.log import RECOVER_AFTER
from edged.runtime.audio import AudioPipeline
from edged.runtime.video import Pipeline
from edged.tasks import VisionResult
from edged.tasks.detection import DetectionTask
from edged.types import Frame
from tests.gate.test_motion import ssd_task
from tests.helpers.vision import read_rgb
from tests.helpers.yamnet import yamnet_task

FAILURES = 5


class FailingFirst:
    """An emit callable that raises for its first ``count`` calls, then records."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.calls = 0

    def __call__(self, *_args: Any) -> str:
        self.calls += 1
        if self.left > 0:
            self.left -= 1
            raise OSError(5, "disk I/O error")
        return "id"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def task(models_dir: Path) -> DetectionTask:
    return ssd_task(models_dir)


@pytest.fixture
def frame_source(media_dir: Path) -> Callable[[int], Frame]:
    image = read_rgb(media_dir / "people_group.jpg")

    def frame(n: int) -> Frame:
        return Frame(id=n, ts=time.time(), mono=time.monotonic(), source="cam0", image=image)

    return frame


def video(
    task: Any, emit: Any, slot: LatestSlot[Frame] | None = None
) -> tuple[Pipeline, LatestSlot[Frame]]:
    """A detection pipeline publishing every frame of ``slot`` (a new one when not given)."""
    settings = PipelineSettings(
        name="door",
        source="cam0",
        task="detection",
        model="ssd-mobilenet-v1-coco-int8",
        publish="all",
        max_fps=240,
        track=False,
    )
    slot = LatestSlot() if slot is None else slot
    return Pipeline(settings, task, slot, emit), slot


def test_a_raising_emit_degrades_the_video_pipeline_and_it_recovers(
    task: DetectionTask, frame_source: Callable[[int], Frame]
) -> None:
    """Emit failing 5 times: thread alive, counted as 'emit', degraded with the error, logged once;
    then running again after a few clean frames."""
    emit = FailingFirst(FAILURES)
    pipeline, slot = video(task, emit)
    with capture_logs() as logs:
        pipeline.start()
        try:
            for n in range(FAILURES):
                slot.put(frame_source(n))
                wait_until(lambda n=n: emit.calls > n, 20, "emit to be called")
            wait_until(lambda: pipeline.errors == FAILURES, 5, "the failures to be counted")
            assert pipeline._thread.is_alive()
            assert dict(pipeline.failures.by_stage) == {"emit": FAILURES}
            status, reason = pipeline.health
            assert status == "degraded"
            assert "emit: OSError: [Errno 5] disk I/O error" in reason
            assert pipeline.stats().status == "degraded"
            assert pipeline.stats().failures == {"emit": FAILURES}
            for n in range(RECOVER_AFTER):
                slot.put(frame_source(100 + n))
                wait_until(lambda n=n: emit.calls > FAILURES + n, 20, "a clean frame")
            wait_until(lambda: pipeline.health[0] == "running", 5, "recovery")
        finally:
            pipeline.stop()
    failed = [e for e in logs if e["event"] == "pipeline.stage_failed"]
    assert len(failed) == 1, failed  # once per burst, not once per frame
    assert failed[0]["stage"] == "emit"
    assert [e["event"] for e in logs].count("pipeline.recovered") == 1
    assert pipeline.status == "stopped"


class Breaking:
    """A task that raises ``error`` on every call (a model or decoder gone bad)."""

    kind = "detections"

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def __call__(self, frame: Frame, threshold: float) -> VisionResult:
        self.calls += 1
        raise self.error


@pytest.mark.parametrize(
    ("error", "stage"),
    [(RuntimeError("tensor arena"), "task"), (DecodeError("bad boxes"), "decode")],
)
def test_a_failing_task_is_counted_by_stage_and_the_thread_lives(
    frame_source: Callable[[int], Frame], error: Exception, stage: str
) -> None:
    """Task failures count under 'task' (or 'decode' for a DecodeError); the loop keeps taking frames."""
    broken = Breaking(error)
    pipeline, slot = video(broken, FailingFirst(0))
    pipeline.start()
    try:
        for n in range(4):
            slot.put(frame_source(n))
            wait_until(lambda n=n: broken.calls > n, 10, "the task to be called")
        wait_until(lambda: pipeline.errors == 4, 5, "the failures to be counted")
        assert pipeline._thread.is_alive()
        assert dict(pipeline.failures.by_stage) == {stage: 4}
        assert pipeline.health[0] == "degraded"
    finally:
        pipeline.stop()
    assert pipeline.status == "stopped"


def test_a_raising_emit_is_counted_in_the_audio_pipeline(media_dir: Path, models_dir: Path) -> None:
    """Audio, real YAMNet on a WAV file: emit failing 5 times is counted as 'emit', logged once,
    the other windows are processed and emitted, and the stream ends normally."""
    emit = FailingFirst(FAILURES)
    source = open_audio_source(
        SourceSettings(
            name="mic0", kind="wav", uri=str(media_dir / "speech_jfk.wav"), realtime=False
        )
    )
    settings = PipelineSettings(
        name="sound", source="mic0", task="audio", model="yamnet", threshold=0.0
    )
    pipeline = AudioPipeline(settings, yamnet_task(models_dir), source.subscribe(), emit)
    with capture_logs() as logs:
        pipeline.start()
        source.start()
        try:
            assert pipeline.finished.wait(60), pipeline.stats()
        finally:
            source.stop()
            pipeline.stop()
    stats = pipeline.stats()
    assert stats.failures == {"emit": FAILURES}
    assert stats.errors == FAILURES
    assert stats.emitted == stats.processed == emit.calls - FAILURES > RECOVER_AFTER
    assert pipeline.status == "ended"
    assert pipeline.health == ("ended", "")
    events = [e["event"] for e in logs]
    assert events.count("pipeline.stage_failed") == 1
    assert events.count("pipeline.recovered") == 1
