"""A vision pipeline: latest-frame slot → task (preprocess, infer, decode) → publish policy → emit.

Each pipeline runs in its own thread. It always takes the newest frame from
its slot: when inference is slower than capture, older frames are replaced
in the slot (and counted as dropped there), never queued, so latency stays
bounded by one inference instead of growing without limit.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from edged.capture.slot import LatestSlot
from edged.config.settings import PipelineSettings
from edged.events.fall import FallWatch
from edged.events.onoff import EmitNote
from edged.gate.motion import MotionGate
from edged.runtime.base import PipelineBase
from edged.runtime.stages import task_stage
from edged.tasks import VisionResult, VisionTask
from edged.track.tracker import Track, Tracker, TrackEvent
from edged.types import Detection, EventNote, Frame, Pose
from edged.zones.stage import ZoneStage, ZoneUpdate

if TYPE_CHECKING:
    from edged.events.recorder import EventRecorder
    from edged.offload.gate import OffloadGate

log = structlog.get_logger(__name__)

#: Called with every result the policy lets through; returns the published result's id
#: (None when it was not published, e.g. the pipeline was just disabled).
Emit = Callable[["Pipeline", Frame, VisionResult], str | None]
#: Called with the tracker's events (new / update / end) of one frame.
EmitEvents = Callable[["Pipeline", Frame, list[TrackEvent]], None]
#: Called with what a frame changed in the pipeline's zones and lines (README "Zones").
EmitZones = Callable[["Pipeline", Frame, ZoneUpdate], None]


@dataclass(frozen=True, slots=True)
class PipelineStats:
    """A snapshot of a pipeline's counters (for the ``stats`` topic)."""

    name: str
    status: str
    reason: str
    processed: int
    published: int
    dropped: int
    gated: int
    errors: int
    #: Failures by stage (task, decode, gate, track, offload, policy, emit, loop).
    failures: dict[str, int]
    fps: float
    infer_p50_ms: float
    infer_p95_ms: float
    latency_p50_ms: float
    latency_p95_ms: float


def _at_least(result: VisionResult, threshold: float) -> VisionResult:
    """``result`` without the detections scored below ``threshold``."""
    items = tuple(d for d in result.items if isinstance(d, Detection) and d.score >= threshold)
    return VisionResult(result.kind, items, result.timing)


@dataclass(eq=False, slots=True)
class _Swap:
    """One task handed to :meth:`Pipeline.swap_task`, and what came of it."""

    task: VisionTask
    on_swap: Callable[[], None]
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    previous: VisionTask | None = None
    error: Exception | None = None


