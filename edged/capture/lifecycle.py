"""What every capture source shares: readers, the reconnect loop, state changes.

Video and audio sources deliver differently (latest-frame slots vs chunk
queues) but own their device and their readers the same way: a
copy-on-write tuple of readers that is closed once at the end, and a
long-lived loop that reopens with capped, jittered backoff and logs each
state change once.
"""

from __future__ import annotations

import random
import threading
import time
from abc import ABC, abstractmethod
from typing import Any, Generic, Literal, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import structlog

from edged.config.settings import SourceSettings
from edged.errors import SourceError

LifecycleState = Literal["starting", "up", "down", "ended", "stopped"]


def display_uri(uri: str) -> str:
    """``uri`` safe for logs and status: a password in ``scheme://user:pass@host`` is masked.

    RTSP cameras routinely carry credentials in the URL, and log lines travel
    further (journald, MQTT state) than the config file does.
    """
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


class Reader(Protocol):
    """What a source hands each subscriber: a slot or a queue it can close."""

    def close(self) -> None:
        """Wake the subscriber for good: nothing more will be delivered."""


R = TypeVar("R", bound=Reader)


class SourceLifecycle(ABC, Generic[R]):
    """Base of every capture source: readers, capture thread, reconnect, state.

    A subclass says how to run one session (open, deliver until the end of
    the stream or stop, close) and how to close its device; ``finite``
    sources (files, image folders) have a real end: at the end they start
    over when ``loop`` is set, else they become ``ended``, close every
    reader and set :attr:`ended`. For live sources an end of stream is a
    failure: ``down``, then reconnect.
    """

    def __init__(self, settings: SourceSettings, *, finite: bool) -> None:
        self.settings = settings
        self.name = settings.name
        self.kind = settings.kind
        self.finite = finite
        #: Set once a finite source without ``loop`` has delivered its last item.
        self.ended = threading.Event()
        self._stop_flag = threading.Event()
        self._thread: threading.Thread | None = None
        self._log: Any = structlog.get_logger(__name__).bind(source=self.name, kind=self.kind)

        # Copy-on-write tuple: the capture thread iterates it without a lock.
        self._readers: tuple[R, ...] = ()
        self._readers_lock = threading.Lock()
        self._readers_closed = False

        self._lock = threading.Lock()  # guards the status fields below
        self._state: LifecycleState = "starting"
        self._reason = ""
        self._since = time.time()
        self._reconnects = 0
        self._failures = 0  # consecutive failed sessions, drives the backoff

    # -- subclass interface ---------------------------------------------------

    @abstractmethod
    def _session(self) -> Literal["end", "stop"]:
        """Open, deliver until the end of the stream or stop, close."""

    @abstractmethod
    def _close(self) -> None:
        """Release the device. Must be safe to call when opening failed half-way."""

    @abstractmethod
    def _stream_stopped(self) -> str:
        """Why a live source's stream ending is an outage, for the ``down`` reason."""

    def _discontinuity(self) -> None:
        """What comes next does not continue what was delivered (an outage, a loop)."""

    def _reader_removed(self, reader: R) -> None:
        """Called under the readers lock when ``reader`` is unsubscribed."""

    # -- readers --------------------------------------------------------------

    def _add_reader(self, reader: R) -> R:
        """Deliver to ``reader`` from now on; after the end it comes back closed."""
        with self._readers_lock:
            if self._readers_closed:
                reader.close()
            else:
                self._readers = (*self._readers, reader)
        return reader

    def _remove_reader(self, reader: R) -> None:
        """Stop delivering to ``reader`` (a pipeline that was disabled)."""
        with self._readers_lock:
            if reader in self._readers:
                self._reader_removed(reader)
            self._readers = tuple(r for r in self._readers if r is not reader)

    def _close_readers(self) -> None:
        """Close every reader's slot or queue, waking the pipelines that wait on them."""
        with self._readers_lock:
            self._readers_closed = True
            readers = self._readers
        for reader in readers:
            reader.close()

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        """Start the capture thread (a daemon: it never holds the process open)."""
        if self._thread is not None:
            raise RuntimeError(f"source {self.name!r} was already started")
        self._log.info("source.starting", uri=display_uri(self.settings.uri))
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop capturing, close every reader and join the thread for up to ``timeout`` s.

        Readers are closed at once so that waiting pipelines (and a file reader
        waiting for room) finish even when the thread is stuck in a blocking
        read (a stream's read timeout). Returns False if the thread had not
        finished in time.
        """
        self._stop_flag.set()
        self._close_readers()
        if self._thread is None:
            self._set_state("stopped", "stopped before start")
            return True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._log.warning("source.stop_timed_out", timeout_s=timeout)
            return False
        return True

    def _run(self) -> None:
        final: LifecycleState = "stopped"
        try:
            while not self._stop_flag.is_set():
                try:
                    outcome = self._session()
                    if outcome == "end" and not self.finite:
                        raise SourceError(self._stream_stopped())
                # Any error from a device library must turn into "down" and a
                # retry, never into a silently dead capture thread.
                except Exception as exc:  # noqa: BLE001
                    if self._stop_flag.is_set():
                        break  # a read cut short by shutdown is not an outage
                    reason = str(exc) if isinstance(exc, SourceError) else repr(exc)
                    delay = self._backoff()
                    self._set_state("down", reason, retry_in_s=round(delay, 2))
                    self._discontinuity()
                    if self._stop_flag.wait(delay):
                        break
                    continue
                if outcome == "stop" or self._stop_flag.is_set():
                    break
                if not self.settings.loop:
                    final = "ended"
                    break
                self._log.debug("source.looping")
                self._discontinuity()
        finally:
            self._close_readers()
            if final == "ended":
                self._set_state("ended", "end of media")
                self.ended.set()
            else:
                self._set_state("stopped", "stop requested")

    def _came_up(self, **extra: object) -> None:
        """The first item of a session was delivered: ``up``, and a reconnect if it was down."""
        self._failures = 0
        with self._lock:
            if self._state == "down":
                self._reconnects += 1
        self._set_state("up", "", **extra)

    def _backoff(self) -> float:
        """Next reopen delay: exponential from ``reconnect_min_s``, capped, with jitter.

        Jitter (up to -25 %) keeps a fleet that lost its NVR at the same
        moment from reconnecting in lockstep.
        """
        base = self.settings.reconnect_min_s * 2.0 ** min(self._failures, 30)
        self._failures += 1
        capped = min(base, self.settings.reconnect_max_s)
        return capped * (1.0 - 0.25 * random.random())  # noqa: S311 - jitter, not crypto

    def _set_state(self, state: LifecycleState, reason: str, **extra: object) -> None:
        """Record a state change and log it once (not again while it stays the same)."""
        with self._lock:
            if (state, reason) == (self._state, self._reason):
                return
            self._state, self._reason, self._since = state, reason, time.time()
        if state == "down":
            self._log.warning("source.down", reason=reason, **extra)
        else:
            self._log.info(f"source.{state}", **({"reason": reason} if reason else {}), **extra)

    def _close_quietly(self) -> None:
        try:
            self._close()
        except Exception as exc:  # noqa: BLE001 - a failing release must not mask the cause
            self._log.debug("source.close_failed", error=repr(exc))
