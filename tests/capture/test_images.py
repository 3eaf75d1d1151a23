"""Image sources: folder order, skipping unreadable files, loop, glob and single file."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from edged.capture import VideoSource
from edged.capture.images import list_images
from tests.capture.support import read_rgb, wait_for

MakeSource = Callable[..., VideoSource]
PHOTOS = ("chelsea.png", "coffee.png", "pets.jpg")


@pytest.fixture
def photo_dir(media_dir: Path, tmp_path: Path) -> Path:
    """A folder with three real photos, a corrupt JPEG in between, and a text file."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for n, name in enumerate(PHOTOS):
        shutil.copyfile(media_dir / name, folder / f"{n}_{name}")
    (folder / "1a_broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_folder_lists_images_in_sorted_order(photo_dir: Path) -> None:
    """A folder yields its image files sorted by name, without non-image files."""
    names = [p.name for p in list_images(str(photo_dir))]
    assert names == ["0_chelsea.png", "1_coffee.png", "1a_broken.jpg", "2_pets.jpg"]


def test_glob_and_single_file_are_accepted(photo_dir: Path) -> None:
    """A glob matches its images and a single file is used as it is."""
    assert [p.name for p in list_images(str(photo_dir / "*.png"))] == [
        "0_chelsea.png",
        "1_coffee.png",
    ]
    assert list_images(str(photo_dir / "2_pets.jpg")) == [photo_dir / "2_pets.jpg"]


def test_folder_source_delivers_photos_and_skips_corrupt(
    make_source: MakeSource, photo_dir: Path
) -> None:
    """Each readable photo arrives once, in order, as RGB; the corrupt file is skipped."""
    with capture_logs() as logs:
        # realtime=false: lock-step with the reader, so a busy machine cannot
        # make the slot drop a photo (what is tested is order and skipping).
        source = make_source(kind="images", uri=str(photo_dir), fps=50, realtime=False)
        slot = source.subscribe()
        source.start()
        frames = []
        while (frame := slot.get(2.0)) is not None:
            frames.append(frame)
    expected = [read_rgb(photo_dir / f"{n}_{name}") for n, name in enumerate(PHOTOS)]
    assert [f.id for f in frames] == [0, 1, 2]
    assert all(np.array_equal(f.image, e) for f, e in zip(frames, expected, strict=True))
    assert source.status.state == "ended"
    skipped = [e for e in logs if e["event"] == "source.image_skipped"]
    assert len(skipped) == 1
    assert skipped[0]["path"].endswith("1a_broken.jpg")


def test_loop_repeats_and_logs_a_bad_file_once(make_source: MakeSource, photo_dir: Path) -> None:
    """With loop=true the photos repeat in order and the corrupt file is reported only once."""
    with capture_logs() as logs:
        source = make_source(
            kind="images", uri=str(photo_dir), fps=50, loop=True, realtime=False
        )  # lock-step: no photo dropped on a busy machine
        slot = source.subscribe()
        source.start()
        shapes: list[tuple[int, ...]] = []
        while len(shapes) < 7 and (frame := slot.get(2.0)) is not None:
            shapes.append(frame.image.shape)
        source.stop()
    assert shapes[:3] == shapes[3:6]
    assert shapes[0] == shapes[6]
    assert [e["event"] for e in logs].count("source.image_skipped") == 1


def test_empty_folder_is_down_with_a_reason(make_source: MakeSource, tmp_path: Path) -> None:
    """A folder without images is 'down' with a reason naming it, not a crash."""
    source = make_source(kind="images", uri=str(tmp_path), fps=10)
    source.start()
    assert wait_for(lambda: source.status.state == "down", 2.0)
    assert "no images found" in source.status.reason
    assert str(tmp_path) in source.status.reason


def test_only_unreadable_images_is_down_not_a_busy_loop(
    make_source: MakeSource, tmp_path: Path
) -> None:
    """A looping folder whose every file is corrupt goes 'down' instead of spinning."""
    (tmp_path / "bad.png").write_bytes(b"garbage")
    source = make_source(kind="images", uri=str(tmp_path), fps=10, loop=True)
    source.start()
    assert wait_for(lambda: source.status.state == "down", 2.0)
    assert "no frame could be read" in source.status.reason
