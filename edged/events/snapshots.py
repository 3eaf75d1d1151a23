"""An event's best frame: kept while its track lives, written as JPEG when it ends.

The best frame is the one where the track scored highest. The pipeline's
frames are shared read-only between pipelines (see :mod:`edged.types`), so
the image is copied, and only when the score improves: a walking person
costs a handful of copies per event, not one per frame.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edged.events.store import EventStore
from edged.preprocess.jpeg import WHOLE, crop_region, prepare
from edged.track.tracker import Track
from edged.types import Box, Frame


@dataclass(frozen=True, slots=True)
class Best:
    """A track's best frame so far: its score, box, wall-clock time and a private image copy."""

    score: float
    box: Box
    ts: float
    image: npt.NDArray[np.uint8]


class BestFrames:
    """The best frame of every live track, by ``(pipeline, track id)``.

    Called from pipeline threads (each touches only its own keys); the lock
    keeps :meth:`pop` from the same thread and :meth:`stats` readers safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._best: dict[tuple[str, int], Best] = {}
        #: Frames copied because a track's score improved.
        self.copies = 0

    def observe(self, pipeline: str, frame: Frame, tracks: Sequence[Track]) -> None:
        """Keep ``frame`` for each track matched in it (``last_ts == frame.mono``) that scored
        higher than before; the tracker measures time in ``frame.mono``."""
        for t in tracks:
            if t.last_ts != frame.mono:  # kept alive but not seen in this frame
                continue
            key = (pipeline, t.id)
            with self._lock:
                best = self._best.get(key)
                if best is not None and t.score <= best.score:
                    continue
            image = np.array(frame.image, copy=True)  # never keep (or write) a shared frame
            with self._lock:
                self._best[key] = Best(t.score, t.box, frame.ts, image)
                self.copies += 1

    def get(self, pipeline: str, track_id: int) -> Best | None:
        """The best frame of a live track, if it was seen."""
        with self._lock:
            return self._best.get((pipeline, track_id))

    def pop(self, pipeline: str, track_id: int) -> Best | None:
        """Forget a track (its event ended); its best frame, if any."""
        with self._lock:
            return self._best.pop((pipeline, track_id), None)

    def drop_pipeline(self, pipeline: str) -> None:
        """Forget every track of a pipeline that finished."""
        with self._lock:
            for key in [k for k in self._best if k[0] == pipeline]:
                del self._best[key]


@dataclass(frozen=True, slots=True)
class Written:
    """Paths of the JPEGs written for one event, and the crop's pixel size."""

    snapshot: str
    crop: str
    crop_width: int
    crop_height: int


def write_snapshots(
    store: EventStore,
    pipeline: str,
    event_id: str,
    best: Best,
    *,
    quality: int,
    max_side: int,
    margin: float,
) -> tuple[Written, bytes]:
    """Write the full-frame and cropped JPEGs of ``best``; their paths and the full JPEG."""
    full = prepare(best.image, WHOLE, max_side=max_side, quality=quality)
    crop = prepare(best.image, crop_region([best.box], margin), max_side=max_side, quality=quality)
    snapshot_path = store.path(pipeline, event_id, "snapshot")
    crop_path = store.path(pipeline, event_id, "crop")
    store.write(snapshot_path, full.jpeg)
    store.write(crop_path, crop.jpeg)
    return Written(str(snapshot_path), str(crop_path), crop.width, crop.height), full.jpeg
