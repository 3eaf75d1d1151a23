"""IoU tracker: stable ids for detections across frames, and sparse events.

Matching is greedy by IoU, per label: every (track, detection) pair of the
same label whose IoU reaches ``iou_threshold`` is a candidate, and the best
pairs are taken first. With the handful of objects an edge camera sees,
greedy matching gives the same answer as the Hungarian algorithm in all but
contrived cases, and it keeps scipy (≈ 40 MB on a Pi) out of the daemon's
dependencies for no measurable gain.

Two things make ids survive a flickering person detector:

* a track is kept for ``max_age_s`` seconds of frame time without a match
  (the SSD person detector misses a walking person for a second or more), and
* a track is matched against both its last box and that box moved by its
  estimated velocity, so a person who keeps walking through a gap (or crosses
  another person) is still found where they should be.

A track is *confirmed* after ``min_hits`` matches, so a single spurious
detection never becomes an event. Events are kept sparse for the ``events``
topic: ``new`` once per confirmed track, ``update`` only when the box moved
notably since the last event (IoU with it below ``update_iou``, at most once
per ``min_update_s``) or every ``update_every_s`` seconds, and ``end`` once
when the track expires.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from edged.types import Box, Detection, iou

#: Track ids are unique per process run, across all trackers (and pipelines),
#: so that an id in an event never refers to two different objects.
_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Track:
    """A tracked object as of its last match; ``box`` is normalized to the frame."""

    id: int
    label: str
    box: Box
    score: float
    first_ts: float
    last_ts: float
    hits: int


@dataclass(frozen=True, slots=True)
class TrackEvent:
    """Something worth telling consumers about a track."""

    kind: Literal["new", "update", "end"]
    track: Track


def _shift(box: Box, dx: float, dy: float) -> Box:
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


def _center(box: Box) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


class _State:
    """Mutable bookkeeping of one track (the public view is the frozen :class:`Track`)."""

    __slots__ = ("confirmed", "event_box", "event_ts", "track", "vx", "vy")

    def __init__(self, track: Track) -> None:
        self.track = track
        self.vx = 0.0  # center velocity, normalized units per second
        self.vy = 0.0
        self.confirmed = False
        self.event_box = track.box  # box at the last event, to detect notable moves
        self.event_ts = track.first_ts

    def predicted(self, ts: float) -> Box:
        # No horizon cap is needed: tracks older than max_age_s are expired
        # before matching, and an overshoot is harmless because the last box
        # is tried as well.
        dt = max(0.0, ts - self.track.last_ts)
        return _shift(self.track.box, self.vx * dt, self.vy * dt)


class Tracker:
    """Assigns stable ids to detections; call :meth:`update` once per inferred frame.

    Call it only for frames the detector actually ran on (a frame skipped by
    the motion gate carries no evidence either way); ages are measured in the
    ``ts`` passed in, so gaps in calls count as gaps in sight.
    """

    def __init__(
        self,
        iou_threshold: float = 0.3,
        max_age_s: float = 2.0,
        min_hits: int = 2,
        *,
        update_iou: float = 0.5,
        min_update_s: float = 1.0,
        update_every_s: float = 5.0,
    ) -> None:
        if not 0.0 < iou_threshold <= 1.0 or not 0.0 < update_iou <= 1.0:
            raise ValueError("iou_threshold and update_iou must be in (0, 1]")
        if max_age_s < 0 or min_hits < 1 or min_update_s < 0 or update_every_s <= 0:
            raise ValueError(
                "need max_age_s >= 0, min_hits >= 1, min_update_s >= 0, update_every_s > 0"
            )
        self.iou_threshold = iou_threshold
        self.max_age_s = max_age_s
        self.min_hits = min_hits
        self.update_iou = update_iou
        self.update_every_s = update_every_s
        self.min_update_s = min_update_s
        self._states: list[_State] = []

    def _match(self, dets: Sequence[Detection], ts: float) -> list[tuple[int, int]]:
        """Greedy best-IoU-first pairs ``(state index, detection index)``."""
        candidates: list[tuple[float, int, int]] = []
        for si, st in enumerate(self._states):
            pred = st.predicted(ts)
            for di, det in enumerate(dets):
                if det.label != st.track.label:
                    continue
                # The prediction helps movers; the last box helps someone who
                # stopped (their velocity estimate lags behind).
                score = max(iou(pred, det.box), iou(st.track.box, det.box))
                if score >= self.iou_threshold:
                    candidates.append((score, si, di))
        candidates.sort(key=lambda c: -c[0])
        used_s: set[int] = set()
        used_d: set[int] = set()
        pairs: list[tuple[int, int]] = []
        for _, si, di in candidates:
            if si not in used_s and di not in used_d:
                used_s.add(si)
                used_d.add(di)
                pairs.append((si, di))
        return pairs

    def _hit(self, st: _State, det: Detection, ts: float) -> None:
        old = st.track
        dt = ts - old.last_ts
        if dt > 0:
            (ox, oy), (nx, ny) = _center(old.box), _center(det.box)
            # Smoothed, because detector boxes jitter by a few percent per frame.
            st.vx = 0.5 * st.vx + 0.5 * (nx - ox) / dt
            st.vy = 0.5 * st.vy + 0.5 * (ny - oy) / dt
        st.track = Track(
            id=old.id,
            label=old.label,
            box=det.box,
            score=det.score,
            first_ts=old.first_ts,
            last_ts=ts,
            hits=old.hits + 1,
        )

    def _event_for_hit(self, st: _State, ts: float) -> TrackEvent | None:
        if not st.confirmed:
            if st.track.hits < self.min_hits:
                return None
            st.confirmed = True
            kind: Literal["new", "update"] = "new"
        else:
            since = ts - st.event_ts
            moved = iou(st.event_box, st.track.box) < self.update_iou
            # A walker crossing the frame moves "notably" every few frames;
            # min_update_s caps each track at one update per that many seconds.
            if not ((moved and since >= self.min_update_s) or since >= self.update_every_s):
                return None
            kind = "update"
        st.event_box, st.event_ts = st.track.box, ts
        return TrackEvent(kind, st.track)

    def update(
        self, detections: Iterable[Detection], ts: float
    ) -> tuple[list[Track], list[TrackEvent]]:
        """Match ``detections`` seen at ``ts`` (seconds) to tracks.

        Returns the confirmed live tracks (including ones briefly unseen, whose
        ``last_ts`` is older than ``ts``) and the events this frame caused,
        ``end`` events first, then ``new``/``update`` in track order.
        """
        dets = list(detections)
        events: list[TrackEvent] = []
        # Expire first: a track unseen for longer than max_age_s must not
        # capture a new object that appears where it used to be.
        alive: list[_State] = []
        for st in self._states:
            if ts - st.track.last_ts > self.max_age_s:
                if st.confirmed:
                    events.append(TrackEvent("end", st.track))
            else:
                alive.append(st)
        self._states = alive
        pairs = sorted(self._match(dets, ts))
        matched_d = {di for _, di in pairs}
        for si, di in pairs:
            st = alive[si]
            self._hit(st, dets[di], ts)
            if (event := self._event_for_hit(st, ts)) is not None:
                events.append(event)
        for di, det in enumerate(dets):
            if di in matched_d:
                continue
            st = _State(Track(next(_ids), det.label, det.box, det.score, ts, ts, 1))
            alive.append(st)
            if (event := self._event_for_hit(st, ts)) is not None:  # min_hits == 1
                events.append(event)
        self._states = alive
        return [st.track for st in alive if st.confirmed], events

    def flush(self) -> list[TrackEvent]:
        """End every confirmed track (at shutdown, or when the source restarts)."""
        events = [TrackEvent("end", st.track) for st in self._states if st.confirmed]
        self._states = []
        return events
