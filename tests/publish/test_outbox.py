"""The durable outbox: seq, batching, bounds, disk full, delivery, reconnects, SIGKILL."""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edged.config.settings import OutboxSettings
from edged.demo.broker import free_port
from edged.errors import PublishError
from edged.publish.outbox import Outbox
from edged.publish.payloads import DetectionResult, ResultEnvelope
from tests.helpers.broker import RunningBroker, Subscriber, matching
from tests.helpers.disks import fill_up, tmpfs
from tests.helpers.outbox_child import (
    DEVICE,
    PIPELINES,
    RoomyBroker,
    mqtt_settings,
    result,
    results,
    stored,
    wait_until,
)
from tests.publish.conftest import MakeClient, MakeOutbox

REPO = Path(__file__).resolve().parents[2]
_RETRY_S = 0.6  # a little more than the outbox's first retry after a storage fault
DETECTIONS = f"edged/{DEVICE}/+/detections"


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def huge_result() -> ResultEnvelope:
    """A result of over 3 MiB (one detection with a 3 MiB label)."""
    r = result(0).result
    assert isinstance(r, DetectionResult)
    item = r.detections[0].model_copy(update={"label": "x" * (3 * 2**20)})
    return ResultEnvelope(f"edged/{DEVICE}/huge", r.model_copy(update={"detections": [item]}))


def seqs_by_topic(payloads: list[tuple[str, bytes]]) -> dict[str, list[int]]:
    """Per topic, the seq of each id's first copy, in arrival order (duplicates removed)."""
    seen: set[str] = set()
    out: dict[str, list[int]] = {}
    for topic, payload in payloads:
        doc = json.loads(payload)
        if doc["id"] not in seen:
            seen.add(doc["id"])
            out.setdefault(topic, []).append(doc["seq"])
    return out


# --- accepting: seq, batching, restarts ------------------------------------------------


class TestAccept:
    """accept() queues, the writer commits in batches and assigns seq in the transaction."""

    def test_seq_is_assigned_in_order_and_continues_after_reopen(
        self, make_outbox: MakeOutbox, tmp_path: Path
    ) -> None:
        """Rows get seq 1..n in accept order; a reopened outbox continues at n+1."""
        outbox = make_outbox()
        envelopes = list(results(10))
        for e in envelopes:
            outbox.accept(e)
        outbox.flush()
        assert outbox.stats().accepted == 10
        assert outbox.stats().last_seq == 10
        outbox.close()
        rows = stored(tmp_path / "outbox.sqlite3")
        assert [r[1] for r in rows] == list(range(1, 11))
        assert [r[2] for r in rows] == [e.id for e in envelopes]

        again = make_outbox()
        assert again.stats().depth == 10
        for e in results(5, 10):
            again.accept(e)
        again.flush()
        assert [r[1] for r in stored(tmp_path / "outbox.sqlite3")] == list(range(1, 16))

    def test_seq_survives_an_empty_outbox(self, make_outbox: MakeOutbox, tmp_path: Path) -> None:
        """After every row was delivered and deleted, seq still continues (it lives in meta)."""
        outbox = make_outbox()
        for e in results(3):
            outbox.accept(e)
        outbox.flush()
        outbox.delivered([r[0] for r in stored(tmp_path / "outbox.sqlite3")])
        outbox.flush()
        assert outbox.stats().depth == 0
        assert outbox.stats().delivered == 3
        outbox.close()
        again = make_outbox()
        again.accept(result(3))
        again.flush()
        assert [r[1] for r in stored(tmp_path / "outbox.sqlite3")] == [4]

    def test_close_commits_what_was_accepted(self, make_outbox: MakeOutbox, tmp_path: Path) -> None:
        """close() without flush() still commits every queued result."""
        outbox = make_outbox(flush_interval_s=5.0)
        for e in results(1000):
            outbox.accept(e)
        outbox.close()
        assert len(stored(tmp_path / "outbox.sqlite3")) == 1000

    def test_a_result_after_a_quiet_spell_is_committed_at_once(
        self, make_outbox: MakeOutbox
    ) -> None:
        """The first result is not held back for the batch interval: low latency when idle."""
        outbox = make_outbox(flush_interval_s=5.0, batch_rows=10_000)
        outbox.accept(result(0))
        assert wait_until(lambda: outbox.stats().accepted == 1, timeout=1.0)

    def test_flush_waits_for_the_commit(self, make_outbox: MakeOutbox) -> None:
        """Results that follow a commit closely wait for the interval, or for flush()."""
        outbox = make_outbox(flush_interval_s=5.0, batch_rows=10_000)
        outbox.accept(result(0))
        assert wait_until(lambda: outbox.stats().accepted == 1, timeout=1.0)
        for e in results(5, start=1):
            outbox.accept(e)
        time.sleep(0.05)
        assert outbox.stats().unflushed == 5
        assert outbox.stats().accepted == 1
        outbox.flush()
        assert outbox.stats().unflushed == 0
        assert outbox.stats().accepted == 6

    def test_concurrent_accepts_get_unique_contiguous_seq(
        self, make_outbox: MakeOutbox, tmp_path: Path
    ) -> None:
        """Four threads accepting at once: seq 1..n without gaps, each thread's order kept."""
        outbox = make_outbox(max_pending=100)  # small: back-pressure is exercised too
        per_thread = {t: list(results(2000, t * 2000)) for t in range(4)}

        def run(t: int) -> None:
            for e in per_thread[t]:
                outbox.accept(e)

        threads = [threading.Thread(target=run, args=(t,)) for t in per_thread]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        outbox.flush()
        rows = stored(tmp_path / "outbox.sqlite3")
        assert [r[1] for r in rows] == list(range(1, 8001))
        seq_of = {r[2]: r[1] or 0 for r in rows}
        for envelopes in per_thread.values():
            seqs = [seq_of[e.id] for e in envelopes]
            assert seqs == sorted(seqs)

    def test_from_settings_uses_the_outbox_section(self, tmp_path: Path) -> None:
        """[outbox] path, max_mb and max_age_hours configure it; tuning passes through."""
        settings = OutboxSettings(path=tmp_path / "o.sqlite3", max_mb=2, max_age_hours=3)
        with Outbox.from_settings(settings, flush_interval_s=0.01) as outbox:
            assert outbox.path == tmp_path / "o.sqlite3"
            assert outbox.max_bytes == 2 * 2**20
            assert outbox.max_age_s == 3 * 3600

    def test_closed_outbox_refuses_and_close_twice_is_fine(self, make_outbox: MakeOutbox) -> None:
        """accept() after close() raises PublishError naming the file; close() is idempotent."""
        outbox = make_outbox()
        outbox.close()
        outbox.close()
        outbox.flush(timeout=0.1)  # nothing left to wait for
        with pytest.raises(PublishError, match=r"outbox .* is closed"):
            outbox.accept(result(0))


