"""Moving an unusable outbox file aside, and salvaging the rows that can still be read.

A directory, a text file, another program's SQLite database, an outbox
written by a newer edged, a corrupt or an unwritable file at ``outbox.path``
used to stop ``edged run`` at every start: a restart loop under systemd that
no restart can end. Instead the file is renamed beside itself
(``outbox.sqlite3.corrupt-<UTC time>``, with its ``-wal``/``-shm``
companions, which belong to it and would otherwise be replayed into the new
file), the rows that can be interpreted are copied into a fresh outbox, and
the daemon runs on. Nothing is deleted: the moved file stays for inspection.
"""

from __future__ import annotations

import contextlib
import sqlite3
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import structlog

log = structlog.get_logger(__name__)

#: The columns a row needs to be sent again (what the forwarder reads).
COLUMNS: Final = ("seq", "id", "topic", "payload", "qos", "retain", "expiry_s", "created", "born")
# seq, id, topic, payload, qos, retain, expiry_s, created, born
SalvagedRow = tuple[int | None, str | None, str, bytes, int, int, int | None, float, float]


class Unusable(Exception):  # noqa: N818 -- a verdict on a file, not a program error
    """The file at the outbox path cannot be used as an outbox; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Salvage:
    """What was recovered from a moved-aside file."""

    moved_to: Path
    reason: str
    rows: list[SalvagedRow] = field(default_factory=list)
    last_seq: int = 0  # the highest seq the file knew of (meta or rows)
    last_pos: int = 0  # the highest send position it used
    problem: str | None = None  # why reading stopped early, if it did


def check_kind(path: Path) -> None:
    """Raise :class:`Unusable` if ``path`` exists and is not a regular file.

    Checked before SQLite opens it: opening a FIFO would block forever.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise Unusable("is a directory")
    if not stat.S_ISREG(mode):
        raise Unusable("is not a regular file")


def move_aside(path: Path) -> Path:
    """Rename ``path`` (and its -wal/-shm) to ``<path>.corrupt-<UTC time>``; raises OSError."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    path.rename(target)
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            with contextlib.suppress(OSError):
                companion.rename(target.with_name(target.name + suffix))
    return target


def salvage(moved: Path, reason: str) -> Salvage:
    """Read every row of a moved-aside outbox that can be interpreted; never raises."""
    found = Salvage(moved, reason)
    if not moved.is_file():
        return found
    try:
        # Read-only and without creating -shm: the file is evidence, not ours to change.
        db = sqlite3.connect(f"file:{moved}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        found.problem = str(exc)
        return found
    try:
        _read(db, found)
    except sqlite3.Error as exc:
        found.problem = str(exc)
    finally:
        db.close()
    return found


def _read(db: sqlite3.Connection, found: Salvage) -> None:
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" in tables:
        with contextlib.suppress(sqlite3.Error, ValueError, TypeError):
            row = db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
            found.last_seq = int(row[0]) if row else 0
    if "outbox" not in tables:
        return
    columns = {r[1] for r in db.execute("PRAGMA table_info(outbox)")}
    if not set(COLUMNS) | {"pos"} <= columns:
        found.problem = "the outbox table lacks columns this edged needs"
        return
    select = f"SELECT pos, {', '.join(COLUMNS)} FROM outbox"  # noqa: S608 -- constant names
    seen: dict[int, SalvagedRow] = {}
    # A corrupt page stops a scan; reading from both ends recovers the rows before and after it.
    for order in ("ASC", "DESC"):
        try:
            for raw in db.execute(f"{select} ORDER BY pos {order}"):
                row = _interpret(raw[1:])
                if row is not None:
                    seen.setdefault(int(raw[0]), row)
        except sqlite3.Error as exc:
            found.problem = str(exc)
    found.rows = [seen[pos] for pos in sorted(seen)]
    found.last_pos = max(seen, default=0)
    found.last_seq = max([found.last_seq] + [r[0] for r in found.rows if r[0] is not None])


def _interpret(raw: tuple[Any, ...]) -> SalvagedRow | None:
    """A row with the types the forwarder needs, or None (a row edged cannot send)."""
    seq, id_, topic, payload, qos, retain, expiry_s, created, born = raw
    if isinstance(payload, str):
        payload = payload.encode()
    ok = (
        (seq is None or (isinstance(seq, int) and seq >= 0))
        and (id_ is None or isinstance(id_, str))
        and isinstance(topic, str)
        and topic
        and isinstance(payload, bytes)
        and qos in (0, 1, 2)
        and retain in (0, 1)
        and (expiry_s is None or (isinstance(expiry_s, int) and expiry_s >= 1))
        and isinstance(created, int | float)
        and isinstance(born, int | float)
    )
    if not ok:
        return None
    return (seq, id_, topic, payload, qos, retain, expiry_s, float(created), float(born))
