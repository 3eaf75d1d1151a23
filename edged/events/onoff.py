"""On/off episodes in time: "above for ``min_s``" starts, "below for ``hangover_s``" ends.

Sound events (a label group's score per window) and fall events (a tracked
person lying, per frame) share this rule, so both have the same lifecycle on
the ``events`` topic: one ``start``, optional ``update``\\ s, one ``end``, all
carrying one ``event_id``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from edged.publish.payloads import new_id
from edged.types import Change, EventNote

#: Called as ``emit_note(pipeline_name, source_name, note)``.
EmitNote = Callable[[str, str, EventNote], None]


class Episode:
    """Debounces one on/off signal into start / update / end changes.

    Feed :meth:`step` with each observation, in time order: ``ts`` is when it
    starts and ``span_s`` how long it covers (an audio window's length; 0 for a
    video frame). An episode starts once observations have been on without a
    break from ``run start`` to an observation starting ``min_s`` later; it ends
    at the first observation ``hangover_s`` after the first off one, and its
    end time is the end of the last on observation (the hangover is not part
    of the event).
    """

    def __init__(self, min_s: float, hangover_s: float, update_s: float = 0.0) -> None:
        self.min_s = min_s
        self.hangover_s = hangover_s
        self.update_s = update_s
        self._run_start: float | None = None  # first on observation of the current run
        self._last_on_end = 0.0
        self._off_since: float | None = None
        self._event_id: str | None = None
        self._top = 0.0
        self._last_update = 0.0
        self._score = 0.0

    @property
    def open(self) -> bool:
        """True between start and end."""
        return self._event_id is not None

    @property
    def event_id(self) -> str | None:
        return self._event_id

    def step(self, ts: float, on: bool, score: float, span_s: float = 0.0) -> Change | None:
        """Take one observation; the change it causes, if any."""
        if on:
            return self._on(ts, score, span_s)
        if self._event_id is None:
            self._run_start = None  # a break before min_s: the run starts over
            return None
        if self._off_since is None:
            self._off_since = ts
        if ts - self._off_since >= self.hangover_s:
            return self.close(ts, score)
        return None

    def _on(self, ts: float, score: float, span_s: float) -> Change | None:
        self._off_since = None
        if self._run_start is None:
            self._run_start, self._top = ts, 0.0
        self._last_on_end = ts + span_s
        self._top = max(self._top, score)
        self._score = score
        if self._event_id is None:
            if ts - self._run_start < self.min_s:
                return None
            self._event_id, self._last_update = new_id(), ts
            return self._change("start", ts, score)
        if self.update_s > 0 and ts - self._last_update >= self.update_s:
            self._last_update = ts
            return self._change("update", ts, score)
        return None

    def note(self, ts: float, score: float) -> Change:
        """An ``update`` of the open episode now (for a caller-specific reason)."""
        if self._event_id is None:
            raise ValueError("no episode is open")
        self._last_update = ts
        return self._change("update", ts, score)

    def close(self, ts: float | None = None, score: float | None = None) -> Change | None:
        """End the open episode (the hangover passed, or the stream ended); None if none is."""
        if self._event_id is None:
            self._run_start = None
            return None
        change = Change(
            "end",
            self._event_id,
            self._run_start if self._run_start is not None else self._last_on_end,
            self._last_on_end,
            self._last_on_end if ts is None else ts,
            self._score if score is None else score,
            self._top,
        )
        self._event_id, self._run_start, self._off_since = None, None, None
        return change

    def _change(self, phase: Literal["start", "update"], ts: float, score: float) -> Change:
        assert self._event_id is not None
        assert self._run_start is not None
        return Change(phase, self._event_id, self._run_start, None, ts, score, self._top)
