"""An audio pipeline: chunk queue → resample → windows every hop → task → emit.

Each pipeline runs in its own thread and takes chunks from its queue as soon
as they arrive, so capture never waits for inference. Windows that cannot be
classified in time are *skipped and counted* (README "How it works"): when more than
about :data:`BACKLOG_S` of windows are pending, the oldest are discarded and
added to ``skipped``, so latency stays bounded by ~1 s of audio plus one
inference, and ``processed + skipped + errors`` always equals the windows
the stream produced. A file read as fast as possible is not live (its
reader waits for the pipeline instead), so nothing is skipped there.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import structlog

from edged.capture.audio import ChunkQueue
from edged.config.settings import PipelineSettings
from edged.decode.audio import ScoreSmoother
from edged.events.onoff import EmitNote
from edged.events.sound import SoundEvents
from edged.preprocess.audio import Resampler, Windower
from edged.runtime.base import PipelineBase
from edged.runtime.stages import task_stage
from edged.tasks.audio import AudioTaskResult, check_labels
from edged.types import AudioChunk

log = structlog.get_logger(__name__)

#: Pending windows beyond about this much audio are skipped, seconds.
BACKLOG_S = 1.0
#: Skips are logged at most this often, seconds (a slow device skips steadily).
_SKIP_LOG_EVERY_S = 10.0


class AudioTaskLike(Protocol):
    """What the pipeline needs of :class:`~edged.tasks.audio.AudioTask`."""

    rate: int
    window: int
    labels: tuple[str, ...]

    def __call__(
        self,
        window: npt.NDArray[np.float32],
        top_k: int,
        labels_allow: Collection[str] = (),
        smoother: ScoreSmoother | None = None,
    ) -> AudioTaskResult: ...


#: Called as ``emit(pipeline, window_start_ts, duration_s, result)``.
AudioEmit = Callable[["AudioPipeline", float, float, AudioTaskResult], None]


@dataclass(frozen=True, slots=True)
class AudioPipelineStats:
    """A snapshot of an audio pipeline's counters (for the ``stats`` topic)."""

    name: str
    status: str
    reason: str
    processed: int
    skipped: int
    #: Windows the sound-event loudness gate kept from the model (counted in processed).
    gated: int
    emitted: int
    errors: int
    #: Failures by stage (resample, task, decode, policy, emit, events, loop).
    failures: dict[str, int]
    #: Chunks the source dropped because this pipeline's queue was full.
    overruns: int
    windows_per_s: float
    infer_p50_ms: float
    infer_p95_ms: float
    #: From the last sample of a window being captured to its result, ms.
    latency_p50_ms: float
    latency_p95_ms: float
    #: Processing time / audio duration (below 1: keeps up with real time).
    realtime_factor: float


