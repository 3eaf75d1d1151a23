"""The capture loop every video source shares (README "How it works").

A :class:`VideoSource` owns one daemon thread that opens the device, reads
frames, fans each :class:`~edged.types.Frame` out to every subscriber's
:class:`~edged.capture.slot.LatestSlot`, and owns its reconnect: any failure
turns the state to ``down`` with a reason, waits with capped exponential
backoff and jitter, and reopens, until :meth:`VideoSource.stop` is called.
Subclasses only say how to open, read and close their device.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

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


class VideoSource(SourceLifecycle[LatestSlot[Frame]]):
    """Base class of every video source: capture thread, fan-out, reconnect, rate cap.

    ``finite`` sources (files, image folders) have a real end: at the end they
    start over when ``loop`` is set, else they become ``ended``, close every
    subscriber's slot and set :attr:`ended`. For live sources (cameras,
    streams) an end of stream is a failure: ``down``, then reconnect.
    """

    def __init__(self, settings: SourceSettings, *, finite: bool) -> None:
        super().__init__(settings, finite=finite)
        self._frames = 0  # guarded by self._lock, like the fields below
        self._size = (0, 0)
        self._times: deque[float] = deque(maxlen=int(FPS_WINDOW_S * settings.fps) + 2)

        self._next_id = 0  # only touched by the capture thread
        # The last delivered frame, for snapshots. Replaced by one reference
        # assignment per frame (atomic in CPython), so no lock and no copy.
        self._latest: Frame | None = None

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

    # -- public API -----------------------------------------------------------

    def subscribe(self, *, on_demand: bool = False) -> LatestSlot[Frame]:
        """A new latest-frame slot that receives every frame from now on.

        All subscribers get the same :class:`Frame` object (no copy per
        consumer). After the source ended or stopped the slot comes back closed.
        ``on_demand`` only matters to a file read as fast as possible: it
        reads the next frame when this reader asks for it instead of while
        the reader is busy (see :meth:`_readers_ready`).
        """
        return self._add_reader(LatestSlot(on_demand=on_demand))

    def unsubscribe(self, slot: LatestSlot[Frame]) -> None:
        """Stop delivering to ``slot`` (a pipeline that was disabled)."""
        self._remove_reader(slot)

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

    def _stream_stopped(self) -> str:
        where = display_uri(self.settings.uri) or self.name
        return (
            f"{self.kind} source {where!r} stopped delivering frames "
            "(end of stream or read timeout)"
        )

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
                    self._came_up(width=self._size[0], height=self._size[1])
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
        for slot in self._readers:
            ready = slot.wait_wanted if slot.on_demand else slot.wait_taken
            # A slot unsubscribed meanwhile has nobody left to wait for.
            while not ready(0.2) and slot in self._readers:
                if self._stop_flag.is_set():
                    return False
        return True

    def _deliver(self, image: npt.NDArray[np.uint8], now: float) -> None:
        frame = Frame(id=self._next_id, ts=time.time(), mono=now, source=self.name, image=image)
        self._next_id += 1
        for slot in self._readers:
            slot.put(frame)
        self._latest = frame
        with self._lock:
            self._frames += 1
            self._times.append(now)
            self._size = (frame.width, frame.height)
