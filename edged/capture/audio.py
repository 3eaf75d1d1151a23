"""The capture loop every audio source shares (README "How it works").

An :class:`AudioSource` owns one daemon thread that opens the device, reads
blocks, mixes them to mono float32 and hands each
:class:`~edged.types.AudioChunk` to every subscriber's
:class:`~edged.capture.chunks.ChunkQueue`. Like the video sources it owns
its reconnect: a failure turns the state to ``down`` with a reason, waits
with capped exponential backoff and jitter, and reopens, until :meth:`stop`.

What happens when a subscriber's queue is full depends on whether the
source has a clock:

- *live* sources (a microphone, a file played in real time) never wait for a
  subscriber: the chunk is dropped for that subscriber only and counted in
  its ``overruns``; capture goes on (README "How it works": never blocks, never silent).
- a file read as fast as possible (``realtime = false``) has no clock to
  fall behind, so it waits for room instead: dropping would lose audio for
  no reason, and the reader's speed then follows the slowest subscriber.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from edged.capture.chunks import ChunkQueue
from edged.capture.lifecycle import LifecycleState, SourceLifecycle, display_uri
from edged.config.settings import SourceSettings
from edged.errors import SourceError
from edged.preprocess.audio import downmix
from edged.types import AudioChunk

#: Length of the blocks sources read and deliver, seconds. Short enough for
#: a 0.48 s hop, long enough that per-chunk overhead is negligible.
CHUNK_S = 0.1

__all__ = ["CHUNK_S", "AudioSource", "AudioSourceStatus", "ChunkQueue"]


@dataclass(frozen=True, slots=True)
class AudioSourceStatus:
    """A consistent snapshot of an audio source, for the ``state`` and ``stats`` messages."""

    name: str
    kind: str
    state: LifecycleState
    #: Why the source is ``down`` (or ended/stopped); empty while ``up``.
    reason: str
    #: Chunks delivered since start.
    chunks: int
    #: Audio delivered since start, seconds.
    seconds: float
    #: Sample rate of the last session, Hz (0 before the first open).
    rate: int
    #: Chunks dropped for a full subscriber queue, summed over subscribers.
    overruns: int
    #: Times the device itself lost input (e.g. PortAudio input overflow).
    device_overflows: int
    #: Times the source came back ``up`` after being ``down``.
    reconnects: int
    #: Wall-clock time of the last state change, seconds since the epoch.
    since: float


class AudioSource(SourceLifecycle[ChunkQueue]):
    """Base class of every audio source: capture thread, fan-out, reconnect.

    ``finite`` sources (files) have a real end: they start over when
    ``loop`` is set, else become ``ended``, close every subscriber queue and
    set :attr:`ended`. For a live source an end of stream is a failure.
    """

    def __init__(self, settings: SourceSettings, *, finite: bool) -> None:
        super().__init__(settings, finite=finite)
        #: Live sources drop for full subscribers; others wait (module docstring).
        self.live = not finite or settings.realtime
        self._dropped_overruns = 0  # overruns of queues already unsubscribed (readers lock)

        # Guarded by self._lock, like the base's status fields.
        self._chunks = 0
        self._seconds = 0.0
        self._rate = 0
        self._device_overflows = 0

    # -- subclass interface ---------------------------------------------------

    @abstractmethod
    def _open(self) -> int:
        """Open the device and return its sample rate, Hz; raise SourceError on failure."""

    @abstractmethod
    def _read(self) -> npt.NDArray[np.generic] | None:
        """Block for the next ``(frames, channels)`` block; None at the end of the stream."""

    # -- public API -----------------------------------------------------------

    def subscribe(self, max_chunks: int = 64) -> ChunkQueue:
        """A new queue that receives every chunk from now on (``max_chunks`` deep).

        The default holds 6.4 s of audio: a pipeline only falls that far
        behind in taking chunks when its thread is starved, since it takes
        them greedily and skips *windows* itself when inference is slow.
        """
        return self._add_reader(ChunkQueue(max_chunks, live=self.live))

    def unsubscribe(self, queue: ChunkQueue) -> None:
        """Stop delivering to ``queue`` (a pipeline that was disabled)."""
        self._remove_reader(queue)
        queue.close()

    def _reader_removed(self, reader: ChunkQueue) -> None:
        # Under the readers lock, so that status never counts a queue twice or not at all.
        self._dropped_overruns += reader.overruns

    @property
    def status(self) -> AudioSourceStatus:
        """A snapshot of state, reason and counters."""
        with self._readers_lock:
            overruns = self._dropped_overruns + sum(q.overruns for q in self._readers)
        with self._lock:
            return AudioSourceStatus(
                name=self.name,
                kind=self.kind,
                state=self._state,
                reason=self._reason,
                chunks=self._chunks,
                seconds=round(self._seconds, 3),
                rate=self._rate,
                overruns=overruns,
                device_overflows=self._device_overflows,
                reconnects=self._reconnects,
                since=self._since,
            )

    # -- the capture thread ---------------------------------------------------

    def _stream_stopped(self) -> str:
        where = display_uri(self.settings.uri) or "default device"
        return f"{self.kind} source {where!r} stopped delivering audio"

    def _session(self) -> Literal["end", "stop"]:
        """Open, deliver chunks until the end of the stream or stop, close."""
        delivered = 0
        try:
            rate = self._open()
            with self._lock:
                self._rate = rate
            start_wall, start_mono = time.time(), time.monotonic()
            position = 0  # samples delivered this session
            while not self._stop_flag.is_set():
                block = self._read()
                if block is None or len(block) == 0:
                    if self.finite and delivered == 0:
                        raise SourceError(f"no audio could be read from {self.settings.uri!r}")
                    return "end"
                samples = downmix(block)
                n = len(samples)
                if self.finite:
                    # A file's timestamps come from its own sample clock; in
                    # real time, wait until its last sample "was recorded",
                    # against an absolute schedule that cannot drift.
                    offset = position / rate
                    ts, mono = start_wall + offset, start_mono + offset
                    due = start_mono + (position + n) / rate
                    wait = due - time.monotonic()
                    if self.live and wait > 0 and self._stop_flag.wait(wait):
                        return "stop"
                else:
                    # A device block has just been completed: its first
                    # sample was captured n / rate seconds ago.
                    ts, mono = time.time() - n / rate, time.monotonic() - n / rate
                position += n
                self._deliver(
                    AudioChunk(ts=ts, mono=mono, source=self.name, samples=samples, rate=rate)
                )
                delivered += 1
                if delivered == 1:
                    self._came_up(rate=rate)
            return "stop"
        finally:
            self._close_quietly()

    def _deliver(self, chunk: AudioChunk) -> None:
        for queue in self._readers:
            if self.live:
                queue.put(chunk)
            else:
                queue.put_wait(chunk)
        with self._lock:
            self._chunks += 1
            self._seconds += len(chunk.samples) / chunk.rate

    def _discontinuity(self) -> None:
        """Tell every subscriber that the next chunk does not continue the last one."""
        for queue in self._readers:
            queue.mark_gap()

    def _device_overflow(self) -> None:
        """For subclasses: the device lost input before it could be read."""
        with self._lock:
            self._device_overflows += 1
        self._discontinuity()
