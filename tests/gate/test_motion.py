"""Motion gate: synthetic frames for the rules, real clips for the behaviour."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from edged.catalog.catalog import load_catalog
from edged.catalog.resolve import resolve
from edged.config.settings import Settings
from edged.gate import MotionGate
from edged.infer.registry import load_model
from edged.tasks.detection import DetectionTask
from edged.types import Detection, Frame

FPS = 10.0


def frame(i: int, image: npt.NDArray[np.uint8], fps: float = FPS) -> Frame:
    return Frame(id=i, ts=1_700_000_000 + i / fps, mono=i / fps, source="test", image=image)


def rgb(path: Path) -> npt.NDArray[np.uint8]:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return np.ascontiguousarray(bgr[:, :, ::-1])


def read_video(path: Path) -> list[npt.NDArray[np.uint8]]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    frames: list[npt.NDArray[np.uint8]] = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(bgr[:, :, ::-1], dtype=np.uint8))
    cap.release()
    return frames


def ssd_task(models_dir: Path) -> DetectionTask:
    """The catalog's SSD person detector, resolved and verified as the daemon does it."""
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
def walking(media_dir: Path) -> list[npt.NDArray[np.uint8]]:
    """The walking clip, decoded once for the module (301 frames at 10 fps)."""
    frames = read_video(media_dir / "person_walking_0-30s.mp4")
    assert len(frames) == 301
    return frames


@pytest.fixture(scope="module")
def walking_gated(walking: list[npt.NDArray[np.uint8]]) -> tuple[list[bool], MotionGate]:
    gate = MotionGate(area=0.005, keepalive_s=10.0)
    decisions = [gate.should_run(frame(i, img)) for i, img in enumerate(walking)]
    return decisions, gate


def test_first_frame_passes_then_a_still_scene_is_skipped_until_keepalive() -> None:
    gate = MotionGate(area=0.01, keepalive_s=2.0)
    img = np.full((240, 320, 3), 90, np.uint8)
    decisions = [gate.should_run(frame(i, img)) for i in range(45)]  # 4.5 s at 10 fps
    assert [i for i, d in enumerate(decisions) if d] == [0, 20, 40]
    assert (gate.seen, gate.passed, gate.skipped) == (45, 3, 42)


def test_a_moving_object_passes_and_sensor_noise_does_not() -> None:
    rng = np.random.default_rng(7)
    gate = MotionGate(area=0.005, keepalive_s=100.0)
    base = np.full((480, 640, 3), 100, np.int16)
    noisy = []
    for _ in range(20):
        img = base + rng.normal(0, 6, base.shape).round().astype(np.int16)  # sensor noise
        noisy.append(np.clip(img, 0, 255).astype(np.uint8))
    quiet = [gate.should_run(frame(i, img)) for i, img in enumerate(noisy)]
    assert quiet[0]
    assert not any(quiet[1:])
    moving = noisy[-1].copy()
    cv2.rectangle(moving, (300, 200), (360, 300), (250, 250, 250), -1)  # ~2 % of the image
    assert gate.should_run(frame(20, moving))
    assert gate.last_fraction > 0.01


def test_a_small_change_below_area_is_skipped() -> None:
    gate = MotionGate(area=0.05, keepalive_s=100.0)
    img = np.full((480, 640, 3), 100, np.uint8)
    gate.should_run(frame(0, img))
    small = img.copy()
    cv2.rectangle(small, (10, 10), (60, 60), (255, 255, 255), -1)  # ~1 % of the image
    assert not gate.should_run(frame(1, small))
    assert 0.0 < gate.last_fraction < 0.05


