"""The bounded queue between an audio source and one subscriber (README "How it works").

Audio is a stream, not a sequence of snapshots: a consumer needs every chunk
in order, so a subscriber gets a bounded FIFO instead of the latest-frame
slot video uses. The bound keeps a stuck consumer from growing memory; what
happens at the bound is the producer's choice (:meth:`ChunkQueue.put` drops
and counts, :meth:`ChunkQueue.put_wait` waits), see :mod:`edged.capture.audio`.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from edged.types import AudioChunk


class ChunkQueue:
    """A bounded FIFO of chunks from one source to one subscriber (one consumer thread).

    A chunk that finds the queue full is not accepted and counts in
    :attr:`overruns`. After :meth:`get`, :attr:`discontinuous` says whether
    the chunk does not continue the previous one (chunks were lost, the
    device overflowed, the source reopened or looped), so the consumer can
    restart its windows instead of splicing unrelated audio together. After
    :meth:`close`, queued chunks are still handed out, then ``get`` returns None.
    """

    def __init__(self, max_chunks: int, *, live: bool = True) -> None:
        if max_chunks < 1:
            raise ValueError(f"max_chunks must be at least 1, got {max_chunks}")
        self.max_chunks = max_chunks
        #: True when the producer drops instead of waiting for room.
        self.live = live
        self._items: deque[tuple[AudioChunk, bool]] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._gap_next = False
        #: Chunks refused because the queue was full.
        self.overruns = 0
        #: Whether the chunk last returned by :meth:`get` follows a gap.
        self.discontinuous = False

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called; no new chunks will arrive."""
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    def put(self, chunk: AudioChunk) -> bool:
        """Queue ``chunk`` unless full (then count an overrun); never waits."""
        with self._cond:
            if self._closed:
                return False
            if len(self._items) >= self.max_chunks:
                self.overruns += 1
                self._gap_next = True
                return False
            self._append(chunk)
        return True

    def put_wait(self, chunk: AudioChunk) -> bool:
        """Queue ``chunk``, waiting for room; False if the queue is (or gets) closed."""
        with self._cond:
            while len(self._items) >= self.max_chunks and not self._closed:
                self._cond.wait()
            if self._closed:
                return False
            self._append(chunk)
        return True

    def _append(self, chunk: AudioChunk) -> None:
        self._items.append((chunk, self._gap_next))
        self._gap_next = False
        self._cond.notify_all()

    def mark_gap(self) -> None:
        """Record that the next chunk does not continue the last one."""
        with self._cond:
            self._gap_next = True

    def get(self, timeout: float | None = None) -> AudioChunk | None:
        """The oldest chunk, waiting up to ``timeout`` s (None: forever); None on timeout/close."""
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._items and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if not self._items:
                return None
            chunk, self.discontinuous = self._items.popleft()
            self._cond.notify_all()  # put_wait may be waiting for exactly this room
            return chunk

    def close(self) -> None:
        """Stop accepting chunks and wake every waiting reader and writer."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
