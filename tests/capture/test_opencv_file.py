"""File sources: every frame, fan-out, rate cap, real-time pacing, loop and end."""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edged.capture import VideoSource
from edged.capture.slot import LatestSlot
from edged.types import Frame
from tests.capture.support import WALKING_FRAMES, u8, wait_for

MakeSource = Callable[..., VideoSource]


def drain(slot: LatestSlot[Frame], delay: float = 0.0, timeout: float = 5.0) -> list[int]:
    """Frame ids read from ``slot`` until it is closed, sleeping ``delay`` per frame."""
    ids = []
    while (frame := slot.get(timeout)) is not None:
        ids.append(frame.id)
        time.sleep(delay)
    return ids


def fingerprints(path: Path, count: int) -> list[npt.NDArray[np.uint8]]:
    """A coarse RGB sample of the first ``count`` frames, decoded independently."""
    cap = cv2.VideoCapture(str(path))
    out = []
    for _ in range(count):
        ok, bgr = cap.read()
        assert ok
        out.append(u8(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[::48, ::48]).copy())
    cap.release()
    return out


def test_unpaced_file_delivers_every_frame(make_source: MakeSource, walking_clip: Path) -> None:
    """With realtime=false all 301 frames are captured, ids 0..300, and the last is never lost."""
    source = make_source(uri=str(walking_clip), realtime=False, fps=240)
    slot = source.subscribe()
    source.start()
    ids = drain(slot)
    assert source.status.frames == WALKING_FRAMES
    assert slot.put_count == WALKING_FRAMES
    assert ids == sorted(ids)
    assert ids[-1] == WALKING_FRAMES - 1
    assert len(ids) + slot.dropped == WALKING_FRAMES


def test_frames_are_rgb_with_the_clip_size(make_source: MakeSource, walking_clip: Path) -> None:
    """Frames carry the clip's 768x432 RGB image, matching an independent decode."""
    source = make_source(uri=str(walking_clip), realtime=False, fps=240)
    slot = source.subscribe()
    source.start()
    frame = slot.get(timeout=5.0)
    assert frame is not None
    assert frame.image.shape == (432, 768, 3)
    assert frame.image.dtype == np.uint8
    assert frame.source == "cam0"
    expected = fingerprints(walking_clip, frame.id + 1)[frame.id]
    assert np.array_equal(frame.image[::48, ::48], expected)


def test_slow_consumer_of_live_source_sees_drops_not_a_queue(
    make_source: MakeSource, walking_clip: Path
) -> None:
    """Behind a live (real-time) source a slow consumer gets fewer, always newer frames."""
    source = make_source(uri=str(walking_clip), realtime=True, fps=240)
    slot = source.subscribe()
    source.start()
    ids: list[int] = []
    end = time.monotonic() + 3.0
    while time.monotonic() < end and (frame := slot.get(2.0)) is not None:
        ids.append(frame.id)
        time.sleep(0.25)  # 4 fps against the clip's 10 fps
    source.stop()
    assert slot.dropped >= len(ids)
    assert slot.put_count == slot.taken + slot.dropped + int(slot.pending)
    assert all(b > a for a, b in itertools.pairwise(ids))


def test_file_read_as_fast_as_possible_waits_for_its_reader(
    make_source: MakeSource, walking_clip: Path
) -> None:
    """realtime=false is not live: a slow reader still gets every frame, none dropped."""
    source = make_source(uri=str(walking_clip), realtime=False, fps=240)
    slot = source.subscribe()
    source.start()
    ids = drain(slot, delay=0.002)
    assert ids == list(range(WALKING_FRAMES))
    assert slot.dropped == 0


def test_on_demand_reader_gets_every_frame_and_nothing_is_read_ahead(
    make_source: MakeSource, walking_clip: Path
) -> None:
    """An on-demand slot: the file is read only when the reader asks, yet nothing is dropped."""
    source = make_source(uri=str(walking_clip), realtime=False, fps=240)
    slot = source.subscribe(on_demand=True)
    source.start()
    first = slot.get(timeout=5.0)
    assert first is not None
    assert first.id == 0
    time.sleep(0.3)  # a read-ahead source would have put frame 1 by now
    assert not slot.pending
    assert source.status.frames == 1
    ids = [first.id, *drain(slot, delay=0.002)]
    assert ids == list(range(WALKING_FRAMES))
    assert slot.dropped == 0


def test_an_unsubscribed_reader_no_longer_holds_the_file_back(
    make_source: MakeSource, walking_clip: Path
) -> None:
    """A reader that never asks, once unsubscribed, does not stall the other readers."""
    source = make_source(uri=str(walking_clip), realtime=False, fps=240)
    idle = source.subscribe(on_demand=True)
    slot = source.subscribe()
    source.start()
    time.sleep(0.3)
    assert source.status.frames == 0  # held back by the idle reader
    source.unsubscribe(idle)
    assert drain(slot) == list(range(WALKING_FRAMES))


