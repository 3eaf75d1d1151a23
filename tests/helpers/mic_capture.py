"""Record from a microphone source in a fresh process: ``python -m tests.helpers.mic_capture``.

PortAudio reads the ALSA configuration once per process, so tests that play a
recording through :mod:`tests.helpers.alsa`'s virtual microphone run the real
:class:`~edged.capture.microphone.MicrophoneSource` here, in a subprocess
started with ``ALSA_CONFIG_PATH`` set, and get back every chunk it delivered.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edged.capture.audio import CHUNK_S
from edged.capture.audio_factory import open_audio_source
from edged.config.settings import SourceSettings
from edged.types import AudioChunk
from tests.helpers.alsa import VirtualMicrophone

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class Recording:
    """What a microphone source delivered: its chunks and its final status."""

    chunks: list[AudioChunk]
    status: dict[str, object]

    @property
    def samples(self) -> np.ndarray:
        return np.concatenate([c.samples for c in self.chunks])


def record(
    mic: VirtualMicrophone, out: Path, *, device: str | None = None, timeout: float = 20.0
) -> Recording:
    """Run this module in a subprocess against ``mic``; return the chunks covering the clip."""
    cmd = [sys.executable, "-m", "tests.helpers.mic_capture"]
    cmd += ["--device", mic.device if device is None else device, "--out", str(out)]
    cmd += ["--rate", str(mic.rate), "--channels", str(mic.channels), "--frames", str(mic.frames)]
    proc = subprocess.run(
        cmd, env=mic.env(), cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"microphone capture failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    with np.load(out) as data:
        lengths, ts, mono = data["lengths"], data["ts"], data["mono"]
        samples, rate = data["samples"], int(data["rate"])
    parts = np.split(samples, np.cumsum(lengths)[:-1])
    chunks = [
        AudioChunk(
            ts=float(t), mono=float(m), source="mic0", samples=p.astype(np.float32), rate=rate
        )
        for t, m, p in zip(ts, mono, parts, strict=True)
    ]
    return Recording(chunks, json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="")
    parser.add_argument("--rate", type=int, required=True)
    parser.add_argument("--channels", type=int, required=True)
    parser.add_argument("--frames", type=int, required=True, help="stop after this many frames")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    settings = SourceSettings(
        name="mic0",
        kind="microphone",
        uri=args.device,
        rate=args.rate,
        channels=args.channels,
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
    )
    source = open_audio_source(settings)
    # Room for the whole clip: the virtual device has no clock and runs far
    # ahead of real time, and the chunks past the clip may then be dropped.
    queue = source.subscribe(max_chunks=math.ceil(args.frames / (args.rate * CHUNK_S)) + 8)
    source.start()
    chunks: list[AudioChunk] = []
    have, deadline = 0, time.monotonic() + 15.0
    while have < args.frames and time.monotonic() < deadline:
        chunk = queue.get(timeout=0.5)
        if chunk is not None:
            chunks.append(chunk)
            have += len(chunk.samples)
    started = time.monotonic()
    stopped = source.stop(timeout=2.0)
    status = asdict(source.status) | {"stop_s": time.monotonic() - started, "stopped": stopped}
    np.savez(
        args.out,
        samples=np.concatenate([c.samples for c in chunks]) if chunks else np.zeros(0, np.float32),
        lengths=np.array([len(c.samples) for c in chunks], dtype=np.int64),
        ts=np.array([c.ts for c in chunks]),
        mono=np.array([c.mono for c in chunks]),
        rate=np.array(chunks[0].rate if chunks else 0),
    )
    print(json.dumps(status))
    return 0 if have >= args.frames else 1


if __name__ == "__main__":
    sys.exit(main())
