"""The loop both pipeline kinds share (edged.runtime.base): failures, status, publish policy.

Issue 16: the video and the audio pipeline were the same loop written twice
and had drifted (audio ignored ``publish`` and ``heartbeat_s``). Both now run
on :class:`~edged.runtime.base.PipelineBase`; these tests run each kind on a
real capture source (an image file looped, a WAV file) with a fake task, the
unit under test's input, so that failures and results are exactly known.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from structlog.testing import capture_logs

from edged.capture.audio_factory import open_audio_source
from edged.capture.factory import open_video_source
from edged.config.settings import PipelineSettings, SourceSettings
from edged.decode.audio import ScoreSmoother
from edged.errors import DecodeError
from edged.log import RECOVER_AFTER
from edged.runtime.audio import AudioPipeline
from edged.runtime.base import PipelineBase
from edged.runtime.video import Pipeline
from edged.tasks import StageTimes, VisionResult
from edged.tasks.audio import WINDOW, AudioTaskResult
from edged.types import AudioClass, Detection, Frame
from tests.runtime.test_stage_failures import video

FAILURES = 4
TIMING = StageTimes(0.0, 0.1, 0.0)
ERRORS = {
    "emit": OSError(5, "disk I/O error"),
    "task": RuntimeError("tensor arena"),
    "decode": DecodeError("bad boxes"),
}
SHOWN = {
    "emit": "emit: OSError: [Errno 5] disk I/O error",
    "task": "task: RuntimeError: tensor arena",
    "decode": "decode: DecodeError: bad boxes",
}


class Faults:
    """The first ``count`` calls of the failing stage raise ``error``; then all goes well."""

    def __init__(self, stage: str, count: int) -> None:
        self.stage = stage
        self.error = ERRORS[stage]
        self.left = count

    def maybe_raise(self, stage: str) -> None:
        if stage == self.stage and self.left > 0:
            self.left -= 1
            raise self.error


class FakeVisionTask:
    """One person per frame, or a failure while ``faults`` says so."""

    kind = "detections"

    def __init__(self, faults: Faults) -> None:
        self.faults = faults

    def __call__(self, frame: Frame, threshold: float) -> VisionResult:
        self.faults.maybe_raise("task")
        self.faults.maybe_raise("decode")
        person = Detection("person", 0, 0.9, (0.1, 0.1, 0.5, 0.9))
        return VisionResult("detections", (person,), TIMING)


class FakeAudioTask:
    """Scores ``labels`` by a script (one score vector per window, repeated), or fails."""

    rate = 16000
    window = WINDOW

    def __init__(
        self,
        faults: Faults | None = None,
        labels: tuple[str, ...] = ("Speech", "Music"),
        script: Callable[[int], list[float]] = lambda _n: [0.9, 0.1],
        delay_s: float = 0.0,
    ) -> None:
        self.faults = faults
        self.labels = labels
        self.script = script
        self.delay_s = delay_s
        self.calls = 0

    def __call__(
        self,
        window: npt.NDArray[np.float32],
        top_k: int,
        labels_allow: Collection[str] = (),
        smoother: ScoreSmoother | None = None,
    ) -> AudioTaskResult:
        if self.faults is not None:
            self.faults.maybe_raise("task")
            self.faults.maybe_raise("decode")
        time.sleep(self.delay_s)
        scores = np.array(self.script(self.calls), dtype=np.float32)
        self.calls += 1
        order = np.argsort(-scores)[:top_k]
        classes = tuple(AudioClass(self.labels[i], int(i), float(scores[i])) for i in order)
        return AudioTaskResult(classes, TIMING, scores)


class Emits:
    """The app's emit: raises while ``faults`` says so; records the pipeline's health per call."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.faults = faults
        self.pipeline: PipelineBase[Any, Any] | None = None
        #: The pipeline's (status, reason) at each successful call.
        self.seen: list[tuple[str, str]] = []
        self.changed = threading.Condition()

    def __call__(self, pipeline: PipelineBase[Any, Any], *_result: Any) -> str:
        if self.faults is not None:
            self.faults.maybe_raise("emit")
        with self.changed:
            self.seen.append(pipeline.health)
            self.changed.notify_all()
        return f"r{len(self.seen)}"

    def wait_for(self, count: int, timeout: float = 20.0) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.seen) >= count, timeout), self.seen


@pytest.fixture
def stop_later() -> Iterator[list[Any]]:
    """Sources and pipelines to stop at teardown, whatever the test did."""
    things: list[Any] = []
    yield things
    for thing in things:
        thing.stop(timeout=5.0)


def video_pipeline(media_dir: Path, faults: Faults, emit: Emits, stop_later: list[Any]) -> Pipeline:
    """A detection pipeline on a real image source (one photo, looped), publishing every frame."""
    source = open_video_source(
        SourceSettings(
            name="cam0", kind="images", uri=str(media_dir / "people_group.jpg"), fps=60, loop=True
        )
    )
    pipeline, _ = video(FakeVisionTask(faults), emit, source.subscribe())
    stop_later += [source, pipeline]
    pipeline.start()
    source.start()
    return pipeline


