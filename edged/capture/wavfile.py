"""Sound files (WAV, FLAC, OGG/Vorbis, …) read with soundfile (libsndfile).

``realtime = true`` (the default) plays the file at its own sample rate, as a
microphone would deliver it, which is what demos and soak tests want.
``realtime = false`` reads it as fast as the slowest subscriber takes chunks,
without dropping anything (see :mod:`edged.capture.audio`), for benchmarks
and for classifying recordings.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile

from edged.capture.audio import CHUNK_S, AudioSource
from edged.config.settings import SourceSettings
from edged.errors import SourceError


class WavSource(AudioSource):
    """``wav`` source: a sound file, delivered in :data:`CHUNK_S` chunks."""

    def __init__(self, settings: SourceSettings) -> None:
        if settings.kind != "wav":
            raise SourceError(
                f"source {settings.name!r}: cannot read kind {settings.kind!r} as a sound file"
            )
        super().__init__(settings, finite=True)
        self._file: soundfile.SoundFile | None = None
        self._block = 0

    def _open(self) -> int:
        path = Path(self.settings.uri)
        # Checked here because libsndfile's own message for these cases is a
        # terse "System error" that does not name the fix.
        if not path.is_file():
            raise SourceError(f"sound file not found: {path} (check the source's 'uri')")
        if not os.access(path, os.R_OK):
            raise SourceError(f"sound file {path} is not readable by this user (permissions)")
        try:
            self._file = soundfile.SoundFile(path)
        except soundfile.SoundFileError as exc:
            raise SourceError(f"cannot decode sound file {path}: {exc}") from None
        rate = int(self._file.samplerate)
        self._block = max(1, round(rate * CHUNK_S))
        return rate

    def _read(self) -> npt.NDArray[np.generic] | None:
        if self._file is None:
            return None
        block: npt.NDArray[np.float32] = self._file.read(
            self._block, dtype="float32", always_2d=True
        )
        return block if len(block) else None

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
