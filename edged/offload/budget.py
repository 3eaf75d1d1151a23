"""The offload budget: frames per minute (token bucket) and bytes per day (persisted).

The day's bytes are written to ``state_dir`` after every request, so that a
restart — or a crash loop — cannot reset the budget and run up a metered bill.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

MB = 1_000_000  # metered plans count decimal megabytes


def utc_day(ts: float) -> str:
    """The UTC calendar day of epoch seconds ``ts``, e.g. ``2026-11-21``."""
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


class TokenBucket:
    """``rate_per_minute`` tokens a minute, holding at most one minute's worth.

    Starts full: after a quiet period a burst of up to a minute's budget goes
    out at once, then one frame every ``60 / rate`` seconds.
    """

    def __init__(self, rate_per_minute: float, clock: Callable[[], float] = time.monotonic):
        self.capacity = float(rate_per_minute)
        self._rate_s = rate_per_minute / 60.0
        self._clock = clock
        self._tokens = self.capacity
        self._last = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Take one token if there is one."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self._rate_s)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False

    @property
    def tokens(self) -> float:
        with self._lock:
            return self._tokens


class DailyBytes:
    """Bytes sent today (UTC), bounded by ``limit_mb``; persisted in ``path``."""

    def __init__(self, path: Path, limit_mb: float, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.limit = int(limit_mb * MB)
        self._clock = clock
        self._lock = threading.Lock()
        self._day, self._bytes = self._load()

    def _load(self) -> tuple[str, int]:
        today = utc_day(self._clock())
        try:
            data = json.loads(self.path.read_text())
            day, sent = str(data["day"]), int(data["bytes"])
        except FileNotFoundError:
            return today, 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # An unreadable record must not grant a fresh budget silently.
            log.warning("offload.budget_unreadable", path=str(self.path), error=str(exc))
            return today, self.limit
        return (day, sent) if day == today else (today, 0)

    def _roll(self) -> None:
        today = utc_day(self._clock())
        if today != self._day:
            self._day, self._bytes = today, 0

    def allows(self, size: int) -> bool:
        """Whether ``size`` more bytes fit in today's budget."""
        with self._lock:
            self._roll()
            return self._bytes + size <= self.limit

    def spend(self, size: int) -> None:
        """Count ``size`` bytes as sent and persist the day's total."""
        with self._lock:
            self._roll()
            self._bytes += size
            tmp = self.path.with_suffix(".tmp")
            try:
                tmp.write_text(json.dumps({"day": self._day, "bytes": self._bytes}))
                os.replace(tmp, self.path)  # atomic: a crash leaves the old or the new record
            except OSError as exc:
                log.warning("offload.budget_not_saved", path=str(self.path), error=str(exc))

    @property
    def sent_today(self) -> int:
        with self._lock:
            self._roll()
            return self._bytes
