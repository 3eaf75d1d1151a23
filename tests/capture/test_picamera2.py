"""picamera2 source: clear error off a Pi, and correct colours from padded YUV420."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from edged.capture import VideoSource
from edged.capture.picamera2 import NOT_IMPORTABLE, Picamera2Source, yuv420_to_rgb
from tests.capture.support import read_rgb, u8, wait_for
from tests.helpers.fake_picamera2 import FakePicamera2, padded_i420

MakeSource = Callable[..., VideoSource]


@pytest.fixture
def photo(media_dir: Path) -> npt.NDArray[np.uint8]:
    """A real RGB photo (the cat, 451x300)."""
    return read_rgb(media_dir / "chelsea.png")


@pytest.fixture
def fake_camera(
    monkeypatch: pytest.MonkeyPatch, photo: npt.NDArray[np.uint8]
) -> Iterator[type[FakePicamera2]]:
    """Patch the source's camera factory to build FakePicamera2 cameras serving ``photo``."""
    FakePicamera2.instances.clear()
    monkeypatch.setattr(
        Picamera2Source,
        "_camera_factory",
        staticmethod(lambda: partial(FakePicamera2, photo=photo)),
    )
    yield FakePicamera2
    FakePicamera2.instances.clear()


def mean_abs_diff(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    """Mean absolute per-channel difference of two equally sized images."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_off_pi_the_source_is_down_with_install_hint(
    make_source: MakeSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an importable picamera2 the source is 'down' and says what to install."""
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes the import fail
    source = make_source(kind="picamera2", uri="")
    source.start()
    assert wait_for(lambda: source.status.state == "down", 2.0)
    assert NOT_IMPORTABLE in source.status.reason
    assert "'pi' extra" in source.status.reason


@pytest.mark.usefixtures("fake_camera")
def test_lores_frames_match_the_photo_despite_stride_padding(
    make_source: MakeSource, photo: npt.NDArray[np.uint8]
) -> None:
    """Padded YUV420 lores buffers convert to RGB that closely matches the original photo."""
    source = make_source(kind="picamera2", uri="", width=450, height=300, fps=30)
    slot = source.subscribe()
    source.start()
    frame = slot.get(timeout=2.0)
    assert frame is not None
    camera = FakePicamera2.instances[-1]
    assert camera.stream_configuration("lores")["stride"] > 450  # the padding is exercised
    assert frame.image.shape == (300, 450, 3)
    expected = u8(cv2.resize(photo, (450, 300), interpolation=cv2.INTER_AREA))
    assert mean_abs_diff(frame.image, expected) < 3.0


@pytest.mark.usefixtures("fake_camera")
def test_latest_main_is_the_rgb_main_stream(
    make_source: MakeSource, photo: npt.NDArray[np.uint8]
) -> None:
    """latest_main() returns the larger main image as RGB once a frame was captured."""
    source = make_source(kind="picamera2", uri="", width=320, height=240, fps=30)
    assert isinstance(source, Picamera2Source)
    assert source.latest_main() is None
    slot = source.subscribe()
    source.start()
    assert slot.get(timeout=2.0) is not None
    main = source.latest_main()
    assert main is not None
    assert main.shape == (480, 640, 3)
    expected = u8(cv2.resize(photo, (640, 480), interpolation=cv2.INTER_AREA))
    assert mean_abs_diff(main, expected) < 1.0


@pytest.mark.usefixtures("fake_camera")
def test_camera_number_frame_rate_and_release(make_source: MakeSource) -> None:
    """uri picks the camera, fps becomes the sensor frame rate, and stop releases the camera."""
    source = make_source(kind="picamera2", uri="1", fps=15)
    source.start()
    assert wait_for(lambda: source.status.state == "up", 2.0)
    camera = FakePicamera2.instances[-1]
    assert (camera.camera_num, camera.frame_rate) == (1, 15.0)
    assert source.stop()
    assert camera.closed


def test_converter_fast_path_matches_the_padded_path(photo: npt.NDArray[np.uint8]) -> None:
    """An unpadded buffer and a padded one of the same image convert to identical RGB."""
    image = np.ascontiguousarray(photo[:, :450])
    tight = padded_i420(image, stride=450)
    padded = padded_i420(image, stride=512)
    assert np.array_equal(yuv420_to_rgb(tight, 450, 300, 450), yuv420_to_rgb(padded, 450, 300, 512))
