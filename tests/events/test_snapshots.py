"""Best frames: each track's copy lives in a reused buffer, never in one allocation per copy."""

from __future__ import annotations

import numpy as np

from edged.events.snapshots import MAX_SPARE, BestFrames
from edged.track.tracker import Track
from edged.types import Frame


def frame(i: int, shape: tuple[int, int, int] = (90, 160, 3)) -> Frame:
    return Frame(
        id=i, ts=1e9 + i, mono=100.0 + i, source="cam0", image=np.full(shape, i % 256, np.uint8)
    )


def seen(track_id: int, f: Frame, score: float) -> list[Track]:
    return [Track(track_id, "person", (0.1, 0.1, 0.5, 0.9), score, 100.0, f.mono, 2)]


def test_a_track_overwrites_its_own_buffer_when_its_score_improves() -> None:
    """Scores 0.5, 0.6, 0.7: three copies into one buffer, which holds the last frame."""
    best = BestFrames()
    for i, score in enumerate((0.5, 0.6, 0.7)):
        f = frame(i)
        best.observe("door", f, seen(1, f, score))
    got = best.get("door", 1)
    assert got is not None
    assert (best.copies, best.allocated) == (3, 1)
    assert (got.image == 2).all()


def test_ended_tracks_hand_their_buffers_to_the_next_tracks() -> None:
    """1000 tracks one after another, each released once written: one buffer in all;
    a frame of another size gets its own; the pool keeps at most MAX_SPARE."""
    best = BestFrames()
    for track_id in range(1, 1001):
        for k in range(3):
            f = frame(track_id * 3 + k)
            best.observe("door", f, seen(track_id, f, 0.5 + k / 10))
        popped = best.pop("door", track_id)
        assert popped is not None
        best.release(popped.image)
    assert (best.copies, best.allocated) == (3000, 1)
    f = frame(0, shape=(180, 320, 3))
    best.observe("door", f, seen(5000, f, 0.5))
    assert best.allocated == 2
    for track_id in range(6000, 6000 + MAX_SPARE + 3):
        best.observe("yard", f, seen(track_id, f, 0.5))
    allocated = best.allocated
    best.drop_pipeline("yard")
    assert best.get("yard", 6000) is None
    for track_id in range(7000, 7000 + MAX_SPARE + 3):
        best.observe("yard", f, seen(track_id, f, 0.5))
    # MAX_SPARE of the dropped buffers came back; the other 3 are new.
    assert best.allocated == allocated + 3
