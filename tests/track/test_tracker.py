"""IoU tracker: synthetic boxes for the rules, the walking clip for the real thing."""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.catalog.catalog import load_catalog
from edged.catalog.resolve import resolve
from edged.config.settings import Settings
from edged.infer.registry import load_model
from edged.tasks.detection import DetectionTask
from edged.track import Track, Tracker, TrackEvent
from edged.types import Box, Detection, Frame

FPS = 10.0
#: When each person is in view in the walking clip (MEDIA.md), in seconds.
WOMAN = (7.5, 18.5)
MAN = (24.0, 30.0)


def person(box: Box, score: float = 0.8, label: str = "person") -> Detection:
    return Detection(label=label, class_id=0, score=score, box=box)


def moving_box(t: float, x0: float, vx: float, y: float = 0.3, w: float = 0.1) -> Box:
    x = x0 + vx * t
    return (x, y, x + w, y + 0.4)


def run(tracker: Tracker, frames: list[tuple[float, list[Detection]]]) -> list[TrackEvent]:
    events: list[TrackEvent] = []
    for ts, dets in frames:
        events.extend(tracker.update(dets, ts)[1])
    return events


def kinds_by_id(events: list[TrackEvent]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = defaultdict(list)
    for ev in events:
        out[ev.track.id].append(ev.kind)
    return dict(out)


def assert_lifecycle(kinds: list[str]) -> None:
    """Events of one id: new, then updates, then at most one end (last)."""
    assert kinds[0] == "new"
    assert kinds.count("new") == 1
    assert kinds.count("end") <= 1
    assert "end" not in kinds[:-1]


def test_steady_walker_keeps_one_id_with_sparse_events() -> None:
    tracker = Tracker(max_age_s=2.0, min_hits=2, update_every_s=5.0)
    frames = [(i * 0.2, [person(moving_box(i * 0.2, 0.05, 0.05))]) for i in range(60)]  # 12 s
    events = run(tracker, frames)
    events += tracker.update([], 12.0 + 2.5)[1]
    by_id = kinds_by_id(events)
    assert len(by_id) == 1
    kinds = next(iter(by_id.values()))
    assert_lifecycle(kinds)
    assert kinds[-1] == "end"
    # 60 frames, but the box moves a quarter of its width per second, and a
    # track reports at most one update per min_update_s (1 s).
    assert len(kinds) <= 1 + 12 + 1
    updates = [e.track.last_ts for e in events if e.kind == "update"]
    assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise(updates))


def test_first_sighting_is_tentative_until_min_hits() -> None:
    tracker = Tracker(min_hits=2)
    tracks, events = tracker.update([person((0.1, 0.1, 0.3, 0.6))], 0.0)
    assert tracks == []
    assert events == []
    tracks, events = tracker.update([person((0.11, 0.1, 0.31, 0.6))], 0.2)
    assert [e.kind for e in events] == ["new"]
    assert tracks == [events[0].track]
    assert tracks[0].hits == 2
    assert tracks[0].first_ts == 0.0
    assert tracks[0].last_ts == 0.2


def test_single_spurious_detection_never_becomes_an_event() -> None:
    tracker = Tracker(min_hits=2, max_age_s=1.0)
    events = run(tracker, [(0.0, [person((0.5, 0.5, 0.6, 0.9))]), (0.2, []), (5.0, [])])
    assert events == []


def test_gap_shorter_than_max_age_keeps_the_id() -> None:
    tracker = Tracker(max_age_s=2.0)
    frames = [(t / 10, [person(moving_box(t / 10, 0.1, 0.1))]) for t in range(10)]
    frames += [(t / 10, []) for t in range(10, 25)]  # 1.5 s of misses while walking on
    frames += [(t / 10, [person(moving_box(t / 10, 0.1, 0.1))]) for t in range(25, 35)]
    events = run(tracker, frames)
    assert len(kinds_by_id(events)) == 1
    assert all(e.kind != "end" for e in events)


