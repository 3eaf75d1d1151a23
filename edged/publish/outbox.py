"""The durable outbox (DESIGN §3): results are accepted into SQLite and leave only after PUBACK.

:meth:`Outbox.accept` (the :class:`~edged.results.Sink` protocol) appends to an
in-memory batch and returns. A writer thread commits the batch at once
when it has been idle, otherwise at most every ``flush_interval_s`` (or every
``batch_rows`` rows), in one transaction, and assigns
``seq`` for it (:meth:`ResultEnvelope.with_seq`), persisting the counter in
the same transaction, so ``seq`` is monotonic across restarts and crashes and
no stored row can disagree with it. A result is *accepted* once committed;
:meth:`Outbox.flush` waits for that. The :class:`~edged.publish.forwarder.Forwarder`
(:meth:`Outbox.start`) sends rows in order; a row is deleted after its PUBACK.

Durability: WAL with ``synchronous=NORMAL``. A commit writes WAL frames into
the OS page cache without fsync, so committed rows survive any *process* crash
(SIGKILL, OOM kill) and a clean reboot (the kernel syncs file systems before
it reboots). Only power loss or a kernel crash can roll back the commits since
the last sync, and WAL keeps the file consistent even then. The writer
checkpoints every ``checkpoint_s`` (a checkpoint fsyncs WAL and database), so
a power cut costs at most the last ~2 s. ``FULL`` would fsync every commit (up
to 200 a second): wear and latency on SD cards and eMMC to close a window that
only a power cut opens; ``synchronous="full"`` is there for devices on bad power.

Bounds: ``max_mb`` (a running sum of row sizes, enforced in every transaction)
and ``max_age_hours``; the oldest rows go first, counted by reason and logged
once per burst. Ages use an *outbox clock* (CLOCK_BOOTTIME, carried across
restarts in ``meta``), not the wall clock: an NTP step on a device without a
real-time clock must not age the whole backlog out at once.

Full disk: in WAL mode even a DELETE needs free space (WAL holds every freed
page) and a checkpoint may need to grow the file, so a truly full disk would
freeze the outbox. Below ``min_free_mb`` free the file therefore stops growing
and each batch replaces the oldest rows in place (reason ``disk_full``). If a
write still fails with SQLITE_FULL, the writer checkpoints, evicts as much as
the batch needs in the same transaction and retries once; otherwise the batch
is refused (counted, logged, :class:`PublishError` from ``flush`` and, for a
second, from ``accept``). A failed transaction rolls back whole: nothing that
was committed is lost and the file is never left half-written.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self

import structlog

from edged.errors import PublishError
from edged.publish.forwarder import Bursts, Forwarder
from edged.publish.mqtt import MqttClient
from edged.publish.payloads import Message, ResultEnvelope
from edged.sched import background
from edged.settings import OutboxSettings

log = structlog.get_logger(__name__)

#: Bytes counted per row besides topic, id and payload: record header, numbers, cell
#: pointer and B-tree page slack, as measured with ~400-byte results (max_mb ≈ the file).
ROW_OVERHEAD: Final = 90
_VERSION: Final = 1
_IDLE_S: Final = 1.0  # housekeeping period (age bound, checkpoints, burst logs) when idle
_REFUSE_S: Final = 1.0  # after a refused batch, accept() fails fast for this long
_DELETE_BATCH: Final = 200  # acknowledged rows that wake the writer by themselves
_DELETE_WAIT_S: Final = 0.1  # … or that wait at most this long for a result's commit
_CHUNK: Final = 100  # rows per multi-row statement (1,000 parameters, below the limit)
_BOOTTIME: Final = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)  # counts suspend

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outbox (
    pos      INTEGER PRIMARY KEY AUTOINCREMENT, -- send order; never reused, even when empty
    seq      INTEGER,                           -- result seq; NULL for put() messages
    id       TEXT,
    topic    TEXT NOT NULL,
    payload  BLOB NOT NULL,
    qos      INTEGER NOT NULL,
    retain   INTEGER NOT NULL,
    expiry_s INTEGER,                           -- the message's own expiry, if any
    created  REAL NOT NULL,                     -- wall clock, epoch s (for people)
    born     REAL NOT NULL,                     -- outbox clock, s (the age basis)
    size     INTEGER NOT NULL                   -- bytes counted against max_mb
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value NOT NULL);
"""
# Multi-row statements: each sqlite3_step releases and retakes the GIL, which
# costs tens of µs per row while paho's thread is busy; one step per chunk does not.
_INSERT_ROW: Final = "(NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SET_META: Final = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?), (?, ?), (?, ?)"
_OLDEST: Final = "SELECT pos, size, born FROM outbox ORDER BY pos"

