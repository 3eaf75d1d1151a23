"""Right-sizing decisions: when a pipeline steps down to a smaller model, and when back up.

Pure: the caller feeds one :class:`Sample` per tick (monotonic time, latency
p95, SoC temperature, dropped-frame ratio) and gets a :class:`Step` or None.
A limit must be broken at every tick for ``window_s`` before a step down, and
headroom (p95 below ``step_up_below`` x budget, temperature below its limit,
drops within bound) must last ``window_s`` before a step up: the hysteresis
keeps a device on the edge of its budget from flapping between two models.
A step up that had to be undone within two windows doubles the wait before
the next one, and a step down that found no smaller model doubles the wait
before the next try (each at most 8 windows).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from edged.label.select import Requirement
from edged.rollout.policy import bar_failures

#: The longest a step up waits, in windows, after steps up that did not hold.
MAX_BACKOFF = 8


@dataclass(frozen=True, slots=True)
class Limits:
    """A pipeline's limits; 0 = not set."""

    max_latency_ms: float = 0.0
    max_temp_c: float = 0.0
    max_drop_ratio: float = 0.0
    window_s: float = 30.0
    step_up_below: float = 0.7


@dataclass(frozen=True, slots=True)
class Sample:
    """What the pipeline and the device looked like at one tick."""

    now: float
    frames: int  # frames run since the last switch
    latency_p95_ms: float
    temp_c: float | None
    drop_ratio: float


@dataclass(frozen=True, slots=True)
class Step:
    """A decision: switch ``direction``, because ``reason``."""

    direction: Literal["down", "up"]
    reason: str


def over(limits: Limits, s: Sample, min_frames: int) -> str | None:
    """Which limit ``s`` breaks (None when it holds)."""
    if limits.max_temp_c and s.temp_c is not None and s.temp_c > limits.max_temp_c:
        return f"SoC temperature {s.temp_c:.1f} °C over max_temp_c={limits.max_temp_c:g}"
    if s.frames < min_frames:
        return None
    if limits.max_latency_ms and s.latency_p95_ms > limits.max_latency_ms:
        return (
            f"latency p95 {s.latency_p95_ms:.1f} ms over max_latency_ms={limits.max_latency_ms:g}"
        )
    if limits.max_drop_ratio and s.drop_ratio > limits.max_drop_ratio:
        return (
            f"dropped-frame ratio {s.drop_ratio:.2f} over max_drop_ratio={limits.max_drop_ratio:g}"
        )
    return None


def headroom(limits: Limits, s: Sample, min_frames: int) -> str | None:
    """Why the device has room for a bigger model (None when it has not)."""
    if s.frames < min_frames:
        return None
    parts = []
    if limits.max_latency_ms:
        edge = limits.step_up_below * limits.max_latency_ms
        if s.latency_p95_ms >= edge:
            return None
        parts.append(f"latency p95 {s.latency_p95_ms:.1f} ms below {edge:g}")
    if limits.max_temp_c and s.temp_c is not None:
        if s.temp_c > limits.max_temp_c - 5.0:  # a margin, or the step up heats it straight back
            return None
        parts.append(f"SoC {s.temp_c:.1f} °C")
    if limits.max_drop_ratio:
        if s.drop_ratio > limits.step_up_below * limits.max_drop_ratio:
            return None
        parts.append(f"dropped-frame ratio {s.drop_ratio:.2f}")
    return ", ".join(parts) or None


class RightSizer:
    """One pipeline's state: since when a limit is broken, or headroom seen."""

    def __init__(self, limits: Limits, min_frames: int) -> None:
        self.limits = limits
        self.min_frames = min_frames
        self._over_since: float | None = None
        self._room_since: float | None = None
        self._backoff = 1
        self._down_backoff = 1
        self._last_up: float | None = None

    def observe(self, s: Sample, *, can_step_up: bool) -> Step | None:
        """The decision at this tick; the caller calls :meth:`switched` after acting on it."""
        why = over(self.limits, s, self.min_frames)
        if why is not None:
            self._room_since = None
            self._over_since = s.now if self._over_since is None else self._over_since
            if s.now - self._over_since >= self.limits.window_s * self._down_backoff:
                return Step("down", f"{why} for {s.now - self._over_since:.1f} s")
            return None
        self._over_since = None
        room = headroom(self.limits, s, self.min_frames) if can_step_up else None
        if room is None:
            self._room_since = None
            return None
        self._room_since = s.now if self._room_since is None else self._room_since
        wait = self.limits.window_s * self._backoff
        if s.now - self._room_since >= wait:
            return Step("up", f"{room} for {s.now - self._room_since:.1f} s")
        return None

    def switched(self, step: Step, now: float) -> None:
        """A step was made: timers restart; a step down soon after a step up backs off."""
        self._over_since = self._room_since = None
        self._down_backoff = 1
        if step.direction == "up":
            self._last_up = now
        elif self._last_up is not None and now - self._last_up < 2 * self.limits.window_s:
            self._backoff = min(MAX_BACKOFF, self._backoff * 2)
        else:
            self._backoff = 1

    def failed(self) -> None:
        """The step could not be made (no smaller model fits): wait twice as long next time.

        Each attempt evaluates every candidate: on a device already over its
        budget that must not happen every window.
        """
        self._over_since = self._room_since = None
        self._down_backoff = min(MAX_BACKOFF, self._down_backoff * 2)


def cost(metrics: Mapping[str, float | None]) -> float | None:
    """``size_mb x p50_ms``: the order of ``edged models select`` (smaller = cheaper)."""
    size, p50 = metrics.get("size_mb"), metrics.get("p50_ms")
    return None if size is None or p50 is None else size * p50


def next_smaller(
    current: Mapping[str, float | None],
    candidates: Mapping[str, Mapping[str, float | None]],
    bar: list[Requirement],
    max_latency_ms: float = 0.0,
) -> str | None:
    """The most capable candidate cheaper than ``current`` that clears the bar and the budget.

    "Most capable" = the most expensive of those that fit: the next step down,
    not the smallest model there is.
    """
    limit = cost(current)
    if limit is None:
        return None
    fits = []
    for name, metrics in candidates.items():
        c = cost(metrics)
        if c is not None and c < limit and not bar_failures(bar, metrics, max_latency_ms):
            fits.append((c, name))
    return max(fits)[1] if fits else None
