"""Run a task over a golden set: inputs prepared as the pipelines prepare them, then metrics.

Media are decoded once, before the model is loaded, so that neither the
latency loop nor the memory measurement pays for JPEG or WAV decoding. The
task is the pipeline's own task object (same preprocessing, model and
decoder), so a golden-set score is what a pipeline would have produced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edged.label.golden import (
    GoldenItem,
    GoldenSet,
    Sound,
    media_path,
    read_image,
    read_keypoints,
    read_sound,
)
from edged.label.metrics import DetectionCounts, pck, top_k_hit
from edged.label.nutrition import Accuracy
from edged.types import Detection, Frame, Pose

#: Audio windows overlap by half (0.4875 s hop), as in the verified YAMNet protocol.
AUDIO_HOP_FRACTION = 0.5


@dataclass
class Prepared:
    """A golden set's inputs, decoded: frames for vision tasks, raw sounds for audio."""

    golden: GoldenSet
    frames: list[Frame] = field(default_factory=list)
    sounds: list[Sound] = field(default_factory=list)
    references: dict[int, npt.NDArray[np.float64]] = field(default_factory=dict)


def prepare(golden: GoldenSet, media: Path) -> Prepared:
    """Decode every item's media (and pose references) from the media dir."""
    out = Prepared(golden)
    for index, item in enumerate(golden.items):
        path = media_path(media, item.media)
        if golden.task == "audio":
            out.sounds.append(read_sound(path))
            continue
        image = read_image(path)
        out.frames.append(Frame(id=index, ts=0.0, mono=0.0, source="golden", image=image))
        if item.keypoints_csv:
            out.references[index] = read_keypoints(media_path(media, item.keypoints_csv))
    return out


def audio_windows(sound: Sound, rate: int, size: int) -> list[npt.NDArray[np.float32]]:
    """The clip resampled to ``rate`` and cut into windows of ``size`` with a half-window hop."""
    from edged.preprocess.audio import Resampler, Windower  # noqa: PLC0415  (soxr only for audio)

    resampler = Resampler(sound.rate, rate)
    samples = np.concatenate([resampler.process(sound.samples), resampler.flush()])
    windower = Windower(size, max(1, int(size * AUDIO_HOP_FRACTION)))
    windower.push(samples.astype(np.float32, copy=False))
    windows = []
    while (item := windower.pop()) is not None:
        windows.append(item[1])
    if not windows and len(samples):
        # A clip shorter than one window is zero-padded, as a short sound would be live.
        padded = np.zeros(size, dtype=np.float32)
        padded[: len(samples)] = samples[:size]
        windows.append(padded)
    return windows


class Evaluation:
    """Binds a golden set's prepared inputs to a task: accuracy and a latency workload."""

    def __init__(self, prepared: Prepared, task: Any) -> None:
        self.prepared = prepared
        self.golden = prepared.golden
        self.task = task
        # Audio windows depend on the task's rate and window size: cut once here.
        self.windows: list[list[npt.NDArray[np.float32]]] = [
            audio_windows(s, task.rate, task.window) for s in prepared.sounds
        ]

    def workload(self) -> tuple[int, Callable[[int], float]]:
        """(number of distinct inputs, run input ``i`` and return its inference ms)."""
        threshold = self.golden.threshold
        if self.golden.task == "audio":
            flat = [w for clip in self.windows for w in clip]

            def run_audio(i: int) -> float:
                return float(self.task(flat[i % len(flat)], 3).timing.infer)

            return len(flat), run_audio
        frames = self.prepared.frames

        def run_frame(i: int) -> float:
            return float(self.task(frames[i % len(frames)], threshold).timing.infer)

        return len(frames), run_frame

    def accuracy(self) -> Accuracy:
        """Run every item once and compute the task's metrics."""
        if self.golden.task == "detection":
            return self._detection()
        if self.golden.task == "pose":
            return self._pose()
        return self._audio()

    def _detection(self) -> Accuracy:
        g = self.golden
        counts = DetectionCounts(tuple(g.labels))
        details = []
        for item, frame in zip(g.items, self.prepared.frames, strict=True):
            found = [d for d in self.task(frame, g.threshold).items if isinstance(d, Detection)]
            expected = [(b.label, b.box) for b in item.boxes]
            per = counts.add(expected, found, g.iou)
            details.append({"media": item.media, **per})
        return Accuracy(
            golden=g.name, items=len(g.items), metrics=counts.metrics(), details=details
        )

    def _pose(self) -> Accuracy:
        g = self.golden
        correct = total = tp = fp = fn = 0
        details: list[dict[str, Any]] = []
        for index, (item, frame) in enumerate(zip(g.items, self.prepared.frames, strict=True)):
            poses = [p for p in self.task(frame, g.threshold).items if isinstance(p, Pose)]
            has_person = index in self.prepared.references or bool(item.person)
            entry = _pose_detail(item, poses, has_person)
            if has_person:
                tp, fn = (tp + 1, fn) if poses else (tp, fn + 1)
            elif poses:
                fp += 1
            ref = self.prepared.references.get(index)
            if ref is not None:
                got = 0
                if poses:
                    xy = np.array([[k.x, k.y] for k in poses[0].keypoints], dtype=np.float64)
                    got, _ = pck(xy, ref, frame.width, frame.height, g.pck_alpha)
                correct, total = correct + got, total + len(ref)
                entry["pck"] = round(got / len(ref), 4)
            details.append(entry)
        metrics: dict[str, float | None] = {
            "pck": correct / total if total else None,
            "recall(person)": tp / (tp + fn) if tp + fn else None,
            "precision(person)": tp / (tp + fp) if tp + fp else None,
        }
        return Accuracy(golden=g.name, items=len(g.items), metrics=metrics, details=details)

    def _audio(self) -> Accuracy:
        g = self.golden
        hits = {1: 0, 3: 0}
        details = []
        labels = tuple(self.task.labels)
        for item, windows in zip(g.items, self.windows, strict=True):
            scores = np.mean([self.task(w, 3).scores for w in windows], axis=0)
            for k in hits:
                hits[k] += top_k_hit(scores, labels, item.expect, k)
            best = [labels[i] if i < len(labels) else str(i) for i in np.argsort(-scores)[:3]]
            details.append({"media": item.media, "expect": item.expect, "top3": best})
        n = len(g.items)
        metrics: dict[str, float | None] = {"top1": hits[1] / n, "top3": hits[3] / n}
        return Accuracy(golden=g.name, items=n, metrics=metrics, details=details)


def _pose_detail(item: GoldenItem, poses: list[Pose], has_person: bool) -> dict[str, Any]:
    score = round(poses[0].score, 3) if poses else None
    return {"media": item.media, "person": has_person, "pose_score": score}
