"""A virtual microphone without sound hardware: ALSA's ``file`` PCM plays a recording.

ALSA's ``file`` plugin, on capture, replaces what its slave delivers with the
bytes of ``infile``; with the ``null`` slave that makes any raw PCM file a
microphone that PortAudio (and so sounddevice) records like a real one. A
``plug`` in front pins the file's sample format, rate and channels, so the
capture code asks for exactly what a USB microphone would offer.

The device has no clock: it delivers as fast as it is read (1 s of audio in
a few ms), and past the end of the file it repeats stale buffer contents, so
the raw file is padded with silence and readers stop after ``frames``.

PortAudio reads the ALSA configuration once per process, when it is
initialised: point ``ALSA_CONFIG_PATH`` at the file *before* a process
imports sounddevice, i.e. run the capture in a subprocess with :meth:`env`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

#: Name of the PCM the config defines (also reachable as ``default``).
DEVICE = "edgedmic"
#: Silence appended to the raw file, seconds (see the module docstring).
PAD_S = 2.0

_CONFIG = """\
# Written by tests/helpers/alsa.py: a virtual microphone playing a raw PCM file.
</usr/share/alsa/alsa.conf>

pcm.virtual_mic_file {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{raw}"
    format "raw"
}}

pcm.{device} {{
    type plug
    slave {{
        pcm "virtual_mic_file"
        format S16_LE
        rate {rate}
        channels {channels}
    }}
}}

pcm.!default "{device}"
"""


@dataclass(frozen=True, slots=True)
class VirtualMicrophone:
    """An ALSA config whose ``default`` and :data:`DEVICE` PCMs play ``raw``."""

    config: Path
    raw: Path
    rate: int
    channels: int
    #: Frames of the recording (without the silence padding).
    frames: int
    device: str = DEVICE

    def env(self) -> dict[str, str]:
        """The current environment plus ``ALSA_CONFIG_PATH``, for a subprocess."""
        return {**os.environ, "ALSA_CONFIG_PATH": str(self.config)}


def wav_to_raw(wav: Path, raw: Path, pad_s: float = PAD_S) -> tuple[int, int, int]:
    """Write ``wav`` as interleaved S16_LE to ``raw``; return (rate, channels, frames)."""
    pcm, rate = soundfile.read(wav, dtype="int16", always_2d=True)
    pad = np.zeros((round(pad_s * rate), pcm.shape[1]), dtype=np.int16)
    np.concatenate([pcm, pad]).astype("<i2").tofile(raw)
    return int(rate), int(pcm.shape[1]), int(pcm.shape[0])


def write_alsa_config(
    path: Path, raw: Path, *, rate: int, channels: int, device: str = DEVICE
) -> Path:
    """Write an ALSA config making ``device`` (and ``default``) a microphone playing ``raw``."""
    path.write_text(_CONFIG.format(device=device, raw=raw, rate=rate, channels=channels))
    return path


def virtual_microphone(wav: Path, directory: Path) -> VirtualMicrophone:
    """Turn ``wav`` into a raw file plus an ALSA config, both under ``directory``."""
    raw = directory / (wav.stem + ".s16le")
    rate, channels, frames = wav_to_raw(wav, raw)
    config = write_alsa_config(directory / "asound.conf", raw, rate=rate, channels=channels)
    return VirtualMicrophone(config=config, raw=raw, rate=rate, channels=channels, frames=frames)
