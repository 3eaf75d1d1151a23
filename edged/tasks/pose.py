"""Pose estimation: image → resize/letterbox → model → keypoints in the original frame.

:class:`PoseTask` is the pipeline task (one model, one person per frame);
:class:`TwoStagePoseTask` combines a person detector with it for several people.
"""

from __future__ import annotations

import math

from edged.catalog.resolve import ResolvedModel
from edged.decode.pose import DECODERS, PoseDecoder
from edged.errors import ModelError
from edged.infer.base import Model
from edged.tasks import StageTimes, VisionResult, VisionTask
from edged.tasks.detection import ModelTask, check_expectation, pick_decoder
from edged.types import Box, Detection, Frame, Keypoint, Pose, iou


class PoseTask(ModelTask):
    """Runs a single-person pose model on frames (none or one pose per frame for MoveNet)."""

    kind = "pose"

    def __init__(self, resolved: ResolvedModel, model: Model) -> None:
        check_expectation(resolved, model)
        factory = pick_decoder(DECODERS, resolved.decoder, "pose")
        decoder: PoseDecoder = factory()
        decoder.check(model.outputs)
        super().__init__(resolved, model, decoder.decode)


class TwoStagePoseTask:
    """Several people: a person detector finds boxes, a single-pose model runs per box.

    MoveNet SinglePose sees one person per input; on a frame with several it
    picks one (or blends two). Cropping each detected person, with a margin
    so that raised arms and feet stay inside, gives every person the model's
    full input resolution. Cost grows with the number of people, so it is
    capped by ``max_people`` (highest detection scores first).

    A detector may report one person twice (SSD does, with overlapping boxes
    around a person lying down): the crops then give the same skeleton, so a
    pose whose box overlaps an already kept one by ``same_iou`` or more is
    dropped, keeping the one of the better detection.
    """

    kind = "pose"

    def __init__(
        self,
        detector: VisionTask,
        pose: PoseTask,
        *,
        label: str = "person",
        detect_threshold: float = 0.5,
        margin: float = 0.15,
        max_people: int = 5,
        same_iou: float = 0.5,
    ) -> None:
        if detector.kind != "detections":
            raise ModelError(f"two-stage pose needs a detection task, got {detector.kind!r}")
        self._detector = detector
        self._pose = pose
        self.label = label
        self.detect_threshold = detect_threshold
        self.margin = margin
        self.max_people = max_people
        self.same_iou = same_iou

    def _crop(self, frame: Frame, box: Box) -> tuple[int, int, int, int]:
        """Pixel bounds of ``box`` grown by ``margin`` on each side, inside the frame."""
        w, h = frame.width, frame.height
        mx, my = (box[2] - box[0]) * self.margin, (box[3] - box[1]) * self.margin
        x0, y0 = max(0, int((box[0] - mx) * w)), max(0, int((box[1] - my) * h))
        x1, y1 = min(w, math.ceil((box[2] + mx) * w)), min(h, math.ceil((box[3] + my) * h))
        return x0, y0, x1, y1

    def __call__(self, frame: Frame, threshold: float) -> VisionResult:
        """One pose per detected person whose pose score is at least ``threshold``."""
        found = self._detector(frame, self.detect_threshold)
        people = sorted(
            (d for d in found.items if isinstance(d, Detection) and d.label == self.label),
            key=lambda d: -d.score,
        )[: self.max_people]
        poses: list[Pose] = []
        pre, infer, post = found.timing.pre, found.timing.infer, found.timing.post
        for det in people:
            x0, y0, x1, y1 = self._crop(frame, det.box)
            if x1 - x0 < 8 or y1 - y0 < 8:
                continue  # too small to hold a pose
            crop = Frame(frame.id, frame.ts, frame.mono, frame.source, frame.image[y0:y1, x0:x1])
            result = self._pose(crop, threshold)
            pre, infer, post = (
                pre + result.timing.pre,
                infer + result.timing.infer,
                post + result.timing.post,
            )
            sx, sy = (x1 - x0) / frame.width, (y1 - y0) / frame.height
            ox, oy = x0 / frame.width, y0 / frame.height
            for p in result.items:
                if isinstance(p, Pose):
                    pose = _uncrop(p, ox, oy, sx, sy)
                    if all(iou(pose.box, kept.box) < self.same_iou for kept in poses):
                        poses.append(pose)
        return VisionResult(self.kind, tuple(poses), StageTimes(pre, infer, post))


def _uncrop(pose: Pose, ox: float, oy: float, sx: float, sy: float) -> Pose:
    """A pose normalized to a crop → normalized to the frame the crop was taken from."""
    kps = tuple(Keypoint(k.name, ox + k.x * sx, oy + k.y * sy, k.score) for k in pose.keypoints)
    b = pose.box
    box = (ox + b[0] * sx, oy + b[1] * sy, ox + b[2] * sx, oy + b[3] * sy)
    return Pose(pose.score, box, kps)
