"""Pose decoders: model outputs → :class:`~edged.types.Pose` in the original frame.

MoveNet SinglePose (Lightning/Thunder) outputs one tensor ``[1, 1, 17, 3]``:
for each of the 17 COCO keypoints ``(y, x, score)``, with ``y``/``x``
normalized to the *model input* square. When the frame was letterboxed into
that square, the input coordinates include the padding, so every keypoint is
mapped back through the :class:`~edged.preprocess.image.Letterbox` to be
normalized to the original frame, as README "MQTT topics and payloads" promises for every result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edged.errors import DecodeError, ModelError
from edged.infer.base import TensorSpec
from edged.preprocess.image import Letterbox
from edged.types import Box, Keypoint, Pose

#: The 17 COCO keypoints in MoveNet's output order.
COCO_KEYPOINTS: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

#: Keypoints at or below this score are guesses (MoveNet still places every
#: keypoint somewhere); they are reported, but do not stretch the pose's box.
KEYPOINT_THRESHOLD = 0.2


class PoseDecoder(Protocol):
    """Turns one inference's outputs into poses; built once per pipeline."""

    def check(self, outputs: Sequence[TensorSpec]) -> None:
        """Raise ModelError when the model's outputs do not fit this decoder."""
        ...

    def decode(
        self, outputs: Sequence[npt.NDArray[np.float32]], letterbox: Letterbox, threshold: float
    ) -> list[Pose]:
        """Poses whose score is at least ``threshold``, in original-frame coordinates."""
        ...


class MoveNetDecoder:
    """MoveNet SinglePose: one person per frame, 17 keypoints.

    The pose score is the mean keypoint score. MoveNet always returns a
    skeleton, even for a picture of a cup, but its keypoint scores are then
    uniformly low (mean ≤ 0.11 on the non-person samples against ≥ 0.5 on a
    visible person), so the mean is what separates "a person" from "nothing".
    """

    def __init__(self, keypoint_threshold: float = KEYPOINT_THRESHOLD) -> None:
        self.keypoint_threshold = keypoint_threshold

    def check(self, outputs: Sequence[TensorSpec]) -> None:
        shapes = [list(o.shape) for o in outputs]
        if len(outputs) != 1 or tuple(outputs[0].shape) != (1, 1, len(COCO_KEYPOINTS), 3):
            raise ModelError(
                f"movenet decoder expects one output of shape [1, 1, 17, 3] (y, x, score "
                f"per COCO keypoint), but the model has outputs {shapes}; "
                "is this a MultiPose or non-MoveNet model?"
            )

    def decode(
        self, outputs: Sequence[npt.NDArray[np.float32]], letterbox: Letterbox, threshold: float
    ) -> list[Pose]:
        if len(outputs) != 1 or outputs[0].size != len(COCO_KEYPOINTS) * 3:
            got = [list(o.shape) for o in outputs]
            raise DecodeError(f"movenet decoder got outputs {got}, expected one [1, 1, 17, 3]")
        kps = outputs[0].reshape(len(COCO_KEYPOINTS), 3).astype(np.float64)
        scores = kps[:, 2]
        score = float(scores.mean())
        if score < threshold:
            return []
        xs, ys = _to_frame(letterbox, kps[:, 1], kps[:, 0])
        keypoints = tuple(
            Keypoint(name=name, x=float(x), y=float(y), score=float(s))
            for name, x, y, s in zip(COCO_KEYPOINTS, xs, ys, scores, strict=True)
        )
        return [Pose(score=score, box=self._box(xs, ys, scores), keypoints=keypoints)]

    def _box(
        self,
        xs: npt.NDArray[np.float64],
        ys: npt.NDArray[np.float64],
        scores: npt.NDArray[np.float64],
    ) -> Box:
        sure = scores > self.keypoint_threshold
        if not sure.any():
            # Only reachable with a pipeline threshold below the keypoint
            # threshold; the bounds of all keypoints are the best box there is.
            sure = np.ones_like(sure)
        return (
            float(xs[sure].min()),
            float(ys[sure].min()),
            float(xs[sure].max()),
            float(ys[sure].max()),
        )


def _to_frame(
    letterbox: Letterbox, x_in: npt.NDArray[np.float64], y_in: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Input-square-normalized points → original-frame-normalized points, clipped to [0, 1].

    A keypoint the model placed in the letterbox padding lies outside the
    frame; it is clipped to the edge, since results promise [0, 1] coordinates.
    """
    pts = [
        letterbox.point_from_input_pixels(x * letterbox.in_w, y * letterbox.in_h)
        for x, y in zip(x_in.tolist(), y_in.tolist(), strict=True)
    ]
    xy = np.clip(np.asarray(pts, dtype=np.float64).reshape(-1, 2), 0.0, 1.0)
    return xy[:, 0], xy[:, 1]


#: decoder name (catalog ``decoder``) → factory
DECODERS: dict[str, Callable[[], PoseDecoder]] = {
    "movenet": MoveNetDecoder,
}