# --- bounds ----------------------------------------------------------------------------


class TestBounds:
    """Size, age and disk bounds evict the oldest rows first, counted and logged per burst."""

    def test_size_bound_keeps_the_newest_counts_exactly_and_memory_stays_flat(
        self, make_outbox: MakeOutbox, make_client: MakeClient, tmp_path: Path
    ) -> None:
        """220k results into a 1 MB outbox with the broker down: survivors are the newest."""
        path = tmp_path / "outbox.sqlite3"
        outbox = make_outbox(path, max_mb=1)
        outbox.start(make_client(mqtt_settings(free_port())))  # nobody listens: broker down
        pool = list(results(1000))  # envelopes are reusable: the outbox copies nothing else

        def accept(n: int) -> None:
            for i in range(n):
                outbox.accept(pool[i % len(pool)])
            outbox.flush()

        accept(20_000)  # warm up: SQLite's page cache and the batch lists reach their size
        before = rss_mb()
        accept(200_000)
        grown = rss_mb() - before
        stats = outbox.stats()
        print(f"\nbound: {stats}, rss +{grown:.1f} MB, file {path.stat().st_size} B")

        rows = stored(path)
        assert stats.accepted == 220_000
        assert stats.evicted == stats.evicted_by["size"] == 220_000 - len(rows)
        assert stats.depth == len(rows)
        assert [r[1] for r in rows] == list(range(220_001 - len(rows), 220_001))
        assert stats.bytes <= outbox.max_bytes
        assert path.stat().st_size <= 1.5 * outbox.max_bytes
        assert grown < 10, f"RSS grew by {grown:.1f} MB"

    def test_eviction_is_logged_once_per_burst(self, make_outbox: MakeOutbox) -> None:
        """Hundreds of evicting batches log one warning, and one summary with the exact count."""
        with capture_logs() as logs:
            outbox = make_outbox(max_mb=0.05)
            for i, e in enumerate(results(3000)):
                outbox.accept(e)
                if i % 100 == 0:
                    outbox.flush()  # many separate transactions, each one evicting
            outbox.close()
        lines = [e for e in logs if e["event"] == "outbox.evicting"]
        started = [e for e in lines if not e.get("burst_ended")]
        ended = [e for e in lines if e.get("burst_ended")]
        assert len(started) == 1
        assert started[0]["reason"] == "size"
        assert started[0]["log_level"] == "warning"
        assert len(ended) == 1
        assert ended[0]["reason"] == "size"
        assert ended[0]["count"] == outbox.stats().evicted > 2000

    def test_age_bound_evicts_what_is_too_old(self, make_outbox: MakeOutbox) -> None:
        """Rows older than max_age_hours are evicted by the writer's housekeeping."""
        outbox = make_outbox(max_age_hours=0.3 / 3600)
        for e in results(50):
            outbox.accept(e)
        outbox.flush()
        assert wait_until(lambda: outbox.stats().depth == 0, timeout=5)
        assert outbox.stats().evicted_by == {"age": 50}

    def test_age_survives_a_restart(self, make_outbox: MakeOutbox, tmp_path: Path) -> None:
        """The outbox clock continues across a reopen: rows do not get younger."""
        outbox = make_outbox()
        outbox.accept(result(0))
        outbox.flush()
        time.sleep(0.3)
        outbox.close()
        again = make_outbox()
        age = again.stats().oldest_age_s
        assert age is not None
        assert age >= 0.3


