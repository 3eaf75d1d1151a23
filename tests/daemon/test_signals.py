"""Signals reach the main loop whichever of the daemon's threads the kernel hands them to.

The kernel delivers a process signal to any thread that does not block it.
These tests send SIGHUP and SIGTERM to one named worker thread of a real
``edged run`` (``tgkill``), which is what happens at random under load.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.broker import RunningBroker, matching
from tests.helpers.daemon import Daemon, base_config, ssd_pipeline, walking_source, write_config

pytestmark = pytest.mark.broker

DEV = "edged/testdev"
_libc = ctypes.CDLL(None, use_errno=True)


def tgkill(pid: int, tid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to thread ``tid`` of process ``pid`` only."""
    if _libc.tgkill(pid, tid, int(sig)) != 0:
        raise OSError(ctypes.get_errno(), f"tgkill({pid}, {tid}, {sig.name})")


def worker_thread(pid: int) -> int:
    """The id of a thread of ``pid`` that is not its main thread."""
    tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    workers = [t for t in tids if t != pid]
    assert workers, tids
    return workers[-1]


@pytest.fixture
def daemon(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> Iterator[Daemon]:
    """A running ``edged run`` (SSD on the looping walking clip) that has published a result."""
    cfg = base_config(tmp_path, models_dir, broker)
    cfg["sources"] = [walking_source(media_dir, loop=True, fps=5)]
    cfg["pipelines"] = [ssd_pipeline(track=False)]
    sub = broker.subscriber(f"{DEV}/#")
    with Daemon(write_config(tmp_path / "edged.toml", cfg)) as running:
        sub.wait_for(matching(f"{DEV}/door/detections"), timeout=30)
        yield running


def to_a_worker(daemon: Daemon, sig: signal.Signals) -> None:
    """``sig`` to one worker thread of the daemon, not to its process."""
    assert daemon.proc is not None
    tgkill(daemon.proc.pid, worker_thread(daemon.proc.pid), sig)


def test_sighup_to_a_worker_thread_reloads(daemon: Daemon) -> None:
    """SIGHUP caught by a worker thread still wakes the main loop, which reloads."""
    to_a_worker(daemon, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while '"app.reloaded"' not in daemon.output and time.monotonic() < deadline:
        time.sleep(0.05)
    assert '"app.reloaded"' in daemon.output, daemon.output[-2000:]
    rc, _ = daemon.stop()
    assert rc == 0


def test_sigterm_to_a_worker_thread_stops(daemon: Daemon) -> None:
    """SIGTERM caught by a worker thread stops the daemon cleanly, exit 0."""
    to_a_worker(daemon, signal.SIGTERM)
    assert daemon.wait(15) == 0, daemon.output[-2000:]
    assert '"app.stopped"' in daemon.output
