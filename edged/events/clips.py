"""Event clips: a ring of recent frames per pipeline, and MP4 recordings cut by frame time.

Memory: the ring holds JPEGs (not raw frames), at most ``clip_fps`` a second
for ``pre_roll_s + RING_SLACK_S`` seconds. Measured on the walking clip, a
768x432 frame is ~26 kB as a quality-75 JPEG against 972 kB raw, so the
defaults (5 s pre-roll, 10 fps: 72 frames) cost ~1.9 MB per pipeline; a
1080p camera about six times that.

Time: a clip spans ``[start - pre_roll_s, end + post_roll_s]`` in frame
timestamps and is written at a constant ``clip_fps``, each output frame
showing the latest input frame at its time; so its duration is that span
whatever rate the pipeline ran at. Frames reach a recording only after a lag
(the tracker's max age), because a track's ``end`` is known only that long
after it was last seen, and the clip must stop at ``end + post_roll_s``.

Encoder: H.264 through OpenCV when its FFmpeg has an encoder for it (the pip
wheel usually does not), else H.264 by piping raw frames to the ``ffmpeg``
binary (``libx264``) when present, else MPEG-4 Part 2 (``mp4v``) through
OpenCV, which every build has. The choice is logged once.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import subprocess
import tempfile
from collections import deque
from pathlib import Path
from typing import IO, Final, Literal, cast

import cv2
import numpy as np
import numpy.typing as npt
import structlog

log = structlog.get_logger(__name__)

Encoder = Literal["opencv-h264", "ffmpeg-libx264", "opencv-mp4v"]
#: The ring keeps this much more than the pre-roll: a track's ``start`` message
#: comes at its second sighting, up to the tracker's max age after its first.
RING_SLACK_S: Final = 2.0
#: A JPEG of a frame is decoded once and written as often as the output rate needs.
_ENCODE_TIMEOUT_S: Final = 30.0


@functools.cache
def choose_encoder() -> Encoder:
    """The best MP4 encoder this machine has (probed once, logged once)."""
    encoder: Encoder = "opencv-mp4v"
    with tempfile.TemporaryDirectory(prefix="edged-probe-") as tmp:
        writer = cv2.VideoWriter(
            os.path.join(tmp, "probe.mp4"), cv2.VideoWriter.fourcc(*"avc1"), 10.0, (64, 48)
        )
        h264 = writer.isOpened()
        writer.release()
    if h264:
        encoder = "opencv-h264"
    elif _ffmpeg_has_libx264():
        encoder = "ffmpeg-libx264"
    log.info("events.clip_encoder", encoder=encoder)
    return encoder


def _ffmpeg_has_libx264() -> bool:
    binary = shutil.which("ffmpeg")
    if binary is None:
        return False
    try:
        out = subprocess.run(
            [binary, "-hide_banner", "-encoders"],
            capture_output=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"libx264" in out


class ClipWriter:
    """Writes BGR frames of one size to an MP4 at a constant rate."""

    def __init__(self, path: Path, size: tuple[int, int], fps: float, encoder: Encoder) -> None:
        self.path = path
        self.size = size
        self.frames = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._cv: cv2.VideoWriter | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        if encoder == "ffmpeg-libx264":
            w, h = size
            # yuv420p: the pixel format every player decodes; faststart: playable
            # while downloading (the index goes first).
            cmd = [
                cast(str, shutil.which("ffmpeg")),
                "-hide_banner", "-loglevel", "error", "-y",
                "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}", "-r", f"{fps:g}",
                "-i", "-",
                "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                "-movflags", "+faststart", "-f", "mp4", str(path),
            ]  # fmt: skip
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        else:
            fourcc = "avc1" if encoder == "opencv-h264" else "mp4v"
            self._cv = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, size)
            if not self._cv.isOpened():
                raise OSError(f"OpenCV cannot write {fourcc} to {path}")

    def write(self, bgr: npt.NDArray[np.uint8]) -> None:
        """Append one frame (resized when the source's size changed mid-clip)."""
        if (bgr.shape[1], bgr.shape[0]) != self.size:
            bgr = np.asarray(cv2.resize(bgr, self.size, interpolation=cv2.INTER_AREA), np.uint8)
        if self._proc is not None:
            stdin = cast(IO[bytes], self._proc.stdin)
            stdin.write(np.ascontiguousarray(bgr).tobytes())
        elif self._cv is not None:
            self._cv.write(bgr)
        self.frames += 1

    def close(self) -> None:
        """Finish the file; OSError when the encoder failed."""
        if self._cv is not None:
            self._cv.release()
            return
        proc = self._proc
        assert proc is not None
        _, err = proc.communicate(timeout=_ENCODE_TIMEOUT_S)
        if proc.returncode != 0:
            raise OSError(
                f"ffmpeg exited {proc.returncode} writing {self.path}: "
                f"{err.decode(errors='replace').strip()[-300:]}"
            )

    def abort(self) -> None:
        """Give up: stop the encoder and delete the file."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.communicate()
        if self._cv is not None:
            self._cv.release()
        self.path.unlink(missing_ok=True)


class Decimator:
    """Takes at most ``fps`` frames a second, on average, from a faster source."""

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self._due = -math.inf

    def take(self, ts: float) -> bool:
        """Whether the frame at ``ts`` is taken."""
        # A quarter period early still counts: a 10 fps source jitters around
        # its grid, and refusing a frame 1 ms early would halve its rate.
        if ts < self._due - 0.25 * self.period:
            return False
        # After a gap the schedule restarts from this frame instead of
        # catching up with a burst.
        self._due = max(self._due + self.period, ts + 0.5 * self.period)
        return True


class FrameRing:
    """The last ``keep_s`` seconds of a pipeline's frames as JPEGs (fed at most ``fps`` a second)."""

    def __init__(self, keep_s: float, fps: float) -> None:
        self.keep_s = keep_s
        self.frames: deque[tuple[float, bytes]] = deque(maxlen=math.ceil(keep_s * fps) + 2)

    def push(self, ts: float, jpeg: bytes) -> None:
        self.frames.append((ts, jpeg))
        while self.frames and self.frames[0][0] < ts - self.keep_s:
            self.frames.popleft()

    @property
    def bytes(self) -> int:
        return sum(len(j) for _, j in self.frames)


def _decode(jpeg: bytes) -> npt.NDArray[np.uint8]:
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:  # pragma: no cover - the ring holds only JPEGs it encoded itself
        raise ValueError("a ring frame could not be decoded")
    return np.asarray(bgr, np.uint8)


class Recording:
    """The clip of one event, streamed to its encoder as frames come in.

    ``feed`` frames in timestamp order; frames younger than ``lag_s`` are
    held back until the end time is known (see the module docstring).
    """

    def __init__(
        self, path: Path, start: float, *, fps: float, lag_s: float, encoder: Encoder
    ) -> None:
        self.path = path
        self.start = start
        self.end: float | None = None
        self.fps = fps
        self._lag_s = lag_s
        self._encoder = encoder
        self._pending: deque[tuple[float, bytes]] = deque()
        self._writer: ClipWriter | None = None
        self._ticks = 0
        self._current: npt.NDArray[np.uint8] | None = None
        self.newest = -math.inf

    def feed(self, ts: float, jpeg: bytes) -> None:
        """Add a frame; writes whatever is older than the lag (or than the end, once known)."""
        if ts < self.start or ts <= self.newest:
            return
        self.newest = ts
        self._pending.append((ts, jpeg))
        horizon = ts - self._lag_s if self.end is None else min(ts, self.end)
        while self._pending and self._pending[0][0] <= horizon:
            self._emit(*self._pending.popleft())

    @property
    def complete(self) -> bool:
        """The end is known and a frame at or after it was seen."""
        return self.end is not None and self.newest >= self.end

    def _tick_time(self) -> float:
        return self.start + self._ticks / self.fps

    def _write_current(self) -> None:
        assert self._current is not None
        if self._writer is None:
            h, w = self._current.shape[:2]
            size = (max(2, w - w % 2), max(2, h - h % 2))  # H.264 4:2:0 needs even sides
            self._writer = ClipWriter(self.path, size, self.fps, self._encoder)
        self._writer.write(self._current)
        self._ticks += 1

    def _emit(self, ts: float, jpeg: bytes) -> None:
        if self._current is None:
            # The clip starts at its first frame when the ring had less pre-roll.
            self.start = ts
        else:
            while self._tick_time() < ts:
                self._write_current()
        self._current = _decode(jpeg)

    def finish(self, end: float) -> float:
        """Write up to ``end`` (frame time), close the file; the clip's duration in seconds."""
        end = min(end, self.end if self.end is not None else end)
        while self._pending and self._pending[0][0] <= end:
            self._emit(*self._pending.popleft())
        self._pending.clear()
        if self._current is None:
            raise ValueError("no frame was recorded for this clip")
        while self._tick_time() < end or self._ticks == 0:
            self._write_current()
        assert self._writer is not None
        self._writer.close()
        return self._ticks / self.fps

    def abort(self) -> None:
        """Give up the clip and delete its file."""
        if self._writer is not None:
            self._writer.abort()
