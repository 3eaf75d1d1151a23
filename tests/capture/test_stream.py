"""Network streams: a real ffmpeg UDP sender dies and comes back; the source follows."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edged.capture import VideoSource
from edged.capture.opencv import STREAM_READ_TIMEOUT_MS
from tests.capture.support import wait_for

MakeSource = Callable[..., VideoSource]

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg binary")


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nothing is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def camera(walking_clip: Path) -> Iterator[Callable[[int], subprocess.Popen[bytes]]]:
    """Start simulated network cameras (ffmpeg sending the clip as MPEG-TS over UDP)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(port: int) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
             "-i", str(walking_clip), "-c", "copy", "-f", "mpegts",
             f"udp://127.0.0.1:{port}?pkt_size=1316"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow  # fault injection: CI runs it; the fast lane leaves it out
def test_udp_stream_goes_down_when_the_camera_dies_and_recovers(
    camera: Callable[[int], subprocess.Popen[bytes]], make_source: MakeSource
) -> None:
    """Killing the sender turns the source 'down' within 5 s; a new sender brings it back 'up'."""
    port = free_udp_port()
    sender = camera(port)
    source = make_source(kind="stream", uri=f"udp://127.0.0.1:{port}", fps=10)
    slot = source.subscribe()
    source.start()
    assert slot.get(timeout=10.0) is not None
    assert source.status.state == "up"
    assert source.status.width == 768

    sender.kill()
    sender.wait()
    killed = time.monotonic()
    assert wait_for(lambda: source.status.state == "down", 5.0)
    detected_s = time.monotonic() - killed
    assert detected_s <= STREAM_READ_TIMEOUT_MS / 1000 + 1.0
    assert "stopped delivering frames" in source.status.reason

    camera(port)
    assert wait_for(lambda: source.status.state == "up", 15.0)
    assert source.status.reconnects == 1
    frames_before = source.status.frames
    assert wait_for(lambda: source.status.frames > frames_before + 3, 3.0)
    # Stopped while the sender still sends, so no read is left waiting for its timeout.
    assert source.stop(timeout=2.0)
