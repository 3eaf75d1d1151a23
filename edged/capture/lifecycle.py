"""What every capture source shares: reconnect backoff, state changes, a quiet close.

Video and audio sources deliver differently (latest-frame slots vs chunk
queues) but own their device the same way (STYLE 6): a long-lived loop that
reopens with capped, jittered backoff and logs each state change once.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, Literal

from edged.settings import SourceSettings

SourceState = Literal["starting", "up", "down", "ended", "stopped"]


class SourceLifecycle:
    """Mixin for capture sources; the subclass sets the attributes declared here."""

    settings: SourceSettings
    _failures: int
    _lock: threading.Lock
    _state: SourceState
    _reason: str
    _since: float
    _log: Any  # a bound structlog logger

    def _close(self) -> None:
        raise NotImplementedError

    def _backoff(self) -> float:
        """Next reopen delay: exponential from ``reconnect_min_s``, capped, with jitter.

        Jitter (up to -25 %) keeps a fleet that lost its NVR at the same
        moment from reconnecting in lockstep.
        """
        base = self.settings.reconnect_min_s * 2.0 ** min(self._failures, 30)
        self._failures += 1
        capped = min(base, self.settings.reconnect_max_s)
        return capped * (1.0 - 0.25 * random.random())  # noqa: S311 - jitter, not crypto

    def _set_state(self, state: SourceState, reason: str, **extra: object) -> None:
        """Record a state change and log it once (not again while it stays the same)."""
        with self._lock:
            if (state, reason) == (self._state, self._reason):
                return
            self._state, self._reason, self._since = state, reason, time.time()
        if state == "down":
            self._log.warning("source down", reason=reason, **extra)
        else:
            self._log.info(f"source {state}", **({"reason": reason} if reason else {}), **extra)

    def _close_quietly(self) -> None:
        try:
            self._close()
        except Exception as exc:  # noqa: BLE001 - a failing release must not mask the cause
            self._log.debug("error while closing the device", error=repr(exc))
