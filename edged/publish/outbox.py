"""The durable outbox (README "Delivery guarantees"): results are accepted into SQLite and leave only after PUBACK.

:meth:`Outbox.accept` (the :class:`~edged.publish.results.Sink` protocol) appends to an
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

Low disk: in WAL mode even a DELETE needs free space (WAL holds every freed
page) and a checkpoint may need to grow the file, so a truly full disk would
freeze the outbox. Below ``min_free_mb`` free (``[outbox] min_free_mb``) the
file therefore stops growing. While the broker is connected, results then pass
straight through: they are published live instead of stored, because a full
disk must never cost a result that could be delivered now (they may overtake
rows still stored; consumers order by ``seq``). With the broker away, each
batch replaces the oldest rows in place (evicted, reason ``disk_full``). If a
write still fails with SQLITE_FULL, the writer checkpoints, evicts as much as
the batch needs in the same transaction and retries once. A failed
transaction rolls back whole: nothing that was committed is lost and the file
is never left half-written.

Storage faults (ENOSPC, EROFS after the kernel remounted the file system
read-only, EIO from a failing card; named by :func:`~edged.publish.storage.classify`)
never reach the pipelines: :meth:`Outbox.accept` only queues. The writer
records the fault (``state`` shows ``degraded`` with its name), publishes live
what it cannot store while the broker is connected, counts what it can do
neither with (``refused_by``), closes the file (so a repaired file system can
be unmounted and mounted again) and retries with backoff; the first commit
that works ends the fault, logged as ``outbox.recovered``. Rows stored before
the fault wait for that (the forwarder lets go of the file too); rows the
kernel had not written yet when it remounted the file system read-only are
gone with it, which ``seq`` shows as a gap.

An unusable file at the outbox path (a directory, not a database, another
program's schema, a newer edged's, corrupt, unwritable) is moved aside at
start (:mod:`edged.publish.quarantine`), its readable rows are copied into a
fresh file, and ``seq`` continues above the highest one ever handed out,
kept in a small high-water-mark file (:class:`~edged.publish.storage.SeqMark`).
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Self

import structlog

from edged.config.settings import OutboxSettings
from edged.errors import ConfigError, PublishError
from edged.log import BurstLog
from edged.publish.forwarder import Forwarder
from edged.publish.mqtt import MqttClient
from edged.publish.payloads import Message, ResultEnvelope
from edged.publish.quarantine import Salvage, Unusable, check_kind, move_aside, salvage
from edged.publish.storage import SeqMark, StorageFault, classify, probe
from edged.sched import background

log = structlog.get_logger(__name__)

#: Bytes counted per row besides topic, id and payload: record header, numbers, cell
#: pointer and B-tree page slack, as measured with ~400-byte results (max_mb ≈ the file).
ROW_OVERHEAD: Final = 90
_VERSION: Final = 1
_IDLE_S: Final = 1.0  # housekeeping period (age bound, checkpoints, burst logs) when idle
_RETRY_MIN_S: Final = 0.5  # after a storage fault, the first retry; doubles up to …
_RETRY_MAX_S: Final = 5.0  # … this: a repaired file system is in use again within seconds
_LOW_DISK_MARGIN: Final = 2**20  # free bytes above the floor before low-disk mode ends
_MAX_EXPIRY_S: Final = 2**32 - 1  # MQTT 5 Message Expiry Interval is a four-byte integer
_DELETE_BATCH: Final = 200  # acknowledged rows that wake the writer by themselves
_DELETE_WAIT_S: Final = 0.1  # … or that wait at most this long for a result's commit
_CHUNK: Final = 100  # rows per multi-row statement (1,000 parameters, below the limit)
_BOOTTIME: Final = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)  # counts suspend

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outbox (
    pos      INTEGER PRIMARY KEY AUTOINCREMENT, -- send order; never reused, even when empty
    seq      INTEGER,                           -- the result's seq
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

# seq, id, topic, payload, qos, retain, expiry_s, created, born, size
_Row = tuple[int | None, str | None, str, bytes, int, int, int | None, float, float, int]


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """A consistent snapshot of the outbox counters (for the ``stats`` message)."""

    depth: int  # rows stored, awaiting PUBACK
    bytes: int  # their size as counted against max_mb
    unflushed: int  # queued by accept(), not committed yet
    accepted: int  # rows committed by this process
    delivered: int  # rows deleted after their PUBACK
    evicted: int  # rows removed undelivered: the sum of evicted_by
    evicted_by: dict[str, int] = field(default_factory=dict)  # size|age|disk_full|invalid
    refused: int = 0  # items neither stored nor published: the sum of refused_by
    refused_by: dict[str, int] = field(default_factory=dict)  # ENOSPC|EROFS|EIO|…|unencodable
    passed: int = 0  # results published live because they could not be stored
    sent: int = 0  # messages handed to MQTT
    resent: int = 0  # … of which rows handed over again after a reconnect
    in_flight: int = 0  # handed over in this session, awaiting PUBACK
    oldest_age_s: float | None = None
    last_seq: int = 0
    status: str = "durable"  # durable | degraded
    error: str | None = None  # the storage fault's errno name (ENOSPC, EROFS, EIO, …)
    free_mb: float | None = None  # free space on the outbox's file system when last checked
    quarantined: int = 0  # unusable files moved aside by this process


@dataclass(frozen=True, slots=True)
class OutboxHealth:
    """What ``state`` shows of the outbox: ``degraded`` with a reason, and files moved aside."""

    status: Literal["durable", "degraded"]
    reason: str | None = None
    error: str | None = None
    quarantined: tuple[str, ...] = ()


class Outbox:
    """SQLite-backed, bounded, ordered store of messages awaiting their PUBACK.

    Thread-safe: :meth:`accept` may be called from any thread; it
    blocks only while ``max_pending`` items wait for the writer
    (back-pressure instead of unbounded memory). :meth:`start` begins
    forwarding; :meth:`close` (or ``with``) flushes and stops.

    Tuning: the writer commits a result at once when its last commit is
    ``flush_interval_s`` or more ago, otherwise when that much time has passed
    or ``batch_rows`` rows wait (at most that many per transaction); it checkpoints
    every ``checkpoint_s``; below ``min_free_mb`` MiB free on the file system
    the file stops growing, which keeps WAL checkpoints and deletes possible:
    results are then published live while the broker is connected, else the
    oldest rows make room (reason ``disk_full``). ``seq_path`` is the
    high-water-mark file of ``seq`` (default: beside the outbox file).
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
        seq_path: Path | None = None,
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
        self._pending: list[tuple[ResultEnvelope, float, float]] = []  # (item, wall, born)
        self._deletes: list[tuple[int, str | None]] = []  # (pos, None=delivered or reason)
        self._drops_pending = False  # _deletes holds a drop (reason), not only deliveries
        self._deletes_since = 0.0  # when _deletes last became non-empty (monotonic)
        # Tickets number queued items, so flush() knows when "everything so far" is done.
        self._enqueued = self._processed = self._flush_target = 0
        # Writer passes: flush() also waits for one that starts after it was called
        # (so that queued deletes are committed too).
        self._passes = self._passes_done = self._flush_pass = 0
        self._refused_ticket = self._flush_checked = 0
        self._last_pass = 0.0  # writer thread only: when its last pass began (monotonic)
        self._closing = self._closed = False
        self._counts: Counter[str] = Counter()  # accepted, delivered, refused, evicted:<reason>
        self._bursts = BurstLog(by=("reason",), logger=self._log)
        self._forwarder: Forwarder | None = None
        self._mqtt: MqttClient | None = None
        self._synchronous = synchronous
        self._mark = SeqMark(seq_path or self.path.with_name(self.path.name + ".seq"))
        # Storage faults (writer thread; read under _cond by stats()/health()).
        self._fault: StorageFault | None = None
        self._fault_since = 0.0
        self._retry_at, self._retry_s = 0.0, _RETRY_MIN_S
        self._ckpt_error: str | None = None
        self._low = False  # below the free-space floor (writer thread)
        self._low_since = 0.0
        self._free: int | None = None
        self._quarantined: list[str] = []
        #: Bumped whenever the writer closes or (re)opens the file: the forwarder then
        #: drops its read connection (a file system with open files cannot be unmounted).
        self.generation = 0
        self._max_pos = 0  # highest send position ever used: a new file continues above it
        self._last_seq = 0
        self._clock_base: float | None = None
        self._depth = self._bytes = 0
        self._oldest: float | None = None
        self._db: sqlite3.Connection | None = None
        self._db = self._start()
        self._writer = threading.Thread(
            target=background(self._run), name="outbox-writer", daemon=True
        )
        self._writer.start()

    @classmethod
    def from_settings(cls, settings: OutboxSettings, **tuning: Any) -> Outbox:
        """The outbox of ``[outbox]``; ``tuning`` takes the other keywords of the constructor."""
        tuning.setdefault("min_free_mb", settings.min_free_mb)
        return cls(
            settings.path, max_mb=settings.max_mb, max_age_hours=settings.max_age_hours, **tuning
        )

    # --- opening, quarantine, reopening ------------------------------------------------------

    def _start(self) -> sqlite3.Connection | None:
        """Open the outbox at start; a file that cannot be used is moved aside, never fatal.

        Raises :class:`ConfigError` (``outbox.path``) only when nothing can be
        done: the directory cannot be created or written, or an unusable file
        cannot be moved aside. With a full or failing disk the daemon starts
        degraded (results published live) and keeps trying.
        """
        directory = self.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            fault = classify(exc, directory)
            raise ConfigError(
                [("outbox.path", f"{self.path}: cannot create its directory ({fault})")]
            ) from None
        try:
            return self._open_or_quarantine()
        except sqlite3.Error as exc:
            primary = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise PublishError(
                    f"outbox {self.path}: in use by another process ({exc}); "
                    "is another edged running with the same outbox.path?"
                ) from None
            fault = classify(exc, directory)
        except OSError as exc:
            fault = classify(exc, directory)
        if fault.code in ("EROFS", "EACCES", "EPERM", "ENOENT", "ENOTDIR"):
            raise ConfigError(
                [("outbox.path", f"{self.path}: cannot be written ({fault}); use a writable path")]
            )
        # Full or failing disk: run degraded (live results), retry with backoff.
        self._last_seq = self._mark.read()
        self._failed(fault, "open")
        return None

    def _open_or_quarantine(self) -> sqlite3.Connection:
        """Open the file; move it aside first if it cannot be used (raises sqlite3/OS errors)."""
        try:
            return self._connect(None)
        except Unusable as bad:
            found = self._quarantine(bad.reason)
        try:
            return self._connect(found)
        except Unusable as bad:  # a fresh file is never unusable unless the disk lies
            raise sqlite3.OperationalError(f"fresh outbox file {bad.reason}") from None

    def _quarantine(self, reason: str) -> Salvage:
        try:
            moved = move_aside(self.path)
        except OSError as exc:
            fault = classify(exc, self.path.parent)
            raise ConfigError(
                [("outbox.path", f"{self.path} {reason} and cannot be moved aside ({fault})")]
            ) from None
        found = salvage(moved, reason)
        self._log.error(
            "outbox.quarantined",
            reason=reason,
            moved_to=str(moved),
            salvaged=len(found.rows),
            last_seq=found.last_seq,
            problem=found.problem,
        )
        with self._cond:
            self._quarantined.append(f"{moved.name}: {reason}")
        self._max_pos = max(self._max_pos, found.last_pos)
        return found

    def _connect(self, found: Salvage | None) -> sqlite3.Connection:
        """Connect, check and prepare the file; raises Unusable, sqlite3.Error or OSError."""
        check_kind(self.path)
        # The writer thread owns the connection; close() uses it after joining.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            try:
                self._prepare(db)
                if found is not None:
                    self._restore(db, found)
                self._load(db, found)
            except sqlite3.Error as exc:
                primary = getattr(exc, "sqlite_errorcode", 0) & 0xFF
                if primary in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
                    raise Unusable(f"is not a usable SQLite database ({exc})") from None
                if primary == sqlite3.SQLITE_READONLY and probe(self.path.parent) is None:
                    raise Unusable(f"cannot be written ({exc})") from None
                raise
        except BaseException:
            db.close()
            raise
        return db

    def _prepare(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > _VERSION:
            raise Unusable(f"has schema version {version}, newer than this edged's {_VERSION}")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        ours = {"outbox", "meta", "sqlite_sequence"}
        columns = {r[1] for r in db.execute("PRAGMA table_info(outbox)")}
        if tables and (not tables <= ours or "outbox" not in tables or len(columns) != 11):
            raise Unusable(f"holds another program's database (tables: {sorted(tables)})")
        if db.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
            # SQLite keeps the old mode when it cannot write the file.
            err = probe(self.path.parent)
            if err is None:
                raise Unusable("cannot be written (SQLite could not switch it to WAL mode)")
            raise OSError(err, os.strerror(err))
        db.execute(f"PRAGMA synchronous={self._synchronous.upper()}")
        db.execute("PRAGMA busy_timeout=2000")  # RESTART checkpoints wait for readers
        db.execute("PRAGMA secure_delete=FAST")  # Debian builds zero freed pages: wasted I/O
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={_VERSION}")
        # A new file continues the send positions of the one it replaces, so a
        # late PUBACK for an old row can never delete a new one.
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        if (row[0] if row else 0) < self._max_pos:
            db.execute("DELETE FROM sqlite_sequence WHERE name = 'outbox'")
            db.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?)", (self._max_pos,)
            )

    def _restore(self, db: sqlite3.Connection, found: Salvage) -> None:
        """Copy the salvaged rows into the fresh file, in their order, in one transaction."""
        self._last_seq = max(self._last_seq, found.last_seq, self._mark.read())
        self._mark.cover(self._last_seq)
        if not found.rows:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            for r in found.rows:
                size = len(r[3]) + len(r[2]) + len(r[1] or "") + ROW_OVERHEAD
                db.execute(f"INSERT INTO outbox VALUES {_INSERT_ROW}", (*r, size))  # noqa: S608
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _load(self, db: sqlite3.Connection, found: Salvage | None) -> None:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        max_seq = db.execute("SELECT max(seq) FROM outbox").fetchone()[0] or 0
        known = max(int(meta.get("last_seq", 0)), int(max_seq))
        if "last_seq" not in meta and found is None:
            # A new file (or one deleted by hand): continue above every seq handed out.
            known = max(known, self._mark.read())
        depth, size = db.execute("SELECT count(*), coalesce(sum(size), 0) FROM outbox").fetchone()
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        oldest = self._oldest_born(db)
        with self._cond:
            self._last_seq = max(self._last_seq, known)
            self._depth, self._bytes = int(depth), int(size)
            self._oldest = oldest
        self._max_pos = max(self._max_pos, int(row[0]) if row else 0)
        if self._clock_base is None:
            # The clock continues from its saved value plus the wall-clock downtime
            # if that is positive: a clock set back (or a device booting in 1970)
            # adds nothing, so ages err towards keeping data.
            clock, wall = float(meta.get("clock", 0.0)), float(meta.get("wall", 0.0))
            downtime = max(time.time() - wall, 0.0) if wall else 0.0
            self._clock_base = clock + downtime - time.clock_gettime(_BOOTTIME)
        if depth:
            self._log.info("outbox.opened", depth=depth, bytes=size, last_seq=self._last_seq)

    def _reopen(self) -> bool:
        """Writer thread: open the file again after a fault; True when it works."""
        try:
            self._db = self._open_or_quarantine()
        except ConfigError as exc:  # an unusable file that cannot be moved aside
            self._failed(StorageFault("EACCES", exc.problems[0][1]), "reopen")
            return False
        except (sqlite3.Error, OSError) as exc:
            self._failed(classify(exc, self.path.parent), "reopen")
            return False
        self.generation += 1
        if self._forwarder is not None:
            self._forwarder.wake()  # rows stored before the fault (or salvaged) go out now
        return True

    def clock(self) -> float:
        """The outbox clock, seconds: never goes backwards, not even across restarts."""
        return (self._clock_base or 0.0) + time.clock_gettime(_BOOTTIME)

    # --- accepting -----------------------------------------------------------------------

    def accept(self, envelope: ResultEnvelope) -> None:
        """Queue a result; it gets its ``seq`` and counts as accepted when its batch commits.

        Never raises a storage error (the writer thread deals with those, see
        the module docs); raises :class:`PublishError` only once the outbox is closed.
        """
        with self._cond:
            while True:
                if self._closing:
                    raise PublishError(f"outbox {self.path} is closed; nothing can be accepted")
                if len(self._pending) < self._max_pending:
                    break
                self._cond.wait()  # back-pressure: the writer is behind
            self._pending.append((envelope, time.time(), self.clock()))
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
            fault = self._fault or "disk full even after evicting"
            raise PublishError(
                f"outbox {self.path}: results could not be stored nor published live "
                f"({fault}; {self._counts['refused']} refused so far)"
            )

    # --- forwarding ----------------------------------------------------------------------

    def start(self, mqtt: MqttClient) -> Forwarder:
        """Start forwarding stored rows through ``mqtt`` (which may connect before or later)."""
        if self._forwarder is not None:
            raise RuntimeError("Outbox.start() called twice")
        self._mqtt = mqtt  # results that cannot be stored are published live through it
        self._forwarder = Forwarder(self, mqtt, window=self._window, drain_per_s=self._drain_per_s)
        self._forwarder.start()
        return self._forwarder

    @property
    def readable(self) -> bool:
        """True while the writer has the file open (no fault has made it let go)."""
        return self._db is not None

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
            refused = {k.partition(":")[2]: n for k, n in c.items() if k.startswith("refused:")}
            return OutboxStats(
                depth=self._depth,
                bytes=self._bytes,
                unflushed=self._enqueued - self._processed,
                accepted=c["accepted"],
                delivered=c["delivered"],
                evicted=sum(evicted.values()),
                evicted_by=evicted,
                refused=c["refused"],
                refused_by=refused,
                passed=c["passed"],
                sent=sent,
                resent=resent,
                in_flight=in_flight,
                oldest_age_s=None
                if self._oldest is None
                else max(0.0, self.clock() - self._oldest),
                last_seq=self._last_seq,
                status="degraded" if self._fault or self._low else "durable",
                error=self._fault.code if self._fault else None,
                free_mb=None if self._free is None else round(self._free / 2**20, 1),
                quarantined=len(self._quarantined),
            )

    def health(self) -> OutboxHealth:
        """``degraded`` with a reason while a storage fault or low disk lasts; files moved aside."""
        with self._cond:
            quarantined = tuple(self._quarantined)
            if self._fault is not None:
                fault = self._fault
                return OutboxHealth("degraded", self._fault_reason(fault), fault.code, quarantined)
            if self._low:
                floor = self._min_free / 2**20
                reason = (
                    f"low disk: less than outbox.min_free_mb = {floor:g} MiB free; "
                    "results are published live while the broker is connected, "
                    "else the oldest stored ones make room"
                )
                return OutboxHealth("degraded", reason, None, quarantined)  # a floor, no error
            return OutboxHealth("durable", quarantined=quarantined)

    @staticmethod
    def _fault_reason(fault: StorageFault) -> str:
        return (
            f"storage {fault}; results are published live while the broker is connected, "
            "else they are lost (counted in stats outbox.refused_by)"
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
        if self._db is not None:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
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
            low = self._check_disk()
            retry = self._fault is not None and time.monotonic() >= self._retry_at
            if batch or deletes or aged or retry or self._bytes > self.max_bytes:
                self._commit(batch, deletes, ticket, low)
                dirty = True
            now = time.monotonic()
            self._bursts.tick()
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
        batch: list[tuple[ResultEnvelope, float, float]],
        deletes: list[tuple[int, str | None]],
        ticket: int,
        low: bool,
    ) -> None:
        """Commit one batch, or publish it live, or count it lost; never raises.

        On SQLITE_FULL with the broker away: evict the oldest and retry once.
        """
        rows, last_seq = self._encode(batch)
        if last_seq > self._last_seq:
            # The numbers are handed out now, stored or not: covered by the mark first.
            self._mark.cover(last_seq)
            with self._cond:
                self._last_seq = last_seq
        if self._fault is not None and time.monotonic() < self._retry_at:
            self._divert(rows, ticket, deletes)  # not yet time to try the disk again
            return
        if self._db is None and not self._reopen():
            self._divert(rows, ticket, deletes)
            return
        if rows and low and self._live():
            # Below the floor the file must not grow: deliver now instead of storing.
            self._send_live(rows)
            rows = []
        room = 0
        for attempt in (1, 2):
            try:
                changes = self._transaction(rows, last_seq, deletes, room, low)
            except Exception as exc:  # noqa: BLE001 -- the writer thread must survive anything
                full = (
                    isinstance(exc, sqlite3.Error)
                    and exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_FULL
                )
                if full and attempt == 1 and rows and not self._live():
                    # Deleting needs WAL space too (WAL writes every freed page). After a
                    # RESTART checkpoint the next transaction rewrites the WAL from its
                    # start, in space the file already holds (never truncated: our
                    # reserve), and evicting the batch's size in the same transaction
                    # costs little more WAL than the insert: freed pages are reused.
                    # (A quarter more, for partly filled pages: the file must not grow.)
                    self._checkpoint("RESTART")
                    room = sum(r[-1] for r in rows) * 5 // 4
                    continue
                if not isinstance(exc, sqlite3.Error | OSError):
                    self._log.exception("outbox.write_failed")
                self._failed(classify(exc, self.path.parent), "commit")
                self._divert(rows, ticket, deletes)
                return
            break
        if rows or not low or (self._fault and self._fault.code not in ("ENOSPC", "EDQUOT")):
            # A full disk may still take a transaction that stores nothing (WAL
            # space is reused): only stored rows or space above the floor end it.
            self._recovered()
        self._apply(changes, len(rows), last_seq)
        if self._forwarder is not None and rows:
            self._forwarder.wake()

    def _live(self) -> bool:
        return self._mqtt is not None and self._mqtt.connected

    def _send_live(self, rows: list[_Row]) -> None:
        """Publish rows that cannot be stored straight away, with the rest of their age budget."""
        assert self._mqtt is not None
        now, sent = self.clock(), 0
        for seq, id_, topic, payload, qos, retain, expiry_s, _, born, _ in rows:
            budget = self.max_age_s - (now - born)
            if expiry_s is not None:
                budget = min(budget, expiry_s - (now - born))
            expiry = max(1, min(math.ceil(budget), _MAX_EXPIRY_S))
            try:
                self._mqtt.send(Message(topic, payload, qos, bool(retain), id_, expiry))
                sent += 1
            except PublishError as exc:
                self._log.error("outbox.unsendable", topic=topic, id=id_, seq=seq, error=str(exc))
                with self._cond:
                    self._counts["evicted:invalid"] += 1
        with self._cond:
            self._counts["passed"] += sent

    def _divert(self, rows: list[_Row], ticket: int, deletes: list[tuple[int, str | None]]) -> None:
        """Rows that could not be stored: live while the broker is connected, else lost."""
        with self._cond:
            self._deletes[:0] = deletes  # acknowledged stays acknowledged: retry the deletes
        if not rows:
            return
        if self._live():
            self._send_live(rows)
            return
        code = self._fault.code if self._fault else "error"
        with self._cond:
            self._counts["refused"] += len(rows)
            self._counts[f"refused:{code}"] += len(rows)
            self._refused_ticket = ticket
        self._bursts.note("outbox.refusing", len(rows), reason="refused", error=str(self._fault))

    def _failed(self, fault: StorageFault, during: str) -> None:
        """Record a storage fault: log it once per kind, close the file, schedule a retry."""
        now = time.monotonic()
        with self._cond:
            first = self._fault is None
            changed = first or self._fault is None or self._fault.code != fault.code
            self._fault = fault
            if first:
                self._fault_since = now
        if changed:
            self._log.error(
                "outbox.storage_failed",
                error=fault.code,
                detail=fault.message,
                during=during,
                live=self._live(),
                retry_in_s=self._retry_s,
            )
        self._retry_at = now + self._retry_s
        self._retry_s = min(self._retry_s * 2, _RETRY_MAX_S)
        if fault.code not in ("ENOSPC", "EDQUOT") and self._db is not None:
            # Let go of the file: a file system remounted read-only after an error
            # can only be repaired and mounted again once nothing holds it open.
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
            self.generation += 1

    def _recovered(self) -> None:
        if self._fault is None:
            return
        with self._cond:
            fault, self._fault = self._fault, None
            counts = dict(self._counts)
        self._retry_s = _RETRY_MIN_S
        self._log.info(
            "outbox.recovered",
            error=fault.code,
            after_s=round(time.monotonic() - self._fault_since, 1),
            passed=counts.get("passed", 0),
            refused=counts.get("refused", 0),
        )

    def _encode(self, batch: list[tuple[ResultEnvelope, float, float]]) -> tuple[list[_Row], int]:
        # Only this thread assigns seq. The numbers are used up whatever happens to
        # the batch (a result published live keeps its number; a lost one leaves a
        # gap, which is what a gap means to a subscriber).
        seq, rows = self._last_seq, list[_Row]()
        for envelope, wall, born in batch:
            try:
                m = envelope.with_seq(seq + 1)
            except ValueError as exc:  # a payload that cannot be serialized
                self._log.error("outbox.unencodable", id=envelope.id, error=str(exc))
                with self._cond:
                    self._counts["refused"] += 1
                    self._counts["refused:unencodable"] += 1
                continue
            seq += 1
            size = len(m.payload) + len(m.topic) + len(m.id or "") + ROW_OVERHEAD
            row = (seq, m.id, m.topic, m.payload, m.qos, int(m.retain), m.expiry_s)
            rows.append((*row, wall, born, size))
        return rows, seq

    def _transaction(
        self,
        rows: list[_Row],
        last_seq: int,
        deletes: list[tuple[int, str | None]],
        room: int,
        low_disk: bool,
    ) -> Counter[str]:
        """Insert, delete, evict (size, age, ``room`` bytes for a full disk) in one transaction.

        Returns the changes: ``added``/``freed`` bytes, and ``delivered`` and
        ``evicted:<reason>`` row counts.
        """
        db, changes = self._db, Counter[str]()
        assert db is not None
        last_pos = 0
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
            added = sum(r[-1] for r in rows)
            need, reason = self._over(changes, added, low_disk)
            self._evict(db, changes, max(need, room), "disk_full" if room else reason)
            for i in range(0, len(rows), _CHUNK):
                chunk_rows = rows[i : i + _CHUNK]
                values = ",".join([_INSERT_ROW] * len(chunk_rows))
                params = [v for r in chunk_rows for v in r]
                cur = db.execute(f"INSERT INTO outbox VALUES {values}", params)  # noqa: S608 -- '?' marks only
                last_pos = cur.lastrowid or 0
            changes["added"] = added
            self._evict(db, changes, *self._over(changes, added, low_disk))
            meta = ("last_seq", last_seq, "clock", self.clock(), "wall", time.time())
            db.execute(_SET_META, meta)
            db.execute("COMMIT")
            self._max_pos = max(self._max_pos, last_pos)
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
        assert self._db is not None
        try:
            oldest = self._oldest_born(self._db)
        except sqlite3.Error:  # committed already; the next pass reads it again
            oldest = self._oldest
        added, freed = changes.pop("added", 0), changes.pop("freed", 0)
        with self._cond:
            self._last_seq = max(self._last_seq, last_seq)
            self._depth += inserted - changes.total()  # what is left: delivered + evicted rows
            self._bytes += added - freed
            self._oldest = oldest
            self._counts["accepted"] += inserted
            self._counts.update(changes)
        for key, n in changes.items():
            if key.startswith("evicted:"):
                limits = {"max_mb": self.max_bytes / 2**20, "max_age_h": self.max_age_s / 3600}
                if key == "evicted:disk_full":
                    limits = {
                        "free_mb": round((self._free or 0) / 2**20, 2),
                        "min_free_mb": self._min_free / 2**20,
                    }
                self._bursts.note("outbox.evicting", n, reason=key.partition(":")[2], **limits)

    def _check_disk(self) -> bool:
        """Below the free-space floor? Logs the start and the end of each low-disk spell."""
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return self._low
        free = st.f_bavail * st.f_frsize
        # A margin above the floor ends the spell, so that a disk hovering at
        # the floor does not log a line per batch.
        low = free < self._min_free + (_LOW_DISK_MARGIN if self._low else 0)
        now = time.monotonic()
        context = {"free_mb": round(free / 2**20, 2), "min_free_mb": self._min_free / 2**20}
        if low and not self._low:
            mode = "live" if self._live() else "rotating"
            self._log.warning("outbox.disk_low", mode=mode, **context)
            self._low_since = now
        elif self._low and not low:
            self._log.info(
                "outbox.disk_recovered", after_s=round(now - self._low_since, 1), **context
            )
        with self._cond:
            self._low, self._free = low, free
        return low

    def _checkpoint(self, mode: str) -> None:
        if self._db is None:
            return
        try:
            self._db.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
        except sqlite3.Error as exc:  # e.g. no space to grow the database file
            if str(exc) != self._ckpt_error:  # once per kind of failure, not every 2 s
                self._log.warning("outbox.checkpoint_failed", mode=mode, error=str(exc))
            self._ckpt_error = str(exc)
        else:
            self._ckpt_error = None

    @staticmethod
    def _oldest_born(db: sqlite3.Connection) -> float | None:
        row = db.execute("SELECT born FROM outbox ORDER BY pos LIMIT 1").fetchone()
        return None if row is None else float(row[0])
