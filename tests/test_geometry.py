"""Point-in-polygon, anchors, sides and segment crossing: examples and properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from edged.geometry import (
    anchor_point,
    area,
    contains,
    polygon_problem,
    segments_intersect,
    side,
)

SQUARE = [(0.2, 0.2), (0.6, 0.2), (0.6, 0.6), (0.2, 0.6)]
# An L shape: the notch (0.5-0.8, 0.5-0.8) is outside although inside the bounding box.
ELL = [(0.2, 0.2), (0.8, 0.2), (0.8, 0.5), (0.5, 0.5), (0.5, 0.8), (0.2, 0.8)]

unit = st.floats(0.0, 1.0, allow_nan=False)
points = st.tuples(unit, unit)


def test_anchor_points_of_a_box() -> None:
    """Each anchor names its point of the box; bottom_center is where feet touch the floor."""
    box = (0.2, 0.1, 0.4, 0.9)
    assert anchor_point(box, "bottom_center") == pytest.approx((0.3, 0.9))
    assert anchor_point(box, "center") == pytest.approx((0.3, 0.5))
    assert anchor_point(box, "top_center") == pytest.approx((0.3, 0.1))
    assert anchor_point(box, "bottom_left") == pytest.approx((0.2, 0.9))
    assert anchor_point(box, "center_right") == pytest.approx((0.4, 0.5))


def test_point_in_a_concave_polygon() -> None:
    """Inside the L, outside its notch and outside the frame; the border counts as inside."""
    assert contains(ELL, (0.3, 0.3))
    assert contains(ELL, (0.3, 0.7))
    assert not contains(ELL, (0.7, 0.7))  # the notch
    assert not contains(ELL, (0.9, 0.3))
    assert contains(ELL, (0.8, 0.3))  # on the right edge
    assert contains(ELL, (0.2, 0.2))  # a vertex


@given(points)
def test_square_contains_exactly_its_box(p: tuple[float, float]) -> None:
    """For an axis-aligned square, containment is the coordinate test."""
    x, y = p
    assert contains(SQUARE, p) == (0.2 <= x <= 0.6 and 0.2 <= y <= 0.6)


@given(points, st.integers(0, 5))
def test_containment_ignores_the_starting_vertex_and_winding(
    p: tuple[float, float], shift: int
) -> None:
    """The same outline, started at another vertex or walked backwards, has the same inside."""
    rotated = ELL[shift:] + ELL[:shift]
    assert contains(rotated, p) == contains(ELL, p) == contains(rotated[::-1], p)


@given(points, points, points)
@example((0.0, 2.95e-44), (1.0, 0.34570041470875246), (5e-324, 0.0))  # rounding broke the swap
def test_side_flips_with_the_line_direction(
    a: tuple[float, float], b: tuple[float, float], p: tuple[float, float]
) -> None:
    """Reversing a→b swaps left and right."""
    s, r = side(a, b, p), side(b, a, p)
    assert (s, r) in {(None, None), ("left", "right"), ("right", "left")}


def test_left_is_as_seen_from_a_looking_at_b() -> None:
    """A line drawn bottom to top has the image's left half on its left."""
    a, b = (0.5, 1.0), (0.5, 0.0)
    assert side(a, b, (0.2, 0.5)) == "left"
    assert side(a, b, (0.8, 0.5)) == "right"
    assert side(a, b, (0.5, 0.3)) is None


@given(points, points, points, points)
def test_segment_intersection_is_symmetric(
    p0: tuple[float, float],
    p1: tuple[float, float],
    q0: tuple[float, float],
    q1: tuple[float, float],
) -> None:
    """Whether two segments meet does not depend on their order or direction."""
    base = segments_intersect(p0, p1, q0, q1)
    assert base == segments_intersect(q0, q1, p0, p1) == segments_intersect(p1, p0, q1, q0)


def test_segments_that_cross_touch_or_miss() -> None:
    """An X crosses, a T touches, parallel and end-to-side-of-end segments miss."""
    assert segments_intersect((0, 0), (1, 1), (0, 1), (1, 0))
    assert segments_intersect((0, 0.5), (0.5, 0.5), (0.5, 0), (0.5, 1))
    assert not segments_intersect((0, 0), (1, 0), (0, 0.1), (1, 0.1))
    assert not segments_intersect((0, 0), (0.4, 0.4), (0.5, 0), (0.5, 1))


@given(st.lists(points, min_size=3, max_size=8))
def test_a_valid_polygon_has_area_and_no_crossing_edges(poly: list[tuple[float, float]]) -> None:
    """Whatever polygon_problem accepts has some area and finite coordinates in [0, 1]."""
    if polygon_problem(poly) is None:
        assert area(poly) >= 1e-4
        assert all(math.isfinite(c) and 0 <= c <= 1 for p in poly for c in p)


@pytest.mark.parametrize(
    ("poly", "problem"),
    [
        ([(0.1, 0.1), (0.5, 0.5)], "at least 3 points"),
        ([(0.1, 0.1), (0.5, 0.5), (0.9, 0.9)], "no area"),
        ([(0.0, 0.0), (640.0, 0.0), (640.0, 480.0)], "outside [0, 1]"),
        ([(0.0, 0.0), (math.nan, 0.0), (1.0, 1.0)], "not finite"),
        ([(0.1, 0.1), (0.9, 0.5), (0.9, 0.1), (0.1, 0.9)], "cross"),  # a bow tie
    ],
)
def test_bad_polygons_are_named(poly: list[tuple[float, float]], problem: str) -> None:
    """Too few points, collinear, pixel coordinates, NaN and a bow tie are refused with the reason."""
    found = polygon_problem(poly)
    assert found is not None
    assert problem in found
    assert polygon_problem(SQUARE) is None
