"""The event media store on a real filesystem: bounded by size and age, open events kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edged.events.store import EventStore

KB = 1024


def put(store: EventStore, event_id: str, size: int, mtime: float) -> list[Path]:
    """One event's snapshot and crop of ``size`` bytes each, dated ``mtime``."""
    paths = [store.path("door", event_id, "snapshot"), store.path("door", event_id, "crop")]
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size))
        os.utime(p, (mtime, mtime))
    return paths


def test_size_bound_evicts_oldest_events_first(tmp_path: Path) -> None:
    """Five events of 200 KiB under a 650 KiB bound: the two oldest go, whole (both files)."""
    now = 1_000_000.0
    store = EventStore(tmp_path, max_bytes=650 * KB, max_age_s=3600, clock=lambda: now)
    files = {f"e{i}": put(store, f"e{i}", 100 * KB, now - 100 + i) for i in range(5)}
    with capture_logs() as logs:
        store.enforce()
    for i in range(5):
        kept = all(p.exists() for p in files[f"e{i}"])
        assert kept == (i >= 2), (i, [p.exists() for p in files[f"e{i}"]])
    assert store.evicted == {"size": 2, "age": 0}
    assert store.evicted_bytes == 400 * KB
    assert store.stats()["bytes"] == 600 * KB
    assert store.stats()["files"] == 6
    # Logged once for the burst, not once per event.
    assert [e["event"] for e in logs].count("events.evicted") == 1


def test_age_bound_evicts_old_events(tmp_path: Path) -> None:
    """An event older than max_age_s is deleted even with room to spare; a young one stays."""
    now = 2_000_000.0
    store = EventStore(tmp_path, max_bytes=10**9, max_age_s=3600, clock=lambda: now)
    old = put(store, "old", KB, now - 3601)
    young = put(store, "young", KB, now - 3599)
    store.enforce()
    assert not any(p.exists() for p in old)
    assert all(p.exists() for p in young)
    assert store.evicted == {"size": 0, "age": 1}


def test_open_events_are_never_evicted(tmp_path: Path) -> None:
    """An open event's files stay even when old and over the bound; once closed they go."""
    now = 3_000_000.0
    store = EventStore(tmp_path, max_bytes=KB, max_age_s=60, clock=lambda: now)
    store.opened("live")
    live = put(store, "live", 10 * KB, now - 600)
    store.enforce()
    assert all(p.exists() for p in live)
    assert store.evicted == {"size": 0, "age": 0}
    store.closed("live")
    store.enforce()
    assert not any(p.exists() for p in live)
    assert store.evicted == {"size": 0, "age": 1}


def test_write_is_atomic_and_enforces_the_bound(tmp_path: Path) -> None:
    """write() leaves no temporary file behind and evicts what the new file pushes out."""
    now = 4_000_000.0
    store = EventStore(tmp_path, max_bytes=150 * KB, max_age_s=3600, clock=lambda: now)
    old = put(store, "a", 50 * KB, now - 10)
    store.write(store.path("door", "b", "snapshot"), os.urandom(100 * KB))
    assert not any(p.exists() for p in old)
    assert sorted(p.name for p in (tmp_path / "door").iterdir()) == ["b.jpg"]
    assert store.find("b") == {"snapshot": tmp_path / "door" / "b.jpg"}


@pytest.mark.parametrize("bad", ["../../etc/passwd", "a/b", "", "x" * 65, "a.b"])
def test_ids_that_could_leave_the_store_are_refused(tmp_path: Path, bad: str) -> None:
    """find() never looks outside the store; path() raises for an id that is not one of ours."""
    store = EventStore(tmp_path, max_bytes=KB, max_age_s=60)
    assert store.find(bad) == {}
    with pytest.raises(ValueError, match="event id"):
        store.path("door", bad, "snapshot")
