"""LatestSlot: newest item wins, drops are counted, close wakes readers."""

from __future__ import annotations

import threading
import time

from hypothesis import given
from hypothesis import strategies as st

from edged.capture.slot import LatestSlot


def test_put_replaces_an_untaken_item_and_counts_it_dropped() -> None:
    """A second put before any get replaces the first and counts one drop."""
    slot: LatestSlot[int] = LatestSlot()
    slot.put(1)
    slot.put(2)
    assert slot.get(timeout=0) == 2
    assert (slot.put_count, slot.dropped, slot.taken) == (2, 1, 1)


def test_taken_item_is_not_counted_as_dropped() -> None:
    """An item a reader took before the next put is not a drop."""
    slot: LatestSlot[int] = LatestSlot()
    slot.put(1)
    assert slot.get(timeout=0) == 1
    slot.put(2)
    assert slot.dropped == 0


def test_get_times_out_with_none() -> None:
    """get on an empty slot returns None once the timeout has passed."""
    slot: LatestSlot[int] = LatestSlot()
    started = time.monotonic()
    assert slot.get(timeout=0.05) is None
    assert 0.04 <= time.monotonic() - started < 0.5


def test_get_wakes_on_put_from_another_thread() -> None:
    """A blocked reader receives an item put by another thread."""
    slot: LatestSlot[str] = LatestSlot()
    timer = threading.Timer(0.05, slot.put, args=("frame",))
    timer.start()
    assert slot.get(timeout=2.0) == "frame"
    timer.join()


def test_close_wakes_a_blocked_reader() -> None:
    """close() makes a reader blocked without timeout return None promptly."""
    slot: LatestSlot[int] = LatestSlot()
    got: list[int | None] = []
    reader = threading.Thread(target=lambda: got.append(slot.get()))
    reader.start()
    time.sleep(0.05)
    slot.close()
    reader.join(timeout=1.0)
    assert not reader.is_alive()
    assert got == [None]
    assert slot.closed


def test_pending_item_is_still_handed_out_after_close() -> None:
    """The last item put before close reaches the reader, then get returns None."""
    slot: LatestSlot[int] = LatestSlot()
    slot.put(7)
    slot.close()
    assert slot.get(timeout=0) == 7
    assert slot.get(timeout=0) is None


def test_put_after_close_is_refused() -> None:
    """put on a closed slot returns False and changes no counter."""
    slot: LatestSlot[int] = LatestSlot()
    slot.close()
    assert slot.put(1) is False
    assert (slot.put_count, slot.dropped, slot.pending) == (0, 0, False)


@given(st.lists(st.sampled_from(["put", "get", "close"]), max_size=60))
def test_counters_account_for_every_put(ops: list[str]) -> None:
    """Every accepted put is taken, dropped or pending, and get always returns the newest."""
    slot: LatestSlot[int] = LatestSlot()
    last_put: int | None = None
    for n, op in enumerate(ops):
        if op == "put":
            if slot.put(n):
                last_put = n
        elif op == "get":
            expected = last_put if slot.pending else None
            assert slot.get(timeout=0) == expected
        else:
            slot.close()
        assert slot.put_count == slot.taken + slot.dropped + int(slot.pending)


def test_wait_wanted_returns_only_once_a_reader_asks() -> None:
    """An on-demand producer waits until a reader is in get(), not merely until a take."""
    slot: LatestSlot[int] = LatestSlot(on_demand=True)
    assert not slot.wait_wanted(0.05)  # nobody asked yet
    got: list[int | None] = []
    reader = threading.Thread(target=lambda: got.append(slot.get(timeout=2.0)))
    reader.start()
    assert slot.wait_wanted(2.0)
    slot.put(7)
    reader.join(timeout=2.0)
    assert got == [7]
    assert not slot.wait_wanted(0.05)  # the put answered that request


def test_want_asks_for_the_next_item_before_get() -> None:
    """want() lets the producer start on the next item while the reader still works."""
    slot: LatestSlot[int] = LatestSlot(on_demand=True)
    slot.want()
    assert slot.wait_wanted(0)
    slot.put(1)
    assert not slot.wait_wanted(0.02)  # an item is pending: nothing more is wanted
    assert slot.get(timeout=0) == 1


def test_want_is_a_no_op_on_a_plain_slot() -> None:
    """A slot that is not on demand never reports a request."""
    slot: LatestSlot[int] = LatestSlot()
    slot.want()
    assert not slot.wait_wanted(0.02)


def test_wait_wanted_returns_when_the_slot_closes() -> None:
    """close() releases a producer waiting for a request."""
    slot: LatestSlot[int] = LatestSlot(on_demand=True)
    threading.Timer(0.05, slot.close).start()
    assert slot.wait_wanted(2.0)
