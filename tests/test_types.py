"""Values that cross stage boundaries: the box geometry every stage shares."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edged.types import Box, iou

box_coord = st.floats(0.0, 0.9, allow_nan=False)
box_size = st.floats(0.01, 0.5, allow_nan=False)
boxes = st.builds(lambda x, y, w, h: (x, y, x + w, y + h), box_coord, box_coord, box_size, box_size)


@given(boxes, boxes)
def test_iou_is_symmetric_bounded_and_one_on_itself(a: Box, b: Box) -> None:
    assert iou(a, b) == pytest.approx(iou(b, a))
    assert 0.0 <= iou(a, b) <= 1.0
    assert iou(a, a) == pytest.approx(1.0)


def test_iou_known_values() -> None:
    assert iou((0, 0, 1, 1), (0.5, 0, 1.5, 1)) == pytest.approx(1 / 3)
    assert iou((0, 0, 1, 1), (1, 1, 2, 2)) == 0.0


def test_iou_is_zero_for_a_degenerate_box() -> None:
    assert iou((0.2, 0.2, 0.2, 0.6), (0.0, 0.0, 1.0, 1.0)) == 0.0
