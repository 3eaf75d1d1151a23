"""What every capture source shares: reconnect backoff, state changes, a quiet close.

Video and audio sources deliver differently (latest-frame slots vs chunk
queues) but own their device the same way: a long-lived loop that
reopens with capped, jittered backoff and logs each state change once.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from edged.config.settings import SourceSettings

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


class SourceLifecycle:
    """Mixin for capture sources; the subclass sets the attributes declared here."""

    name: str
    settings: SourceSettings
    _thread: threading.Thread | None
    _stop_flag: threading.Event
    _failures: int
    _lock: threading.Lock
    _state: LifecycleState
    _reason: str
    _since: float
    _log: Any  # a bound structlog logger

    def _close(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        raise NotImplementedError

    def _close_readers(self) -> None:
        """Close every reader's slot or queue, waking the pipelines that wait on them."""
        raise NotImplementedError

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
