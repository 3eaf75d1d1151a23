"""Naming storage faults correctly, and the ``seq`` high-water mark that outlives an outbox file.

SQLite reports an I/O failure as ``SQLITE_IOERR`` whatever the cause: a file
system that the kernel remounted read-only after an error (ext4
``errors=remount-ro``; ``statvfs`` does not even show it read-only), a dying
SD card, or a write that found no space. An operator needs to know which one,
so :func:`classify` probes the directory with a small real write and reports
the ``errno`` name that the kernel returns (``EROFS``, ``ENOSPC``, ``EIO``).

:class:`SeqMark` keeps a high-water mark of handed-out ``seq`` numbers in a
tiny file beside the state (written atomically, once per block of numbers, not
per result), so that an outbox file that had to be moved aside does not make
``seq`` start again at 1: subscribers must never see ``seq`` go backwards.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

log = structlog.get_logger(__name__)

#: seq numbers reserved per write of the mark file: one small fsync'ed write per block.
SEQ_BLOCK: Final = 1000
_PROBE_BYTES: Final = 4096


@dataclass(frozen=True, slots=True)
class StorageFault:
    """A storage error, named: ``code`` is an errno name (``ENOSPC``, ``EROFS``, ``EIO``…)."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


_ERRNO_TEXT: Final = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EIO: "input/output error (failing device or file system)",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "the file or its directory is missing",
}


def _from_errno(err: int, detail: str) -> StorageFault:
    name = errno.errorcode.get(err, f"errno {err}")
    text = _ERRNO_TEXT.get(err, os.strerror(err))
    return StorageFault(name, f"{text} ({detail})" if detail else text)


def probe(directory: Path) -> int | None:
    """Write (and remove) a small file in ``directory``; the errno of the failure, or None."""
    target = directory / f".edged-probe-{os.getpid()}"
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        return exc.errno
    try:
        os.write(fd, bytes(_PROBE_BYTES))
        os.fsync(fd)  # delayed allocation and I/O errors show only here
    except OSError as exc:
        return exc.errno
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            target.unlink()
    return None


def classify(exc: BaseException, directory: Path) -> StorageFault:
    """Name a storage error from ``sqlite3`` or the OS that happened on a file in ``directory``.

    ``SQLITE_FULL`` is ENOSPC. ``SQLITE_IOERR``, ``SQLITE_READONLY`` and
    ``SQLITE_CANTOPEN`` do not say why, so the directory is probed with a real
    write: EROFS, ENOSPC or EACCES from the probe name the cause; a probe that
    succeeds leaves EIO (the device failed on the database file itself).
    """
    if isinstance(exc, OSError) and exc.errno is not None:
        return _from_errno(exc.errno, exc.strerror or "")
    if not isinstance(exc, sqlite3.Error):
        return StorageFault(type(exc).__name__, str(exc))
    name = getattr(exc, "sqlite_errorname", "SQLITE_ERROR")
    primary = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    detail = f"SQLite {name}: {exc}"
    err: int | None
    if primary == sqlite3.SQLITE_FULL:
        err = errno.ENOSPC
    elif primary in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN):
        err = probe(directory) if directory.is_dir() else errno.ENOENT
        if err is None:  # the directory takes writes: the cause is the file itself
            err = {
                sqlite3.SQLITE_READONLY: errno.EACCES,
                sqlite3.SQLITE_CANTOPEN: errno.ENOENT,
            }.get(primary, errno.EIO)
    elif primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return StorageFault("CORRUPT", detail)
    else:
        return StorageFault(name, str(exc))
    return _from_errno(err, detail)


class SeqMark:
    """A high-water mark of handed-out ``seq`` numbers, persisted in blocks of ``block``.

    :meth:`cover` is called before numbers up to ``seq`` are handed out; it
    writes ``seq + block`` when ``seq`` passes the mark, so the file is
    written once per ``block`` results. The file always holds a number at
    least as high as any ``seq`` handed out while it was writable.
    """

    def __init__(self, path: Path, block: int = SEQ_BLOCK) -> None:
        self.path = Path(path)
        self._block = block
        self._reserved = -1  # unknown until read()
        self._failing = False

    def read(self) -> int:
        """The persisted mark; 0 when the file is absent or unreadable (logged)."""
        try:
            value = int(self.path.read_text().strip() or "0")
        except FileNotFoundError:
            value = 0
        except (OSError, ValueError) as exc:
            log.warning("outbox.seq_mark_unreadable", path=str(self.path), error=str(exc))
            value = 0
        self._reserved = max(value, 0)
        return self._reserved

    def cover(self, seq: int) -> None:
        """Make sure the file holds at least ``seq`` (write ``seq + block`` if it does not)."""
        if self._reserved < 0:
            self.read()
        if seq <= self._reserved:
            return
        upto = seq + self._block
        try:
            self._write(upto)
        except OSError as exc:
            if not self._failing:  # once per failing spell
                fault = _from_errno(exc.errno or errno.EIO, str(self.path))
                log.warning("outbox.seq_mark_failed", path=str(self.path), error=str(fault))
            self._failing = True
            return
        if self._failing:
            log.info("outbox.seq_mark_recovered", path=str(self.path), mark=upto)
        self._failing = False
        self._reserved = upto

    def _write(self, value: int) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, f"{value}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the rename itself must survive a power cut
        finally:
            os.close(dfd)
