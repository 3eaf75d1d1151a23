"""The event media store: one directory per pipeline, files named by event id, bounded.

Layout: ``<dir>/<pipeline>/<event_id>.jpg`` (full frame),
``<event_id>.crop.jpg`` (cropped to the box) and ``<event_id>.mp4`` (clip).
The store is bounded by size (``max_mb``, oldest events evicted first) and by
age (``max_age_hours``); an event is evicted with all its files at once, and
never while it is open (its clip may still be being written). Eviction runs
after every write, is counted by reason in :meth:`EventStore.stats`, and is
logged once per burst.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import structlog

from edged.log import BurstLog

log = structlog.get_logger(__name__)

MediaKind = Literal["snapshot", "crop", "clip"]

_SUFFIX: Final[dict[MediaKind, str]] = {"snapshot": ".jpg", "crop": ".crop.jpg", "clip": ".mp4"}
#: Event ids are the daemon's own UUIDs; a command's id is checked against this
#: before it names a file, so no id can reach outside the store.
EVENT_ID: Final = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


@dataclass(slots=True)
class _Event:
    """The files of one event on disk."""

    files: list[Path]
    size: int
    mtime: float


class EventStore:
    """Event media files under ``root``, bounded by ``max_bytes`` and ``max_age_s``.

    Thread-safe: the recorder writes, the command handler reads.
    """

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int,
        max_age_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._open: set[str] = set()
        self._evict_log = BurstLog("events.evicted")
        self.evicted: dict[str, int] = {"size": 0, "age": 0}
        self.evicted_bytes = 0
        self.files = 0
        self.bytes = 0

    def path(self, pipeline: str, event_id: str, kind: MediaKind) -> Path:
        """Where ``kind`` of ``event_id`` is (or will be) kept."""
        if not EVENT_ID.match(event_id):
            raise ValueError(f"event id {event_id!r} is not [0-9A-Za-z_-]{{1,64}}")
        return self.root / pipeline / f"{event_id}{_SUFFIX[kind]}"

    def opened(self, event_id: str) -> None:
        """``event_id`` is open: none of its files is evicted until :meth:`closed`."""
        with self._lock:
            self._open.add(event_id)

    def closed(self, event_id: str) -> None:
        """``event_id`` ended and its media are written: its files may be evicted now."""
        with self._lock:
            self._open.discard(event_id)

    def write(self, path: Path, data: bytes) -> None:
        """Write ``data`` to ``path`` atomically (a reader never sees half a JPEG), then evict."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with tmp.open("wb") as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self.enforce()

    def find(self, event_id: str) -> dict[MediaKind, Path]:
        """The files kept for ``event_id``, by kind (empty when none or evicted)."""
        if not EVENT_ID.match(event_id):
            return {}
        found: dict[MediaKind, Path] = {}
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for pipeline in os.scandir(self.root):
                if not pipeline.is_dir(follow_symlinks=False):
                    continue
                for kind, suffix in _SUFFIX.items():
                    candidate = Path(pipeline.path) / f"{event_id}{suffix}"
                    if candidate.is_file():
                        found[kind] = candidate
        return found

    def _scan(self) -> dict[str, _Event]:
        events: dict[str, _Event] = {}
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for pipeline in os.scandir(self.root):
                if not pipeline.is_dir(follow_symlinks=False):
                    continue
                for entry in os.scandir(pipeline.path):
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    event_id = entry.name.split(".", 1)[0]
                    ev = events.setdefault(event_id, _Event([], 0, 0.0))
                    ev.files.append(Path(entry.path))
                    ev.size += st.st_size
                    ev.mtime = max(ev.mtime, st.st_mtime)
        return events

    def enforce(self) -> None:
        """Delete events older than ``max_age_s``, then the oldest until under ``max_bytes``.

        Open events are never touched, even when that leaves the store over
        its bound for a while: deleting a clip while it is written would lose
        the event's media and leave a broken file.
        """
        with self._lock:
            events = self._scan()
            now = self._clock()
            closed = sorted(
                ((eid, ev) for eid, ev in events.items() if eid not in self._open),
                key=lambda item: item[1].mtime,
            )
            total = sum(ev.size for ev in events.values())
            for eid, ev in closed:
                if now - ev.mtime > self.max_age_s:
                    reason = "age"
                elif total > self.max_bytes:
                    reason = "size"
                else:
                    continue
                for f in ev.files:
                    with contextlib.suppress(FileNotFoundError):
                        f.unlink()
                del events[eid]
                total -= ev.size
                self.evicted[reason] += 1
                self.evicted_bytes += ev.size
                self._evict_log.note(
                    event_id=eid, reason=reason, freed_bytes=ev.size, store_bytes=total
                )
            self.files = sum(len(ev.files) for ev in events.values())
            self.bytes = total

    def stats(self) -> dict[str, Any]:
        """Counters for the ``stats`` topic's ``events`` section."""
        with self._lock:
            return {
                "dir": str(self.root),
                "files": self.files,
                "bytes": self.bytes,
                "evicted": dict(self.evicted),
                "evicted_bytes": self.evicted_bytes,
            }
