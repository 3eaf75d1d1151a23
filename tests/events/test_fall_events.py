"""Fall events from pose + tracking on real photos, through the daemon and a real mosquitto.

Ground truth. ``squat.png`` is a real photo of a man squatting: upright,
not a fall (torso ~35° from vertical, box 0.6 times as wide as tall). The
same photo rotated by 90° is a real photo of a body whose axis is horizontal
- a person lying on their side (torso 50-64° from vertical, box 1.6-1.9
times as wide as tall, measured with SSD + MoveNet). No photo of a lying
person is in the shared media, so the rotation stands in for one.

The sequence fed as an ``images`` source at 5 frames/s: 6 upright frames
(1.2 s), 15 lying (3 s), 10 upright (2 s). With ``min_s`` = 2 and
``hangover_s`` = 1 that is exactly one ``fall`` event; a sequence of upright
frames only gives none.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from edged.config.settings import FallSettings, load_settings
from edged.errors import EX_CONFIG, ConfigError
from edged.events.fall import FallWatch, posture
from edged.events.onoff import Episode
from edged.publish.payloads import EventResult, PoseResult
from edged.types import Frame, Keypoint, Pose
from tests.helpers.broker import RunningBroker, matching
from tests.helpers.daemon import Daemon, base_config, write_config
from tests.helpers.vision import read_rgb

DEV = "edged/testdev"
SIDE = 760  # canvas: the squat (500 x 610) fits upright and rotated


def _canvas(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    canvas = np.full((SIDE, SIDE, 3), 128, np.uint8)
    h, w = image.shape[:2]
    y, x = (SIDE - h) // 2, (SIDE - w) // 2
    canvas[y : y + h, x : x + w] = image
    return canvas


def _write_frames(folder: Path, frames: list[npt.NDArray[np.uint8]]) -> Path:
    folder.mkdir()
    for i, rgb in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:03d}.png"), rgb[:, :, ::-1])
    return folder


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _payloads(sub: Any, topic: str) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in sub.messages(topic)]


@pytest.mark.broker
@pytest.mark.slow
def test_lying_for_min_s_gives_one_fall_event_and_standing_none(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """Upright → lying 3 s → upright: one `fall` start/end with a track id; upright only: none.
    Every pose carries its track id."""
    squat = read_rgb(media_dir / "squat.png")
    upright = _canvas(squat)
    lying = _canvas(np.ascontiguousarray(cv2.rotate(squat, cv2.ROTATE_90_COUNTERCLOCKWISE)))
    fall_dir = _write_frames(tmp_path / "fall", [upright] * 6 + [lying] * 15 + [upright] * 10)
    stand_dir = _write_frames(tmp_path / "stand", [upright] * 20)
    cfg = base_config(tmp_path, models_dir, broker)
    cfg["sources"] = [
        {"name": "room", "kind": "images", "uri": fall_dir, "fps": 5, "realtime": False},
        {"name": "hall", "kind": "images", "uri": stand_dir, "fps": 5, "realtime": False},
    ]
    cfg["pipelines"] = [
        {
            "name": name,
            "source": name,
            "task": "pose",
            "model": "movenet-lightning-int8",
            "detector": "ssd-mobilenet-v1-coco-int8",
            "threshold": 0.2,
            "publish": "all",
            "max_fps": 10,
            "threads": 1,
            "fall": {"enabled": True, "min_s": 2.0, "hangover_s": 1.0},
        }
        for name in ("room", "hall")
    ]
    sub = broker.subscriber(f"{DEV}/#")
    with Daemon(write_config(tmp_path / "edged.toml", cfg)) as daemon:
        sub.wait_for(matching(f"{DEV}/availability", b"online"), timeout=30)
        sub.wait_for(
            lambda m: m.topic == f"{DEV}/room/events" and json.loads(m.payload)["event"] == "end",
            timeout=60,
        )
        for name, frames in (("room", 31), ("hall", 20)):
            sub.wait_for(
                lambda _m, n=name, k=frames: len(sub.messages(f"{DEV}/{n}/pose")) >= k, timeout=30
            )
        rc, _ = daemon.stop()
        assert rc == 0, daemon.output

    poses = [PoseResult.model_validate(p) for p in _payloads(sub, f"{DEV}/room/pose")]
    assert len(poses) == 31
    t0 = _ts(poses[0].ts)
    lying_from, lying_to = _ts(poses[6].ts) - t0, _ts(poses[20].ts) - t0
    assert all(len(p.poses) == 1 for p in poses)
    assert all(p.poses[0].track_id is not None for p in poses)
    events = [EventResult.model_validate(e) for e in _payloads(sub, f"{DEV}/room/events")]
    print([(e.event, e.label, e.track_id, _ts(e.start) - t0, e.end, e.data) for e in events])
    assert [e.event for e in events] == ["start", "end"]
    start, end = events
    assert start.type == end.type == "fall"
    assert start.event_id == end.event_id
    assert start.track_id is not None
    assert start.track_id == end.track_id == poses[10].poses[0].track_id
    # It started on the first lying frame; it was published min_s later.
    assert _ts(start.start) - t0 == pytest.approx(lying_from, abs=0.01)
    assert _ts(start.ts) - _ts(start.start) >= 2.0
    assert end.end is not None
    assert _ts(end.end) - t0 == pytest.approx(lying_to, abs=0.01)
    assert start.data["angle_deg"] > 45  # type: ignore[operator]
    assert start.data["aspect"] >= 1.2  # type: ignore[operator]
    assert _payloads(sub, f"{DEV}/hall/events") == []
    assert len(_payloads(sub, f"{DEV}/hall/pose")) == 20


# -- the rule and its debounce, without a daemon -------------------------------------


@pytest.mark.parametrize(
    ("rotation", "lying"),
    [(None, False), (cv2.ROTATE_90_CLOCKWISE, True), (cv2.ROTATE_90_COUNTERCLOCKWISE, True)],
)
def test_the_rule_on_the_squat_photo(
    two_stage: Any, media_dir: Path, rotation: int | None, lying: bool
) -> None:
    """Upright squat: not lying; rotated either way (a horizontal body): lying."""
    image = read_rgb(media_dir / "squat.png")
    if rotation is not None:
        image = np.ascontiguousarray(cv2.rotate(image, rotation))
    (pose,) = two_stage(Frame(1, 0.0, 0.0, "cam", image), 0.2).items
    seen = posture(pose, image.shape[1], image.shape[0], FallSettings())
    print(rotation, seen)
    assert seen.lying is lying


@pytest.mark.parametrize("image", ["astronaut.png", "people_group.jpg", "squat.png"])
def test_upright_photos_never_lie(two_stage: Any, media_dir: Path, image: str) -> None:
    rgb = read_rgb(media_dir / image)
    result = two_stage(Frame(1, 0.0, 0.0, "cam", rgb), 0.2)
    assert result.items
    assert not any(
        posture(p, rgb.shape[1], rgb.shape[0], FallSettings()).lying for p in result.items
    )


def _pose(track_id: int, lying: bool, shift: float = 0.0) -> Pose:
    """A synthetic skeleton: shoulders above hips (upright) or beside them (lying)."""
    if lying:
        pts = {"left_shoulder": (0.2, 0.5), "right_shoulder": (0.2, 0.52), "left_hip": (0.5, 0.5)}
        box = (0.1, 0.45, 0.8, 0.6)
    else:
        pts = {"left_shoulder": (0.5, 0.2), "right_shoulder": (0.52, 0.2), "left_hip": (0.5, 0.5)}
        box = (0.45, 0.1, 0.6, 0.8)
    kps = tuple(Keypoint(n, x + shift, y, 0.9) for n, (x, y) in pts.items())
    return Pose(0.8, box, kps, track_id)


def test_no_motion_adds_one_still_update() -> None:
    """Lying without moving for still_s: one update with data.still = true, then the end."""
    watch = FallWatch(FallSettings(enabled=True, min_s=1.0, hangover_s=0.0, still_s=2.0))
    phases: list[tuple[str, bool]] = []
    # 6 s lying still at 5 frames/s, then upright.
    frames = [(i * 0.2, _pose(7, lying=True)) for i in range(30)] + [(6.0, _pose(7, lying=False))]
    for ts, pose in frames:
        notes = watch.observe(ts, 100, 100, [pose], [])
        phases += [(n.change.phase, bool(n.data["still"])) for n in notes]
    assert phases == [("start", False), ("update", True), ("end", True)]


def test_a_track_that_ends_ends_its_fall() -> None:
    watch = FallWatch(FallSettings(enabled=True, min_s=0.0, hangover_s=5.0))
    assert [n.change.phase for n in watch.observe(0.0, 100, 100, [_pose(3, True)], [])] == ["start"]
    (end,) = watch.observe(0.5, 100, 100, [], [3])
    assert (end.change.phase, end.track_id) == ("end", 3)


def test_episode_needs_min_s_without_a_break_and_ends_after_the_hangover() -> None:
    ep = Episode(min_s=1.0, hangover_s=1.0)
    assert ep.step(0.0, True, 0.9) is None
    assert ep.step(0.5, False, 0.1) is None  # a break before min_s: starts over
    assert ep.step(1.0, True, 0.9) is None
    start = ep.step(2.0, True, 0.7)
    assert start is not None
    assert (start.phase, start.start, start.top_score) == ("start", 1.0, 0.9)
    assert ep.step(2.5, False, 0.0) is None
    assert ep.step(3.0, True, 0.8) is None  # back on within the hangover: same event
    assert ep.step(3.5, False, 0.0) is None
    end = ep.step(4.5, False, 0.0)
    assert end is not None
    assert (end.phase, end.event_id, end.end) == ("end", start.event_id, 3.0)


def _pose_config(tmp_path: Path, models_dir: Path, media_dir: Path, **extra: Any) -> Path:
    cfg = base_config(tmp_path, models_dir, None)
    cfg["sources"] = [{"name": "cam0", "kind": "images", "uri": media_dir / "squat.png"}]
    cfg["pipelines"] = [
        {
            "name": "body",
            "source": "cam0",
            "task": "pose",
            "model": "movenet-lightning-int8",
            **extra,
        }
    ]
    return write_config(tmp_path / "c.toml", cfg)


def _check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edged", "check", "--offline", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_accepts_a_person_detector(tmp_path: Path, models_dir: Path, media_dir: Path) -> None:
    config = _pose_config(tmp_path, models_dir, media_dir, detector="yolox-nano-coco")
    result = _check(config)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("detector", "problem"),
    [
        ("movenet-lightning-int8", "is a pose model, but the pipeline's task is 'detection'"),
        ("yolo-nano", "yolox-nano-coco"),  # an unknown name, with the nearest one
    ],
)
def test_check_refuses_a_detector_that_is_not_a_person_detector(
    tmp_path: Path, models_dir: Path, media_dir: Path, detector: str, problem: str
) -> None:
    """The detector is verified like the main model: exit 78 at pipelines[0].detector."""
    result = _check(_pose_config(tmp_path, models_dir, media_dir, detector=detector))
    assert result.returncode == EX_CONFIG, result.stderr
    assert "pipelines[0].detector: " in result.stderr
    assert problem in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("task", "extra", "key"),
    [
        ("detection", {"detector": "ssd-mobilenet-v1-coco-int8"}, "detector"),
        ("detection", {"fall": {"enabled": True}}, "fall.enabled"),
    ],
)
def test_pose_keys_on_another_task_are_refused(task: str, extra: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            None,
            {
                "sources": [{"name": "cam0", "kind": "images", "uri": "/srv"}],
                "pipelines": [{"name": "p", "source": "cam0", "task": task, "model": "m", **extra}],
            },
        )
    assert f"{key}: " in str(info.value)
