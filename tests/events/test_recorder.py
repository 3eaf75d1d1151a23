"""The event recorder with real files and a real encoder: clips cut by frame time, failures counted."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np

from edged.config.settings import EventsSettings
from edged.events.clips import Recording, choose_encoder
from edged.events.recorder import MAX_QUEUED_FRAMES, EventRecorder
from edged.publish.payloads import EventResult, iso_utc
from edged.track.tracker import Track
from edged.types import Frame
from tests.helpers.video import ffprobe

T0 = 1_800_000_000.0
FPS = 10.0


def image(i: int) -> np.ndarray:
    """A 320x180 frame whose brightness encodes its index (so frames differ)."""
    img = np.full((180, 320, 3), (i * 7) % 255, np.uint8)
    cv2.putText(img, str(i), (10, 100), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 0, 0), 3)
    return img


def frame(i: int) -> Frame:
    """Frame ``i`` of a 10 fps source; ``mono`` is the tracker's clock, ``ts`` the wall clock."""
    return Frame(id=i, ts=T0 + i / FPS, mono=100.0 + i / FPS, source="cam0", image=image(i))


def end_payload(event_id: str, start: float, end: float) -> EventResult:
    return EventResult(
        ts=iso_utc(end),
        device="dev",
        pipeline="door",
        source="cam0",
        event="end",
        type="object",
        event_id=event_id,
        label="person",
        track_id=1,
        start=iso_utc(start),
        end=iso_utc(end),
        duration_s=end - start,
        score=0.7,
        top_score=0.8,
        box=(0.25, 0.25, 0.5, 0.75),
    )


class Published:
    """Collects what the recorder publishes, from its worker thread."""

    def __init__(self) -> None:
        self.items: list[EventResult] = []
        self.cond = threading.Condition()

    def __call__(self, payload: EventResult) -> None:
        with self.cond:
            self.items.append(payload)
            self.cond.notify_all()

    def wait(self, n: int, timeout: float = 20.0) -> list[EventResult]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.items) >= n, timeout), self.items
            return list(self.items)


def test_recording_spans_pre_roll_event_and_post_roll_in_frame_time(tmp_path: Path) -> None:
    """Frames at irregular times give a constant-rate clip as long as its frame-time span."""
    path = tmp_path / "c.mp4"
    rec = Recording(path, T0 + 1.0, fps=FPS, lag_s=2.5, encoder=choose_encoder())
    rng = np.random.default_rng(1)
    ts = T0
    while ts < T0 + 9.0:
        ok, buf = cv2.imencode(".jpg", image(int(ts * 10) % 100))
        assert ok
        rec.feed(ts, buf.tobytes())
        ts += rng.uniform(0.03, 0.25)  # a pipeline's jittery rate
    rec.end = T0 + 7.0
    duration = rec.finish(rec.end)
    probed, _ = ffprobe(str(path))
    assert abs(duration - 6.0) <= 0.11
    assert abs(probed - 6.0) <= 0.15


def test_snapshots_and_clip_of_an_event_then_end_published(tmp_path: Path) -> None:
    """A track seen in frames 20..60 (best at frame 40): the end names a full and a cropped
    JPEG of frame 40 and an MP4 of 2 s pre-roll + 4 s + 1 s post-roll; the end waits for it."""
    published = Published()
    settings = EventsSettings(
        snapshots=True, clips=True, pre_roll_s=2.0, post_roll_s=1.0, crop_margin=0.0
    )
    rec = EventRecorder(settings, tmp_path / "events", published)
    rec.start()
    try:
        box = (0.25, 0.25, 0.5, 0.75)
        for i in range(75):
            f = frame(i)
            tracks = []
            if 20 <= i <= 60:
                score = 0.9 if i == 40 else 0.6
                tracks = [Track(1, "person", box, score, 102.0, f.mono, i - 19)]
            rec.observe("door", f, tracks)
            # A pipeline gives the worker a frame's inference time; this loop gives none.
            deadline = time.monotonic() + 5
            while rec.queued_frames and time.monotonic() < deadline:
                time.sleep(0.002)
            if i == 21:
                rec.opened("door", 1, "ev1", T0 + 2.0)
            if i == 66:  # the tracker ends a track max_age after it was last seen
                assert rec.top("door", 1) is not None
                rec.ended("door", 1, end_payload("ev1", T0 + 2.0, T0 + 6.0), T0 + 6.0)
        (end,) = published.wait(1)
    finally:
        rec.stop()
    media = end.media
    assert media is not None
    assert media.snapshot is not None
    assert media.crop is not None
    assert media.clip is not None
    full = cv2.imread(media.snapshot)
    assert full.shape == (180, 320, 3)
    assert abs(int(full[170, 300, 2]) - (40 * 7) % 255) <= 8  # frame 40's brightness (BGR)
    crop = cv2.imread(media.crop)
    assert crop.shape[:2] == (90, 80)  # the box, 0.25 x 0.5 of 320 x 180
    probed, codec = ffprobe(media.clip)
    assert abs(probed - 7.0) <= 0.5
    assert media.clip_duration_s is not None
    assert abs(media.clip_duration_s - 7.0) <= 0.15
    if choose_encoder() != "opencv-mp4v":
        assert codec == "h264"
    assert rec.stats()["clips"] == 1
    assert rec.stats()["frames_skipped"] == 0
    assert rec.stats()["failures"] == {}