def test_gap_longer_than_max_age_ends_the_track_and_starts_a_new_id() -> None:
    tracker = Tracker(max_age_s=1.0)
    still = person((0.4, 0.2, 0.6, 0.9))
    frames = [(t / 10, [still]) for t in range(10)]
    frames += [(t / 10, []) for t in range(10, 25)]
    frames += [(t / 10, [still]) for t in range(25, 30)]
    events = run(tracker, frames)
    by_id = kinds_by_id(events)
    assert len(by_id) == 2
    first, second = sorted(by_id)
    assert by_id[first] == ["new", "end"]
    assert by_id[second] == ["new"]
    end = next(e for e in events if e.kind == "end")
    assert end.track.last_ts == pytest.approx(0.9)


def test_crossing_paths_keep_their_ids() -> None:
    tracker = Tracker(iou_threshold=0.3, max_age_s=2.0)
    # Two people walk towards each other and pass; the nearer one is lower in
    # the image and a little larger, as a fixed camera sees them.
    ids_left: set[int] = set()
    ids_right: set[int] = set()
    for i in range(40):
        t = i * 0.1
        left = person(moving_box(t, 0.05, 0.2))  # → right
        right = person(moving_box(t, 0.85, -0.2, y=0.35, w=0.12), score=0.7)  # ← left
        tracks, _ = tracker.update([left, right], t)
        for tr in tracks:
            (ids_left if tr.score == 0.8 else ids_right).add(tr.id)
    assert len(ids_left) == 1
    assert len(ids_right) == 1
    assert ids_left != ids_right


def test_labels_are_never_matched_across() -> None:
    tracker = Tracker(min_hits=1)
    box = (0.2, 0.2, 0.5, 0.8)
    _, ev1 = tracker.update([person(box)], 0.0)
    _, ev2 = tracker.update([person(box, label="dog")], 0.1)
    assert ev1[0].track.id != ev2[0].track.id


def test_standing_still_gives_only_periodic_updates() -> None:
    tracker = Tracker(update_every_s=5.0, update_iou=0.5)
    jitter = [(0.40, 0.20, 0.60, 0.90), (0.41, 0.21, 0.61, 0.89), (0.39, 0.20, 0.60, 0.91)]
    frames = [(i * 0.2, [person(jitter[i % 3])]) for i in range(100)]  # 20 s
    kinds = [e.kind for e in run(tracker, frames)]
    assert kinds[0] == "new"
    assert 3 <= kinds.count("update") <= 4  # every 5 s, not every frame


def test_a_notable_move_gives_an_update_at_once() -> None:
    tracker = Tracker(update_every_s=60.0)
    run(tracker, [(0.0, [person((0.1, 0.2, 0.3, 0.9))]), (0.1, [person((0.1, 0.2, 0.3, 0.9))])])
    _, events = tracker.update([person((0.2, 0.2, 0.4, 0.9))], 1.2)  # IoU 1/3 with the last event
    assert [e.kind for e in events] == ["update"]
    assert events[0].track.box == (0.2, 0.2, 0.4, 0.9)
    # Moving again at once is rate-limited to one update per min_update_s.
    _, events = tracker.update([person((0.3, 0.2, 0.5, 0.9))], 1.4)
    assert events == []


def test_ids_are_unique_across_trackers() -> None:
    a, b = Tracker(min_hits=1), Tracker(min_hits=1)
    box = (0.1, 0.1, 0.2, 0.2)
    ids = [t.update([person(box)], 0.0)[1][0].track.id for t in (a, b)]
    assert ids[0] != ids[1]
    assert ids[1] > ids[0]


def test_flush_ends_confirmed_tracks_only() -> None:
    tracker = Tracker(min_hits=2)
    run(tracker, [(0.0, [person((0.1, 0.1, 0.3, 0.5))]), (0.1, [person((0.1, 0.1, 0.3, 0.5))])])
    tracker.update([person((0.1, 0.1, 0.3, 0.5)), person((0.7, 0.1, 0.9, 0.5))], 0.2)
    events = tracker.flush()
    assert [e.kind for e in events] == ["end"]
    assert tracker.update([], 0.3) == ([], [])


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="iou_threshold"):
        Tracker(iou_threshold=0.0)
    with pytest.raises(ValueError, match="min_hits"):
        Tracker(min_hits=0)


def test_track_is_frozen() -> None:
    tr = Track(1, "person", (0, 0, 1, 1), 0.9, 0.0, 0.0, 1)
    with pytest.raises(AttributeError):
        tr.hits = 2  # type: ignore[misc]


# --- the walking clip, with the real SSD person detector --------------------------


