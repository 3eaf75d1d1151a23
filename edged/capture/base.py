"""The capture loop every video source shares (README "How it works").

A :class:`VideoSource` owns one daemon thread that opens the device, reads
frames, fans each :class:`~edged.types.Frame` out to every subscriber's
:class:`~edged.capture.slot.LatestSlot`, and owns its reconnect: any failure
turns the state to ``down`` with a reason, waits with capped exponential
backoff and jitter, and reopens, until :meth:`VideoSource.stop` is called.
Subclasses only say how to open, read and close their device.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import structlog

from edged.capture.lifecycle import LifecycleState, SourceLifecycle, display_uri
from edged.capture.slot import LatestSlot
from edged.config.settings import SourceSettings
from edged.errors import SourceError
from edged.types import Frame

#: Window over which :attr:`SourceStatus.fps` is measured, seconds.
FPS_WINDOW_S = 5.0

# A live source whose frames arrive up to this fraction of a period early is
# still delivered: a camera running at exactly the cap jitters around the
# schedule, and discarding every other frame would halve its rate.
_EARLY_TOLERANCE = 0.25


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """A consistent snapshot of a source, for the ``state`` and ``stats`` messages."""

    name: str
    kind: str
    state: LifecycleState
    #: Why the source is ``down`` (or ended/stopped); empty while ``up``.
    reason: str
    #: Frames delivered to subscribers since start.
    frames: int
    #: Times the source came back ``up`` after being ``down``.
    reconnects: int
    #: Delivered frames per second over the last :data:`FPS_WINDOW_S` seconds.
    fps: float
    #: Size of the last delivered frame, px (0 before the first frame).
    width: int
    height: int
    #: Wall-clock time of the last state change, seconds since the epoch.
    since: float


class VideoSource(SourceLifecycle, ABC):
    """Base class of every video source: capture thread, fan-out, reconnect, rate cap.

    ``finite`` sources (files, image folders) have a real end: at the end they
    start over when ``loop`` is set, else they become ``ended``, close every
    subscriber's slot and set :attr:`ended`. For live sources (cameras,
    streams) an end of stream is a failure: ``down``, then reconnect.
    """

    def __init__(self, settings: SourceSettings, *, finite: bool) -> None:
        self.settings = settings
        self.name = settings.name
        self.kind = settings.kind
        self.finite = finite
        #: Set once a finite source without ``loop`` has delivered its last frame.
        self.ended = threading.Event()
        self._stop_flag = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = structlog.get_logger(__name__).bind(source=self.name, kind=self.kind)

        # Copy-on-write tuple: the capture thread iterates it without a lock.
        self._slots: tuple[LatestSlot[Frame], ...] = ()
        self._slots_lock = threading.Lock()
        self._slots_closed = False

        self._lock = threading.Lock()  # guards the status fields below
        self._state: LifecycleState = "starting"
        self._reason = ""
        self._since = time.time()
        self._frames = 0
        self._reconnects = 0
        self._size = (0, 0)
        self._times: deque[float] = deque(maxlen=int(FPS_WINDOW_S * settings.fps) + 2)

        self._next_id = 0  # only touched by the capture thread
        # The last delivered frame, for snapshots. Replaced by one reference
        # assignment per frame (atomic in CPython), so no lock and no copy.
        self._latest: Frame | None = None
        self._failures = 0  # consecutive failed sessions, drives the backoff

    # -- subclass interface ---------------------------------------------------

    @abstractmethod
    def _open(self) -> float | None:
        """Open the device; raise :class:`SourceError` with a helpful message on failure.

        Return the media's own frame rate when frames must be paced at it
        (a video file played in real time), else None.
        """

    @abstractmethod
    def _read(self) -> npt.NDArray[np.uint8] | None:
        """Block for the next frame as ``H x W x 3`` RGB; None at the end of the stream."""

    @abstractmethod
    def _close(self) -> None:
        """Release the device. Must be safe to call when ``_open`` failed half-way."""

    # -- public API -----------------------------------------------------------

    def subscribe(self, *, on_demand: bool = False) -> LatestSlot[Frame]:
        """A new latest-frame slot that receives every frame from now on.

        All subscribers get the same :class:`Frame` object (no copy per
        consumer). After the source ended or stopped the slot comes back closed.
        ``on_demand`` only matters to a file read as fast as possible: it
        reads the next frame when this reader asks for it instead of while
        the reader is busy (see :meth:`_readers_ready`).
        """
        slot: LatestSlot[Frame] = LatestSlot(on_demand=on_demand)
        with self._slots_lock:
            if self._slots_closed:
                slot.close()
            else:
                self._slots = (*self._slots, slot)
        return slot

    def unsubscribe(self, slot: LatestSlot[Frame]) -> None:
        """Stop delivering to ``slot`` (a pipeline that was disabled)."""
        with self._slots_lock:
            self._slots = tuple(s for s in self._slots if s is not slot)

    def latest(self) -> Frame | None:
        """The last frame delivered to subscribers, or None before the first one.

        The same object the pipelines received, not a copy: like every
        consumer, callers must not write into its image (see
        :mod:`edged.types`). It stays available after the source stopped.
        """
        return self._latest

    @property
    def status(self) -> SourceStatus:
        """A snapshot of state, reason and counters."""
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._times if t >= now - FPS_WINDOW_S]
            # (n-1) intervals since the oldest recent frame, measured up to
            # *now* so that the rate decays while no frames arrive.
            span = now - recent[0] if recent else 0.0
            fps = (len(recent) - 1) / span if len(recent) > 1 and span > 0 else 0.0
            return SourceStatus(
                name=self.name,
                kind=self.kind,
                state=self._state,
                reason=self._reason,
                frames=self._frames,
                reconnects=self._reconnects,
                fps=round(fps, 2),
                width=self._size[0],
                height=self._size[1],
                since=self._since,
            )

    # -- the capture thread ---------------------------------------------------

    def _run(self) -> None:
        final: LifecycleState = "stopped"
        try:
            while not self._stop_flag.is_set():
                try:
                    outcome = self._session()
                    if outcome == "end" and not self.finite:
                        where = display_uri(self.settings.uri) or self.name
                        raise SourceError(
                            f"{self.kind} source {where!r} stopped delivering frames "
                            "(end of stream or read timeout)"
                        )
                # Any error from a device library must turn into "down" and a
                # retry, never into a silently dead capture thread.
                except Exception as exc:  # noqa: BLE001
                    if self._stop_flag.is_set():
                        break  # a read cut short by shutdown is not an outage
                    reason = str(exc) if isinstance(exc, SourceError) else repr(exc)
                    delay = self._backoff()
                    self._set_state("down", reason, retry_in_s=round(delay, 2))
                    if self._stop_flag.wait(delay):
                        break
                    continue
                if outcome == "stop" or self._stop_flag.is_set():
                    break
                if not self.settings.loop:
                    final = "ended"
                    break
                self._log.debug("source.looping")
        finally:
            self._close_slots()
            if final == "ended":
                self._set_state("ended", "end of media")
                self.ended.set()
            else:
                self._set_state("stopped", "stop requested")

    def _session(self) -> Literal["end", "stop"]:
        """Open, deliver frames until the end of the stream or stop, close."""
        delivered = 0
        try:
            media_rate = self._open()
            rate = min(self.settings.fps, media_rate) if media_rate else self.settings.fps
            period = 1.0 / rate
            due = time.monotonic()
            while not self._stop_flag.is_set():
                if self.finite:
                    # Pace against an absolute monotonic schedule: a fixed
                    # sleep(period) would drift by the read time every frame.
                    delay = due - time.monotonic()
                    if delay > 0 and self._stop_flag.wait(delay):
                        return "stop"
                if self.finite and not self.settings.realtime and not self._readers_ready():
                    return "stop"
                image = self._read()
                if image is None:
                    if self.finite and delivered == 0:
                        raise SourceError(
                            f"no frame could be read from {display_uri(self.settings.uri)!r}"
                        )
                    return "end"
                now = time.monotonic()
                if now < due - _EARLY_TOLERANCE * period:
                    # A live source faster than the cap: drop the frame rather
                    # than sleep, since sleeping would leave stale frames in
                    # the device or network buffer and add latency.
                    continue
                due = max(due + period, now)
                self._deliver(image, now)
                delivered += 1
                if delivered == 1:
                    self._came_up()
            return "stop"
        finally:
            self._close_quietly()

    def _readers_ready(self) -> bool:
        """Lock-step for a file read as fast as possible, so no frame is dropped.

        Each reader is waited for in its slot's way: until it took the previous
        frame (decoding then overlaps its inference, which pays when inference
        leaves a core free), or, for an ``on_demand`` slot, until it asks for
        the next one (decoding then waits for inference to finish, which pays
        when inference uses every core: a decode beside it would preempt one
        of the runtime's workers, and the whole operator waits for that one).
        False when stop was requested meanwhile.
        """
        for slot in self._slots:
            ready = slot.wait_wanted if slot.on_demand else slot.wait_taken
            # A slot unsubscribed meanwhile has nobody left to wait for.
            while not ready(0.2) and slot in self._slots:
                if self._stop_flag.is_set():
                    return False
        return True

    def _deliver(self, image: npt.NDArray[np.uint8], now: float) -> None:
        frame = Frame(id=self._next_id, ts=time.time(), mono=now, source=self.name, image=image)
        self._next_id += 1
        for slot in self._slots:
            slot.put(frame)
        self._latest = frame
        with self._lock:
            self._frames += 1
            self._times.append(now)
            self._size = (frame.width, frame.height)

    def _came_up(self) -> None:
        self._failures = 0
        with self._lock:
            recovered = self._state == "down"
            if recovered:
                self._reconnects += 1
        w, h = self._size
        self._set_state("up", "", width=w, height=h)

    def _close_readers(self) -> None:
        self._close_slots()

    def _close_slots(self) -> None:
        with self._slots_lock:
            self._slots_closed = True
            slots = self._slots
        for slot in slots:
            slot.close()