def test_an_unwritable_store_still_publishes_the_end_and_counts_the_failure(
    tmp_path: Path,
) -> None:
    """With the store's path taken by a file, the end goes out without media, the failure is
    counted by stage, and the worker keeps working."""
    blocker = tmp_path / "events"
    blocker.write_text("not a directory")
    published = Published()
    rec = EventRecorder(EventsSettings(snapshots=True), blocker, published)
    rec.start()
    try:
        for n, eid in enumerate(("a1", "a2")):
            f = frame(n)
            rec.observe(
                "door", f, [Track(n, "person", (0.1, 0.1, 0.5, 0.5), 0.8, f.mono, f.mono, 2)]
            )
            rec.opened("door", n, eid, f.ts)
            rec.ended("door", n, end_payload(eid, f.ts, f.ts), f.ts)
        ends = published.wait(2)
    finally:
        rec.stop()
    assert [e.event_id for e in ends] == ["a1", "a2"]
    assert all(e.media is None for e in ends)
    assert rec.stats()["failures"] == {"snapshot": 2}


def test_best_frame_is_copied_only_when_the_score_improves() -> None:
    """Scores 0.5, 0.4, 0.6, 0.6, 0.3: two copies (0.5 and 0.6), none of the shared frame."""
    rec = EventRecorder(EventsSettings(snapshots=True), Path("/nonexistent"), lambda _p: None)
    shared = []
    for i, score in enumerate((0.5, 0.4, 0.6, 0.6, 0.3)):
        f = frame(i)
        shared.append(f.image)
        rec.observe("door", f, [Track(1, "person", (0, 0, 1, 1), score, 100.0, f.mono, i + 1)])
    best = rec.top("door", 1)
    assert best is not None
    assert best.score == 0.6
    assert rec.best.copies == 2
    assert not any(np.shares_memory(best.image, s) for s in shared)


def test_events_one_after_another_reuse_one_image_buffer(tmp_path: Path, media_dir: Path) -> None:
    """100 events on frames of the walking clip, each a track whose score improves in 5
    frames: 500 copies, all into one buffer, which each end hands back once its JPEGs are
    written; no live track or open event is left. One fresh 1 MB copy per improvement made
    resident memory grow in the soak (events/snapshots.py)."""
    cap = cv2.VideoCapture(str(media_dir / "person_walking_0-30s.mp4"))
    clip = []
    while len(clip) < 10:
        ok, bgr = cap.read()
        assert ok
        clip.append(np.ascontiguousarray(bgr[:, :, ::-1]))
    cap.release()
    published = Published()
    rec = EventRecorder(EventsSettings(snapshots=True), tmp_path / "events", published)
    rec.start()
    try:
        i = 0
        for n in range(1, 101):
            for k in range(5):
                i += 1
                f = Frame(
                    id=i, ts=T0 + i / FPS, mono=100 + i / FPS, source="cam0", image=clip[i % 10]
                )
                track = Track(n, "person", (0.3, 0.2, 0.5, 0.9), 0.5 + k / 20, 100.0, f.mono, k + 2)
                rec.observe("door", f, [track])
            rec.opened("door", n, f"e{n}", f.ts)
            rec.ended("door", n, end_payload(f"e{n}", f.ts, f.ts), f.ts)
            published.wait(n)  # the end is published after the buffer is handed back
    finally:
        rec.stop()
    assert all(e.media is not None for e in published.items)
    assert (rec.best.copies, rec.best.allocated) == (500, 1)
    assert rec.best.get("door", 100) is None
    assert rec.store.stats()["files"] == 200


def test_frames_for_clips_are_decimated_and_bounded_in_flight(tmp_path: Path) -> None:
    """A 100 fps burst into a 10 fps ring: at most clip_fps frames a second are handed over,
    at most MAX_QUEUED_FRAMES wait, and the rest are counted as skipped, not queued."""
    rec = EventRecorder(
        EventsSettings(snapshots=True, clips=True, clip_fps=10), tmp_path, lambda _p: None
    )
    # Not started: nothing drains the queue, as when the worker is stuck on a slow disk.
    for i in range(300):
        f = Frame(id=i, ts=T0 + i / 100, mono=100 + i / 100, source="cam0", image=image(0))
        rec.observe("door", f, [])
    assert rec.queued_frames == MAX_QUEUED_FRAMES
    taken = rec.frames_skipped + MAX_QUEUED_FRAMES  # 3 s at 10 fps
    assert 29 <= taken <= 31, taken
