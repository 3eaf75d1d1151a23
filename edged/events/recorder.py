"""The event recorder: best snapshots, optional clips, and the ``end`` message naming them.

Pipeline threads call :meth:`EventRecorder.observe` for every tracked frame
and, through :meth:`~edged.publish.results.ResultPublisher.publish_events`,
:meth:`~EventRecorder.opened` / :meth:`~EventRecorder.ended` for each event.
They only copy a frame when a track's score improves and put work on a
bounded queue; one worker thread does all JPEG and MP4 encoding and file I/O,
so inference never waits for the disk.

An event's ``end`` message is published by the worker once its media are
written: at once for snapshots, and after ``post_roll_s`` of frame time when
clips are on (README "Events"). A failure to write media is counted, logged
once per burst, and the ``end`` is published anyway, without the media that
could not be written: an event is never lost for a full disk.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import structlog

from edged.config.settings import EventsSettings
from edged.events.clips import RING_SLACK_S, Decimator, FrameRing, Recording, choose_encoder
from edged.events.snapshots import Best, BestFrames, write_snapshots
from edged.events.store import EventStore
from edged.log import StageFailures
from edged.preprocess.jpeg import WHOLE, prepare
from edged.publish.payloads import EventMedia, EventResult
from edged.track.tracker import Track
from edged.types import Frame

log = structlog.get_logger(__name__)

#: Jobs waiting for the worker (event starts and ends, and frames for clips).
QUEUE_SIZE: Final = 128
#: Raw frames waiting to be JPEG-encoded for the clip ring; more are skipped (counted).
#: A raw frame is large (1080p: 6 MB), so only a few may wait.
MAX_QUEUED_FRAMES: Final = 4
#: How long a pipeline thread waits to hand over an event's end before publishing it bare.
_PUT_TIMEOUT_S: Final = 5.0
#: JPEG quality of the clip ring: clips are for context, snapshots for detail.
_RING_QUALITY: Final = 75
_MIB: Final = 1024 * 1024

#: Publishes a finished event message (the ``end``, with its media).
PublishEvent = Callable[[EventResult], None]
#: Sends an event's snapshot JPEG: (pipeline, event_id, jpeg).
SendSnapshot = Callable[[str, str, bytes], None]


@dataclass(slots=True)
class _Pending:
    """An ended event whose clip still waits for its post-roll."""

    payload: EventResult
    media: dict[str, Any]
    recording: Recording
    jpeg: bytes | None


@dataclass(slots=True)
class _PipelineClips:
    ring: FrameRing
    recording: dict[str, Recording] = field(default_factory=dict)
    waiting: dict[str, _Pending] = field(default_factory=dict)


class EventRecorder:
    """Keeps each object event's best frame and clip, and publishes its ``end`` with them."""

    def __init__(
        self,
        settings: EventsSettings,
        root: Path,
        publish: PublishEvent,
        send_snapshot: SendSnapshot | None = None,
        *,
        track_max_age_s: float = 2.0,
    ) -> None:
        self.settings = settings
        self.store = EventStore(
            root, max_bytes=int(settings.max_mb * _MIB), max_age_s=settings.max_age_hours * 3600
        )
        self._publish = publish
        self._send_snapshot = send_snapshot
        self._lag_s = track_max_age_s + 0.5
        self.best = BestFrames()
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue(QUEUE_SIZE)
        self._clips: dict[str, _PipelineClips] = {}  # worker thread only
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self.failures = StageFailures()
        self.snapshots = 0
        self.clips = 0
        self.published_snapshots = 0
        self.frames_skipped = 0
        self._frames_lock = threading.Lock()
        self._queued_frames = 0
        self._decimators: dict[str, Decimator] = {}  # by pipeline, its own thread only
        self.ended_bare = 0
        self.encoder = choose_encoder() if settings.clips else None

    # -- pipeline threads ----------------------------------------------------
    def observe(self, pipeline: str, frame: Frame, tracks: Sequence[Track]) -> None:
        """One tracked frame: keep improved best frames; queue the frame for clips."""
        if self.settings.snapshots:
            self.best.observe(pipeline, frame, tracks)
        if not self.settings.clips:
            return
        # Only the frames the ring keeps (clip_fps) are handed over, and only a few at a time.
        decimator = self._decimators.get(pipeline)
        if decimator is None:
            decimator = self._decimators[pipeline] = Decimator(self.settings.clip_fps)
        if not decimator.take(frame.ts):
            return
        with self._frames_lock:
            if self._queued_frames >= MAX_QUEUED_FRAMES:
                self.frames_skipped += 1
                return
            self._queued_frames += 1
        try:
            # The frame itself, not a copy: the worker only reads it.
            self._queue.put_nowait(("frame", pipeline, frame.ts, frame.image))
        except queue.Full:
            with self._frames_lock:
                self._queued_frames -= 1
                self.frames_skipped += 1

    @property
    def queued_frames(self) -> int:
        """Frames handed to the worker and not yet in the clip ring."""
        with self._frames_lock:
            return self._queued_frames

    def top(self, pipeline: str, track_id: int) -> Best | None:
        """The best frame of a live track so far (None before it is seen or without snapshots)."""
        return self.best.get(pipeline, track_id)

    def opened(self, pipeline: str, track_id: int, event_id: str, start: float) -> None:
        """An event started at ``start`` (wall clock): protect its files, start its clip."""
        del track_id
        self.store.opened(event_id)
        if self.settings.clips:
            self._put(("open", pipeline, event_id, start))

    def ended(self, pipeline: str, track_id: int, payload: EventResult, end: float) -> None:
        """An event ended at ``end``: the worker writes its media, then publishes ``payload``."""
        best = self.best.pop(pipeline, track_id)
        if not self._put(("end", pipeline, payload, best, end)):
            if best is not None:
                self.best.release(best.image)
            self.ended_bare += 1
            self.store.closed(payload.event_id)
            self._publish(payload)

    def finished(self, pipeline: str) -> None:
        """A pipeline's thread ended (stop, reload, end of file): no more frames will come."""
        self.best.drop_pipeline(pipeline)
        if self.settings.clips:
            self._put(("finished", pipeline))

    def _put(self, job: tuple[Any, ...]) -> bool:
        try:
            self._queue.put(job, timeout=_PUT_TIMEOUT_S)
        except queue.Full:
            self.failures.failed("queue", RuntimeError("event media queue full"))
            return False
        return True

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        """Start the worker; evict what aged out while the daemon was down."""
        self.store.enforce()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish queued work (clips end with the frames they have), then stop the worker."""
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(("stop",), timeout=timeout)
        except queue.Full:
            log.warning("events.stop_queue_full")
        self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        """The ``events`` section of ``stats``."""
        return {
            **self.store.stats(),
            "snapshots": self.snapshots,
            "clips": self.clips,
            "published_snapshots": self.published_snapshots,
            "clip_encoder": self.encoder,
            "frames_skipped": self.frames_skipped,
            "frames_queued": self.queued_frames,
            "ended_without_media": self.ended_bare,
            "failures": dict(self.failures.by_stage),
        }

    # -- worker --------------------------------------------------------------
    def _run(self) -> None:
        structlog.contextvars.bind_contextvars(component="events")
        while True:
            job = self._queue.get()
            if job[0] == "stop":
                for name in list(self._clips):
                    self._guarded("clip", self._finish_pipeline, name)
                return
            handler: Callable[..., None] = getattr(self, f"_on_{job[0]}")
            self._guarded(job[0], handler, *job[1:])

    def _guarded(self, stage: str, fn: Callable[..., None], *args: Any) -> None:
        # One job's failure (a full disk, a dead encoder) must not end the worker.
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001  counted in failures, logged once per burst
            self.failures.failed(stage, exc)
        else:
            self.failures.succeeded()

    def _pipeline(self, name: str) -> _PipelineClips:
        found = self._clips.get(name)
        if found is None:
            ring = FrameRing(self.settings.pre_roll_s + RING_SLACK_S, self.settings.clip_fps)
            found = self._clips[name] = _PipelineClips(ring)
        return found

    def _on_frame(self, pipeline: str, ts: float, image: npt.NDArray[np.uint8]) -> None:
        with self._frames_lock:
            self._queued_frames -= 1
        clips = self._pipeline(pipeline)
        s = self.settings
        jpeg = prepare(image, WHOLE, max_side=s.max_side, quality=_RING_QUALITY).jpeg
        clips.ring.push(ts, jpeg)
        for event_id, rec in list(clips.recording.items()):
            try:
                rec.feed(ts, jpeg)
            except Exception:
                self._drop_recording(clips, event_id)
                raise
        for event_id, pending in list(clips.waiting.items()):
            pending.recording.feed(ts, jpeg)  # the post-roll
            if pending.recording.complete:
                self._finish(pipeline, event_id)

    def _on_open(self, pipeline: str, event_id: str, start: float) -> None:
        clips = self._pipeline(pipeline)
        rec = Recording(
            self.store.path(pipeline, event_id, "clip").with_suffix(".part.mp4"),
            start - self.settings.pre_roll_s,
            fps=self.settings.clip_fps,
            lag_s=self._lag_s,
            encoder=self.encoder or choose_encoder(),
        )
        clips.recording[event_id] = rec
        for ts, jpeg in list(clips.ring.frames):
            rec.feed(ts, jpeg)

    def _on_end(self, pipeline: str, payload: EventResult, best: Best | None, end: float) -> None:
        event_id = payload.event_id
        media: dict[str, Any] = {}
        jpeg: bytes | None = None
        if best is not None:
            try:
                s = self.settings
                written, jpeg = write_snapshots(
                    self.store, pipeline, event_id, best,
                    quality=s.quality, max_side=s.max_side, margin=s.crop_margin,
                )  # fmt: skip
                media.update(snapshot=written.snapshot, crop=written.crop)
                self.snapshots += 1
            except Exception as exc:  # noqa: BLE001  the end is published without the snapshot
                self.failures.failed("snapshot", exc)
            finally:
                self.best.release(best.image)  # written: the next track may reuse the buffer
        clips = self._clips.get(pipeline)
        rec = clips.recording.pop(event_id, None) if clips is not None else None
        if clips is None or rec is None:
            self._publish_end(pipeline, payload, media, jpeg)
            return
        rec.end = end + self.settings.post_roll_s
        clips.waiting[event_id] = _Pending(payload, media, rec, jpeg)
        if rec.complete:
            self._finish(pipeline, event_id)

    def _on_finished(self, pipeline: str) -> None:
        self._finish_pipeline(pipeline)

    def _finish_pipeline(self, pipeline: str) -> None:
        clips = self._clips.get(pipeline)
        if clips is None:
            return
        for event_id in list(clips.waiting):
            self._finish(pipeline, event_id)
        for event_id in list(clips.recording):  # an end that never came: nothing to publish
            self._drop_recording(clips, event_id)
        del self._clips[pipeline]

    def _drop_recording(self, clips: _PipelineClips, event_id: str) -> None:
        rec = clips.recording.pop(event_id, None)
        if rec is not None:
            rec.abort()
        self.store.closed(event_id)

    def _finish(self, pipeline: str, event_id: str) -> None:
        """Close a waiting clip (at its end, or at the last frame there is) and publish the end."""
        clips = self._clips[pipeline]
        pending = clips.waiting.pop(event_id)
        rec = pending.recording
        assert rec.end is not None
        try:
            # At the end, or at the last frame there is when the pipeline stopped first.
            duration = rec.finish(min(rec.end, rec.newest))
            final = self.store.path(pipeline, event_id, "clip")
            rec.path.replace(final)
            pending.media.update(clip=str(final), clip_duration_s=round(duration, 3))
            self.clips += 1
        except Exception as exc:  # noqa: BLE001  the end is published without the clip
            rec.abort()
            self.failures.failed("clip", exc)
        self._publish_end(pipeline, pending.payload, pending.media, pending.jpeg)

    def _publish_end(
        self, pipeline: str, payload: EventResult, media: dict[str, Any], jpeg: bytes | None
    ) -> None:
        self.store.closed(payload.event_id)
        self.store.enforce()
        final = payload.model_copy(update={"media": EventMedia(**media)}) if media else payload
        self._publish(final)
        if jpeg is not None and self.settings.publish_snapshots and self._send_snapshot:
            self._send_snapshot(pipeline, payload.event_id, jpeg)
            self.published_snapshots += 1