# --- disk full -----------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MB tmpfs: a real file system that runs out of space (needs root to mount)."""
    with tmpfs(tmp_path / "small", "6m") as mnt:
        yield mnt


def test_disk_full_rotates_refuses_clearly_and_never_loses_committed_rows(
    make_outbox: MakeOutbox, small_disk: Path
) -> None:
    """Broker away, full file system: the oldest make room; what cannot fit is refused, named."""
    path = small_disk / "outbox.sqlite3"
    outbox = make_outbox(path, max_mb=100, min_free_mb=2, checkpoint_s=0.1)
    for k in range(100):  # 10,000 results (~5 MB) do not fit next to the 2 MB reserve
        for e in results(100, k * 100):
            outbox.accept(e)
        outbox.flush()
    assert outbox.stats().evicted_by.get("disk_full", 0) > 0
    assert outbox.stats().refused == 0

    ballast = fill_up(small_disk)  # now really nothing is free
    for e in results(3000, 10_000):
        outbox.accept(e)
    outbox.flush()  # the outbox keeps rotating inside its own file
    kept = outbox.stats()
    assert kept.refused == 0
    assert kept.last_seq == 13_000

    outbox.accept(huge_result())  # can never fit
    with pytest.raises(PublishError, match=r"could not be stored .*ENOSPC"):
        outbox.flush()
    outbox.accept(result(0))  # accepting never raises a storage error
    with pytest.raises(PublishError, match="ENOSPC"):
        outbox.flush()  # … but with the broker away that result is lost, and counted
    after = outbox.stats()
    assert after.refused_by["ENOSPC"] == after.refused == 2
    assert (after.status, after.error) == ("degraded", "ENOSPC")
    assert after.depth == kept.depth  # the failed transaction evicted nothing

    ballast.unlink()
    time.sleep(_RETRY_S)  # the first retry after a fault
    outbox.accept(result(13_000))
    outbox.flush()
    assert outbox.stats().error is None
    outbox.close()
    rows = stored(path)
    # The two accepted during the fault used up their numbers: a gap says they were lost.
    assert rows[-1][1] == 13_003
    assert rows[-2][1] <= 13_000
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()


# --- delivery through a real broker ------------------------------------------------------


