"""Plane geometry of zones, masks and lines, in normalized image coordinates.

Pure functions over ``(x, y)`` points with ``x`` to the right and ``y`` down,
both in [0, 1] of the frame, so that one configuration fits every resolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, Literal

from edged.types import Box

Point = tuple[float, float]

#: Where on its box an object "is": ``bottom_center`` is where a standing
#: person's feet touch the floor, which is what a floor zone is drawn around.
Anchor = Literal[
    "top_left",
    "top_center",
    "top_right",
    "center_left",
    "center",
    "center_right",
    "bottom_left",
    "bottom_center",
    "bottom_right",
]

#: Each anchor's position on the box as fractions of its width and height.
_ANCHOR_AT: Final[dict[str, Point]] = {
    "top_left": (0.0, 0.0),
    "top_center": (0.5, 0.0),
    "top_right": (1.0, 0.0),
    "center_left": (0.0, 0.5),
    "center": (0.5, 0.5),
    "center_right": (1.0, 0.5),
    "bottom_left": (0.0, 1.0),
    "bottom_center": (0.5, 1.0),
    "bottom_right": (1.0, 1.0),
}

#: Polygons smaller than this (normalized area; 0.01 % of the frame) are degenerate.
MIN_AREA: Final = 1e-4


def anchor_point(box: Box, anchor: Anchor) -> Point:
    """The point of ``box`` named by ``anchor``."""
    fx, fy = _ANCHOR_AT[anchor]
    x0, y0, x1, y1 = box
    return (x0 + fx * (x1 - x0), y0 + fy * (y1 - y0))


def contains(polygon: Sequence[Point], p: Point) -> bool:
    """Whether ``p`` lies inside ``polygon`` (even-odd rule; points on an edge count as inside).

    Counting the edge as inside makes a zone drawn to the frame's border
    include an anchor on that border (a box clamped to the frame edge).
    """
    x, y = p
    inside = False
    n = len(polygon)
    for i in range(n):
        (x0, y0), (x1, y1) = polygon[i], polygon[(i + 1) % n]
        if _on_segment((x0, y0), (x1, y1), p):
            return True
        if (y0 > y) != (y1 > y):
            # x of the edge at height y; the edge is not horizontal here.
            xc = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
            if x < xc:
                inside = not inside
    return inside


def area(polygon: Sequence[Point]) -> float:
    """Unsigned area of ``polygon`` (shoelace formula)."""
    n = len(polygon)
    twice = sum(
        polygon[i][0] * polygon[(i + 1) % n][1] - polygon[(i + 1) % n][0] * polygon[i][1]
        for i in range(n)
    )
    return abs(twice) / 2


def cross(a: Point, b: Point, p: Point) -> float:
    """z of ``(b - a) x (p - a)``: its sign says on which side of the line a→b ``p`` lies.

    With ``y`` pointing down, a negative value is on the left of someone
    standing at ``a`` looking toward ``b`` (on the image as displayed),
    a positive value on their right, 0 on the line.
    """
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


Side = Literal["left", "right"]


def side(a: Point, b: Point, p: Point) -> Side | None:
    """``left`` / ``right`` of the directed line a→b (see :func:`cross`), None on it.

    Reversing the line swaps the answer exactly: the cross product is always
    taken from the same end (the smaller point), because rounding makes
    ``cross(a, b, p)`` and ``-cross(b, a, p)`` differ in sign for points very
    close to the line, and a crossing must not count in both directions.
    """
    if b < a:
        flipped = side(b, a, p)
        return None if flipped is None else ("right" if flipped == "left" else "left")
    c = cross(a, b, p)
    if c < 0:
        return "left"
    if c > 0:
        return "right"
    return None


def _on_segment(a: Point, b: Point, p: Point, eps: float = 1e-12) -> bool:
    if abs(cross(a, b, p)) > eps:
        return False
    return min(a[0], b[0]) - eps <= p[0] <= max(a[0], b[0]) + eps and (
        min(a[1], b[1]) - eps <= p[1] <= max(a[1], b[1]) + eps
    )


def segments_intersect(p0: Point, p1: Point, q0: Point, q1: Point) -> bool:
    """Whether segment p0-p1 and segment q0-q1 share a point (touching counts)."""
    d1, d2 = cross(q0, q1, p0), cross(q0, q1, p1)
    d3, d4 = cross(p0, p1, q0), cross(p0, p1, q1)
    if ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4)):
        return True
    return (
        _on_segment(q0, q1, p0)
        or _on_segment(q0, q1, p1)
        or _on_segment(p0, p1, q0)
        or _on_segment(p0, p1, q1)
    )


def polygon_problem(polygon: Sequence[Point]) -> str | None:
    """Why ``polygon`` cannot be a zone or mask, or None when it can.

    A zone must be a simple polygon of at least 3 finite points in [0, 1]
    with some area: a point outside the frame is a pixel coordinate by
    mistake, and a self-crossing outline has no clear inside.
    """
    if len(polygon) < 3:
        return f"needs at least 3 points, got {len(polygon)}"
    for i, (x, y) in enumerate(polygon):
        if not (math.isfinite(x) and math.isfinite(y)):
            return f"point {i} {[x, y]} is not finite"
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            return (
                f"point {i} {[x, y]} is outside [0, 1] (coordinates are fractions of the "
                "frame's width and height, not pixels)"
            )
    if area(polygon) < MIN_AREA:
        return f"encloses no area (under {MIN_AREA:g} of the frame): its points are on a line"
    n = len(polygon)
    for i in range(n):
        for j in range(i + 1, n):
            # Neighbouring edges share a point by construction.
            if j == i + 1 or (i == 0 and j == n - 1):
                continue
            if segments_intersect(
                polygon[i], polygon[(i + 1) % n], polygon[j], polygon[(j + 1) % n]
            ):
                return f"edges {i} and {j} cross: the outline must not intersect itself"
    return None
