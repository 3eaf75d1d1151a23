"""Zone membership from tracks: anchors, label filters, debounce (min_frames) and dwell."""

from __future__ import annotations

from typing import Any

from edged.config.settings import ZoneSettings
from edged.track.tracker import Track
from edged.zones.occupancy import Occupancy

ZONE = [[0.4, 0.4], [0.8, 0.4], [0.8, 0.8], [0.4, 0.8]]
INSIDE = (0.5, 0.3, 0.7, 0.7)  # bottom center (0.6, 0.7): inside; top center (0.6, 0.3): not
OUTSIDE = (0.0, 0.1, 0.2, 0.5)


def zone(**kw: Any) -> ZoneSettings:
    return ZoneSettings.model_validate({"name": "z", "polygon": ZONE, **kw})


def track(
    box: tuple[float, float, float, float], tid: int = 1, label: str = "person", seen: float = 0.0
) -> Track:
    """A confirmed track last matched (seen) at ``seen``."""
    return Track(tid, label, box, 0.9, 0.0, seen, 5)


def run(occ: Occupancy, boxes: list[tuple[float, float, float, float] | None]) -> list[bool]:
    """Feed one track (None: no track) per frame at 10 fps; the zone's occupancy after each."""
    out: list[bool] = []
    state = False
    for i, box in enumerate(boxes):
        ts = i / 10
        for c in occ.update([] if box is None else [track(box, seen=ts)], ts):
            state = c.occupied
        out.append(state)
    return out


def test_first_update_reports_every_zone_empty() -> None:
    """The first frame reports each zone (0, OFF), resetting a retained count from an earlier run."""
    occ = Occupancy([zone(labels=["person", "dog"])])
    (first,) = occ.update([], 0.0)
    assert first.zone == "z"
    assert first.counts == {"person": 0, "dog": 0}
    assert not first.occupied
    assert occ.update([], 0.1) == []  # nothing changed


def test_anchor_decides_membership() -> None:
    """By default the box's bottom center counts; with anchor = top_center the same box is out."""
    assert run(Occupancy([zone()]), [INSIDE]) == [True]
    assert run(Occupancy([zone(anchor="top_center")]), [INSIDE]) == [False]


def test_label_filter() -> None:
    """A zone with labels ignores other labels."""
    occ = Occupancy([zone(labels=["dog"])])
    occ.update([track(INSIDE, label="person")], 0.0)  # seen at 0.0
    assert occ.zones_of(1) == ()


def test_min_frames_debounces_entering_and_leaving() -> None:
    """With min_frames = 3 a 2-frame visit is ignored, and a 2-frame absence does not empty it."""
    occ = Occupancy([zone(min_frames=3)])
    seq = [INSIDE, INSIDE, OUTSIDE, INSIDE, INSIDE, INSIDE, OUTSIDE, OUTSIDE, INSIDE]
    seq += [OUTSIDE, OUTSIDE, OUTSIDE]
    want = [False, False, False, False, False, True, True, True, True, True, True, False]
    assert run(occ, seq) == want


def test_dwell_s_delays_entering() -> None:
    """With dwell_s = 0.5 an object counts only after 0.5 s inside; stepping out restarts it."""
    occ = Occupancy([zone(dwell_s=0.5)])
    seq = [INSIDE] * 4 + [OUTSIDE] + [INSIDE] * 7
    # Inside from 0.0 to 0.3, out at 0.4, inside again from 0.5: counts from 1.0 s.
    want = [False] * 10 + [True, True]
    assert run(occ, seq) == want


def test_misses_shorter_than_min_frames_are_bridged_and_a_stale_track_leaves() -> None:
    """With min_frames = 3 a track unseen for 2 frames stays in; one unseen for 3 (its last box
    still inside: the tracker lost it and may follow the object under a new id) leaves."""
    occ = Occupancy([zone(min_frames=3)])
    states = []
    seen = [0, 1, 2, 2, 2, 5, 5, 5, 5]  # the frame each track update was last matched in
    for i, s in enumerate(seen):
        changes = occ.update([track(INSIDE, seen=s / 10)], i / 10)
        states.append(changes[-1].occupied if changes else states[-1])
    assert states == [False, False, True, True, True, True, True, True, False]


def test_a_track_that_ends_leaves_at_once_and_keeps_its_zones_for_its_end_event() -> None:
    """When its track ends the object leaves the zone immediately (even with min_frames)."""
    occ = Occupancy([zone(min_frames=2)])
    occ.update([track(INSIDE, seen=0.0)], 0.0)
    occ.update([track(INSIDE, seen=0.1)], 0.1)
    assert occ.zones_of(1) == ("z",)
    (change,) = occ.update([], 0.2)
    assert not change.occupied
    assert occ.zones_of(1) == ("z",)  # for the end event of this frame
    occ.update([], 0.3)
    assert occ.zones_of(1) == ()


def test_counts_per_label() -> None:
    """Two people and a dog in the zone: counts by label, a label once seen stays at 0."""
    occ = Occupancy([zone()])
    occ.update([], -0.1)
    tracks = [track(INSIDE, 1), track(INSIDE, 2), track(INSIDE, 3, "dog"), track(OUTSIDE, 4)]
    (c,) = occ.update(tracks, 0.0)
    assert c.counts == {"person": 2, "dog": 1}
    assert c.total == 3
    (c,) = occ.update([track(INSIDE, 3, "dog", seen=0.2)], 0.2)
    assert c.counts == {"person": 0, "dog": 1}
