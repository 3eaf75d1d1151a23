"""Video files, V4L2 devices and network streams through one OpenCV code path.

OpenCV's wheel carries its own FFmpeg, so files and RTSP/HTTP/UDP streams need
no system codec packages; V4L2 devices (USB webcams, the Jetson's CSI bridge)
use OpenCV's V4L2 backend directly.

Pacing of ``file`` sources: ``fps`` is always a cap. With ``realtime = true``
the file is also paced at its own frame rate, so frames arrive at
``min(file fps, fps)`` per second, as from a camera. With ``realtime = false``
only the cap applies, and the file is not live: each frame waits until every
reader took the previous one (see ``VideoSource._readers_ready``), so no frame
is dropped and decoding overlaps inference (set ``fps = 240``, the maximum,
for benchmarks and tests). A single rule — ``fps`` never exceeded — is easier
to reason about than a cap that applies only sometimes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from edged.capture.base import VideoSource
from edged.capture.lifecycle import display_uri
from edged.config.settings import SourceSettings
from edged.errors import SourceError

#: A stream that cannot be opened within this time counts as down, ms.
STREAM_OPEN_TIMEOUT_MS = 5000
#: A stream that delivers nothing for this long counts as down, ms.
STREAM_READ_TIMEOUT_MS = 3000

# RTSP over UDP loses packets on Wi-Fi and smears whole frames; TCP is what
# every NVR defaults to. OpenCV only takes FFmpeg demuxer options from this
# variable, which is process-wide, so it is set once here and only when the
# operator has not set it (their value wins). Demuxers other than RTSP ignore
# the option.
os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")

# Frame rates a container reports beyond this are bogus (timebase artefacts).
_MAX_SANE_FILE_FPS = 1000.0


class OpenCVSource(VideoSource):
    """``file``, ``v4l2`` or ``stream`` source read with ``cv2.VideoCapture``."""

    def __init__(self, settings: SourceSettings) -> None:
        if settings.kind not in ("file", "v4l2", "stream"):
            raise SourceError(
                f"source {settings.name!r}: OpenCV cannot read kind {settings.kind!r}"
            )
        # Only a file has a real end; a camera or stream that ends has failed.
        super().__init__(settings, finite=settings.kind == "file")
        self._cap: cv2.VideoCapture | None = None

    def _open(self) -> float | None:
        kind, uri = self.settings.kind, self.settings.uri
        if kind == "file":
            return self._open_file(Path(uri))
        if kind == "v4l2":
            self._open_v4l2(uri)
        else:
            self._open_stream(uri)
        return None

    def _open_file(self, path: Path) -> float | None:
        # Checked here because OpenCV's own error for a missing file is a
        # generic "can't open" warning on stderr, not an actionable reason.
        if not path.is_file():
            raise SourceError(f"video file not found: {path} (check the source's 'uri')")
        if not os.access(path, os.R_OK):
            raise SourceError(f"video file {path} is not readable by this user (permissions)")
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        self._cap = cap
        if not cap.isOpened():
            raise SourceError(f"cannot decode video file {path}: not a format FFmpeg can read")
        file_fps = float(cap.get(cv2.CAP_PROP_FPS))
        if self.settings.realtime and 0.0 < file_fps <= _MAX_SANE_FILE_FPS:
            return file_fps
        return None

    def _open_v4l2(self, uri: str) -> None:
        # "0" means /dev/video0; OpenCV wants the index as an int for that.
        device: int | str = int(uri) if uri.isdigit() else uri
        cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
        self._cap = cap
        if not cap.isOpened():
            raise SourceError(
                f"cannot open V4L2 device {uri}: check that it exists and that the "
                "edged user is in the 'video' group"
            )
        # Requests, not guarantees: the driver picks the nearest mode it has.
        # Asking for the cap rate keeps the camera from producing frames that
        # would only be dropped.
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.settings.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.settings.height)
        cap.set(cv2.CAP_PROP_FPS, self.settings.fps)

    def _open_stream(self, uri: str) -> None:
        # Without these timeouts FFmpeg waits forever on a dead camera, and
        # the capture loop could never report "down" or reconnect.
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            STREAM_OPEN_TIMEOUT_MS,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            STREAM_READ_TIMEOUT_MS,
        ]
        cap = cv2.VideoCapture(uri, cv2.CAP_FFMPEG, params)
        self._cap = cap
        if not cap.isOpened():
            raise SourceError(
                f"cannot open stream {display_uri(uri)} within "
                f"{STREAM_OPEN_TIMEOUT_MS / 1000:g} s: check the URL, the camera and the network"
            )

    def _read(self) -> npt.NDArray[np.uint8] | None:
        cap = self._cap
        if cap is None:
            return None
        ok, bgr = cap.read()
        if not ok or bgr is None:
            return None
        # OpenCV decodes to BGR; every stage after capture expects RGB, so the
        # conversion happens exactly once, here.
        code = cv2.COLOR_GRAY2RGB if bgr.ndim == 2 else cv2.COLOR_BGR2RGB
        # cv2 types its results as any numeric array; these are uint8 in, uint8 out.
        return cast("npt.NDArray[np.uint8]", cv2.cvtColor(bgr, code))

    def _close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
