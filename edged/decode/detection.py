"""Detection decoders: model outputs → :class:`~edged.types.Detection` in the original frame.

One class per output family, chosen by name from :data:`DECODERS`:

- ``ssd-postprocess``: TFLite_Detection_PostProcess (boxes, classes, scores, count),
- ``yolox``: the raw YOLOX head ``[1, A, 5 + C]`` (grid decode, objectness x class),
- ``yolov8``: the Ultralytics v8/v11 export ``[1, 4 + C, N]`` (no objectness).

Each decoder checks the model's output tensors at start (``check``), so a
model that does not fit is refused by ``edged check`` instead of producing
garbage per frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from edged.errors import ModelError
from edged.infer.base import TensorSpec
from edged.preprocess.image import Letterbox
from edged.types import Detection

F32 = npt.NDArray[np.float32]


class DetectionDecoder(Protocol):
    """Turns one inference's outputs into detections."""

    def check(self, outputs: Sequence[TensorSpec]) -> None:
        """Raise :class:`ModelError` if these outputs cannot be decoded by this decoder."""
        ...

    def decode(self, outputs: list[F32], lb: Letterbox, threshold: float) -> list[Detection]:
        """Detections with score ≥ ``threshold``, best first."""
        ...


def _shapes(outputs: Sequence[TensorSpec]) -> str:
    return ", ".join(f"{o.name!r} {list(o.shape)}" for o in outputs) or "none"


def _dim_is(dim: int, want: int) -> bool:
    """A tensor dimension matches ``want``; -1 (dynamic) matches anything."""
    return -1 in (dim, want) or dim == want


def _label(labels: Sequence[str], class_id: int) -> str:
    return labels[class_id] if 0 <= class_id < len(labels) else f"class_{class_id}"


def nms(
    boxes_xyxy: F32, scores: F32, class_ids: npt.NDArray[np.int64], iou: float, limit: int
) -> list[int]:
    """Class-wise non-maximum suppression (OpenCV's batched NMS); indices best first."""
    if len(scores) == 0:
        return []
    xywh = boxes_xyxy.copy()
    xywh[:, 2:] -= xywh[:, :2]
    keep = cv2.dnn.NMSBoxesBatched(
        xywh.tolist(),
        scores.tolist(),
        class_ids.tolist(),
        score_threshold=0.0,
        nms_threshold=iou,
        top_k=limit,
    )
    order = np.asarray(keep, dtype=np.int64).reshape(-1)
    return sorted(order.tolist(), key=lambda i: -float(scores[i]))[:limit]


class SsdPostprocessDecoder:
    """Outputs of the TFLite_Detection_PostProcess op; boxes are normalized to the model input."""

    def __init__(self, labels: Sequence[str] = (), max_detections: int = 100) -> None:
        self.labels = tuple(labels)
        self.max_detections = max_detections
        self._order: tuple[int, int, int, int] = (0, 1, 2, 3)

    def check(self, outputs: Sequence[TensorSpec]) -> None:
        shapes = [o.shape for o in outputs]
        boxes = [i for i, s in enumerate(shapes) if len(s) == 3 and s[-1] == 4]
        count = [i for i, s in enumerate(shapes) if len(s) == 1]
        pairs = [i for i, s in enumerate(shapes) if len(s) == 2]
        fits = len(outputs) == 4 and len(boxes) == 1 and len(count) == 1 and len(pairs) == 2
        if fits:
            n = shapes[boxes[0]][1]
            fits = all(_dim_is(shapes[i][1], n) for i in pairs) and all(
                _dim_is(shapes[i][0], 1) for i in (*boxes, *pairs)
            )
        if not fits:
            raise ModelError(
                "the ssd-postprocess decoder expects 4 outputs (boxes [1,N,4], classes [1,N], "
                f"scores [1,N], count [1]); this model has {_shapes(outputs)}"
            )
        # TFLite keeps classes before scores; both are [1, N] so order is all we have.
        self._order = (boxes[0], pairs[0], pairs[1], count[0])

    def decode(self, outputs: list[F32], lb: Letterbox, threshold: float) -> list[Detection]:
        b, c, s, n = (outputs[i] for i in self._order)
        count = min(int(n.reshape(-1)[0]), b.shape[1])
        found: list[Detection] = []
        for i in range(count):
            score = float(s[0, i])
            if score < threshold:
                continue
            ymin, xmin, ymax, xmax = (float(v) for v in b[0, i])
            cid = int(c[0, i])
            found.append(
                Detection(
                    _label(self.labels, cid),
                    cid,
                    score,
                    lb.box_from_input_normalized(xmin, ymin, xmax, ymax),
                )
            )
        found.sort(key=lambda d: -d.score)
        return found[: self.max_detections]


class _NmsDecoder:
    """What the raw-head decoders share: labels, class-aware NMS and the detection cap."""

    def __init__(self, labels: Sequence[str], nms_iou: float, max_detections: int) -> None:
        self.labels = tuple(labels)
        self.nms_iou = nms_iou
        self.max_detections = max_detections

    def _finish(
        self, boxes: F32, scores: F32, class_ids: npt.NDArray[np.int64], lb: Letterbox
    ) -> list[Detection]:
        """NMS over the kept candidates (``boxes`` in input pixels), mapped back to the frame."""
        out = []
        for i in nms(boxes, scores, class_ids, self.nms_iou, self.max_detections):
            cid = int(class_ids[i])
            out.append(
                Detection(
                    _label(self.labels, cid),
                    cid,
                    float(scores[i]),
                    lb.box_from_input_pixels(*(float(v) for v in boxes[i])),
                )
            )
        return out


