"""Small helpers for vision tests: read photos as RGB, IoU, reference boxes."""

from __future__ import annotations

import tomllib
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edged.types import Box

REFERENCES = Path(__file__).resolve().parent.parent / "decode" / "reference_boxes.toml"


def read_rgb(path: Path) -> npt.NDArray[np.uint8]:
    """A photo as an HxWx3 RGB uint8 array (what capture sources deliver)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, f"cannot read {path}"
    return np.ascontiguousarray(bgr[:, :, ::-1])


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two [x0, y0, x1, y1] boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference_boxes(image: str) -> list[tuple[str, Box]]:
    """The hand-made (label, box) references of one photo."""
    data = tomllib.loads(REFERENCES.read_text())
    return [(b["label"], tuple(b["box"])) for b in data["box"] if b["image"] == image]  # type: ignore[misc]
