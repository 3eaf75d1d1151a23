"""Build an audio source from its settings, by ``kind``, through an explicit table."""

from __future__ import annotations

from collections.abc import Callable

from edged.capture.audio import AudioSource
from edged.capture.microphone import MicrophoneSource
from edged.capture.wavfile import WavSource
from edged.config.settings import SourceSettings
from edged.errors import SourceError

#: kind → class. sounddevice itself is imported only when a microphone opens.
AUDIO_SOURCES: dict[str, Callable[[SourceSettings], AudioSource]] = {
    "wav": WavSource,
    "microphone": MicrophoneSource,
}


def open_audio_source(settings: SourceSettings) -> AudioSource:
    """A not yet started :class:`AudioSource` for ``settings``.

    Raises :class:`SourceError` for a video or unknown kind. Opening the
    device happens in the capture thread after :meth:`AudioSource.start`, so a
    microphone that is absent right now is reported as ``down``, not raised.
    """
    try:
        cls = AUDIO_SOURCES[settings.kind]
    except KeyError:
        kinds = ", ".join(sorted(AUDIO_SOURCES))
        raise SourceError(
            f"source {settings.name!r} has kind {settings.kind!r}, which is not an audio source "
            f"(audio kinds: {kinds}); use it in a pipeline with task = 'detection' or 'pose'"
        ) from None
    return cls(settings)
