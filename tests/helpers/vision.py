"""Small helpers for vision tests: read photos as RGB, reference boxes."""

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


def reference_boxes(image: str) -> list[tuple[str, Box]]:
    """The hand-made (label, box) references of one photo."""
    data = tomllib.loads(REFERENCES.read_text())
    return [(b["label"], tuple(b["box"])) for b in data["box"] if b["image"] == image]  # type: ignore[misc]
