"""An event's best frame: kept while its track lives, written as JPEG when it ends.

The best frame is the one where the track scored highest. The pipeline's
frames are shared read-only between pipelines (see :mod:`edged.types`), so
the image is copied, and only when the score improves: a walking person
costs a handful of copies per event, not one per frame.

Memory: the copies go into a few reused buffers, never into a fresh
allocation per copy. A frame-sized array (1 MB at 768x432) that lives for a
track's whole life, allocated by a pipeline thread and freed by the recorder's
worker, left frame-sized holes in the allocator's heaps: in 5-minute soaks
resident memory rose in 1 MB steps, 3 to 5 MB after warm-up (README
"Events"). A track overwrites its own buffer when its score improves, and an
ended event's buffer, once its JPEGs are written, goes back to a small pool
(:data:`MAX_SPARE`) for the next track: in steady state no frame-sized array is
allocated at all.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from edged.events.store import EventStore
from edged.preprocess.jpeg import WHOLE, crop_region, prepare
from edged.track.tracker import Track
from edged.types import Box, Frame

#: Image buffers of ended events kept for the next tracks; more are freed. Enough
#: for the few people a camera sees come and go at once.
MAX_SPARE: Final = 4


@dataclass(frozen=True, slots=True)
class Best:
    """A track's best frame so far: its score, box, wall-clock time and a private image copy.

    ``image`` is a buffer of :class:`BestFrames`, overwritten while the track lives; once
    the track is popped it belongs to the caller until handed back with
    :meth:`BestFrames.release`.
    """

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
        self._spare: list[npt.NDArray[np.uint8]] = []
        #: Frames copied because a track's score improved.
        self.copies = 0
        #: Image buffers allocated (a copy into a reused buffer allocates nothing).
        self.allocated = 0

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
            # Never keep (or write) the shared frame: copy it into this track's own buffer.
            image = self._buffer(best, frame.image)
            np.copyto(image, frame.image)
            with self._lock:
                self._best[key] = Best(t.score, t.box, frame.ts, image)
                self.copies += 1

    def _buffer(self, best: Best | None, like: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """The track's own buffer, else a spare one, else a new one, shaped like ``like``."""
        if best is not None:
            if best.image.shape == like.shape:
                return best.image  # only this pipeline's thread writes it
            self.release(best.image)  # the source changed size
        with self._lock:
            for i, spare in enumerate(self._spare):
                if spare.shape == like.shape:
                    return self._spare.pop(i)
            self.allocated += 1
        return np.empty(like.shape, np.uint8)

    def release(self, image: npt.NDArray[np.uint8]) -> None:
        """Hand back the image of a popped :class:`Best` once it is written (or dropped)."""
        with self._lock:
            self._spare.append(image)
            if len(self._spare) > MAX_SPARE:
                del self._spare[0]  # the oldest: perhaps of a size no longer seen

    def get(self, pipeline: str, track_id: int) -> Best | None:
        """The best frame of a live track, if it was seen."""
        with self._lock:
            return self._best.get((pipeline, track_id))

    def pop(self, pipeline: str, track_id: int) -> Best | None:
        """Forget a track (its event ended); its best frame, if any, whose image the
        caller hands back with :meth:`release` when done with it."""
        with self._lock:
            return self._best.pop((pipeline, track_id), None)

    def drop_pipeline(self, pipeline: str) -> None:
        """Forget every track of a pipeline that finished."""
        with self._lock:
            dropped = [self._best.pop(k) for k in [k for k in self._best if k[0] == pipeline]]
        for best in dropped:
            self.release(best.image)


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
