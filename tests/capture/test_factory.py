"""open_video_source: the kind table, and audio kinds refused."""

from __future__ import annotations

import pytest

from edged.capture import open_video_source
from edged.capture.images import ImagesSource
from edged.capture.opencv import OpenCVSource
from edged.capture.picamera2 import Picamera2Source
from edged.errors import SourceError
from tests.capture.support import settings


@pytest.mark.parametrize(
    ("kind", "uri", "cls"),
    [
        ("file", "/srv/clip.mp4", OpenCVSource),
        ("v4l2", "/dev/video0", OpenCVSource),
        ("stream", "rtsp://cam/stream", OpenCVSource),
        ("images", "/srv/photos", ImagesSource),
        ("picamera2", "", Picamera2Source),
    ],
)
def test_each_video_kind_builds_its_source(kind: str, uri: str, cls: type) -> None:
    """Every video kind maps to its source class, named after the settings."""
    source = open_video_source(settings(kind=kind, uri=uri))
    assert type(source) is cls
    assert source.name == "cam0"
    assert source.status.state == "starting"


@pytest.mark.parametrize("kind", ["microphone", "wav"])
def test_audio_kinds_are_not_video_sources(kind: str) -> None:
    """Asking for an audio kind raises SourceError saying it is not a video source."""
    with pytest.raises(SourceError, match="not a video source"):
        open_video_source(settings(kind=kind, uri="/srv/a.wav"))
