"""Sound events: label groups over audio windows, an optional loudness gate and WAV clips.

A group's score in one window is the best smoothed score among its labels
(YAMNet scores are independent sigmoids, so ``max`` keeps the meaning "how
sure is the model that one of these sounds is present"). Each group is an
:class:`~edged.events.onoff.Episode`; see ``[pipelines.sound_events]`` in
docs/configuration.md for the thresholds.
"""

from __future__ import annotations

import math
import wave
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import structlog

from edged.config.settings import GATE_OFF_DBFS, SoundEventSettings
from edged.events.onoff import Episode
from edged.tasks.audio import check_labels
from edged.types import Change, EventNote

log = structlog.get_logger(__name__)


def dbfs(window: npt.NDArray[np.float32]) -> float:
    """RMS level of ``window`` (samples in [-1, 1]) in dB full scale; -inf for silence."""
    rms = float(np.sqrt(np.mean(np.square(window, dtype=np.float64)))) if window.size else 0.0
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


class SampleRing:
    """The last ``capacity`` samples of a stream, addressed by stream index."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._chunks: deque[npt.NDArray[np.float32]] = deque()
        self._held = 0
        self.end = 0  # stream index one past the newest sample

    def push(self, samples: npt.NDArray[np.float32]) -> None:
        if not samples.size:
            return
        self._chunks.append(samples)
        self._held += samples.size
        self.end += samples.size
        while self._held - self._chunks[0].size >= self.capacity:
            self._held -= self._chunks.popleft().size

    def reset(self) -> None:
        """A new stream: indices start at 0 again."""
        self._chunks.clear()
        self._held = 0
        self.end = 0

    def slice(self, start: int, stop: int) -> npt.NDArray[np.float32]:
        """Samples ``[start, stop)`` that are still held (clipped to what is)."""
        first = self.end - self._held
        start, stop = max(start, first), min(stop, self.end)
        if stop <= start:
            return np.zeros(0, np.float32)
        held = np.concatenate(list(self._chunks))
        return held[start - first : stop - first]


def write_wav_clip(
    directory: Path, name: str, samples: npt.NDArray[np.float32], rate: int, max_mb: float
) -> Path:
    """Write ``samples`` as 16-bit mono WAV ``directory/name`` and keep the directory bounded.

    The oldest ``*.wav`` files (by modification time) are removed until the
    directory holds at most ``max_mb`` MiB; the new clip is never removed.
    (Sound events' own writer: the video event store keeps its files apart.)
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    tmp = path.with_suffix(".wav.part")
    with wave.open(str(tmp), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    tmp.replace(path)  # a reader never sees half a clip
    limit = max_mb * 2**20
    clips = sorted(
        (p for p in directory.glob("*.wav") if p != path), key=lambda p: p.stat().st_mtime
    )
    total = path.stat().st_size + sum(p.stat().st_size for p in clips)
    for old in clips:
        if total <= limit:
            break
        total -= old.stat().st_size
        old.unlink(missing_ok=True)
        log.info("sound.clip_evicted", path=str(old))
    return path


class SoundEvents:
    """The sound-event state of one audio pipeline (one stream)."""

    def __init__(
        self,
        pipeline: str,
        settings: SoundEventSettings,
        labels: Sequence[str],
        rate: int,
        window_s: float,
    ) -> None:
        check_labels(labels, [name for group in settings.groups.values() for name in group])
        self.pipeline = pipeline
        self.settings = settings
        self.rate = rate
        self.window_s = window_s
        index = {name: i for i, name in enumerate(labels)}
        self._groups: dict[str, tuple[list[str], npt.NDArray[np.intp]]] = {}
        for group, names in settings.groups.items():
            # A model without labels names classes by id (checked above to be digits).
            ids = [index[n] if n in index else int(n) for n in names]
            self._groups[group] = (list(names), np.array(ids, np.intp))
        self._episodes = {
            g: Episode(settings.min_s, settings.hangover_s, settings.update_s) for g in self._groups
        }
        # Best score per label while an event is open: its ``data.labels``.
        self._matched: dict[str, dict[str, float]] = {g: {} for g in self._groups}
        self._ring: SampleRing | None = None
        if settings.clip_dir is not None:
            keep = settings.pre_roll_s + settings.max_clip_s + settings.hangover_s + 2 * window_s
            self._ring = SampleRing(round(keep * rate))
        self._anchor: tuple[float, int] = (0.0, 0)  # (ts, stream index) of the last window
        #: Windows the loudness gate kept from the model.
        self.gated = 0

    # -- audio in ----------------------------------------------------------

    def push(self, samples: npt.NDArray[np.float32]) -> None:
        """Samples at the model rate, in stream order (for clips)."""
        if self._ring is not None:
            self._ring.push(samples)

    def reset_stream(self) -> None:
        """The stream restarted (gap, new file): clip indices start over."""
        if self._ring is not None:
            self._ring.reset()

    def quiet(self, window: npt.NDArray[np.float32]) -> bool:
        """True when the gate is on and ``window`` is quieter than it."""
        gate = self.settings.gate_dbfs
        return gate > GATE_OFF_DBFS and dbfs(window) < gate

    # -- windows -------------------------------------------------------------

    def observe(
        self, ts: float, index: int, scores: npt.NDArray[np.float32] | None
    ) -> list[EventNote]:
        """One window starting at ``ts`` (stream sample ``index``); ``scores`` None = gated."""
        self._anchor = (ts, index)
        if scores is None:
            self.gated += 1
        notes: list[EventNote] = []
        threshold = self.settings.threshold
        for group, (names, ids) in self._groups.items():
            values = scores[ids] if scores is not None else np.zeros(len(ids), np.float32)
            best = float(values.max())
            on = best >= threshold
            if on:
                seen = self._matched[group]
                for name, value in zip(names, values.tolist(), strict=True):
                    if value >= threshold:
                        seen[name] = max(seen.get(name, 0.0), float(value))
            change = self._episodes[group].step(ts, on, min(1.0, best), self.window_s)
            if change is not None:
                notes.append(self._note(group, change))
        return notes

    def close(self) -> list[EventNote]:
        """End every open event (the stream ended or the pipeline stops)."""
        notes: list[EventNote] = []
        for group, episode in self._episodes.items():
            change = episode.close()
            if change is not None:
                notes.append(self._note(group, change))
        return notes

    def _note(self, group: str, change: Change) -> EventNote:
        matched = self._matched[group]
        data: dict[str, object] = {
            "labels": sorted(matched, key=lambda n: -matched[n]),
            "scores": {n: round(v, 4) for n, v in matched.items()},
        }
        clip, clip_s = None, None
        if change.phase == "end":
            self._matched[group] = {}
            clip, clip_s = self._clip(group, change)
        return EventNote(
            type="sound",
            label=group,
            change=change,
            data=data,  # type: ignore[arg-type]  # str lists and float dicts are JSON values
            clip=clip,
            clip_s=clip_s,
        )

    def _clip(self, group: str, change: Change) -> tuple[str | None, float | None]:
        """Write the event's audio (with pre-roll); a failure costs the clip, not the event."""
        directory = self.settings.clip_dir
        if self._ring is None or directory is None or change.end is None:
            return None, None
        ts, index = self._anchor
        stop = index + round((change.end - ts) * self.rate)
        begin = max(change.start - self.settings.pre_roll_s, change.end - self.settings.max_clip_s)
        start = index + round((begin - ts) * self.rate)
        samples = self._ring.slice(start, stop)
        if not samples.size:
            return None, None
        name = f"{self.pipeline}-{group}-{change.event_id}.wav"
        try:
            path = write_wav_clip(directory, name, samples, self.rate, self.settings.clip_max_mb)
        except OSError as exc:
            log.warning("sound.clip_failed", path=str(directory / name), error=str(exc))
            return None, None
        return str(path), round(samples.size / self.rate, 3)