@pytest.mark.broker
class TestDelivery:
    """Rows reach mosquitto in order, carry an MQTT 5 expiry, and are deleted after PUBACK."""

    def test_delivers_in_order_with_expiry_and_deletes_after_puback(
        self, roomy: RunningBroker, make_outbox: MakeOutbox, make_client: MakeClient
    ) -> None:
        """Every result arrives once per topic in seq order; the outbox ends empty."""
        sub = roomy.subscriber(DETECTIONS)
        outbox = make_outbox(max_age_hours=1)
        outbox.start(make_client(roomy.settings()))
        envelopes = list(results(600))
        for e in envelopes:
            outbox.accept(e)
        outbox.flush()
        assert wait_until(lambda: len(sub.messages()) >= 600)
        got = sub.messages()
        per_topic = seqs_by_topic([(m.topic, m.payload) for m in got])
        assert set(per_topic) == {f"edged/{DEVICE}/{p}/detections" for p in PIPELINES}
        for seqs in per_topic.values():
            assert seqs == sorted(seqs)
        assert sorted(s for seqs in per_topic.values() for s in seqs) == list(range(1, 601))
        expiries = [m.props["MessageExpiryInterval"] for m in got]
        assert all(3500 <= e <= 3600 for e in expiries)
        assert wait_until(lambda: outbox.stats().depth == 0)
        assert outbox.stats().delivered == 600

    def test_unsendable_message_is_dropped_and_does_not_block(
        self, roomy: RunningBroker, make_outbox: MakeOutbox, make_client: MakeClient
    ) -> None:
        """A message MQTT refuses (wildcard topic) is evicted as invalid; later ones flow."""
        sub = roomy.subscriber(DETECTIONS)
        outbox = make_outbox()
        outbox.accept(ResultEnvelope(f"edged/{DEVICE}/bad/#", result(1).result))
        outbox.accept(result(0))
        outbox.start(make_client(roomy.settings()))
        sub.wait_for(matching(DETECTIONS))
        assert wait_until(lambda: outbox.stats().depth == 0)
        assert outbox.stats().evicted_by == {"invalid": 1}

    def test_backlog_drains_at_the_configured_rate(
        self, roomy: RunningBroker, make_outbox: MakeOutbox, make_client: MakeClient
    ) -> None:
        """drain_per_s caps sending: 600 rows at 300/s take about two seconds."""
        outbox = make_outbox(drain_per_s=300)
        for e in results(600):
            outbox.accept(e)
        outbox.flush()
        client = make_client(roomy.settings())
        assert client.wait_connected(5)
        start = time.monotonic()
        outbox.start(client)
        assert wait_until(lambda: outbox.stats().depth == 0, timeout=10)
        took = time.monotonic() - start
        assert 1.7 < took < 3.5, took

    def test_first_queued_message_arrives_within_2s_of_the_broker_coming_back(
        self, tmp_path: Path, make_outbox: MakeOutbox, make_client: MakeClient
    ) -> None:
        """Reconnect backoff 0.1-1 s: after an outage the backlog starts flowing in under 2 s."""
        broker = RoomyBroker(port=free_port(), persistence=True, workdir=tmp_path / "broker")
        broker.start()
        try:
            # A persistent session that receives while its client is away.
            Subscriber(broker.host, broker.port, DETECTIONS, client_id="latency").start().close()
            outbox = make_outbox()
            client = make_client(mqtt_settings(broker.port, reconnect_min_s=0.1, reconnect_max_s=1))
            outbox.start(client)
            assert client.wait_connected(5)
            broker.stop()
            envelopes = list(results(100))
            for e in envelopes:
                outbox.accept(e)
            outbox.flush()
            time.sleep(3)  # long enough for the backoff to reach its 1 s cap
            broker.start()
            back = time.monotonic()
            sub = Subscriber(broker.host, broker.port, DETECTIONS, client_id="latency").start()
            try:
                first = sub.wait_for(matching(DETECTIONS), timeout=5)
                latency = time.monotonic() - back
            finally:
                sub.close()
            print(f"\nreconnect: first queued message {latency:.3f} s after the broker was back")
            assert first.payload == envelopes[0].with_seq(1).payload
            assert latency < 2.0
        finally:
            broker.close()


# --- SIGKILL -------------------------------------------------------------------------------


@pytest.mark.broker
def test_sigkill_loses_no_accepted_result_and_seq_continues(
    tmp_path: Path, roomy: RunningBroker, make_outbox: MakeOutbox, make_client: MakeClient
) -> None:
    """A SIGKILLed process's accepted results are all delivered by the next one, in order."""
    n = 2000
    path = tmp_path / "outbox.sqlite3"
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.outbox_child", str(path), str(n), str(free_port())],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 60)
        assert ready, "the child did not report within 60 s"
        assert child.stdout.readline().strip() == f"accepted {n}"
        time.sleep(0.3)  # it keeps accepting: the kill lands amid batched writes
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    ids = path.with_suffix(".ids").read_text().split()
    assert len(ids) == n

    sub = roomy.subscriber(DETECTIONS)
    outbox = make_outbox(path)
    left = outbox.stats()
    assert left.depth >= n
    assert left.last_seq >= n
    outbox.start(make_client(roomy.settings()))
    assert wait_until(lambda: outbox.stats().depth == 0, timeout=30)
    extra = result(10**6)
    outbox.accept(extra)
    outbox.flush()
    sub.wait_for(matching(DETECTIONS, extra.with_seq(left.last_seq + 1).payload), timeout=30)
    got = [(m.topic, m.payload) for m in sub.messages()]
    per_topic = seqs_by_topic(got)
    for seqs in per_topic.values():
        assert seqs == sorted(seqs)
    all_seqs = sorted(s for seqs in per_topic.values() for s in seqs)
    assert all_seqs == list(range(1, left.last_seq + 2))  # nothing lost, nothing skipped
    received_ids = {json.loads(p)["id"] for _, p in got}
    assert set(ids) <= received_ids
    print(
        f"\nsigkill: {n} flushed + {left.depth - n} more committed before the kill; all delivered"
    )
