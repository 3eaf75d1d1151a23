"""Build a video source from its settings, by ``kind``, through an explicit table.

The table is the one place that says which class reads which kind; the audio
kinds are listed too, so that asking for one here gets a clear error instead
of a KeyError.
"""

from __future__ import annotations

from collections.abc import Callable

from edged.capture.base import VideoSource
from edged.capture.images import ImagesSource
from edged.capture.opencv import OpenCVSource
from edged.capture.picamera2 import Picamera2Source
from edged.config.settings import SourceSettings
from edged.errors import SourceError

#: kind → class. picamera2 itself is imported only when that source opens.
VIDEO_SOURCES: dict[str, Callable[[SourceSettings], VideoSource]] = {
    "file": OpenCVSource,
    "v4l2": OpenCVSource,
    "stream": OpenCVSource,
    "images": ImagesSource,
    "picamera2": Picamera2Source,
}

#: Kinds that are valid sources, but of audio (see the audio capture modules).
AUDIO_KINDS = frozenset({"microphone", "wav"})


def open_video_source(settings: SourceSettings) -> VideoSource:
    """A not yet started :class:`VideoSource` for ``settings``.

    Raises :class:`SourceError` for an audio kind or an unknown kind. Opening
    the device happens in the capture thread after :meth:`VideoSource.start`,
    so a camera that is absent right now is reported as ``down``, not raised.
    """
    if settings.kind in AUDIO_KINDS:
        raise SourceError(
            f"source {settings.name!r} has kind {settings.kind!r}, which is an audio source, "
            "not a video source: use it in a pipeline with task = 'audio'"
        )
    try:
        cls = VIDEO_SOURCES[settings.kind]
    except KeyError:
        kinds = ", ".join(sorted(VIDEO_SOURCES))
        raise SourceError(
            f"source {settings.name!r} has unknown kind {settings.kind!r} (video kinds: {kinds})"
        ) from None
    return cls(settings)