Item = ResultEnvelope | Message
# seq, id, topic, payload, qos, retain, expiry_s, created, born, size
_Row = tuple[int | None, str | None, str, bytes, int, int, int | None, float, float, int]


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """A consistent snapshot of the outbox counters (for the ``stats`` message)."""

    depth: int  # rows stored, awaiting PUBACK
    bytes: int  # their size as counted against max_mb
    unflushed: int  # queued by accept()/put(), not committed yet
    accepted: int  # rows committed by this process
    delivered: int  # rows deleted after their PUBACK
    evicted: int  # rows removed undelivered: the sum of evicted_by
    evicted_by: dict[str, int] = field(default_factory=dict)  # size|age|disk_full|invalid
    refused: int = 0  # items never stored (disk full even after evicting, unencodable)
    sent: int = 0  # messages handed to MQTT
    resent: int = 0  # … of which rows handed over again after a reconnect
    in_flight: int = 0  # handed over in this session, awaiting PUBACK
    oldest_age_s: float | None = None
    last_seq: int = 0


class Outbox:
    """SQLite-backed, bounded, ordered store of messages awaiting their PUBACK.

    Thread-safe: :meth:`accept`/:meth:`put` may be called from any thread;
    they block only while ``max_pending`` items wait for the writer
    (back-pressure instead of unbounded memory). :meth:`start` begins
    forwarding; :meth:`close` (or ``with``) flushes and stops.

    Tuning: the writer commits a result at once when its last commit is
    ``flush_interval_s`` or more ago, otherwise when that much time has passed
    or ``batch_rows`` rows wait (at most that many per transaction); it checkpoints
    every ``checkpoint_s``; below ``min_free_mb`` MiB free on the file system
    the file stops growing and the oldest rows make room (reason
    ``disk_full``), which keeps WAL checkpoints and deletes possible.
    ``window`` messages at most await their PUBACK; ``drain_per_s`` caps
    sending (None: no cap).
    """

    def __init__(
        self,
        path: Path,
        *,
        max_mb: float,
        max_age_hours: float,
        flush_interval_s: float = 0.005,
        batch_rows: int = 500,
        max_pending: int = 5000,
        checkpoint_s: float = 2.0,
        min_free_mb: float = 8.0,
        synchronous: Literal["normal", "full"] = "normal",
        window: int = 100,
        drain_per_s: float | None = 2000.0,
    ) -> None:
        if max_mb <= 0 or max_age_hours <= 0:
            raise ValueError("outbox max_mb and max_age_hours must be positive")
        self.path = Path(path)
        self.max_bytes = int(max_mb * 2**20)
        self.max_age_s = max_age_hours * 3600.0
        self._interval_s, self._batch_rows = flush_interval_s, batch_rows
        self._max_pending, self._checkpoint_s = max_pending, checkpoint_s
        self._min_free = int(min_free_mb * 2**20)
        self._window, self._drain_per_s = window, drain_per_s
        self._log = log.bind(path=str(self.path))
        self._cond = threading.Condition()
        self._pending: list[tuple[Item, float, float]] = []  # (item, wall, born)
        self._deletes: list[tuple[int, str | None]] = []  # (pos, None=delivered or reason)
        self._drops_pending = False  # _deletes holds a drop (reason), not only deliveries
        self._deletes_since = 0.0  # when _deletes last became non-empty (monotonic)
        # Tickets number queued items, so flush() knows when "everything so far" is done.
        self._enqueued = self._processed = self._flush_target = 0
        # Writer passes: flush() also waits for one that starts after it was called
        # (so that queued deletes are committed too).
        self._passes = self._passes_done = self._flush_pass = 0
        self._refused_ticket = self._flush_checked = 0
        self._refusing_until = 0.0
        self._last_pass = 0.0  # writer thread only: when its last pass began (monotonic)
        self._closing = self._closed = False
        self._counts: Counter[str] = Counter()  # accepted, delivered, refused, evicted:<reason>
        self._bursts = Bursts(self._log)
        self._forwarder: Forwarder | None = None
        self._db = self._open(synchronous)
        self._writer = threading.Thread(
            target=background(self._run), name="outbox-writer", daemon=True
        )
        self._writer.start()

    @classmethod
    def from_settings(cls, settings: OutboxSettings, **tuning: Any) -> Outbox:
        """The outbox of ``[outbox]``; ``tuning`` takes the other keywords of the constructor."""
        return cls(
            settings.path, max_mb=settings.max_mb, max_age_hours=settings.max_age_hours, **tuning
        )

    def _open(self, synchronous: str) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # The writer thread owns the connection; close() uses it after joining.
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise PublishError(
                f"outbox {self.path}: cannot open ({exc}); check outbox.path"
            ) from None
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > _VERSION:
                raise sqlite3.DatabaseError(f"schema version {version} is newer than this edged")
            if db.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
                raise sqlite3.DatabaseError("cannot switch to WAL mode")
            db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            db.execute("PRAGMA busy_timeout=2000")  # RESTART checkpoints wait for readers
            db.execute("PRAGMA secure_delete=FAST")  # Debian builds zero freed pages: wasted I/O
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={_VERSION}")
            self._load(db)
        except sqlite3.Error as exc:
            db.close()
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            advice = (
                "move the file aside to start with an empty outbox"
                if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT)
                else "check the file, its directory and the free space"
            )
            raise PublishError(f"outbox {self.path}: cannot use it ({exc}); {advice}") from None
        return db

    def _load(self, db: sqlite3.Connection) -> None:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        max_seq = db.execute("SELECT max(seq) FROM outbox").fetchone()[0] or 0
        self._last_seq = max(int(meta.get("last_seq", 0)), int(max_seq))
        depth, size = db.execute("SELECT count(*), coalesce(sum(size), 0) FROM outbox").fetchone()
        self._depth, self._bytes = int(depth), int(size)
        # The clock continues from its saved value plus the wall-clock downtime
        # if that is positive: a clock set back (or a device booting in 1970)
        # adds nothing, so ages err towards keeping data.
        clock, wall = float(meta.get("clock", 0.0)), float(meta.get("wall", 0.0))
        downtime = max(time.time() - wall, 0.0) if wall else 0.0
        self._clock_base = clock + downtime - time.clock_gettime(_BOOTTIME)
        self._oldest = self._oldest_born(db)
        if depth:
            self._log.info("outbox.opened", depth=depth, bytes=size, last_seq=self._last_seq)

    def clock(self) -> float:
        """The outbox clock, seconds: never goes backwards, not even across restarts."""
        return self._clock_base + time.clock_gettime(_BOOTTIME)

    # --- accepting -----------------------------------------------------------------------

    def accept(self, envelope: ResultEnvelope) -> None:
        """Queue a result; it gets its ``seq`` and counts as accepted when its batch commits.

        Raises :class:`PublishError` when the outbox is closed, or for a second
        after it had to refuse a batch (disk full even after evicting).
        """
        self._enqueue(envelope)

    def put(self, message: Message) -> None:
        """Queue a non-result message (it gets no ``seq``) for durable, ordered delivery."""
        self._enqueue(message)

    def _enqueue(self, item: Item) -> None:
        with self._cond:
            while True:
                if self._closing:
                    raise PublishError(f"outbox {self.path} is closed; nothing can be accepted")
                if time.monotonic() < self._refusing_until:
                    raise PublishError(
                        f"outbox {self.path} is refusing results: the disk is full even after "
                        f"evicting the oldest ({self._counts['refused']} refused so far); "
                        "free space or lower outbox.max_mb"
                    )
                if len(self._pending) < self._max_pending:
                    break
                self._cond.wait()  # back-pressure: the writer is behind
            self._pending.append((item, time.time(), self.clock()))
            self._enqueued += 1
            if len(self._pending) in (1, self._batch_rows):
                self._cond.notify_all()

    def flush(self, timeout: float | None = 10.0) -> None:
        """Wait until everything queued before this call is committed, i.e. accepted.

        Raises :class:`PublishError` on timeout, or if some of it was refused.
        """
        with self._cond:
            if self._closed:
                return  # close() committed everything
            target, after = self._enqueued, self._passes + 1
            self._flush_target = max(self._flush_target, target)
            self._flush_pass = max(self._flush_pass, after)
            self._cond.notify_all()
            done = lambda: self._processed >= target and self._passes_done >= after  # noqa: E731
            if not self._cond.wait_for(done, timeout):
                raise PublishError(f"outbox {self.path}: flush did not complete in {timeout} s")
            refused = self._refused_ticket > self._flush_checked
            self._flush_checked = max(self._flush_checked, target)
        if refused:
            raise PublishError(
                f"outbox {self.path}: results could not be stored (disk full even after "
                f"evicting; {self._counts['refused']} refused so far)"
            )

    # --- forwarding ----------------------------------------------------------------------

    def start(self, mqtt: MqttClient) -> Forwarder:
        """Start forwarding stored rows through ``mqtt`` (which may connect before or later)."""
        if self._forwarder is not None:
            raise RuntimeError("Outbox.start() called twice")
        self._forwarder = Forwarder(self, mqtt, window=self._window, drain_per_s=self._drain_per_s)
        self._forwarder.start()
        return self._forwarder

    def reader(self) -> sqlite3.Connection:
        """A new read-only connection (WAL: readers never block the writer)."""
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        db.execute("PRAGMA busy_timeout=2000")
        return db

    def delivered(self, positions: list[int]) -> None:
        """The broker acknowledged these rows: delete them in the next transaction."""
        self._delete([(pos, None) for pos in positions])

    def drop(self, pos: int, reason: str) -> None:
        """Remove row ``pos`` undelivered, counted as evicted for ``reason``."""
        self._delete([(pos, reason)])

    def _delete(self, items: list[tuple[int, str | None]]) -> None:
        with self._cond:
            if self._closed:
                return  # a PUBACK after close(): the row is re-sent after the next start
            before = len(self._deletes)
            if not before:
                self._deletes_since = time.monotonic()
            self._deletes.extend(items)
            dropped = any(reason is not None for _, reason in items)
            self._drops_pending |= dropped
            if dropped or not before or before < _DELETE_BATCH <= len(self._deletes):
                self._cond.notify_all()  # the first one: the writer sets its deadline

    # --- statistics and lifecycle ----------------------------------------------------------

    def stats(self) -> OutboxStats:
        """Counters and gauges; the outbox's own ones are consistent with each other."""
        sent, resent, in_flight = self._forwarder.counters() if self._forwarder else (0, 0, 0)
        with self._cond:
            c = self._counts
            evicted = {k.partition(":")[2]: n for k, n in c.items() if k.startswith("evicted:")}
            return OutboxStats(
                depth=self._depth,
                bytes=self._bytes,
                unflushed=self._enqueued - self._processed,
                accepted=c["accepted"],
                delivered=c["delivered"],
                evicted=sum(evicted.values()),
                evicted_by=evicted,
                refused=c["refused"],
                sent=sent,
                resent=resent,
                in_flight=in_flight,
                oldest_age_s=None
                if self._oldest is None
                else max(0.0, self.clock() - self._oldest),
                last_seq=self._last_seq,
            )

    def close(self, grace_s: float = 1.0, timeout: float = 10.0) -> None:
        """Stop forwarding (up to ``grace_s`` for outstanding PUBACKs), commit everything, close.

        Call it before :meth:`MqttClient.stop` so that PUBACKs can still
        arrive; rows without one stay stored and are re-sent after the next
        start. Safe to call twice.
        """
        if self._forwarder is not None:
            with contextlib.suppress(PublishError):  # refused rows are counted and logged already
                self.flush(timeout)  # commit the last results so the forwarder can send them
            self._forwarder.stop(grace_s)
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
        self._writer.join(timeout)
        with self._cond:
            self._closed = True
        if self._writer.is_alive():
            self._log.error("outbox.close_timeout", timeout_s=timeout)
            return  # the writer still holds the connection; the OS closes it at exit
        self._bursts.end_all()
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        next_checkpoint, dirty = time.monotonic() + self._checkpoint_s, False
        while True:
            with self._cond:
                self._wait_for_work()
                # At most batch_rows per transaction: bounded commit time and WAL use.
                batch = self._pending[: self._batch_rows]
                del self._pending[: self._batch_rows]
                deletes, self._deletes, self._drops_pending = self._deletes, [], False
                ticket, closing = self._enqueued - len(self._pending), self._closing
                self._passes += 1
                this_pass = self._passes
                self._cond.notify_all()  # room for accept() calls held by back-pressure
            aged = self._oldest is not None and self.clock() - self._oldest > self.max_age_s
            if batch or deletes or aged or self._bytes > self.max_bytes:
                self._commit(batch, deletes, ticket)
                dirty = True
            now = time.monotonic()
            self._bursts.tick(now)
            if dirty and (closing or now >= next_checkpoint):
                self._checkpoint("PASSIVE")  # never waits for readers; fsyncs WAL and database
                next_checkpoint, dirty = now + self._checkpoint_s, False
            with self._cond:
                self._processed, self._passes_done = ticket, this_pass
                self._cond.notify_all()
                if closing and not self._pending and not self._deletes:
                    return

    def _wait_for_work(self) -> None:
        """Sleep until there is work (or housekeeping is due), then let the batch grow a little."""
        idle_until = time.monotonic() + _IDLE_S
        # Acknowledged rows alone do not wake the writer until there are many
        # or the oldest has waited _DELETE_WAIT_S: they ride along with the
        # next result's commit, which halves the commits at camera rates, and
        # depth/delivered in stats lag the PUBACKs by 0.1 s at most.
        # Evictions wake it at once.
        while not (
            self._pending
            or len(self._deletes) >= _DELETE_BATCH
            or self._drops_pending
            or self._closing
            or self._flush_wanted()
        ):
            until = idle_until
            if self._deletes:
                until = min(until, self._deletes_since + _DELETE_WAIT_S)
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)
        # Group commit: a result after a quiet spell is committed at once (its
        # latency to the broker is what a subscriber sees); what arrives while
        # commits follow each other closely waits for the spacing and shares
        # one transaction, which caps commits at 1 / flush_interval_s a second.
        until = self._last_pass + self._interval_s
        while not (self._closing or self._flush_wanted() or len(self._pending) >= self._batch_rows):
            remaining = until - time.monotonic()
            if remaining <= 0:
                break
            self._cond.wait(remaining)
        self._last_pass = time.monotonic()

    def _flush_wanted(self) -> bool:
        return self._flush_target > self._processed or self._flush_pass > self._passes_done

    def _commit(
        self,
        batch: list[tuple[Item, float, float]],
        deletes: list[tuple[int, str | None]],
        ticket: int,
    ) -> None:
        """Commit one batch; on SQLITE_FULL evict the oldest and retry once, else refuse it."""
        rows, last_seq = self._encode(batch)
        room = 0
        for attempt in (1, 2):
            try:
                changes = self._transaction(rows, last_seq, deletes, room)
            except Exception as exc:  # noqa: BLE001 -- the writer thread must survive anything
                if not isinstance(exc, sqlite3.Error):
                    self._log.exception("outbox.write_failed")
                elif exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_FULL and attempt == 1:
                    # Deleting needs WAL space too (WAL writes every freed page). After a
                    # RESTART checkpoint the next transaction rewrites the WAL from its
                    # start, in space the file already holds (never truncated: our
                    # reserve), and evicting the batch's size in the same transaction
                    # costs little more WAL than the insert: freed pages are reused.
                    # (A quarter more, for partly filled pages: the file must not grow.)
                    self._checkpoint("RESTART")
                    room = sum(r[-1] for r in rows) * 5 // 4
                    continue
                self._refuse(len(rows), ticket, exc, deletes)
                return
            break
        self._apply(changes, len(rows), last_seq)
        if self._forwarder is not None and rows:
            self._forwarder.wake()

    def _encode(self, batch: list[tuple[Item, float, float]]) -> tuple[list[_Row], int]:
        # Only this thread assigns seq, and the numbers become durable with the
        # rows in one transaction: if it fails, the next batch reuses them.
        seq, rows = self._last_seq, list[_Row]()
        for item, wall, born in batch:
            if isinstance(item, ResultEnvelope):
                try:
                    m = item.with_seq(seq + 1)
                except ValueError as exc:  # a payload that cannot be serialized
                    self._log.error("outbox.unencodable", id=item.id, error=str(exc))
                    with self._cond:
                        self._counts["refused"] += 1
                    continue
                seq = row_seq = seq + 1
            else:
                m, row_seq = item, None
            size = len(m.payload) + len(m.topic) + len(m.id or "") + ROW_OVERHEAD
            row = (row_seq, m.id, m.topic, m.payload, m.qos, int(m.retain), m.expiry_s)
            rows.append((*row, wall, born, size))
        return rows, seq

    def _transaction(
        self, rows: list[_Row], last_seq: int, deletes: list[tuple[int, str | None]], room: int
    ) -> Counter[str]:
        """Insert, delete, evict (size, age, ``room`` bytes for a full disk) in one transaction.

        Returns the changes: ``added``/``freed`` bytes, and ``delivered`` and
        ``evicted:<reason>`` row counts.
        """
        db, changes = self._db, Counter[str]()
        db.execute("BEGIN IMMEDIATE")
        try:
            for reason in {reason for _, reason in deletes}:
                positions = [pos for pos, r in deletes if r == reason]
                for i in range(0, len(positions), _CHUNK):
                    chunk = positions[i : i + _CHUNK]
                    where = f"WHERE pos IN ({','.join('?' * len(chunk))})"
                    n, size = db.execute(
                        f"SELECT count(*), total(size) FROM outbox {where}",  # noqa: S608 -- '?' marks only
                        chunk,
                    ).fetchone()
                    db.execute(f"DELETE FROM outbox {where}", chunk)  # noqa: S608 -- '?' marks only
                    changes["delivered" if reason is None else f"evicted:{reason}"] += n
                    changes["freed"] += int(size)
            # Evict before inserting, so the batch reuses the freed pages in this
            # transaction instead of growing the file; again after, in case the
            # batch alone is over the bound (its own oldest rows go then).
            added, low_disk = sum(r[-1] for r in rows), self._low_disk()
            need, reason = self._over(changes, added, low_disk)
            self._evict(db, changes, max(need, room), "disk_full" if room else reason)
            for i in range(0, len(rows), _CHUNK):
                chunk_rows = rows[i : i + _CHUNK]
                values = ",".join([_INSERT_ROW] * len(chunk_rows))
                params = [v for r in chunk_rows for v in r]
                db.execute(f"INSERT INTO outbox VALUES {values}", params)  # noqa: S608 -- '?' marks only
            changes["added"] = added
            self._evict(db, changes, *self._over(changes, added, low_disk))
            meta = ("last_seq", last_seq, "clock", self.clock(), "wall", time.time())
            db.execute(_SET_META, meta)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return changes

    def _over(self, changes: Counter[str], added: int, low_disk: bool) -> tuple[int, str]:
        """Bytes to evict after adding ``added``, and why; low on disk space: no growth at all."""
        size = self._bytes + added - changes["freed"]
        over_size = size - self.max_bytes
        over_disk = size - self._bytes if low_disk else 0
        return (over_disk, "disk_full") if over_disk > over_size else (over_size, "size")

    def _evict(self, db: sqlite3.Connection, changes: Counter[str], need: int, reason: str) -> None:
        """Delete the oldest rows: all past max_age, then more until ``need`` bytes are freed."""
        cutoff = self.clock() - self.max_age_s
        freed, last, reasons = 0, None, Counter[str]()
        cur = db.execute(_OLDEST)
        for pos, size_, born in cur:  # oldest first; stops at the first row to keep
            if born <= cutoff:
                reasons["evicted:age"] += 1
            elif freed < need:
                reasons[f"evicted:{reason}"] += 1
            else:
                break
            freed, last = freed + size_, pos
        cur.close()
        if last is not None:
            db.execute("DELETE FROM outbox WHERE pos <= ?", (last,))
            changes.update(reasons)
            changes["freed"] += freed

    def _apply(self, changes: Counter[str], inserted: int, last_seq: int) -> None:
        oldest = self._oldest_born(self._db)
        added, freed = changes.pop("added", 0), changes.pop("freed", 0)
        with self._cond:
            self._last_seq = last_seq
            self._depth += inserted - changes.total()  # what is left: delivered + evicted rows
            self._bytes += added - freed
            self._oldest = oldest
            self._counts["accepted"] += inserted
            self._counts.update(changes)
        now = time.monotonic()
        for key, n in changes.items():
            if key.startswith("evicted:"):
                limits = {"max_mb": self.max_bytes / 2**20, "max_age_h": self.max_age_s / 3600}
                self._bursts.add(key.partition(":")[2], n, now, **limits)

    def _refuse(
        self, n: int, ticket: int, exc: Exception, deletes: list[tuple[int, str | None]]
    ) -> None:
        with self._cond:
            self._counts["refused"] += n
            self._refused_ticket = ticket
            self._refusing_until = time.monotonic() + _REFUSE_S
            self._deletes[:0] = deletes  # acknowledged stays acknowledged: retry the deletes
        self._bursts.add("refused", n, time.monotonic(), error=str(exc))

    def _low_disk(self) -> bool:
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < self._min_free

    def _checkpoint(self, mode: str) -> None:
        try:
            self._db.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
        except sqlite3.Error as exc:  # e.g. no space to grow the database file
            self._log.warning("outbox.checkpoint_failed", mode=mode, error=str(exc))

    @staticmethod
    def _oldest_born(db: sqlite3.Connection) -> float | None:
        row = db.execute("SELECT born FROM outbox ORDER BY pos LIMIT 1").fetchone()
        return None if row is None else float(row[0])