def ssd_task(models_dir: Path) -> DetectionTask:
    """The catalog's SSD detector, resolved and verified as the daemon does it."""
    settings = Settings.model_validate(
        {
            "models": {"dir": models_dir},
            "sources": [{"name": "cam0", "kind": "file", "uri": "walking.mp4"}],
            "pipelines": [
                {
                    "name": "door",
                    "source": "cam0",
                    "task": "detection",
                    "model": "ssd-mobilenet-v1-coco-int8",
                }
            ],
        }
    )
    resolved = resolve(settings.pipelines[0], settings, load_catalog())
    return DetectionTask(resolved, load_model(resolved.path, runtime=resolved.runtime, threads=2))


@pytest.fixture(scope="module")
def walking_people(media_dir: Path, models_dir: Path) -> list[tuple[float, list[Detection]]]:
    """(ts, person detections >= 0.5) on every 2nd frame of the clip; decoded once."""
    task = ssd_task(models_dir)
    cap = cv2.VideoCapture(str(media_dir / "person_walking_0-30s.mp4"))
    assert cap.isOpened()
    out: list[tuple[float, list[Detection]]] = []
    i = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if i % 2 == 0:
            f = Frame(
                i, 1_700_000_000 + i / FPS, i / FPS, "cam0", np.ascontiguousarray(bgr[:, :, ::-1])
            )
            items = task(f, threshold=0.5).items
            out.append(
                (i / FPS, [d for d in items if isinstance(d, Detection) and d.label == "person"])
            )
        i += 1
    cap.release()
    assert i == 301
    return out


def ids_while_visible(
    frames: list[tuple[float, list[Detection]]], tracker: Tracker, span: tuple[float, float]
) -> tuple[set[int], list[TrackEvent]]:
    """Ids of confirmed tracks seen (matched this frame) within ``span``, and all events."""
    ids: set[int] = set()
    events: list[TrackEvent] = []
    for ts, dets in frames:
        tracks, evs = tracker.update(dets, ts)
        events += evs
        if span[0] <= ts <= span[1]:
            ids |= {t.id for t in tracks if t.last_ts == ts}
    return ids, events


def test_walking_clip_one_id_per_person_and_ordered_events(
    walking_people: list[tuple[float, list[Detection]]],
) -> None:
    seen = sum(bool(d) for _, d in walking_people)
    assert seen >= 0.5 * len(walking_people)  # the detector does see people
    switches = {}
    ids = {}
    for name, span in (("woman", WOMAN), ("man", MAN)):
        ids[name], _ = ids_while_visible(walking_people, Tracker(), span)
        switches[name] = len(ids[name]) - 1
    tracker = Tracker()
    _, events = ids_while_visible(walking_people, tracker, (0.0, 30.0))
    events += tracker.flush()
    print(f"walking clip: id switches per track {switches}; {len(events)} events")
    assert all(n == 0 for n in switches.values()), ids
    by_id = kinds_by_id(events)
    for kinds in by_id.values():
        assert_lifecycle(kinds)
        assert kinds[-1] == "end"
    # The woman and the man get different ids, and her track ended before he came.
    new = [e for e in events if e.kind == "new"]
    assert len(new) == 2
    assert new[0].track.id != new[1].track.id
    assert WOMAN[0] - 1.5 <= new[0].track.first_ts <= WOMAN[0] + 1.0
    assert MAN[0] - 1.5 <= new[1].track.first_ts <= MAN[0] + 1.0
    end_woman = next(e for e in events if e.kind == "end" and e.track.id == new[0].track.id)
    assert end_woman.track.last_ts < new[1].track.first_ts
    # Sparse: ~150 inferred frames with a person, a handful of events.
    assert len(events) <= 20


def test_walking_clip_survives_a_flickering_detector(
    walking_people: list[tuple[float, list[Detection]]],
) -> None:
    """Drop a third of the detections at random plus a 1.4 s blackout: still one id each."""
    rng = np.random.default_rng(3)
    flicker = [
        (ts, [] if rng.random() < 1 / 3 or 12.0 <= ts <= 13.4 else dets)
        for ts, dets in walking_people
    ]
    for span in (WOMAN, MAN):
        ids, _ = ids_while_visible(flicker, Tracker(max_age_s=2.0), span)
        assert len(ids) == 1