def test_subscribers_share_the_same_frame_object(
    make_source: MakeSource, walking_clip: Path
) -> None:
    """Two subscribers receive the identical Frame object, not a copy each."""
    source = make_source(uri=str(walking_clip), realtime=False, fps=20)
    first, second = source.subscribe(), source.subscribe()
    source.start()
    seen_first: dict[int, Frame] = {}
    seen_second: dict[int, Frame] = {}
    # Take turns: a file read as fast as possible waits until *every* reader
    # took the previous frame, so draining one slot first would only wait out
    # get()'s timeout on each later frame.
    for _ in range(5):
        for slot, seen in ((first, seen_first), (second, seen_second)):
            frame = slot.get(2.0)
            if frame is not None:
                seen[frame.id] = frame
    common = seen_first.keys() & seen_second.keys()
    assert common
    assert all(seen_first[i] is seen_second[i] for i in common)


def test_rate_cap_holds_when_not_realtime(make_source: MakeSource, walking_clip: Path) -> None:
    """fps=20 with realtime=false delivers about 20 frames per second, not as fast as decoded."""
    source = make_source(uri=str(walking_clip), realtime=False, fps=20)
    slot = source.subscribe()
    source.start()
    monos: list[float] = []
    started = time.monotonic()
    while time.monotonic() - started < 1.2 and (frame := slot.get(2.0)) is not None:
        monos.append(frame.mono)
    rate = (len(monos) - 1) / (monos[-1] - monos[0])
    assert 18.5 <= rate <= 20.5
    assert 15 <= source.status.fps <= 21


def test_realtime_paces_at_the_file_rate(make_source: MakeSource, walking_clip: Path) -> None:
    """realtime=true plays the 10 fps clip at 10 fps even when the cap allows more."""
    source = make_source(uri=str(walking_clip), realtime=True, fps=240)
    slot = source.subscribe()
    source.start()
    monos: list[float] = []
    while len(monos) < 9 and (frame := slot.get(2.0)) is not None:
        monos.append(frame.mono)
    rate = (len(monos) - 1) / (monos[-1] - monos[0])
    assert 9.0 <= rate <= 10.5


def test_loop_restarts_from_the_first_frame(make_source: MakeSource, walking_clip: Path) -> None:
    """With loop=true the clip starts over after its last frame, and ids keep counting."""
    expected = fingerprints(walking_clip, 40)
    source = make_source(uri=str(walking_clip), realtime=False, fps=240, loop=True)
    slot = source.subscribe()
    source.start()
    after_loop: dict[int, npt.NDArray[np.uint8]] = {}
    while (frame := slot.get(5.0)) is not None and frame.id < WALKING_FRAMES + 40:
        if frame.id >= WALKING_FRAMES:
            after_loop[frame.id - WALKING_FRAMES] = frame.image[::48, ::48].copy()
    assert after_loop
    assert all(np.array_equal(img, expected[i]) for i, img in after_loop.items())
    assert source.status.state == "up"
    assert not source.ended.is_set()


def test_end_of_file_closes_slots_and_sets_ended(
    make_source: MakeSource, walking_clip: Path
) -> None:
    """Without loop, the end of the file closes every slot, sets ended and reports 'ended'."""
    source = make_source(uri=str(walking_clip), realtime=False, fps=240)
    slot = source.subscribe()
    source.start()
    drain(slot)
    assert source.ended.wait(timeout=5.0)
    assert slot.closed
    assert source.status.state == "ended"
    assert source.subscribe().closed


def test_missing_file_is_down_then_recovers(
    make_source: MakeSource, walking_clip: Path, tmp_path: Path
) -> None:
    """A missing file is 'down' naming the path, and the source comes up once the file appears."""
    target = tmp_path / "door.mp4"
    source = make_source(uri=str(target), realtime=True, fps=10)
    slot = source.subscribe()
    source.start()
    assert wait_for(lambda: source.status.state == "down", 2.0)
    assert str(target) in source.status.reason
    partial = tmp_path / "door.part"
    shutil.copyfile(walking_clip, partial)
    partial.replace(target)  # atomic: the source never sees half a file
    assert slot.get(timeout=3.0) is not None
    assert source.status.state == "up"
    assert source.status.reconnects == 1


def test_stop_is_prompt_while_waiting_to_reconnect(make_source: MakeSource, tmp_path: Path) -> None:
    """stop() returns in well under a second even during a long reconnect backoff."""
    source = make_source(uri=str(tmp_path / "nope.mp4"), reconnect_min_s=30, reconnect_max_s=60)
    slot = source.subscribe()
    source.start()
    assert wait_for(lambda: source.status.state == "down", 2.0)
    started = time.monotonic()
    assert source.stop(timeout=2.0)
    assert time.monotonic() - started < 1.0
    assert source.status.state == "stopped"
    assert slot.closed


def test_stop_is_prompt_while_pacing(make_source: MakeSource, walking_clip: Path) -> None:
    """stop() interrupts the wait for the next frame of a slow schedule."""
    source = make_source(uri=str(walking_clip), fps=0.2)
    slot = source.subscribe()
    source.start()
    assert slot.get(timeout=2.0) is not None
    started = time.monotonic()
    assert source.stop(timeout=2.0)
    assert time.monotonic() - started < 1.0
