"""Fault matrix, daemon level: the outbox's storage goes bad under a running ``edged run``.

A corrupt outbox file at start, a path that can never be written, a state file
system filled below the floor, and one that the kernel remounts read-only:
the daemon keeps running (or exits 78 when nothing can be done), delivers what
it can, says what is wrong in ``state``, and recovers without a restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edged.errors import EX_CONFIG
from tests.faults.test_daemon_faults import clip_config
from tests.helpers.broker import Received, RunningBroker, Subscriber
from tests.helpers.daemon import Daemon, write_config
from tests.helpers.disks import ext4, fill_up, tmpfs

pytestmark = pytest.mark.broker

DEV = "edged/testdev"
STATE = f"{DEV}/state"
RESULTS = f"{DEV}/door/detections"


def storage_config(
    tmp_path: Path,
    models_dir: Path,
    media_dir: Path,
    broker: RunningBroker | None,
    state_dir: Path | None = None,
    **outbox: Any,
) -> Path:
    """The clip pipeline at 10 fps (light on the CPU), state and outbox in ``state_dir``."""
    cfg = clip_config(tmp_path, models_dir, media_dir, broker)
    cfg["pipelines"][0]["max_fps"] = 10
    if state_dir is not None:
        cfg["state_dir"] = state_dir
        cfg["outbox"] = {"path": state_dir / "outbox.sqlite3"}
    cfg["outbox"].update(outbox)
    return write_config(tmp_path / "edged.toml", cfg)


def state_where(pred: Callable[[dict[str, Any]], bool]) -> Callable[[Received], bool]:
    def match(m: Received) -> bool:
        return m.topic == STATE and pred(json.loads(m.payload))

    return match


def seqs(sub: Subscriber, after: int = 0) -> list[int]:
    """seq of the distinct results received after the first ``after`` messages, in order."""
    seen: dict[str, int] = {}
    for m in sub.messages(RESULTS)[after:]:
        doc = json.loads(m.payload)
        seen.setdefault(doc["id"], doc["seq"])
    return list(seen.values())


def outbox_of(m: Received) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(m.payload)["outbox"]
    return out


def test_a_corrupt_outbox_is_moved_aside_and_seq_continues_above_the_old_max(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """A text file at outbox.path: the daemon starts anyway, shows the quarantine, seq goes on."""
    config = storage_config(tmp_path, models_dir, media_dir, broker)
    outbox = tmp_path / "state" / "outbox.sqlite3"
    sub = broker.subscriber(f"{DEV}/#")
    with Daemon(config) as first:
        sub.wait_for(lambda m: m.topic == RESULTS and json.loads(m.payload)["seq"] >= 20, 60)
        rc, _ = first.stop()
    assert rc == 0, first.output
    old_max = max(seqs(sub))
    for leftover in outbox.parent.glob("outbox.sqlite3*"):
        leftover.unlink()
    outbox.write_text("this is not an outbox\n")

    seen = len(sub.messages(RESULTS))
    with Daemon(config) as second:
        state = sub.wait_for(state_where(lambda s: bool(s["outbox"]["quarantined"])), 30)
        sub.wait_for(lambda _m: len(sub.messages(RESULTS)) > seen, 60)
        assert second.proc is not None
        assert second.proc.poll() is None, second.output  # running, not a restart loop
        rc, _ = second.stop()
    assert rc == 0, second.output
    [reason] = outbox_of(state)["quarantined"]
    assert reason.startswith("outbox.sqlite3.corrupt-")
    assert "not a usable SQLite database" in reason
    assert "outbox.quarantined" in second.output
    assert min(seqs(sub, seen)) > old_max  # never backwards
    assert list(outbox.parent.glob("outbox.sqlite3.corrupt-*"))


def test_an_outbox_path_that_cannot_be_written_exits_78_naming_outbox_path(
    tmp_path: Path, models_dir: Path, media_dir: Path
) -> None:
    """An outbox directory that cannot exist is a configuration error: 78, no restart loop."""
    (tmp_path / "blocker").write_text("a file where the directory should be")
    config = storage_config(tmp_path, models_dir, media_dir, None)
    text = config.read_text().replace(
        str(tmp_path / "state" / "outbox.sqlite3"), str(tmp_path / "blocker" / "outbox.sqlite3")
    )
    config.write_text(text)
    with Daemon(config) as daemon:
        rc = daemon.wait(60)
    assert rc == EX_CONFIG, daemon.output
    assert "outbox.path" in daemon.output
    assert "cannot create its directory" in daemon.output
    assert "Traceback" not in daemon.output


@pytest.mark.slow
def test_low_disk_loses_nothing_with_the_broker_up_and_evicts_counted_without_it(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """State on a 16 MB tmpfs filled below min_free_mb: live delivery with the broker up,
    counted evictions and 'degraded' without it, durable again once space is freed."""
    with tmpfs(tmp_path / "small", "16m") as small:
        config = storage_config(
            tmp_path, models_dir, media_dir, broker, small / "state", min_free_mb=6
        )
        sub = broker.subscriber(f"{DEV}/#")
        with Daemon(config) as daemon:
            sub.wait_for(lambda m: m.topic == RESULTS, 60)
            ballast = fill_up(small, leave=4 * 2**20)
            low = sub.wait_for(state_where(lambda s: s["outbox"]["status"] == "degraded"), 15)
            assert "min_free_mb" in outbox_of(low)["reason"]
            start = len(sub.messages(RESULTS))
            sub.wait_for(lambda _m: len(sub.messages(RESULTS)) >= start + 40, 60)
            got = seqs(sub, start)
            assert got == list(range(got[0], got[0] + len(got)))  # 0 lost with the broker up
            print(
                f"\nlow disk, broker up: {len(got)} results in a row, seq {got[0]}-{got[-1]}, 0 lost"
            )
            stats = sub.wait_for(
                lambda m: m.topic == f"{DEV}/stats" and json.loads(m.payload)["outbox"]["passed"],
                10,
            )
            assert "disk_full" not in json.loads(stats.payload)["outbox"]["evicted_by"]

            broker.broker.stop()  # broker away: the oldest stored make room, counted
            time.sleep(4)
            broker.broker.start()
            stats = sub.wait_for(
                lambda m: (
                    m.topic == f"{DEV}/stats"
                    and json.loads(m.payload)["outbox"]["evicted_by"].get("disk_full", 0) > 0
                ),
                30,
            )
            assert json.loads(stats.payload)["outbox"]["status"] == "degraded"
            print(f"broker down, low disk: {json.loads(stats.payload)['outbox']['evicted_by']}")
            assert daemon.proc is not None
            assert daemon.proc.poll() is None

            ballast.unlink()
            sub.wait_for(state_where(lambda s: s["outbox"]["status"] == "durable"), 15)
            rc, _ = daemon.stop()
        assert rc == 0, daemon.output
        assert "outbox.disk_low" in daemon.output
        assert "outbox.disk_recovered" in daemon.output


@pytest.mark.slow
def test_a_read_only_remount_keeps_pipelines_running_and_recovers_without_restart(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """ext4 under state_dir remounts itself read-only: results keep flowing live, state names
    EROFS; after the file system is repaired and mounted again the outbox stores again."""
    with ext4(tmp_path / "disk") as fs:
        config = storage_config(tmp_path, models_dir, media_dir, broker, fs.mnt / "state")
        sub = broker.subscriber(f"{DEV}/#")
        with Daemon(config) as daemon:
            sub.wait_for(lambda m: m.topic == RESULTS, 60)
            fs.fail()
            bad = sub.wait_for(state_where(lambda s: s["outbox"].get("error") == "EROFS"), 15)
            assert "read-only" in outbox_of(bad)["reason"]
            assert json.loads(bad.payload)["pipelines"]["door"]["status"] == "running"
            start = len(sub.messages(RESULTS))
            sub.wait_for(lambda _m: len(sub.messages(RESULTS)) >= start + 30, 60)  # alive
            got = seqs(sub, start)
            assert got == list(range(got[0], got[0] + len(got)))
            print(f"\nread-only: {len(got)} results live in a row, seq {got[0]}-{got[-1]}")

            fs.repair()  # possible only because the daemon let go of the file system
            sub.wait_for(state_where(lambda s: s["outbox"]["status"] == "durable"), 20)
            again = len(sub.messages(RESULTS))
            sub.wait_for(lambda _m: len(sub.messages(RESULTS)) >= again + 20, 60)
            assert daemon.proc is not None
            assert daemon.proc.poll() is None
            rc, _ = daemon.stop()
        assert rc == 0, daemon.output
        assert daemon.output.count("outbox.storage_failed") == 1
        assert "outbox.recovered" in daemon.output
        assert "Traceback" not in daemon.output
