"""Frame preparation: crop to a region, downscale, JPEG — the project's one JPEG encoder.

Offload sends the part of a frame the local model was unsure about (in its
worker, never in a pipeline thread: encoding a JPEG costs a few milliseconds a
local inference should not wait for); events keep snapshots and clip frames.
The crop is snapped to whole pixels and the box actually sent is the snapped
one, so the cloud's boxes map back onto the original frame exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from edged.types import Box

WHOLE: Box = (0.0, 0.0, 1.0, 1.0)
#: A crop is never smaller than this many pixels a side (where the frame allows):
#: a detector needs some context around an object to recognise it.
MIN_CROP_PX = 32


@dataclass(frozen=True, slots=True)
class Prepared:
    """A JPEG ready to send and the region of the original frame it shows."""

    jpeg: bytes
    crop: Box
    width: int
    height: int


def crop_region(boxes: Iterable[Box], margin: float) -> Box:
    """The union of ``boxes`` grown by ``margin`` (fraction of its size) per side, clipped.

    No boxes means the whole frame.
    """
    items = list(boxes)
    if not items:
        return WHOLE
    x0 = min(b[0] for b in items)
    y0 = min(b[1] for b in items)
    x1 = max(b[2] for b in items)
    y1 = max(b[3] for b in items)
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    return (max(0.0, x0 - mx), max(0.0, y0 - my), min(1.0, x1 + mx), min(1.0, y1 + my))


def _pixels(lo: float, hi: float, size: int) -> tuple[int, int]:
    a = max(0, min(size - 1, math.floor(lo * size)))
    b = max(a + 1, min(size, math.ceil(hi * size)))
    short = min(size, MIN_CROP_PX) - (b - a)
    if short > 0:  # grow around the centre, then shift back inside the frame
        a = max(0, a - (short + 1) // 2)
        b = min(size, a + min(size, MIN_CROP_PX))
        a = b - min(size, MIN_CROP_PX)
    return a, b


def prepare(image: npt.NDArray[np.uint8], region: Box, *, max_side: int, quality: int) -> Prepared:
    """Crop ``image`` (H x W x 3 RGB) to ``region``, fit it in ``max_side``, encode as JPEG."""
    h, w = image.shape[:2]
    px0, px1 = _pixels(region[0], region[2], w)
    py0, py1 = _pixels(region[1], region[3], h)
    part = image[py0:py1, px0:px1]
    ch, cw = part.shape[:2]
    scale = max_side / max(ch, cw)
    if scale < 1.0:
        # INTER_AREA: the resampling that does not alias when shrinking.
        size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
        part = np.asarray(cv2.resize(part, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    bgr = cv2.cvtColor(part, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV fails only on invalid input, excluded above
        raise ValueError("JPEG encoding failed")
    return Prepared(
        jpeg=buf.tobytes(),
        crop=(px0 / w, py0 / h, px1 / w, py1 / h),
        width=int(bgr.shape[1]),
        height=int(bgr.shape[0]),
    )
