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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from edged.capture.slot import LatestSlot
from edged.config.settings import PipelineSettings
from edged.events.fall import FallWatch
from edged.events.onoff import EmitNote
from edged.gate.motion import MotionGate
from edged.log import StageFailures
from edged.runtime.policy import PublishPolicy
from edged.runtime.stages import StageHealth, task_stage
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


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Pipeline(StageHealth):
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
        self.settings = settings
        self.name = settings.name
        self.task = task
        self.threshold = settings.threshold
        self.enabled = True
        self._slot = slot
        self._emit = emit
        self._emit_events = emit_events
        self._policy = PublishPolicy(settings.publish, settings.heartbeat_s)
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
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"pipeline-{self.name}", daemon=True
        )
        self._infer_ms: deque[float] = deque(maxlen=512)
        self._latency_ms: deque[float] = deque(maxlen=512)
        self._done_mono: deque[float] = deque(maxlen=64)
        self.processed = 0
        self.published = 0
        #: Every stage failure, counted by stage; the thread goes on (see edged.runtime.stages).
        self.failures = StageFailures()
        self.status = "starting"
        self.reason = ""
        self.last_progress = time.monotonic()
        self.finished = threading.Event()
        #: Hybrid offload's gate (docs/cloud-protocol.md), set by the app when this pipeline opted in.
        self.offload: OffloadGate | None = None
        #: Event media (``[events]``): best frames and clips, set by the app.
        self.recorder: EventRecorder | None = None
        # A task waiting to replace ``task`` between two frames (see swap_task).
        self._swap: _Swap | None = None
        self._swap_lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

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

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the loop to finish its current frame and exit; wait at most ``timeout``."""
        self._stop.set()
        self._slot.close()
        self._thread.join(timeout)

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

    def _process(self, frame: Frame) -> bool:
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
        self.last_progress = done
        self._done_mono.append(done)
        self._infer_ms.append(result.timing.infer)
        self._latency_ms.append((done - frame.mono) * 1e3)
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
            stage = "policy"
            if self._policy.should_publish(result.items, done, changed=changed) or submit:
                stage = "emit"
                local_id = self._emit(self, frame, result)
                self.published += 1
                # An offloaded frame's result is published even when the policy
                # would skip it: the verdict's ref must name a delivered result.
                if submit is not None and local_id is not None:
                    stage = "offload"
                    submit(frame, local_id)
        # E.g. emit on a failing outbox: count, go on; counted in failures (edged.runtime.stages).
        except Exception as exc:  # noqa: BLE001
            self.failures.failed(stage, exc)
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

    def _loop(self) -> None:
        structlog.contextvars.bind_contextvars(pipeline=self.name, model=self.settings.model)
        period = 1.0 / self.settings.max_fps
        self.status = "running"
        log.info("pipeline.started", source=self.settings.source, task=self.settings.task)
        frame_seen: Frame | None = None
        while not self._stop.is_set():
            try:
                self._apply_swap()
                frame = self._slot.get(timeout=0.5)
                if frame is None:
                    if self._slot.closed:
                        break
                    continue
                if not self.enabled:
                    # A disabled pipeline sees nothing: its zones must not stay ON.
                    self._zones_end(frame)
                    continue
                if not self._gate_passes(frame):
                    continue
                started = time.monotonic()
                if self._process(frame):
                    frame_seen = frame
            # Nothing but stop ends this thread; counted in failures (edged.runtime.stages).
            except Exception as exc:  # noqa: BLE001
                self.failures.failed("loop", exc)
                started = time.monotonic()
            # Cap the inference rate; frames arriving meanwhile replace each
            # other in the slot, so the next one taken is the freshest.
            delay = started + period - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
        if self.status == "running":
            self.status = "stopped" if self._stop.is_set() else "ended"
        self._wind_down(frame_seen)
        log.info("pipeline.finished", processed=self.processed, status=self.status)
        self.finished.set()

    def _wind_down(self, frame_seen: Frame | None) -> None:
        """Close what the pipeline holds open when it ends: tracks (their ``end`` events),
        falls, zones (back to empty) and the event recorder's clips."""
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
        done = list(self._done_mono)
        fps = (
            (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else 0.0
        )
        infer = list(self._infer_ms)
        lat = list(self._latency_ms)
        return PipelineStats(
            name=self.name,
            status=self.health[0] if self.enabled else "disabled",
            reason=self.health[1],
            processed=self.processed,
            published=self.published,
            dropped=self._slot.dropped,
            gated=self._gate.skipped if self._gate is not None else 0,
            errors=self.errors,
            failures=dict(self.failures.by_stage),
            fps=round(fps, 2),
            infer_p50_ms=round(_pct(infer, 0.5), 2),
            infer_p95_ms=round(_pct(infer, 0.95), 2),
            latency_p50_ms=round(_pct(lat, 0.5), 2),
            latency_p95_ms=round(_pct(lat, 0.95), 2),
        )