class YoloxDecoder(_NmsDecoder):
    """The raw YOLOX head: per anchor ``[cx, cy, w, h, obj, C class scores]`` on strides 8/16/32."""

    def __init__(
        self,
        labels: Sequence[str] = (),
        strides: Sequence[int] = (8, 16, 32),
        nms_iou: float = 0.45,
        max_detections: int = 100,
    ) -> None:
        super().__init__(labels, nms_iou, max_detections)
        self.strides = tuple(strides)
        self._grid: F32 | None = None
        self._stride: F32 | None = None

    def check(self, outputs: Sequence[TensorSpec]) -> None:
        if len(outputs) != 1 or len(outputs[0].shape) != 3 or outputs[0].shape[2] < 6:
            raise ModelError(
                f"the yolox decoder expects one output [1, anchors, 5+classes]; this model has {_shapes(outputs)}"
            )
        classes = outputs[0].shape[2] - 5
        if self.labels and classes != len(self.labels):
            raise ModelError(
                f"the yolox decoder reads {_shapes(outputs)} as {classes} classes, "
                f"but {len(self.labels)} labels were given: the label file does not fit this model"
            )

    def _anchors(self, n: int, in_w: int, in_h: int) -> tuple[F32, F32]:
        if self._grid is None or self._grid.shape[0] != n:
            grids, strides = [], []
            for st in self.strides:
                gw, gh = in_w // st, in_h // st
                ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
                grids.append(np.stack([xs, ys], axis=-1).reshape(-1, 2))
                strides.append(np.full((gw * gh, 1), st))
            grid = np.concatenate(grids).astype(np.float32)
            if grid.shape[0] != n:
                raise ModelError(
                    f"yolox: {n} anchors do not match strides {self.strides} at {in_w}x{in_h}"
                )
            self._grid, self._stride = grid, np.concatenate(strides).astype(np.float32)
        assert self._stride is not None
        return self._grid, self._stride

    def decode(self, outputs: list[F32], lb: Letterbox, threshold: float) -> list[Detection]:
        pred = outputs[0][0]
        grid, stride = self._anchors(pred.shape[0], lb.in_w, lb.in_h)
        # Class scores are sigmoids (<= 1), so obj * cls >= threshold needs
        # obj >= threshold: looking at those anchors only skips the
        # anchors x classes product for the ~99 % that are background.
        (cand,) = np.nonzero(pred[:, 4] >= threshold)
        pred, grid, stride = pred[cand], grid[cand], stride[cand]
        cls = pred[:, 5:]
        class_ids = cls.argmax(axis=1)
        scores = pred[:, 4] * cls[np.arange(len(cls)), class_ids]
        keep = scores >= threshold
        if not keep.any():
            return []
        xy = (pred[keep, :2] + grid[keep]) * stride[keep]
        # A log-size above 20 is a box millions of pixels wide; capping it keeps
        # exp() from overflowing on a corrupt output without changing real boxes.
        wh = np.exp(np.minimum(pred[keep, 2:4], 20.0)) * stride[keep]
        boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1).astype(np.float32)
        return self._finish(boxes, scores[keep], class_ids[keep], lb)


class YoloV8Decoder(_NmsDecoder):
    """The Ultralytics v8/v11 export: ``[1, 4 + C, N]`` with ``cx, cy, w, h`` in input pixels."""

    def __init__(
        self, labels: Sequence[str] = (), nms_iou: float = 0.45, max_detections: int = 100
    ) -> None:
        super().__init__(labels, nms_iou, max_detections)
        self._transposed = False

    def check(self, outputs: Sequence[TensorSpec]) -> None:
        if len(outputs) != 1 or len(outputs[0].shape) != 3:
            raise ModelError(
                f"the yolov8 decoder expects one output [1, 4+classes, N]; this model has {_shapes(outputs)}"
            )
        _, a, b = outputs[0].shape
        # The channel axis is 4 + the number of labels when labels are known;
        # otherwise it is the short one (84 vs 8400). -1 means dynamic.
        channels = 4 + len(self.labels) if self.labels else 0
        if channels and a == channels:
            self._transposed = False
        elif channels and b == channels:
            self._transposed = True
        elif channels and -1 not in (a, b):
            raise ModelError(
                f"the yolov8 decoder expects one output [1, 4+classes, N]; this model has "
                f"{_shapes(outputs)}, and neither axis is 4 + {len(self.labels)} labels"
            )
        elif a > 4 and (b == -1 or a < b):
            self._transposed = False
        elif b > 4 and (a == -1 or b < a):
            self._transposed = True
        else:
            raise ModelError(
                f"the yolov8 decoder cannot find a 4+classes axis in {_shapes(outputs)}"
            )

    def decode(self, outputs: list[F32], lb: Letterbox, threshold: float) -> list[Detection]:
        pred = outputs[0][0]
        if not self._transposed:
            pred = pred.T  # -> [N, 4 + C]
        cls = pred[:, 4:]
        class_ids = cls.argmax(axis=1)
        scores = cls[np.arange(len(cls)), class_ids]
        keep = scores >= threshold
        if not keep.any():
            return []
        cxcy, wh = pred[keep, :2], pred[keep, 2:4]
        boxes = np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1).astype(np.float32)
        return self._finish(boxes, scores[keep], class_ids[keep], lb)


#: decoder name → factory taking ``labels=``.
DECODERS: dict[str, Callable[..., DetectionDecoder]] = {
    "ssd-postprocess": SsdPostprocessDecoder,
    "yolox": YoloxDecoder,
    "yolov8": YoloV8Decoder,
}
