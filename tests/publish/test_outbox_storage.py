"""The outbox on hostile storage: unusable files, seq across replacement, low disk, faults."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edged.demo.broker import free_port
from edged.errors import ConfigError, PublishError
from edged.publish.outbox import Outbox
from edged.publish.storage import SEQ_BLOCK, classify
from tests.helpers.broker import RunningBroker, Subscriber
from tests.helpers.disks import Ext4, ext4, fill_up, tmpfs
from tests.helpers.outbox_child import DEVICE, mqtt_settings, result, results, stored, wait_until
from tests.publish.conftest import MakeClient, MakeOutbox

REPO = Path(__file__).resolve().parents[2]
DETECTIONS = f"edged/{DEVICE}/+/detections"
DROP_DAC_OVERRIDE = ("setpriv", "--inh-caps=-dac_override", "--bounding-set=-dac_override")


def filled(path: Path, n: int, **kw: float) -> None:
    """Leave an outbox file at ``path`` holding ``n`` undelivered results (seq 1..n)."""
    outbox = Outbox(path, max_mb=64, max_age_hours=24, **kw)
    for e in results(n):
        outbox.accept(e)
    outbox.close()


def moved_aside(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.corrupt-*[!lm]"))  # not the -wal/-shm


def seqs_received(sub: Subscriber) -> list[int]:
    """seq of each distinct result the subscriber got, in arrival order."""
    seen: dict[str, int] = {}
    for m in sub.messages(DETECTIONS):
        doc = json.loads(m.payload)
        seen.setdefault(doc["id"], doc["seq"])
    return list(seen.values())


# --- unusable files are moved aside (issue 13.3) -------------------------------------------


def _directory(path: Path) -> None:
    path.mkdir()
    (path / "inside").write_text("x")


def _text(path: Path) -> None:
    path.write_text("not a database\n" * 200)


def _foreign(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (name TEXT)")
    db.execute("INSERT INTO users VALUES ('alice')")
    db.commit()
    db.close()


def _fifo(path: Path) -> None:
    os.mkfifo(path)


UNUSABLE: dict[str, tuple[Callable[[Path], None], str]] = {
    "directory": (_directory, "is a directory"),
    "text": (_text, "is not a usable SQLite database"),
    "foreign": (_foreign, "another program's database"),
    "fifo": (_fifo, "is not a regular file"),
}


class TestQuarantine:
    """An unusable file at the outbox path is renamed beside itself; the outbox starts fresh."""

    @pytest.mark.parametrize("kind", sorted(UNUSABLE))
    def test_an_unusable_file_is_moved_aside_and_the_outbox_runs(
        self, kind: str, make_outbox: MakeOutbox, tmp_path: Path
    ) -> None:
        """Directory, text, foreign schema, FIFO: moved aside, logged with the reason, counted."""
        path = tmp_path / "outbox.sqlite3"
        make, reason = UNUSABLE[kind]
        make(path)
        with capture_logs() as logs:
            outbox = make_outbox(path)
        events = [e for e in logs if e["event"] == "outbox.quarantined"]
        assert len(events) == 1
        assert reason in events[0]["reason"]
        [moved] = moved_aside(path)
        assert events[0]["moved_to"] == str(moved)
        assert outbox.stats().quarantined == 1
        health = outbox.health()
        assert health.status == "durable"
        assert len(health.quarantined) == 1
        assert reason in health.quarantined[0]
        outbox.accept(result(0))
        outbox.flush()
        assert [r[1] for r in stored(path)] == [1]
        if kind == "text":
            assert moved.read_text().startswith("not a database")

    def test_rows_of_a_newer_schema_are_salvaged_and_seq_continues(
        self, make_outbox: MakeOutbox, tmp_path: Path
    ) -> None:
        """A newer edged's file (user_version 9, an extra column): its rows are re-queued."""
        path = tmp_path / "outbox.sqlite3"
        filled(path, 20)
        before = stored(path)
        db = sqlite3.connect(path)
        db.execute("ALTER TABLE outbox ADD COLUMN priority INTEGER DEFAULT 0")
        db.execute("PRAGMA user_version = 9")
        db.commit()
        db.close()
        outbox = make_outbox(path)
        assert outbox.stats().quarantined == 1
        assert "newer" in outbox.health().quarantined[0]
        assert outbox.stats().depth == 20
        outbox.accept(result(20))
        outbox.flush()
        after = stored(path)
        assert [(r[1], r[2]) for r in after[:20]] == [(r[1], r[2]) for r in before]
        # Above every seq ever handed out (the mark, reserved in blocks): never backwards.
        assert 20 < after[20][1] <= 20 + SEQ_BLOCK + 1

    def test_rows_before_and_after_a_corrupt_page_are_salvaged(
        self, make_outbox: MakeOutbox, tmp_path: Path
    ) -> None:
        """A page of garbage in the middle: the rows on both sides of it are kept."""
        path = tmp_path / "outbox.sqlite3"
        filled(path, 3000)
        size = path.stat().st_size
        with path.open("r+b") as fh:  # wreck one page in the middle of the table
            fh.seek(size // 2 // 4096 * 4096)
            fh.write(b"\xff" * 4096)
        outbox = make_outbox(path)
        stats = outbox.stats()
        assert stats.quarantined == 1
        assert 2000 < stats.depth < 3000
        kept = [r[1] for r in stored(path)]
        assert kept[0] == 1
        assert kept[-1] == 3000
        outbox.accept(result(3000))
        outbox.flush()
        assert stored(path)[-1][1] > 3000

    def test_an_unwritable_file_is_moved_aside_with_its_rows(self, tmp_path: Path) -> None:
        """A file the daemon's user cannot write (root-owned, 0444) is replaced, rows kept."""
        path = tmp_path / "outbox.sqlite3"
        filled(path, 5)
        path.chmod(0o444)
        code = (
            "import sys; from edged.publish.outbox import Outbox\n"
            "o = Outbox(sys.argv[1], max_mb=1, max_age_hours=1)\n"
            "s = o.stats(); print(s.quarantined, s.depth, s.last_seq, o.health().quarantined)\n"
            "o.close()\n"
        )
        # Root without CAP_DAC_OVERRIDE obeys file modes like the edged user does.
        done = subprocess.run(
            [*DROP_DAC_OVERRIDE, sys.executable, "-c", code, str(path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        last = done.stdout.strip().splitlines()[-1]
        quarantined, depth, last_seq, reasons = last.split(" ", 3)
        assert (quarantined, depth) == ("1", "5")
        assert 5 <= int(last_seq) <= 5 + SEQ_BLOCK
        assert "cannot be written" in reasons
        assert os.access(path, os.W_OK)

    def test_a_directory_that_cannot_be_created_is_a_config_error(self, tmp_path: Path) -> None:
        """Nothing can be done when the directory cannot exist: ConfigError on outbox.path."""
        (tmp_path / "file").write_text("x")
        with pytest.raises(ConfigError) as caught:
            Outbox(tmp_path / "file" / "outbox.sqlite3", max_mb=1, max_age_hours=1)
        [(key, problem)] = caught.value.problems
        assert key == "outbox.path"
        assert "cannot create its directory" in problem

    def test_a_file_that_cannot_be_moved_aside_is_a_config_error(self, tmp_path: Path) -> None:
        """An immutable unusable file cannot be renamed: ConfigError naming the reason."""
        path = tmp_path / "outbox.sqlite3"
        _text(path)
        if subprocess.run(["chattr", "+i", str(path)], check=False).returncode != 0:
            pytest.skip("this file system has no immutable flag")
        try:
            with pytest.raises(ConfigError) as caught:
                Outbox(path, max_mb=1, max_age_hours=1)
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=False)
        [(key, problem)] = caught.value.problems
        assert key == "outbox.path"
        assert "cannot be moved aside" in problem
        assert "EPERM" in problem


# --- seq across replacement (issue 17.3) ----------------------------------------------------


class TestSeqMark:
    """seq never goes backwards, even when the outbox file is replaced."""

    @pytest.mark.parametrize("how", ["corrupted", "deleted"])
    def test_seq_continues_above_the_old_max_after_the_file_is_replaced(
        self, how: str, make_outbox: MakeOutbox, tmp_path: Path
    ) -> None:
        """1,500 results, the file corrupted or deleted by hand: the next seq is above 1,500."""
        path = tmp_path / "outbox.sqlite3"
        filled(path, 1500)
        if how == "corrupted":
            path.write_bytes(b"garbage" * 1000)
        else:
            path.unlink()
        outbox = make_outbox(path)
        assert outbox.stats().depth == 0
        outbox.accept(result(0))
        outbox.flush()
        [(_, seq, _, _)] = stored(path)
        assert 1500 < seq <= 1500 + SEQ_BLOCK + 1

    def test_the_mark_is_kept_in_the_given_file_ahead_of_the_seq(
        self, make_outbox: MakeOutbox, tmp_path: Path
    ) -> None:
        """The high-water mark lives in seq_path and stays ahead of every seq handed out."""
        mark = tmp_path / "state" / "outbox.seq"
        mark.parent.mkdir()
        outbox = make_outbox(seq_path=mark)
        for e in results(2500):
            outbox.accept(e)
        outbox.flush()
        assert 2500 <= int(mark.read_text()) <= 3500


# --- low disk (issue 17.1) --------------------------------------------------------------------


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "small", "6m") as mnt:
        yield mnt


def accept_all(outbox: Outbox, n: int, start: int = 0) -> None:
    for k in range(0, n, 100):
        for e in results(min(100, n - k), start + k):
            outbox.accept(e)
        outbox.flush(timeout=30)


@pytest.mark.broker
class TestLowDisk:
    """Below min_free_mb the file does not grow; nothing is lost that could be delivered now."""

    def test_below_the_floor_results_pass_through_live_with_the_broker_up(
        self, small: Path, roomy: RunningBroker, make_outbox: MakeOutbox, make_client: MakeClient
    ) -> None:
        """Broker up, disk below the floor: every result arrives, none is evicted; then durable."""
        sub = roomy.subscriber(DETECTIONS)
        outbox = make_outbox(small / "outbox.sqlite3", min_free_mb=2, checkpoint_s=0.1)
        client = make_client(roomy.settings())
        assert client.wait_connected(5)
        outbox.start(client)
        ballast = fill_up(small, leave=2**20)  # 1 MiB free, the floor is 2
        with capture_logs() as logs:
            accept_all(outbox, 2000)
            assert wait_until(lambda: len(seqs_received(sub)) >= 2000, timeout=20)
            stats = outbox.stats()
            health = outbox.health()
        assert sorted(seqs_received(sub)) == list(range(1, 2001))  # 0 lost
        assert "disk_full" not in stats.evicted_by
        assert stats.passed == 2000
        assert (health.status, health.error) == ("degraded", None)  # a floor, not an error
        assert "min_free_mb" in (health.reason or "")
        [low] = [e for e in logs if e["event"] == "outbox.disk_low"]
        assert low["free_mb"] < low["min_free_mb"] == 2
        assert low["mode"] == "live"

        ballast.unlink()
        accept_all(outbox, 100, 2000)
        assert outbox.health().status == "durable"
        assert outbox.stats().accepted == 100  # stored again: durable mode
        assert wait_until(lambda: len(seqs_received(sub)) >= 2100, timeout=20)

    def test_below_the_floor_with_the_broker_down_evicts_counted_and_degraded(
        self, small: Path, make_outbox: MakeOutbox, make_client: MakeClient
    ) -> None:
        """Broker down, disk below the floor: the oldest make room, counted; no exception."""
        outbox = make_outbox(small / "outbox.sqlite3", min_free_mb=2, checkpoint_s=0.1)
        outbox.start(make_client(mqtt_settings(free_port())))  # nobody listens
        accept_all(outbox, 500)
        ballast = fill_up(small, leave=3 * 2**19)  # 1.5 MiB free: room for WAL, below the floor
        with capture_logs() as logs:
            accept_all(outbox, 1000, 500)
        stats = outbox.stats()
        assert stats.evicted_by["disk_full"] >= 500
        assert stats.last_seq == 1500
        assert outbox.health().status == "degraded"
        [burst] = [e for e in logs if e["event"] == "outbox.evicting" and "burst_ended" not in e]
        assert burst["reason"] == "disk_full"
        assert burst["free_mb"] < burst["min_free_mb"]
        ballast.unlink()
        accept_all(outbox, 10, 1500)
        assert outbox.health().status == "durable"
        assert stored(small / "outbox.sqlite3")[-1][1] == 1510

    def test_a_completely_full_disk_keeps_delivering_live_and_resumes_durable_mode(
        self, small: Path, roomy: RunningBroker, make_outbox: MakeOutbox, make_client: MakeClient
    ) -> None:
        """100 % full with the broker up: results still arrive; freed space: stored again."""
        sub = roomy.subscriber(DETECTIONS)
        outbox = make_outbox(small / "outbox.sqlite3", min_free_mb=1, checkpoint_s=0.1)
        client = make_client(roomy.settings())
        assert client.wait_connected(5)
        outbox.start(client)
        accept_all(outbox, 100)
        ballast = fill_up(small)  # nothing free at all
        accept_all(outbox, 1000, 100)
        assert wait_until(lambda: len(seqs_received(sub)) >= 1100, timeout=20)
        assert sorted(seqs_received(sub)) == list(range(1, 1101))
        assert outbox.health().status == "degraded"
        ballast.unlink()
        assert wait_until(lambda: outbox.health().status == "durable", timeout=10)
        before = outbox.stats().accepted
        accept_all(outbox, 50, 1100)
        assert outbox.stats().accepted == before + 50
        assert wait_until(lambda: len(seqs_received(sub)) >= 1150, timeout=20)


def test_a_full_disk_at_start_starts_degraded_and_recovers(
    small: Path, make_outbox: MakeOutbox
) -> None:
    """No space for even a new file: the outbox starts degraded (ENOSPC), then stores again."""
    ballast = fill_up(small)
    outbox = make_outbox(small / "outbox.sqlite3", min_free_mb=1)
    assert (outbox.health().status, outbox.health().error) == ("degraded", "ENOSPC")
    outbox.accept(result(0))  # never raises …
    with pytest.raises(PublishError, match="ENOSPC"):
        outbox.flush()  # … but with the broker away it is lost, and counted
    assert outbox.stats().refused_by == {"ENOSPC": 1}
    ballast.unlink()
    assert wait_until(lambda: outbox.health().status == "durable", timeout=10)
    outbox.accept(result(1))
    outbox.flush()
    assert [r[1] for r in stored(small / "outbox.sqlite3")] == [2]


# --- storage faults (issue 17.2) ------------------------------------------------------------


@pytest.fixture
def failing_fs(tmp_path: Path) -> Iterator[Ext4]:
    with ext4(tmp_path / "ext4") as fs:
        yield fs


@pytest.mark.broker
def test_a_read_only_remount_publishes_live_names_erofs_and_recovers_without_restart(
    failing_fs: Ext4, roomy: RunningBroker, make_outbox: MakeOutbox, make_client: MakeClient
) -> None:
    """ext4 remounts itself read-only: accept never raises, results go live, EROFS is named;
    the repaired file system is used again without a restart."""
    path = failing_fs.mnt / "state" / "outbox.sqlite3"
    sub = roomy.subscriber(DETECTIONS)
    outbox = make_outbox(path, checkpoint_s=0.1)
    client = make_client(roomy.settings())
    assert client.wait_connected(5)
    outbox.start(client)
    accept_all(outbox, 100)
    assert wait_until(lambda: len(seqs_received(sub)) >= 100)

    failing_fs.fail()
    with capture_logs() as logs:
        for e in results(300, 100):
            outbox.accept(e)  # never raises
        assert wait_until(lambda: len(seqs_received(sub)) >= 400, timeout=20)
    stats, health = outbox.stats(), outbox.health()
    assert (stats.status, stats.error) == ("degraded", "EROFS")
    assert health.error == "EROFS"
    assert "read-only" in (health.reason or "")
    failed = [e for e in logs if e["event"] == "outbox.storage_failed"]
    assert [e["error"] for e in failed] == ["EROFS"]  # once, named right

    failing_fs.repair()  # unmountable: the outbox let go of every file on it
    assert wait_until(lambda: outbox.health().status == "durable", timeout=15)
    accept_all(outbox, 100, 400)
    assert wait_until(lambda: len(seqs_received(sub)) >= 500, timeout=20)
    got = seqs_received(sub)
    assert got[:400] == list(range(1, 401))  # nothing lost while read-only
    # The ext4 abort threw away the file's unsynced pages (last_seq among them):
    # seq continues above the high-water mark, never below what was handed out.
    assert got[400:] == list(range(got[400], got[400] + 100))
    assert got[400] > 400
    assert outbox.stats().accepted >= 200  # stored again after the repair
    assert wait_until(lambda: outbox.stats().depth == 0, timeout=10)


def test_classify_names_the_errno_of_real_failures(small: Path) -> None:
    """SQLITE_FULL is ENOSPC; an OS error keeps its errno name; a writable dir leaves EIO."""
    db = sqlite3.connect(small / "x.sqlite3")
    db.execute("CREATE TABLE t (b BLOB)")
    fill_up(small)
    with pytest.raises(sqlite3.Error) as full:
        db.execute("INSERT INTO t VALUES (?)", (bytes(2**20),))
    db.close()
    assert classify(full.value, small).code == "ENOSPC"
    assert classify(OSError(errno.EROFS, "ro"), small).code == "EROFS"
    io = sqlite3.OperationalError("disk I/O error")
    io.sqlite_errorcode = 778  # type: ignore[attr-defined]  # SQLITE_IOERR_WRITE
    io.sqlite_errorname = "SQLITE_IOERR_WRITE"  # type: ignore[attr-defined]
    assert classify(io, small).code == "ENOSPC"  # the probe write finds no space
    (small / "ballast").unlink()
    assert classify(io, small).code == "EIO"  # the directory takes writes: the device failed
