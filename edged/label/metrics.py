"""Accuracy metrics of the golden sets.

- Detection: per-label **precision and recall at IoU 0.5**. Detections of an
  evaluated label are matched greedily, best score first, to the unmatched
  reference box of the same label with the highest IoU (at least the golden
  set's ``iou``); each box matches at most once. Matched = true positive,
  unmatched detection = false positive, unmatched box = false negative.
  ``precision``/``recall`` without a label are micro-averaged over the
  evaluated labels. Precision is undefined (None) when nothing was detected.
- Pose: **PCK@alpha** (percentage of correct keypoints): a keypoint is correct
  when it lies within ``alpha x max(w, h)`` pixels of the reference, where
  ``w x h`` is the pixel size of the reference keypoints' bounding box, the
  usual person-size normalization. alpha = 0.05 by default. Also
  ``recall(person)`` / ``precision(person)`` over pictures with and without
  a person (a pose is "found" when its score reaches the threshold).
- Audio: **top-1 and top-3 accuracy**: the share of clips whose expected
  class is the first (among the first three) of the clip-level scores.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edged.types import Box, Detection, iou


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass
class DetectionCounts:
    """True/false positives and false negatives per label, accumulated over images."""

    labels: tuple[str, ...]
    tp: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    fp: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    fn: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(
        self, expected: Sequence[tuple[str, Box]], found: Sequence[Detection], min_iou: float
    ) -> dict[str, int]:
        """Match one image's detections to its boxes; returns that image's counts."""
        free = list(expected)
        tp = fp = 0
        for det in sorted((d for d in found if d.label in self.labels), key=lambda d: -d.score):
            scored = [
                (iou(det.box, box), i) for i, (lab, box) in enumerate(free) if lab == det.label
            ]
            best = max(scored, default=(0.0, -1))
            if best[0] >= min_iou:
                free.pop(best[1])
                self.tp[det.label] += 1
                tp += 1
            else:
                self.fp[det.label] += 1
                fp += 1
        for lab, _ in free:
            self.fn[lab] += 1
        return {"tp": tp, "fp": fp, "fn": len(free)}

    def metrics(self) -> dict[str, float | None]:
        """``precision(l)``, ``recall(l)`` per label, micro ``precision``, ``recall``, ``f1``."""
        out: dict[str, float | None] = {}
        for lab in self.labels:
            out[f"precision({lab})"] = _ratio(self.tp[lab], self.tp[lab] + self.fp[lab])
            out[f"recall({lab})"] = _ratio(self.tp[lab], self.tp[lab] + self.fn[lab])
        tp = sum(self.tp[lab] for lab in self.labels)
        fp = sum(self.fp[lab] for lab in self.labels)
        fn = sum(self.fn[lab] for lab in self.labels)
        p, r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        out["precision"], out["recall"] = p, r
        out["f1"] = 2 * p * r / (p + r) if p is not None and r is not None and p + r > 0 else None
        return out


def pck(
    predicted: npt.NDArray[np.float64],
    reference: npt.NDArray[np.float64],
    width: int,
    height: int,
    alpha: float,
) -> tuple[int, int]:
    """(correct, total) keypoints of one pose; coordinates are normalized (x, y) rows."""
    scale = np.array([width, height], dtype=np.float64)
    ref_px = reference * scale
    size = float(np.max(ref_px.max(axis=0) - ref_px.min(axis=0)))
    dist = np.linalg.norm(predicted * scale - ref_px, axis=1)
    return int(np.count_nonzero(dist <= alpha * size)), len(reference)


def top_k_hit(
    scores: npt.NDArray[np.float32], labels: Sequence[str], expected: str, k: int
) -> bool:
    """True when ``expected`` is among the ``k`` best-scoring classes."""
    best = np.argsort(-scores, kind="stable")[:k]
    return any(i < len(labels) and labels[i] == expected for i in best)
