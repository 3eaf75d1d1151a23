"""Fall events: a tracked person lying for a while, from pose keypoints.

The rule (thresholds in ``[pipelines.fall]``, docs/configuration.md): a
person *lies* in a frame when

* the torso — the line from the shoulders' midpoint to the hips' midpoint,
  measured in pixels — is more than ``angle_deg`` from vertical, and
* the pose's box is at least ``aspect`` times wider than tall.

Either alone misfires: a squat or a bow tilts the torso (~35° on the squat
photo) in an upright box, and a person stretching their arms sideways has a
wide box with an upright torso. Lying for ``min_s`` starts a ``fall`` event
for that track; not lying for ``hangover_s``, or the track ending, ends it.
While the person lies, *no motion* is measured: the mean keypoint movement
between frames below ``still_move`` (fraction of the frame) counts as still,
and being still for ``still_s`` adds one ``update`` with ``data.still = true``
(which then stays true in that event's later messages).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from edged.config.settings import FallSettings
from edged.events.onoff import Episode
from edged.types import Change, EventNote, Keypoint, Pose

_SHOULDERS = ("left_shoulder", "right_shoulder")
_HIPS = ("left_hip", "right_hip")


@dataclass(frozen=True, slots=True)
class Posture:
    """What the rule measured on one pose."""

    angle_deg: float | None  # None: no shoulder or no hip was sure enough
    aspect: float
    lying: bool


def posture(pose: Pose, width: int, height: int, settings: FallSettings) -> Posture:
    """Apply the lying rule to ``pose`` on a ``width`` x ``height`` frame."""
    sure = {k.name: k for k in pose.keypoints if k.score >= settings.keypoint_score}
    shoulders = [sure[n] for n in _SHOULDERS if n in sure]
    hips = [sure[n] for n in _HIPS if n in sure]
    x0, y0, x1, y1 = pose.box
    box_h = (y1 - y0) * height
    aspect = (x1 - x0) * width / box_h if box_h > 0 else 0.0
    if not shoulders or not hips:
        return Posture(None, aspect, False)
    dx = (_mean_x(shoulders) - _mean_x(hips)) * width
    dy = (_mean_y(shoulders) - _mean_y(hips)) * height
    angle = math.degrees(math.atan2(abs(dx), abs(dy)))
    return Posture(angle, aspect, angle > settings.angle_deg and aspect >= settings.aspect)


def _mean_x(points: list[Keypoint]) -> float:
    return sum(k.x for k in points) / len(points)


def _mean_y(points: list[Keypoint]) -> float:
    return sum(k.y for k in points) / len(points)


def movement(a: Pose, b: Pose, min_score: float) -> float | None:
    """Mean displacement of the keypoints sure in both poses (fraction of the frame)."""
    pairs = [
        (p, q)
        for p, q in zip(a.keypoints, b.keypoints, strict=False)
        if p.score >= min_score and q.score >= min_score
    ]
    if not pairs:
        return None
    return sum(math.hypot(p.x - q.x, p.y - q.y) for p, q in pairs) / len(pairs)


@dataclass(slots=True)
class _Person:
    episode: Episode
    last: Pose | None = None
    still_since: float | None = None
    still_told: bool = False
    measured: dict[str, float] = field(default_factory=dict)


class FallWatch:
    """Fall state per track id of one pose pipeline."""

    def __init__(self, settings: FallSettings) -> None:
        self.settings = settings
        self._people: dict[int, _Person] = {}

    def observe(
        self, ts: float, width: int, height: int, poses: Iterable[Pose], ended: Iterable[int]
    ) -> list[EventNote]:
        """Poses of one frame at ``ts`` (with track ids), and the track ids that ended."""
        s = self.settings
        notes: list[EventNote] = []
        for track_id in ended:
            person = self._people.pop(track_id, None)
            if person is not None and (change := person.episode.close()) is not None:
                notes.append(self._note(track_id, person, change_pose=person.last, change=change))
        for pose in poses:
            if pose.track_id is None:
                continue
            person = self._people.setdefault(pose.track_id, _Person(Episode(s.min_s, s.hangover_s)))
            seen = posture(pose, width, height, s)
            moved = None if person.last is None else movement(person.last, pose, s.keypoint_score)
            person.last = pose
            if seen.lying and moved is not None and moved < s.still_move:
                person.still_since = ts if person.still_since is None else person.still_since
            elif not seen.lying or (moved is not None and moved >= s.still_move):
                person.still_since = None
            person.measured = {
                "aspect": round(seen.aspect, 2),
                "still_s": round(ts - person.still_since, 2) if person.still_since else 0.0,
            }
            if seen.angle_deg is not None:
                person.measured["angle_deg"] = round(seen.angle_deg, 1)
            change = person.episode.step(ts, seen.lying, pose.score)
            if change is None and (
                person.episode.open
                and not person.still_told
                and person.still_since is not None
                and ts - person.still_since >= s.still_s
            ):
                person.still_told = True
                change = person.episode.note(ts, pose.score)
            if change is not None:
                notes.append(self._note(pose.track_id, person, change_pose=pose, change=change))
                if change.phase == "end":
                    person.still_told = False  # "still" belongs to one event
        return notes

    def close(self) -> list[EventNote]:
        """End every open fall event (the pipeline stops)."""
        notes: list[EventNote] = []
        for track_id, person in self._people.items():
            if (change := person.episode.close()) is not None:
                notes.append(self._note(track_id, person, change_pose=person.last, change=change))
        self._people.clear()
        return notes

    def _note(
        self, track_id: int, person: _Person, change_pose: Pose | None, change: Change
    ) -> EventNote:
        data: dict[str, object] = dict(person.measured)
        data["still"] = person.still_told
        return EventNote(
            type="fall",
            label="lying",
            change=change,
            track_id=track_id,
            box=None if change_pose is None else change_pose.box,
            data=data,  # type: ignore[arg-type]  # floats and bools are JSON values
        )
