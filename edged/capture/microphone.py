"""Microphones through PortAudio (sounddevice): USB, I2S HATs, any ALSA capture PCM.

``uri`` picks the device: empty for the system default, a number for a
PortAudio device index, or (part of) a device name as ``python -m
sounddevice`` lists it — ALSA card names (``"USB Audio"``), ``"hw:1,0"``, or
PCMs defined in ``asound.conf``. ``rate`` and ``channels`` are asked of the
device; channels are mixed to mono by the capture loop.

Samples are captured as int16, the native format of USB and I2S microphones.
Asking PortAudio for float32 instead makes ALSA's ``plug`` layer convert, and
with ALSA's ``file`` PCM (the virtual microphone of the tests) that path was
seen to skip hundreds of samples per period; with int16 the capture is
bit-exact.

PortAudio enumerates devices once, when it is initialised. A microphone
plugged in later is found by re-initialising PortAudio before a reopen, which
is only safe while no stream of this process is open.
"""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from edged.capture.audio import CHUNK_S, AudioSource
from edged.config.settings import SourceSettings
from edged.errors import SourceError

# Streams open in this process; PortAudio may be re-initialised only at 0.
_open_streams = 0
_pa_lock = threading.Lock()


def _sounddevice() -> ModuleType:
    """Import sounddevice lazily: without libportaudio2 only microphone sources fail."""
    try:
        import sounddevice  # noqa: PLC0415 - optional system library, see docstring
    except OSError as exc:  # raised when the PortAudio shared library is missing
        raise SourceError(
            f"PortAudio is not available ({exc}): install it with 'apt-get install libportaudio2'"
        ) from None
    module: ModuleType = sounddevice
    return module


def parse_device(uri: str) -> int | str | None:
    """``uri`` as sounddevice's ``device``: None (default), an index, or a name fragment."""
    uri = uri.strip()
    if not uri:
        return None
    return int(uri) if uri.isdigit() else uri


class MicrophoneSource(AudioSource):
    """``microphone`` source: a PortAudio input stream read in :data:`CHUNK_S` blocks."""

    def __init__(self, settings: SourceSettings) -> None:
        if settings.kind != "microphone":
            raise SourceError(
                f"source {settings.name!r}: cannot read kind {settings.kind!r} as a microphone"
            )
        super().__init__(settings, finite=False)
        self._stream: Any = None  # sounddevice.InputStream; the library ships no types
        self._block = max(1, round(settings.rate * CHUNK_S))

    def _open(self) -> int:
        global _open_streams  # noqa: PLW0603 - one PortAudio per process, see docstring
        sd = _sounddevice()
        device = parse_device(self.settings.uri)
        with _pa_lock:
            if self._failures and _open_streams == 0:
                # Rescan devices so that a re-plugged microphone can be found.
                # sounddevice documents these two calls as the way to rescan.
                sd._terminate()
                sd._initialize()
            try:
                sd.check_input_settings(
                    device=device,
                    channels=self.settings.channels,
                    dtype="int16",
                    samplerate=self.settings.rate,
                )
                stream = sd.InputStream(
                    device=device,
                    samplerate=self.settings.rate,
                    channels=self.settings.channels,
                    dtype="int16",
                    blocksize=self._block,
                )
            except (ValueError, sd.PortAudioError) as exc:
                raise SourceError(self._explain(sd, exc)) from None
            _open_streams += 1
            self._stream = stream
        stream.start()
        return self.settings.rate

    def _explain(self, sd: ModuleType, exc: Exception) -> str:
        """Why the device could not be opened, with the input devices that do exist."""
        try:
            devices = sd.query_devices()
            names = [
                f"{i}: {d['name']}" for i, d in enumerate(devices) if d["max_input_channels"] > 0
            ]
        except sd.PortAudioError:
            names = []
        wanted = self.settings.uri or "the default device"
        found = (
            "; ".join(names) if names else "none (no sound card, or no permission: group 'audio')"
        )
        return (
            f"cannot open microphone {wanted!r} at {self.settings.rate} Hz, "
            f"{self.settings.channels} channel(s): {exc}. Input devices: {found}"
        )

    def _read(self) -> npt.NDArray[np.generic] | None:
        data, overflowed = self._stream.read(self._block)
        if overflowed:
            # PortAudio lost input because this thread was late: count it and
            # tell subscribers the audio is not continuous here.
            self._device_overflow()
        block: npt.NDArray[np.int16] = np.asarray(data, dtype=np.int16)
        return block

    def _close(self) -> None:
        global _open_streams  # noqa: PLW0603
        stream, self._stream = self._stream, None
        if stream is None:
            return
        with _pa_lock:
            _open_streams -= 1
        try:
            stream.stop()
        finally:
            stream.close()