def test_a_new_resolution_restarts_the_background_and_passes() -> None:
    gate = MotionGate(area=0.01, keepalive_s=100.0)
    assert gate.should_run(frame(0, np.zeros((240, 320, 3), np.uint8)))
    assert not gate.should_run(frame(1, np.zeros((240, 320, 3), np.uint8)))
    assert gate.should_run(frame(2, np.zeros((480, 640, 3), np.uint8)))


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="area"):
        MotionGate(area=0.0, keepalive_s=1.0)
    with pytest.raises(ValueError, match="keepalive_s"):
        MotionGate(area=0.1, keepalive_s=0.0)
    with pytest.raises(ValueError, match="odd blur"):
        MotionGate(area=0.1, keepalive_s=1.0, blur=4)


def test_costs_well_under_a_millisecond_per_720p_frame(media_dir: Path) -> None:
    img = rgb(media_dir / "cat_720p.jpg")
    assert img.shape == (720, 1280, 3)
    shifted = np.roll(img, 8, axis=1)  # alternate two images so the diff path does real work
    gate = MotionGate(area=0.005, keepalive_s=10.0)
    costs = []
    for i in range(300):
        t0 = time.perf_counter()
        gate.should_run(frame(i, shifted if i % 2 else img))
        costs.append(time.perf_counter() - t0)
    median_ms = statistics.median(costs) * 1e3
    print(f"motion gate: median {median_ms:.3f} ms per 720p frame")
    assert median_ms < 1.0


def test_static_clip_runs_inference_on_at_most_5_percent_of_frames(
    media_dir: Path, tmp_path: Path
) -> None:
    # A real encoded clip (H.264/MPEG-4 noise included) of one photo, 10 s at 10 fps.
    still = cv2.imread(str(media_dir / "cat_720p.jpg"), cv2.IMREAD_COLOR)
    assert still is not None
    path = tmp_path / "static.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (1280, 720))
    assert writer.isOpened()
    for _ in range(100):
        writer.write(still)
    writer.release()
    frames = read_video(path)
    assert len(frames) == 100
    gate = MotionGate(area=0.005, keepalive_s=10.0)
    for i, img in enumerate(frames):
        gate.should_run(frame(i, img))
    print(f"static clip: {gate.passed}/{gate.seen} frames passed")
    assert gate.seen == 100
    assert gate.passed / gate.seen <= 0.05


def test_walking_clip_opens_when_people_enter(walking_gated: tuple[list[bool], MotionGate]) -> None:
    decisions, gate = walking_gated
    passed_s = [i / FPS for i, d in enumerate(decisions) if d]
    fraction = gate.passed / gate.seen
    print(f"walking clip: {gate.passed}/{gate.seen} frames passed ({fraction:.0%})")
    # Empty room for 0-6 s: only the first frame (and no keepalive yet).
    assert [t for t in passed_s if t < 5.5] == [0.0]
    # The woman enters at ~7 s and the man at ~23 s: the gate is open then.
    assert all(decisions[int(t * FPS)] for t in (7.0, 7.5, 8.0, 23.0, 23.5, 24.0))
    first_motion = min(t for t in passed_s if t > 0)
    assert 5.5 <= first_motion <= 7.5
    assert 0.5 <= fraction <= 0.9


def test_detector_still_sees_the_person_on_gated_frames(
    walking: list[npt.NDArray[np.uint8]],
    walking_gated: tuple[list[bool], MotionGate],
    models_dir: Path,
) -> None:
    """Gating must not starve the detector: frames it lets through after 8 s show the person."""
    decisions, _ = walking_gated
    task = ssd_task(models_dir)
    # People are in view at 8-18.5 s (the woman) and 24-30 s (the man).
    present = [i for i, d in enumerate(decisions) if d and (80 <= i <= 185 or i >= 240)]
    sampled = present[::3]  # every 3rd gated frame keeps the test fast
    found = 0
    for i in sampled:
        result = task(frame(i, walking[i]), threshold=0.5)
        found += any(isinstance(d, Detection) and d.label == "person" for d in result.items)
    print(f"walking clip: person detected on {found}/{len(sampled)} sampled gated frames")
    assert len(sampled) >= 50
    assert found / len(sampled) >= 0.8