class Pipeline(PipelineBase[Frame, tuple[Frame, VisionResult]]):
    """Runs one task over one source's frames in a thread."""

    def __init__(
        self,
        settings: PipelineSettings,
        task: VisionTask,
        slot: LatestSlot[Frame],
        emit: Emit,
        emit_events: EmitEvents | None = None,
        *,
        emit_note: EmitNote | None = None,
    ) -> None:
        super().__init__(settings)
        self.task = task
        self._slot = slot
        self._emit_result = emit
        self._emit_events = emit_events
        self._period = 1.0 / settings.max_fps
        self._gate = (
            MotionGate(area=settings.motion_area, keepalive_s=settings.keepalive_s)
            if settings.motion_gate
            else None
        )
        # Tracks turn a flickering detector into stable ids and new/end events,
        # which is also the best "something changed" signal for publish=changes.
        self._tracker = Tracker() if settings.track and task.kind == "detections" else None
        self._labels = frozenset(settings.labels)
        self._emit_note = emit_note
        self._pose_tracker, self._falls = self._pose_tracking(settings, task)
        #: Masks, zones and lines (None when the pipeline has none); zones and
        #: lines need the tracker, which settings validation guarantees.
        self.zones = ZoneStage.of(settings)
        #: Where zone changes go; set by the app (occupancy topics, line events).
        self.emit_zones: EmitZones | None = None
        #: The last frame inferred: the tracks, falls and zones it ended are closed with it.
        self._frame_seen: Frame | None = None
        #: Hybrid offload's gate (docs/cloud-protocol.md), set by the app when this pipeline opted in.
        self.offload: OffloadGate | None = None
        #: Event media (``[events]``): best frames and clips, set by the app.
        self.recorder: EventRecorder | None = None
        # A task waiting to replace ``task`` between two frames (see swap_task).
        self._swap: _Swap | None = None
        self._swap_lock = threading.Lock()

    def swap_task(
        self, task: VisionTask, on_swap: Callable[[], None], timeout: float = 10.0
    ) -> VisionTask:
        """Replace the task between two frames; returns the task it replaced.

        The loop applies the swap before it takes its next frame, so no frame
        is inferred by one model and published under the other's name, and
        none is lost. ``on_swap`` runs in the pipeline thread at that moment
        (the app registers the new model for result payloads there). The
        latency windows restart, so ``stats`` percentiles are the new
        model's. TimeoutError when the loop did not get to it in ``timeout``
        (a stopped pipeline); the task is then unchanged.
        """
        swap = _Swap(task, on_swap)
        with self._swap_lock:
            self._swap = swap
        if not swap.done.wait(timeout):
            with self._swap_lock:
                if self._swap is swap:
                    self._swap = None
                    raise TimeoutError(f"pipeline {self.name!r} did not reach a frame boundary")
            swap.done.wait()  # taken by the loop just now: it finishes at once
        if swap.error is not None:
            raise swap.error
        assert swap.previous is not None
        return swap.previous

    def _apply_swap(self) -> None:
        """Between two frames: install a task that :meth:`swap_task` handed over."""
        with self._swap_lock:
            swap, self._swap = self._swap, None
        if swap is None:
            return
        try:
            swap.on_swap()
        except Exception as exc:  # noqa: BLE001  (handed back to swap_task's caller)
            swap.error = exc
        else:
            swap.previous, self.task = self.task, swap.task
            self._infer_ms.clear()
            self._latency_ms.clear()
        swap.done.set()

    # -- hooks of PipelineBase --------------------------------------------------

    def _next_input(self, timeout: float) -> Frame | None:
        # A swap is applied before the next frame is taken (see swap_task).
        self._apply_swap()
        return self._slot.get(timeout=timeout)

    def _input_closed(self) -> bool:
        return self._slot.closed

    def _close_input(self) -> None:
        self._slot.close()

    def _process(self, item: Frame) -> None:
        if not self.enabled:
            # A disabled pipeline sees nothing: its zones must not stay ON.
            self._zones_end(item)
            return
        if not self._gate_passes(item):
            return
        started = time.monotonic()
        if self._infer_and_publish(item):
            self._frame_seen = item
        self._pace(started)

    def _after_loop_failure(self) -> None:
        self._pace(time.monotonic())

    def _pace(self, started: float) -> None:
        """Cap the inference rate at ``max_fps``.

        Frames arriving meanwhile replace each other in the slot, so the
        next one taken is the freshest.
        """
        delay = started + self._period - time.monotonic()
        if delay > 0:
            self._stop.wait(delay)

    def _emit(self, out: tuple[Frame, VisionResult]) -> str | None:
        frame, result = out
        return self._emit_result(self, frame, result)

    def _log_fields(self) -> dict[str, Any]:
        return {"task": self.settings.task}

    @staticmethod
    def _pose_tracking(
        settings: PipelineSettings, task: VisionTask
    ) -> tuple[Tracker | None, FallWatch | None]:
        """Tracker and fall watch of a pose pipeline with a person detector or fall events."""
        if task.kind != "pose" or not (settings.detector or settings.fall.enabled):
            return None, None
        # min_hits=1: every pose gets an id from its first frame on; the
        # fall rule's min_s, not the tracker, debounces events.
        tracker = Tracker(min_hits=1) if settings.track or settings.fall.enabled else None
        return tracker, FallWatch(settings.fall) if settings.fall.enabled else None

    def _track_poses(self, frame: Frame, result: VisionResult) -> VisionResult:
        """Give each pose its person's track id; feed the fall watch; publish its events."""
        if self._pose_tracker is None:
            return result
        poses = [p for p in result.items if isinstance(p, Pose)]
        people = [Detection("person", 0, p.score, p.box) for p in poses]
        tracks, events = self._pose_tracker.update(people, frame.mono)
        # A matched track takes its detection's box as is, at this frame's time.
        ids = {t.box: t.id for t in tracks if t.last_ts == frame.mono}
        tracked = tuple(dataclasses.replace(p, track_id=ids.get(p.box)) for p in poses)
        if self._falls is not None:
            ended = [e.track.id for e in events if e.kind == "end"]
            notes = self._falls.observe(frame.ts, frame.width, frame.height, tracked, ended)
            self._publish_notes(frame.source, notes)
        return VisionResult(result.kind, tracked, result.timing)

    def _publish_notes(self, source: str, notes: list[EventNote]) -> None:
        if self._emit_note is not None:
            for note in notes:
                self._emit_note(self.name, source, note)

    def _close_falls(self) -> None:
        """End open fall events when the pipeline stops or its source ends."""
        if self._falls is None:
            return
        try:
            self._publish_notes(self.settings.source, self._falls.close())
        # Counted in failures (edged.runtime.stages); the thread is ending anyway.
        except Exception as exc:  # noqa: BLE001
            self.failures.failed("emit", exc)

    def _filter(self, result: VisionResult) -> VisionResult:
        if self.zones is not None:
            result = self.zones.mask(result)
        if not self._labels or result.kind != "detections":
            return result
        items = tuple(
            d for d in result.items if isinstance(d, Detection) and d.label in self._labels
        )
        return VisionResult(result.kind, items, result.timing)

    def _infer_and_publish(self, frame: Frame) -> bool:
        """Infer, record, track, publish and offload one frame; False when inference failed.

        Every stage's failure is counted in :attr:`failures` and ends only
        this frame: the thread goes on with the next one.
        """
        # Offload: the model reports down to the band's low edge, so the
        # policy sees uncertain scores; publishing still uses the threshold.
        floor = self.threshold if self.offload is None else min(self.threshold, self.offload.floor)
        try:
            seen = self._filter(self.task(frame, floor))
        # A bad frame must not kill the pipeline thread; counted in failures (edged.runtime.stages).
        except Exception as exc:  # noqa: BLE001
            self.failures.failed(task_stage(exc), exc)
            return False
        finally:
            # Inference is done: an on-demand source may read the next
            # frame while this thread publishes the result.
            self._slot.want()
        result = seen if floor >= self.threshold else _at_least(seen, self.threshold)
        done = time.monotonic()
        self.processed += 1
        self._measured(done, result.timing.infer, (done - frame.mono) * 1e3)
        stage = "track"
        try:
            result = self._track_poses(frame, result)
            changed: bool | None = None
            if self._tracker is not None:
                dets = [d for d in result.items if isinstance(d, Detection)]
                # Monotonic time: a wall-clock step must not age every track out at once.
                tracks, events = self._tracker.update(dets, frame.mono)
                self._record(frame, tracks)
                if self.zones is not None:
                    stage = "zones"
                    result = self._zones_step(frame, result, tracks)
                changed = any(e.kind != "update" for e in events)
                if events and self._emit_events is not None:
                    stage = "emit"
                    self._emit_events(self, frame, events)
            stage = "offload"
            submit = self.offload.decide(seen) if self.offload is not None else None
        # Counted in failures (edged.runtime.stages); the thread goes on.
        except Exception as exc:  # noqa: BLE001
            self.failures.failed(stage, exc)
            return True
        # An offloaded frame's result is published even when the policy
        # would skip it: the verdict's ref must name a delivered result.
        sent = self._publish(
            (frame, result), result.items, done, changed=changed, force=submit is not None
        )
        if sent.failed:
            return True
        if submit is not None and sent.ref is not None:
            try:
                submit(frame, sent.ref)
            except Exception as exc:  # noqa: BLE001  counted in failures (edged.runtime.stages)
                self.failures.failed("offload", exc)
                return True
        self.failures.succeeded()
        return True

    def _zones_step(self, frame: Frame, result: VisionResult, tracks: list[Track]) -> VisionResult:
        """Zones and lines after tracking: emit what changed, return ``result`` with zones.

        Runs on every inferred frame whatever the publish policy decides, so
        occupancy follows the objects (and returns to OFF) under every policy.
        """
        assert self.zones is not None
        result, update = self.zones.update(result, tracks, frame.mono)
        if update and self.emit_zones is not None:
            self.emit_zones(self, frame, update)
        return result

    def _zones_end(self, frame: Frame | None) -> None:
        """Empty every zone: the pipeline ended, or is disabled and sees nothing."""
        if self.zones is None or frame is None:
            return
        try:
            update = self.zones.end(frame.mono)
            if update and self.emit_zones is not None:
                self.emit_zones(self, frame, update)
        except Exception as exc:  # noqa: BLE001
            self.failures.failed("zones", exc)

    def _record(self, frame: Frame, tracks: list[Track]) -> None:
        """Event media: let the recorder keep best frames and clip frames (stage ``events``)."""
        if self.recorder is None:
            return
        try:
            self.recorder.observe(self.name, frame, tracks)
        except Exception as exc:  # noqa: BLE001  media are extra; results and events go on
            self.failures.failed("events", exc)

    def _gate_passes(self, frame: Frame) -> bool:
        """The motion gate's verdict; a failing gate lets the frame through (fail open)."""
        if self._gate is None:
            return True
        try:
            return self._gate.should_run(frame)
        except Exception as exc:  # noqa: BLE001
            self.failures.failed("gate", exc)
            return True

    def _wind_down(self) -> None:
        """Close what the pipeline holds open when it ends: tracks (their ``end`` events),
        falls, zones (back to empty) and the event recorder's clips."""
        frame_seen = self._frame_seen
        if self._tracker is not None and self._emit_events is not None:
            try:
                last = self._tracker.flush()
                if last and frame_seen is not None:
                    self._emit_events(self, frame_seen, last)
            except Exception as exc:  # noqa: BLE001
                self.failures.failed("emit", exc)
        self._close_falls()
        self._zones_end(frame_seen)
        if self.recorder is not None:
            self.recorder.finished(self.name)

    def stats(self) -> PipelineStats:
        """Counters and latency percentiles over the last few hundred frames."""
        status, reason = self._stats_status()
        infer_p50, infer_p95, latency_p50, latency_p95 = self._percentiles()
        return PipelineStats(
            name=self.name,
            status=status,
            reason=reason,
            processed=self.processed,
            published=self.published,
            dropped=self._slot.dropped,
            gated=self._gate.skipped if self._gate is not None else 0,
            errors=self.errors,
            failures=dict(self.failures.by_stage),
            fps=self._rate(),
            infer_p50_ms=infer_p50,
            infer_p95_ms=infer_p95,
            latency_p50_ms=latency_p50,
            latency_p95_ms=latency_p95,
        )
