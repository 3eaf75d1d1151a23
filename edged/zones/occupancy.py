"""Which tracked objects are in which zone, debounced, and the per-label counts of each zone.

Fed once per inferred frame with the tracker's confirmed live tracks. An
object's anchor must be seen inside a zone for ``min_frames`` consecutive
frames, and for at least ``dwell_s`` seconds since the first of them, before
it counts as in the zone; it leaves after ``min_frames`` consecutive frames
in which it is not seen inside, or at once when its track ends.

A frame in which the detector missed the object counts as "not seen inside":
the tracker keeps an unmatched track alive for seconds, with its last box,
and when the tracker loses an object and picks it up again under a new id
(a person turning and walking off), the old track's stale box would hold the
zone ON for that long after the person left. ``min_frames`` is therefore
also the number of consecutive misses an object in the zone survives; set
it to a few frames for a detector that flickers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from edged.config.settings import ZoneSettings
from edged.geometry import anchor_point, contains
from edged.track.tracker import Track


@dataclass(frozen=True, slots=True)
class ZoneCounts:
    """A zone's objects by label; labels seen before (or listed in the zone) stay, at 0."""

    zone: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        """Objects in the zone, all labels."""
        return sum(self.counts.values())

    @property
    def occupied(self) -> bool:
        """At least one object is in the zone."""
        return self.total > 0


@dataclass(slots=True)
class _Presence:
    """One track's debounce state in one zone."""

    inside_run: int = 0
    outside_run: int = 0
    since: float | None = None  # time of the first frame of the current inside run
    member: bool = False

    def step(self, inside: bool, ts: float, zone: ZoneSettings) -> None:
        if inside:
            self.inside_run += 1
            self.outside_run = 0
            if self.since is None:
                self.since = ts
            if (
                not self.member
                and self.inside_run >= zone.min_frames
                and ts - self.since >= zone.dwell_s
            ):
                self.member = True
        else:
            self.outside_run += 1
            self.inside_run = 0
            self.since = None
            if self.member and self.outside_run >= zone.min_frames:
                self.member = False


@dataclass(slots=True)
class _Zone:
    settings: ZoneSettings
    presence: dict[int, _Presence] = field(default_factory=dict)
    # What was last reported; None before the first update, so that the first
    # one reports every zone (a retained count from an earlier run is reset).
    reported: dict[str, int] | None = None

    def admits(self, label: str) -> bool:
        return not self.settings.labels or label in self.settings.labels


class Occupancy:
    """Zone membership of tracked objects and the zones' counts; one per pipeline."""

    def __init__(self, zones: Sequence[ZoneSettings]) -> None:
        self._zones = [_Zone(z) for z in zones]
        self._membership: dict[int, tuple[str, ...]] = {}
        self._live: set[int] = set()  # ids of the tracks live at the last update

    def zones_of(self, track_id: int) -> tuple[str, ...]:
        """Zones ``track_id`` is in as of the last update (for a track that ended
        in that update: the zones it was in before it ended)."""
        return self._membership.get(track_id, ())

    def update(self, tracks: Iterable[Track], ts: float) -> list[ZoneCounts]:
        """Step every zone with this frame's live tracks at time ``ts`` (seconds).

        Returns the zones whose counts changed (every zone on the first call).
        """
        live = {t.id: t for t in tracks}
        before = self._membership
        membership: dict[int, list[str]] = {tid: [] for tid in live}
        changed: list[ZoneCounts] = []
        for zone in self._zones:
            for tid in list(zone.presence):
                if tid not in live:  # the track ended: it left every zone
                    del zone.presence[tid]
            counts: dict[str, int] = dict.fromkeys(zone.settings.labels, 0)
            if zone.reported:
                counts.update(dict.fromkeys(zone.reported, 0))
            for tid, track in live.items():
                if not zone.admits(track.label):
                    continue
                point = anchor_point(track.box, zone.settings.anchor)
                presence = zone.presence.setdefault(tid, _Presence())
                # Seen in this frame (matched at ts) and inside: see the module docstring.
                seen_inside = track.last_ts == ts and contains(zone.settings.polygon, point)
                presence.step(seen_inside, ts, zone.settings)
                if presence.member:
                    membership[tid].append(zone.settings.name)
                    counts[track.label] = counts.get(track.label, 0) + 1
            if counts != zone.reported:
                zone.reported = counts
                changed.append(ZoneCounts(zone.settings.name, dict(counts)))
        # Tracks that ended in this update keep their last zones until the
        # next one, so that their end event can still name them.
        self._membership = {
            tid: z for tid, z in before.items() if tid in self._live and tid not in live
        }
        self._membership.update({tid: tuple(z) for tid, z in membership.items()})
        self._live = set(live)
        return changed
