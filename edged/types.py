"""Frozen values that cross stage boundaries.

Stages exchange only these (plus numpy arrays), so a stage can be tested by
constructing its input directly. Arrays inside frozen dataclasses are not
themselves immutable: by convention no stage writes into an array it did not
allocate, which is what lets one capture feed many pipelines without a copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import JsonValue

#: Normalized ``[x_min, y_min, x_max, y_max]`` in the original frame, each in [0, 1].
Box = tuple[float, float, float, float]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``[x_min, y_min, x_max, y_max]`` boxes.

    0.0 for boxes that do not overlap, and for degenerate ones (no area).
    """
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured video frame.

    ``image`` is ``H x W x 3`` RGB ``uint8``; ``ts`` is wall-clock seconds since
    the epoch (for payloads), ``mono`` is ``time.monotonic()`` at capture (for
    latency and rate measurements, immune to clock jumps).
    """

    id: int
    ts: float
    mono: float
    source: str
    image: npt.NDArray[np.uint8]

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A block of mono float32 samples in [-1, 1] at ``rate`` Hz."""

    ts: float
    mono: float
    source: str
    samples: npt.NDArray[np.float32]
    rate: int


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected object; ``box`` is normalized to the original frame."""

    label: str
    class_id: int
    score: float
    box: Box
    #: Zones the tracked object is in (debounced; README "Zones"); empty without zones.
    zones: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Keypoint:
    """One body keypoint; ``x``/``y`` normalized to the original frame."""

    name: str
    x: float
    y: float
    score: float


@dataclass(frozen=True, slots=True)
class Pose:
    """One person's pose."""

    score: float
    box: Box
    keypoints: tuple[Keypoint, ...]
    #: The tracker's id of this person (pose pipelines with a person detector).
    track_id: int | None = None


@dataclass(frozen=True, slots=True)
class AudioClass:
    """One audio class score for a window."""

    label: str
    class_id: int
    score: float


@dataclass(frozen=True, slots=True)
class Change:
    """A phase of an episode, with times in the caller's clock (epoch seconds)."""

    phase: Literal["start", "update", "end"]
    event_id: str
    start: float
    #: End of the last observation that was on (end phase only).
    end: float | None
    #: Time of the observation that caused this change.
    ts: float
    score: float
    top_score: float


@dataclass(frozen=True, slots=True)
class EventNote:
    """One phase of a sound or fall event, as a pipeline hands it to the publisher."""

    type: Literal["sound", "fall"]
    label: str
    change: Change
    track_id: int | None = None
    box: Box | None = None
    data: dict[str, JsonValue] = field(default_factory=dict)
    #: A clip on the device (end phase only), and its length in seconds.
    clip: str | None = None
    clip_s: float | None = None
