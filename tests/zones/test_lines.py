"""Line crossings of tracked anchors: direction, the segment's extent, and resting on the line."""

from __future__ import annotations

from typing import Any

from edged.config.settings import LineSettings
from edged.track.tracker import Track
from edged.zones.lines import LineCrossings


def line(**kw: Any) -> LineSettings:
    # Vertical, drawn bottom to top over the lower half: left is the image's left.
    return LineSettings.model_validate({"name": "door", "a": [0.5, 1.0], "b": [0.5, 0.5], **kw})


def at(x: float, y: float = 0.8, tid: int = 1, label: str = "person") -> Track:
    """A track whose bottom-center anchor is (x, y)."""
    return Track(tid, label, (x - 0.05, y - 0.3, x + 0.05, y), 0.9, 0.0, 0.0, 3)


def walk(lc: LineCrossings, xs: list[float], y: float = 0.8) -> list[str]:
    out: list[str] = []
    for x in xs:
        out += [c.direction for c in lc.update([at(x, y)])]
    return out


def test_crossing_in_both_directions() -> None:
    """Left to right and back: two crossings, named by direction."""
    assert walk(LineCrossings([line()]), [0.3, 0.4, 0.6, 0.7, 0.4]) == [
        "left_to_right",
        "right_to_left",
    ]


def test_direction_filter() -> None:
    """direction = left_to_right ignores the way back."""
    lc = LineCrossings([line(direction="left_to_right")])
    assert walk(lc, [0.3, 0.7, 0.3, 0.7]) == ["left_to_right", "left_to_right"]


def test_passing_beyond_the_end_of_the_segment_is_no_crossing() -> None:
    """Moving across the line's extension (above b) crosses nothing."""
    assert walk(LineCrossings([line()]), [0.3, 0.7], y=0.3) == []


def test_resting_on_the_line_and_stepping_back_is_no_crossing() -> None:
    """An anchor on the line keeps its side; going back to it is no crossing, going on is one."""
    assert walk(LineCrossings([line()]), [0.3, 0.5, 0.5, 0.3]) == []
    assert walk(LineCrossings([line()]), [0.3, 0.5, 0.7]) == ["left_to_right"]


def test_each_track_and_label_on_its_own() -> None:
    """Tracks are followed by id; a line with labels ignores other labels."""
    lc = LineCrossings([line(labels=["car"])])
    lc.update([at(0.3, tid=1, label="car"), at(0.3, tid=2)])
    crossed = lc.update([at(0.7, tid=1, label="car"), at(0.7, tid=2)])
    assert [(c.track.id, c.line) for c in crossed] == [(1, "door")]


def test_a_new_track_on_the_far_side_has_not_crossed() -> None:
    """A track first seen on one side has no previous side: no crossing."""
    lc = LineCrossings([line()])
    lc.update([at(0.3, tid=1)])
    assert lc.update([at(0.7, tid=2)]) == []