class AudioPipeline(PipelineBase[AudioChunk, tuple[float, AudioTaskResult]]):
    """Runs one audio task over one source's chunks in a thread.

    A window is published when the publish policy lets it through
    (``publish``: the default for audio, ``nonempty``, is every window whose
    best class reaches ``threshold``; ``changes`` publishes when the set of
    classes at or above it changes, and every ``heartbeat_s`` anyway).
    """

    thread_prefix = "audio"

    def __init__(
        self,
        settings: PipelineSettings,
        task: AudioTaskLike,
        source_subscription: ChunkQueue,
        emit: AudioEmit,
        emit_note: EmitNote | None = None,
    ) -> None:
        check_labels(task.labels, settings.labels)
        super().__init__(settings)
        self.task = task
        self.duration_s = task.window / task.rate
        self.hop = max(1, round(settings.hop_s * task.rate))
        #: Windows allowed to wait before the oldest are skipped.
        self.max_backlog = max(1, round(BACKLOG_S / settings.hop_s))
        self._queue = source_subscription
        self._emit_audio = emit
        self._emit_note = emit_note
        #: Sound events (``[pipelines.sound_events]``); None when no group is watched.
        self.sound = (
            SoundEvents(self.name, settings.sound_events, task.labels, task.rate, self.duration_s)
            if settings.sound_events.groups
            else None
        )
        self._allow = frozenset(settings.labels)
        self._windower = Windower(task.window, self.hop)
        self._smoother = ScoreSmoother(settings.smoothing)
        self._resampler: Resampler | None = None
        # (stream index at the model rate, wall ts, monotonic ts) of recent chunk starts.
        self._marks: deque[tuple[float, float, float]] = deque()
        self._in_samples = 0  # input samples since the last stream reset
        self._busy_s = 0.0
        self._audio_s = 0.0
        self._last_skip_log = -_SKIP_LOG_EVERY_S
        self.skipped = 0

    @property
    def emitted(self) -> int:
        """Windows published (the ``emitted`` of ``stats``)."""
        return self.published

    # -- hooks of PipelineBase --------------------------------------------------

    def _next_input(self, timeout: float) -> AudioChunk | None:
        return self._queue.get(timeout=timeout)

    def _input_closed(self) -> bool:
        return self._queue.closed

    def _close_input(self) -> None:
        self._queue.close()

    def _at_end(self) -> None:
        if self.enabled:
            self._finish_stream()

    def _process(self, item: AudioChunk) -> None:
        self._take(item)
        self._classify_pending()

    def _after_loop_failure(self) -> None:
        # Whatever was half done is suspect: start the stream afresh.
        self._safe_reset()
        self._stop.wait(0.1)

    def _wind_down(self) -> None:
        self._close_sound_events()

    def _log_fields(self) -> dict[str, Any]:
        return {"task": "audio", "hop": self.hop}

    def _finish_fields(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def _emit(self, out: tuple[float, AudioTaskResult]) -> str | None:
        start, result = out
        self._emit_audio(self, start, self.duration_s, result)
        return None

    # -- stages -------------------------------------------------------------------

    def _take(self, chunk: AudioChunk) -> None:
        """Resample one chunk into the windower, starting a new stream after a gap."""
        if not self.enabled:
            self._reset_stream()
            return
        rate_changed = self._resampler is not None and self._resampler.in_rate != chunk.rate
        if self._queue.discontinuous or rate_changed:
            self._finish_stream()
            self._reset_stream()
            if rate_changed:
                self._resampler = None  # the source reopened at another rate
        started = time.monotonic()
        try:
            if self._resampler is None:
                self._resampler = Resampler(chunk.rate, self.task.rate)
            samples = self._resampler.process(chunk.samples)
        # A bad chunk is lost, not the thread; counted in failures (edged.runtime.stages).
        except Exception as exc:  # noqa: BLE001
            self.failures.failed("resample", exc)
            self._safe_reset()
            return
        position = self._in_samples * self.task.rate / chunk.rate
        self._marks.append((position, chunk.ts, chunk.mono))
        self._in_samples += len(chunk.samples)
        self._windower.push(samples)
        if self.sound is not None:
            self.sound.push(samples)
        self._audio_s += len(chunk.samples) / chunk.rate
        self._busy_s += time.monotonic() - started

    def _safe_reset(self) -> None:
        try:
            self._reset_stream()
        except Exception as exc:  # noqa: BLE001
            self.failures.failed("resample", exc)

    def _reset_stream(self) -> None:
        """Forget partial windows: the next chunk does not continue the last one."""
        if self._resampler is not None:
            self._resampler.reset()
        self._windower.reset()
        self._smoother.reset()
        if self.sound is not None:
            self.sound.reset_stream()
        self._marks.clear()
        self._in_samples = 0

    def _classify_pending(self) -> None:
        """Classify pending windows, taking newly queued chunks (and skipping) between them."""
        while not self._stop.is_set():
            # Live audio is taken greedily (it arrives in real time, and the
            # backlog check below needs to see all of it). A file read as fast
            # as possible is taken only as needed, or it would all pile up here.
            while (self._queue.live or self._windower.pending == 0) and (
                chunk := self._queue.get(timeout=0)
            ) is not None:
                self._take(chunk)
            excess = self._windower.pending - self.max_backlog
            if self._queue.live and excess > 0:
                self._skip(excess)
            item = self._windower.pop()
            if item is None:
                return
            self._classify(*item)

    def _skip(self, count: int) -> None:
        skipped = self._windower.skip(count)
        self.skipped += skipped
        now = time.monotonic()
        if now - self._last_skip_log >= _SKIP_LOG_EVERY_S:
            self._last_skip_log = now
            log.warning(
                "audio.windows_skipped",
                skipped=skipped,
                skipped_total=self.skipped,
                backlog_windows=self.max_backlog,
                hint="inference is slower than real time: raise hop_s or use a smaller model",
            )

    def _finish_stream(self) -> None:
        """Classify (or skip and count) the windows the current stream still completes.

        Called at a gap and at the end: windows completed by the audio before
        a gap are real audio and must not vanish with the reset.
        """
        if self._resampler is not None:
            self._windower.push(self._resampler.flush())
        excess = self._windower.pending - self.max_backlog
        if self._queue.live and excess > 0:
            self._skip(excess)
        while not self._stop.is_set() and (item := self._windower.pop()) is not None:
            self._classify(*item)

    def _time_of(self, index: int) -> tuple[float, float]:
        """Wall and monotonic time of stream sample ``index`` (model rate)."""
        while len(self._marks) > 1 and self._marks[1][0] <= index:
            self._marks.popleft()
        position, ts, mono = self._marks[0]
        offset = (index - position) / self.task.rate
        return ts + offset, mono + offset

    def _classify(self, index: int, window: npt.NDArray[np.float32]) -> None:
        ts, mono = self._time_of(index)
        started = time.monotonic()
        if self.sound is not None and self.sound.quiet(window):
            self._sound_events(ts, index, None)  # gated: below threshold, no inference
            self.processed += 1
            return
        try:
            result = self.task(window, self.settings.top_k, self._allow, self._smoother)
        # A bad window must not kill the pipeline thread; counted in failures (edged.runtime.stages).
        except Exception as exc:  # noqa: BLE001
            self.failures.failed(task_stage(exc), exc)
            return
        done = time.monotonic()
        if self.sound is not None and not self._sound_events(ts, index, result.scores):
            return
        # What the publish policy compares: the classes reaching the threshold.
        reported = tuple(c for c in result.classes if c.score >= self.threshold)
        if self._publish((ts, result), reported, done).failed:
            return
        self.failures.succeeded()
        self.processed += 1
        self._busy_s += done - started
        self._measured(done, result.timing.infer, (done - (mono + self.duration_s)) * 1e3)

    def _sound_events(self, ts: float, index: int, scores: npt.NDArray[np.float32] | None) -> bool:
        """Feed one window to the sound events and publish their changes; False on failure."""
        assert self.sound is not None
        try:
            notes = self.sound.observe(ts, index, scores)
            if self._emit_note is not None:
                for note in notes:
                    self._emit_note(self.name, self.settings.source, note)
        # Counted in failures (edged.runtime.stages); the next window goes on.
        except Exception as exc:  # noqa: BLE001
            self.failures.failed("events", exc)
            return False
        return True

    def _close_sound_events(self) -> None:
        """End open sound events when the stream ends or the pipeline stops."""
        if self.sound is None:
            return
        try:
            notes = self.sound.close()
            if self._emit_note is not None:
                for note in notes:
                    self._emit_note(self.name, self.settings.source, note)
        except Exception as exc:  # noqa: BLE001
            self.failures.failed("events", exc)

    def stats(self) -> AudioPipelineStats:
        """Counters and percentiles over the last few hundred windows."""
        status, reason = self._stats_status()
        infer_p50, infer_p95, latency_p50, latency_p95 = self._percentiles()
        return AudioPipelineStats(
            name=self.name,
            status=status,
            reason=reason,
            processed=self.processed,
            skipped=self.skipped,
            gated=self.sound.gated if self.sound is not None else 0,
            emitted=self.emitted,
            errors=self.errors,
            failures=dict(self.failures.by_stage),
            overruns=self._queue.overruns,
            windows_per_s=self._rate(),
            infer_p50_ms=infer_p50,
            infer_p95_ms=infer_p95,
            latency_p50_ms=latency_p50,
            latency_p95_ms=latency_p95,
            realtime_factor=round(self._busy_s / self._audio_s, 4) if self._audio_s else 0.0,
        )
