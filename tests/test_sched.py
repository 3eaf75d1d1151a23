"""Background threads yield the CPU to inference: per-thread nice values on Linux."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from edged.publish.outbox import Outbox
from edged.sched import (
    BACKGROUND_NICE,
    background,
    fills_every_core,
    lower_this_thread,
    usable_cores,
)


def nice_of(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def test_lowering_applies_to_the_calling_thread_only() -> None:
    """The worker's nice value rises by the increment; the main thread's stays."""
    main_before = nice_of(threading.get_native_id())
    seen: list[int] = []

    def work() -> None:
        assert lower_this_thread(3)
        seen.append(nice_of(threading.get_native_id()))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == [min(19, main_before + 3)]
    assert nice_of(threading.get_native_id()) == main_before


def test_background_target_runs_at_background_priority() -> None:
    """A thread started with background(target) runs target BACKGROUND_NICE lower."""
    base = nice_of(threading.get_native_id())
    seen: list[int] = []
    t = threading.Thread(target=background(lambda: seen.append(nice_of(threading.get_native_id()))))
    t.start()
    t.join()
    assert seen == [min(19, base + BACKGROUND_NICE)]


def test_the_outbox_writer_is_a_background_thread(tmp_path: Path) -> None:
    """The durable outbox's writer yields to inference threads."""
    base = nice_of(threading.get_native_id())
    with Outbox(tmp_path / "o.sqlite3", max_mb=1, max_age_hours=1):
        writer = next(t for t in threading.enumerate() if t.name == "outbox-writer")
        tid, want = writer.native_id, min(19, base + BACKGROUND_NICE)
        assert tid is not None
        deadline = time.monotonic() + 5  # the thread lowers itself as it starts
        while nice_of(tid) != want and time.monotonic() < deadline:
            time.sleep(0.01)
        assert nice_of(tid) == want


def test_usable_cores_follows_the_affinity_mask() -> None:
    """A process pinned to one CPU counts one usable core, and 1 thread fills it."""
    code = (
        "from edged.sched import usable_cores, fills_every_core; "
        "print(usable_cores(), fills_every_core(1))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}),
    )
    assert out.stdout.split() == ["1", "True"]


def test_fewer_threads_than_cores_leave_a_core_free() -> None:
    """fills_every_core is True at the core count and False below it."""
    assert fills_every_core(usable_cores())
    if usable_cores() > 1:
        assert not fills_every_core(usable_cores() - 1)
