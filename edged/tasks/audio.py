"""Audio classification: one window of 16 kHz mono samples → model → top-k classes.

The task is stateless and works on one window; cutting the stream into
windows, resampling and smoothing over windows belong to the pipeline
(:mod:`edged.runtime.audio`), which owns the per-stream state.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edged.catalog.labels import nearest
from edged.catalog.resolve import ResolvedModel
from edged.decode.audio import DECODERS, AudioDecoder, ScoreSmoother
from edged.decode.audio import top_k as best_classes
from edged.errors import ModelError
from edged.infer.base import Model
from edged.tasks import StageTimes
from edged.tasks.detection import pick_decoder
from edged.types import AudioClass

#: Sample rate the audio models of the catalog expect, Hz.
MODEL_RATE = 16000
#: Samples per window: 0.975 s at 16 kHz, YAMNet's fixed input.
WINDOW = 15600


@dataclass(frozen=True, slots=True)
class AudioTaskResult:
    """Decoded result of one window.

    ``classes`` is the top-k (best first); ``scores`` holds every class's
    score (after smoothing), indexed by class id, for consumers that
    aggregate over a clip or apply their own policy.
    """

    classes: tuple[AudioClass, ...]
    timing: StageTimes
    scores: npt.NDArray[np.float32]

    @property
    def top_score(self) -> float:
        """Score of the best reported class (0 when none is reported)."""
        return self.classes[0].score if self.classes else 0.0


def check_labels(labels: Sequence[str], names: Iterable[str]) -> None:
    """Raise ModelError for names not in ``labels`` (a typo would filter out everything)."""
    if not labels:
        return  # a model without labels reports class ids; nothing to check against
    known = set(labels)
    for name in names:
        if name not in known:
            close = nearest(name, labels)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise ModelError(f"label {name!r} is not a class of this model{hint}")


class AudioTask:
    """Runs an audio classifier on windows; built once per pipeline."""

    kind = "audio"

    def __init__(self, resolved: ResolvedModel, model: Model) -> None:
        if len(model.inputs) != 1:
            shapes = [list(i.shape) for i in model.inputs]
            raise ModelError(
                f"{resolved.path}: an audio model takes one input, this one takes {shapes}"
            )
        spec = model.inputs[0]
        if spec.shape not in ((WINDOW,), (1, WINDOW)) or spec.dtype != np.float32:
            raise ModelError(
                f"{resolved.path}: input {spec.name!r} is {list(spec.shape)} {spec.dtype}, but the "
                f"audio task feeds [{WINDOW}] or [1, {WINDOW}] float32 "
                f"({WINDOW / MODEL_RATE} s of {MODEL_RATE} Hz mono)"
            )
        factory = pick_decoder(DECODERS, resolved.decoder, "audio")
        self.decoder: AudioDecoder = factory(labels=resolved.labels)
        try:
            self.decoder.check(model.outputs)
        except ModelError as exc:
            raise ModelError(f"{resolved.path}: {exc}") from None
        self.labels = resolved.labels
        #: Rate and length of the windows :meth:`__call__` takes.
        self.rate = MODEL_RATE
        self.window = WINDOW
        self._shape = spec.shape
        self._model = model

    def __call__(
        self,
        window: npt.NDArray[np.float32],
        top_k: int,
        labels_allow: Collection[str] = (),
        smoother: ScoreSmoother | None = None,
    ) -> AudioTaskResult:
        """Classify one window of :attr:`window` samples at :attr:`rate` Hz.

        ``smoother`` (owned by the caller, one per stream) averages the scores
        over recent windows before the top-k is taken.
        """
        if window.shape != (self.window,):
            raise ValueError(
                f"audio task takes windows of {self.window} samples, got {window.shape}"
            )
        t0 = time.perf_counter()
        tensor = np.ascontiguousarray(window, dtype=np.float32).reshape(self._shape)
        t1 = time.perf_counter()
        outputs = self._model.run([tensor])
        t2 = time.perf_counter()
        scores = self.decoder.scores(outputs)
        if smoother is not None:
            scores = smoother(scores)
        classes = best_classes(scores, self.labels, top_k, labels_allow)
        t3 = time.perf_counter()
        return AudioTaskResult(
            classes, StageTimes((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3), scores
        )