def audio_pipeline(
    media_dir: Path,
    task: FakeAudioTask,
    emit: Emits,
    stop_later: list[Any],
    **settings: Any,
) -> AudioPipeline:
    """An audio pipeline on a real WAV file source, read as fast as the pipeline takes it."""
    source = open_audio_source(
        SourceSettings(
            name="mic0", kind="wav", uri=str(media_dir / "speech_jfk.wav"), realtime=False
        )
    )
    values: dict[str, Any] = {
        "name": "sound",
        "source": "mic0",
        "task": "audio",
        "model": "yamnet",
        "threshold": 0.5,
    }
    pipeline = AudioPipeline(
        PipelineSettings(**(values | settings)), task, source.subscribe(), emit
    )
    stop_later += [source, pipeline]
    pipeline.start()
    source.start()
    return pipeline


@pytest.mark.parametrize("kind", ["video", "audio"])
@pytest.mark.parametrize("stage", ["emit", "task", "decode"])
def test_a_failing_stage_is_counted_shown_and_recovered_from(
    kind: str, stage: str, media_dir: Path, stop_later: list[Any]
) -> None:
    """A stage failing 4 times: the thread lives on, the failures count under that stage, the
    next input sees ``degraded`` with the last error, a few clean inputs later ``running``,
    and the burst is logged once."""
    faults = Faults(stage, FAILURES)
    emit = Emits(faults)
    with capture_logs() as logs:
        if kind == "video":
            pipeline: PipelineBase[Any, Any] = video_pipeline(media_dir, faults, emit, stop_later)
        else:
            pipeline = audio_pipeline(
                media_dir, FakeAudioTask(faults), emit, stop_later, publish="all"
            )
        emit.wait_for(RECOVER_AFTER + 1)
        assert pipeline._thread.is_alive()
        assert dict(pipeline.failures.by_stage) == {stage: FAILURES}
        assert pipeline.stats().errors == FAILURES
        assert pipeline.stats().failures == {stage: FAILURES}
        # The first input through every stage still sees the burst, with its last error.
        status, reason = emit.seen[0]
        assert status == "degraded"
        assert reason.endswith(SHOWN[stage])
        assert emit.seen[RECOVER_AFTER] == ("running", "")
        pipeline.stop()
    failed = [e for e in logs if e["event"] == "pipeline.stage_failed"]
    assert [e["stage"] for e in failed] == [stage]
    assert [e["event"] for e in logs].count("pipeline.recovered") == 1
    assert pipeline.status in ("stopped", "ended")
    assert pipeline.finished.is_set()


@pytest.mark.parametrize("kind", ["video", "audio"])
def test_start_and_finish_are_logged_as_component_events(
    kind: str, media_dir: Path, stop_later: list[Any]
) -> None:
    """``pipeline.started`` and ``pipeline.finished`` (with the final status) for both kinds."""
    emit = Emits()
    with capture_logs() as logs:
        if kind == "video":
            pipeline: PipelineBase[Any, Any] = video_pipeline(
                media_dir, Faults("emit", 0), emit, stop_later
            )
        else:
            pipeline = audio_pipeline(media_dir, FakeAudioTask(), emit, stop_later)
        emit.wait_for(1)
        pipeline.stop()
    events = {e["event"]: e for e in logs}
    assert events["pipeline.started"]["source"] == pipeline.settings.source
    assert events["pipeline.finished"]["status"] == pipeline.status
    assert events["pipeline.finished"]["processed"] == pipeline.processed


def test_audio_defaults_to_every_window_that_reaches_the_threshold(
    media_dir: Path, stop_later: list[Any]
) -> None:
    """No ``publish`` key: an audio pipeline publishes each window whose best class reaches
    the threshold (``nonempty``), as audio always did."""
    emit = Emits()
    # Every third window is quiet (best score 0.3, under the 0.5 threshold).
    task = FakeAudioTask(script=lambda n: [0.3, 0.1] if n % 3 == 0 else [0.9, 0.1])
    pipeline = audio_pipeline(media_dir, task, emit, stop_later)
    assert pipeline.settings.publish == "nonempty"
    assert pipeline.finished.wait(30), pipeline.stats()
    loud = sum(1 for n in range(task.calls) if n % 3 != 0)
    assert pipeline.stats().emitted == len(emit.seen) == loud < pipeline.processed


def test_audio_publish_changes_publishes_when_the_classes_change(
    media_dir: Path, stop_later: list[Any]
) -> None:
    """``publish = "changes"``: a window is published when the classes reaching the threshold
    change (Speech ↔ Music every 5 windows), not every window."""
    emit = Emits()
    task = FakeAudioTask(script=lambda n: [0.9, 0.1] if (n // 5) % 2 == 0 else [0.1, 0.9])
    pipeline = audio_pipeline(
        media_dir, task, emit, stop_later, publish="changes", heartbeat_s=3600
    )
    assert pipeline.finished.wait(30), pipeline.stats()
    changes = len(range(0, task.calls, 5))
    assert pipeline.processed == task.calls > changes
    assert pipeline.stats().emitted == len(emit.seen) == changes


def test_audio_publish_changes_republishes_unchanged_classes_every_heartbeat(
    media_dir: Path, stop_later: list[Any]
) -> None:
    """``heartbeat_s``: the same class all along is published again once a heartbeat passed.

    About 100 windows (hop 0.1 s) taking at least 10 ms each last at least a
    second, so a 0.25 s heartbeat publishes more than once; far less than every window.
    """
    emit = Emits()
    task = FakeAudioTask(delay_s=0.01)
    pipeline = audio_pipeline(
        media_dir, task, emit, stop_later, publish="changes", heartbeat_s=0.25, hop_s=0.1
    )
    assert pipeline.finished.wait(60), pipeline.stats()
    assert pipeline.processed > 90
    assert 1 < pipeline.stats().emitted < pipeline.processed
