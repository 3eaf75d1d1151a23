"""Object detection: image → resize/letterbox → model → boxes in the original frame."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar, cast

import numpy as np
import numpy.typing as npt

from edged.catalog.resolve import ResolvedModel
from edged.decode.detection import DECODERS, DetectionDecoder
from edged.errors import ModelError
from edged.infer.base import Model
from edged.preprocess.image import ImageSpec, Letterbox, preprocess
from edged.tasks import StageTimes, VisionResult
from edged.types import Detection, Frame, Pose

#: A decoder's ``decode(outputs, letterbox, threshold)``.
Decode = Callable[
    [list[npt.NDArray[np.float32]], Letterbox, float], Sequence[Detection] | Sequence[Pose]
]


def check_expectation(resolved: ResolvedModel, model: Model) -> None:
    """Refuse a model file whose input differs from what its catalog entry declares."""
    entry = resolved.entry
    if entry is None or not entry.expect.input_shape:
        return
    spec = model.inputs[0]
    want_shape = tuple(entry.expect.input_shape)
    want_dtype = entry.expect.input_dtype
    if tuple(spec.shape) != want_shape or (want_dtype and spec.dtype != np.dtype(want_dtype)):
        raise ModelError(
            f"{resolved.path}: input {spec.name!r} is {list(spec.shape)} {spec.dtype}, "
            f"but catalog entry {resolved.name!r} expects {list(want_shape)} {want_dtype}"
        )


def image_spec(resolved: ResolvedModel, model: Model) -> ImageSpec:
    """The preprocessing of a vision model: its input tensor plus the catalog's hints."""
    h = resolved.hints
    return ImageSpec.from_tensor(
        model.inputs[0],
        color=h.color,
        resize=h.resize,
        anchor=h.anchor,
        pad_value=h.pad_value,
        mean=h.mean,
        std=h.std,
    )


T = TypeVar("T")


def pick_decoder(table: Mapping[str, T], name: str, what: str) -> T:
    """The decoder factory called ``name``; ModelError listing the known ones otherwise."""
    try:
        return table[name]
    except KeyError:
        known = ", ".join(sorted(table))
        raise ModelError(f"unknown {what} decoder {name!r} (known: {known})") from None


def run_timed(
    kind: str, spec: ImageSpec, model: Model, *, decode: Decode, frame: Frame, threshold: float
) -> VisionResult:
    """Preprocess, infer and decode one frame, timing each stage (shared by vision tasks)."""
    t0 = time.perf_counter()
    tensor, lb = preprocess(frame.image, spec)
    t1 = time.perf_counter()
    outputs = model.run([tensor])
    t2 = time.perf_counter()
    # A decoder returns only Detections or only Poses (Decode's type says so).
    items = cast("tuple[Detection, ...] | tuple[Pose, ...]", tuple(decode(outputs, lb, threshold)))
    t3 = time.perf_counter()
    return VisionResult(kind, items, StageTimes((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3))


class ModelTask:
    """One image model on frames: preprocessing, model and a checked decoder fixed at build.

    The subclasses (:class:`DetectionTask`, :class:`~edged.tasks.pose.PoseTask`)
    only say which decoder; a model whose input differs from its catalog entry,
    or whose outputs do not fit the decoder, is refused here with its shapes,
    so that ``edged check`` reports it before any frame is read.
    """

    kind: str

    def __init__(self, resolved: ResolvedModel, model: Model, decode: Decode) -> None:
        self._spec = image_spec(resolved, model)
        self._model = model
        self._decode = decode

    def __call__(self, frame: Frame, threshold: float) -> VisionResult:
        """The model's results on ``frame`` scored at least ``threshold``, with stage timings."""
        return run_timed(
            self.kind,
            self._spec,
            self._model,
            decode=self._decode,
            frame=frame,
            threshold=threshold,
        )


class DetectionTask(ModelTask):
    """Runs a detection model on frames; built once per pipeline."""

    kind = "detections"

    def __init__(self, resolved: ResolvedModel, model: Model) -> None:
        check_expectation(resolved, model)
        factory = pick_decoder(DECODERS, resolved.decoder, "detection")
        decoder: DetectionDecoder = factory(labels=resolved.labels)
        decoder.check(model.outputs)
        super().__init__(resolved, model, decoder.decode)
