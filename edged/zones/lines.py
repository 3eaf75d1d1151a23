"""Line crossings: a tracked object's anchor passing from one side of a segment to the other.

A crossing is counted between two frames in which the track's anchor lies
strictly on opposite sides of the directed line a→b *and* its path between
them passes through the segment a-b itself (an object walking around the
end of a tripwire does not cross it). An anchor exactly on the line keeps
the last side it was seen on, so resting on the line and stepping back is
no crossing. Sides are named as seen standing at ``a`` looking toward ``b``
(:func:`edged.geometry.cross`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from edged.config.settings import LineSettings
from edged.geometry import Point, Side, anchor_point, segments_intersect, side
from edged.track.tracker import Track

Direction = Literal["left_to_right", "right_to_left"]


@dataclass(frozen=True, slots=True)
class Crossing:
    """One track crossing one line in one direction."""

    line: str
    direction: Direction
    track: Track


class LineCrossings:
    """Tracks' last side of every line; one per pipeline."""

    def __init__(self, lines: Sequence[LineSettings]) -> None:
        self._lines = list(lines)
        # (line index, track id) → the track's last side of that line and its anchor there.
        self._last: dict[tuple[int, int], tuple[Side, Point]] = {}

    def update(self, tracks: Iterable[Track]) -> list[Crossing]:
        """The crossings since the previous update, in line order then track order."""
        live = list(tracks)
        ids = {t.id for t in live}
        self._last = {k: v for k, v in self._last.items() if k[1] in ids}
        found: list[Crossing] = []
        for li, line in enumerate(self._lines):
            for track in live:
                if line.labels and track.label not in line.labels:
                    continue
                point = anchor_point(track.box, line.anchor)
                now = side(line.a, line.b, point)
                if now is None:
                    continue
                key = (li, track.id)
                last = self._last.get(key)
                self._last[key] = (now, point)
                if last is None or last[0] == now:
                    continue
                if not segments_intersect(last[1], point, line.a, line.b):
                    continue
                direction: Direction = "left_to_right" if now == "right" else "right_to_left"
                if line.direction in ("both", direction):
                    found.append(Crossing(line.name, direction, track))
        return found
