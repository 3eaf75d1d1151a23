"""The latest-frame slot between a capture thread and one pipeline (README "How it works").

A slot holds at most one item. When the consumer is slower than the producer,
the unread item is replaced and counted in :attr:`LatestSlot.dropped`: stale
frames are dropped, never queued, so a slow model never makes capture lag or
memory grow.

A source that is not live (a file read as fast as possible) does not drop:
it waits for its readers, in one of two ways chosen per slot. By default it
waits until the previous frame was *taken* (:meth:`LatestSlot.wait_taken`),
so it decodes the next frame while the reader runs inference. An
``on_demand`` slot makes it wait until the reader *asks* for a frame
(:meth:`LatestSlot.wait_wanted`), either by waiting in ``get`` or, earlier,
by calling :meth:`LatestSlot.want` as soon as its inference is done: decoding
then runs between inferences, not beside them, which is what a reader whose
inference uses every core needs.
"""

from __future__ import annotations

import threading
import time
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """A thread-safe, single-item mailbox that keeps only the newest item.

    Invariant (checked by a property test): every accepted ``put`` is either
    taken by exactly one ``get``, dropped by a later ``put``, or still pending::

        put_count == taken + dropped + (1 if pending else 0)

    After :meth:`close`, ``put`` is ignored, and ``get`` still hands out the
    pending item (so the last frame of a file reaches the pipeline) before it
    starts returning None.
    """

    __slots__ = (
        "_closed",
        "_cond",
        "_has_item",
        "_item",
        "_wanted",
        "dropped",
        "on_demand",
        "put_count",
        "taken",
    )

    def __init__(self, *, on_demand: bool = False) -> None:
        # A plain Lock (not the default RLock) is enough and a little cheaper;
        # this is on the per-frame hot path.
        self._cond = threading.Condition(threading.Lock())
        self._item: T | None = None
        self._has_item = False
        self._closed = False
        self._wanted = False  # a reader asked for the next item (on-demand producers)
        #: A lock-step producer waits for a reader's request, not for the take.
        self.on_demand = on_demand
        #: Items accepted by :meth:`put` (not counting puts after close).
        self.put_count = 0
        #: Items replaced before any consumer took them.
        self.dropped = 0
        #: Items handed out by :meth:`get`.
        self.taken = 0

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called; no new items will arrive."""
        return self._closed

    @property
    def pending(self) -> bool:
        """True while an item waits to be taken."""
        return self._has_item

    def put(self, item: T) -> bool:
        """Offer ``item``, replacing (and counting as dropped) an untaken one.

        Never blocks beyond the internal lock. Returns False, and does
        nothing, when the slot is closed.
        """
        with self._cond:
            if self._closed:
                return False
            if self._has_item:
                self.dropped += 1
            self._item = item
            self._has_item = True
            self._wanted = False
            self.put_count += 1
            self._cond.notify()
        return True

    def get(self, timeout: float | None = None) -> T | None:
        """Take the newest item, waiting up to ``timeout`` seconds (None: forever).

        Returns None on timeout, or when the slot is closed and empty.
        """
        with self._cond:
            if not self._has_item and not self._closed:
                if self.on_demand and not self._wanted:
                    self._wanted = True
                    self._cond.notify_all()  # the producer waits in wait_wanted()
                if timeout is None:
                    while not self._has_item and not self._closed:
                        self._cond.wait()
                else:
                    # Wait against a deadline: spurious wakeups must not
                    # stretch the total wait beyond ``timeout``.
                    deadline = time.monotonic() + timeout
                    while not self._has_item and not self._closed:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return None
                        self._cond.wait(remaining)
            if not self._has_item:
                return None
            item = self._item
            self._item = None  # do not keep a large frame alive after hand-over
            self._has_item = False
            self.taken += 1
            self._cond.notify_all()  # a lock-step producer may wait in wait_taken()
            return item

    def wait_taken(self, timeout: float) -> bool:
        """Wait until the pending item was taken (or the slot closed); False on timeout.

        Used by sources that are not live (a file read as fast as possible):
        they wait for their readers instead of dropping frames.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._has_item and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def want(self) -> None:
        """Ask an on-demand producer for the next item now, before waiting in :meth:`get`.

        A reader calls it when its heavy work for the previous item is done,
        so the producer's read overlaps the reader's light remainder (decode,
        publish) instead of following it. No effect on other slots.
        """
        if not self.on_demand:
            return
        with self._cond:
            if not self._wanted and not self._has_item:
                self._wanted = True
                self._cond.notify_all()

    def wait_wanted(self, timeout: float) -> bool:
        """Wait until nothing is pending and a reader asked for the next item (in
        :meth:`get` or by :meth:`want`), or the slot closed; False on timeout.

        The on-demand form of :meth:`wait_taken`: the producer reads its next
        frame only once the reader's inference is done, so the two never
        compete for a core.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._has_item or not self._wanted) and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def close(self) -> None:
        """Stop accepting items and wake every waiting reader."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
