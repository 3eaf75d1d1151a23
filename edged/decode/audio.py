"""Audio classifier outputs → per-class scores → top-k :class:`~edged.types.AudioClass` es.

Two families, chosen by name from :data:`DECODERS`:

- ``yamnet``: one independent score per class (multi-label, sigmoid), as
  YAMNet and other AudioSet taggers emit them: speech *and* music can both be
  near 1. The TFLite YAMNet already applies the sigmoid, so scores are used as
  they come (clipped to [0, 1] against float noise).
- ``softmax``: one distribution over mutually exclusive classes (keyword
  spotters, scene classifiers). Logits are turned into probabilities; an
  output that already is a distribution (the model ends in a softmax layer)
  is used as it is, since a second softmax would flatten it towards uniform.

Decoders are stateless; :class:`ScoreSmoother` holds the per-pipeline state
for averaging over recent windows.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edged.errors import DecodeError, ModelError
from edged.infer.base import TensorSpec
from edged.types import AudioClass

Scores = npt.NDArray[np.float32]


class AudioDecoder(Protocol):
    """Turns a model's outputs for one window into one score per class, in [0, 1]."""

    name: str
    labels: tuple[str, ...]

    def check(self, outputs: Sequence[TensorSpec]) -> None:
        """Raise ModelError, naming the shapes, when the outputs do not fit this decoder."""
        ...

    def scores(self, outputs: Sequence[npt.NDArray[np.float32]]) -> Scores:
        """Scores of one window, shape ``(classes,)``."""
        ...


def _class_count(name: str, labels: tuple[str, ...], outputs: Sequence[TensorSpec]) -> int:
    """The number of classes of a ``[1, C]`` or ``[C]`` output, checked against the labels."""
    shapes = [list(o.shape) for o in outputs]
    if len(outputs) != 1:
        raise ModelError(f"{name} decoder expects one output [1, classes], the model has {shapes}")
    shape = outputs[0].shape
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[0] != 1) or shape[-1] < 1:
        raise ModelError(
            f"{name} decoder expects an output [1, classes] or [classes], got {shapes[0]}"
        )
    count = shape[-1]
    if labels and len(labels) != count:
        raise ModelError(
            f"{name} decoder: the model scores {count} classes, but {len(labels)} labels were given"
        )
    return count


def _flat(outputs: Sequence[npt.NDArray[np.float32]]) -> Scores:
    if len(outputs) != 1:
        raise DecodeError(f"expected one output array, got {len(outputs)}")
    return np.asarray(outputs[0], dtype=np.float32).reshape(-1)


class YamnetDecoder:
    """Multi-label scores used as they come (YAMNet's outputs are post-sigmoid)."""

    name = "yamnet"

    def __init__(self, labels: tuple[str, ...] = ()) -> None:
        self.labels = labels

    def check(self, outputs: Sequence[TensorSpec]) -> None:
        """Refuse anything but one ``[1, C]`` / ``[C]`` output matching the labels."""
        _class_count(self.name, self.labels, outputs)

    def scores(self, outputs: Sequence[npt.NDArray[np.float32]]) -> Scores:
        """The output clipped to [0, 1]."""
        return np.clip(_flat(outputs), 0.0, 1.0)


class SoftmaxDecoder:
    """Single-label scores: softmax of logits, or the model's own distribution."""

    name = "softmax"
    #: An output counts as a distribution when it sums to 1 within this.
    SUM_TOLERANCE = 1e-3

    def __init__(self, labels: tuple[str, ...] = ()) -> None:
        self.labels = labels

    def check(self, outputs: Sequence[TensorSpec]) -> None:
        """Refuse anything but one ``[1, C]`` / ``[C]`` output (C ≥ 2) matching the labels."""
        if _class_count(self.name, self.labels, outputs) < 2:
            raise ModelError(
                f"softmax decoder needs at least 2 classes, got {list(outputs[0].shape)}"
            )

    def scores(self, outputs: Sequence[npt.NDArray[np.float32]]) -> Scores:
        """Probabilities over the classes."""
        x = _flat(outputs).astype(np.float64)
        if x.min() >= 0.0 and x.max() <= 1.0 and abs(x.sum() - 1.0) <= self.SUM_TOLERANCE:
            return x.astype(np.float32)
        e = np.exp(x - x.max())  # shifted: exp of large logits would overflow
        probs: Scores = (e / e.sum()).astype(np.float32)
        return probs


#: decoder name → factory taking ``labels=``.
DECODERS: dict[str, Callable[..., AudioDecoder]] = {
    "yamnet": YamnetDecoder,
    "softmax": SoftmaxDecoder,
}


class ScoreSmoother:
    """Mean of the scores of the last ``windows`` windows (1: no smoothing).

    Averaging overlapping windows steadies a label that flickers between
    neighbouring classes (Dog / Animal / Bark) without the delay of a longer
    model window.
    """

    def __init__(self, windows: int) -> None:
        if windows < 1:
            raise ValueError(f"smoothing needs at least 1 window, got {windows}")
        self.windows = windows
        self._recent: deque[Scores] = deque(maxlen=windows)

    def __call__(self, scores: Scores) -> Scores:
        """Add one window's scores and return the mean over the recent ones."""
        if self.windows == 1:
            return scores
        self._recent.append(scores)
        mean: Scores = np.mean(np.stack(self._recent), axis=0, dtype=np.float32)
        return mean

    def reset(self) -> None:
        """Forget the recent windows (after a gap in the audio)."""
        self._recent.clear()


def top_k(
    scores: Scores, labels: Sequence[str], k: int, allow: Collection[str] = ()
) -> tuple[AudioClass, ...]:
    """The ``k`` best classes, best first, among ``allow`` when it is not empty.

    Classes without a label are named by their index, so that a model given
    without a label file still reports something usable.
    """
    if allow:
        ids = np.array(
            [i for i in range(len(scores)) if _label(labels, i) in allow], dtype=np.int64
        )
    else:
        ids = np.arange(len(scores))
    if k <= 0 or ids.size == 0:
        return ()
    subset = scores[ids]
    # argpartition is O(C); only the k survivors are sorted.
    part = np.argpartition(-subset, k - 1)[:k] if k < ids.size else np.arange(ids.size)
    best = part[np.argsort(-subset[part], kind="stable")]
    return tuple(
        AudioClass(label=_label(labels, int(ids[j])), class_id=int(ids[j]), score=float(subset[j]))
        for j in best
    )


def _label(labels: Sequence[str], index: int) -> str:
    return labels[index] if index < len(labels) else str(index)
