"""A stand-in for ``picamera2.Picamera2`` that serves a real photo as camera frames.

The ``lores`` stream is laid out like libcamera's YUV420: the photo is
converted to I420 with OpenCV, then every Y row is padded to ``stride`` bytes
and every U and V row to ``stride / 2``, with the padding filled with a loud
value. A converter that ignores the stride, or crops the chroma planes
wrongly, therefore produces visibly wrong colours instead of passing by luck.
The ``main`` stream is the photo at the main size in picamera2's "RGB888"
memory order (B, G, R).

Patch it in at :meth:`edged.capture.picamera2.Picamera2Source._camera_factory`.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import cv2
import numpy as np
import numpy.typing as npt

#: Value written into row padding; far from any plausible pixel so errors show.
PAD_VALUE = 255


def padded_i420(
    rgb: npt.NDArray[np.uint8], stride: int, pad_value: int = PAD_VALUE
) -> npt.NDArray[np.uint8]:
    """``rgb`` (even width and height) as a libcamera YUV420 array of shape ``(h*3/2, stride)``."""
    height, width = rgb.shape[:2]
    i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).reshape(-1)
    c_w, c_h = width // 2, height // 2
    y = i420[: width * height].reshape(height, width)
    u = i420[width * height : width * height + c_w * c_h].reshape(c_h, c_w)
    v = i420[width * height + c_w * c_h :].reshape(c_h, c_w)
    out = np.full(stride * height * 3 // 2, pad_value, dtype=np.uint8)
    out[: stride * height].reshape(height, stride)[:, :width] = y
    c_size = (stride // 2) * c_h
    for plane, data in enumerate((u, v)):
        start = stride * height + plane * c_size
        out[start : start + c_size].reshape(c_h, stride // 2)[:, :c_w] = data
    return out.reshape(height * 3 // 2, stride)


class FakePicamera2:
    """Serves one RGB photo through picamera2's configure/start/capture_arrays calls."""

    #: Every camera created, newest last, so a test can inspect the one a source used.
    instances: ClassVar[list[FakePicamera2]] = []

    def __init__(self, camera_num: int = 0, *, photo: npt.NDArray[np.uint8], align: int = 64):
        self.camera_num = camera_num
        self.photo = photo
        self.align = align
        self.frame_rate = 30.0
        self.started = False
        self.closed = False
        self.captures = 0
        self._streams: dict[str, dict[str, Any]] = {}
        self._arrays: dict[str, npt.NDArray[np.uint8]] = {}
        self._due = 0.0
        FakePicamera2.instances.append(self)

    def create_video_configuration(
        self, main: dict[str, Any], lores: dict[str, Any], controls: dict[str, Any]
    ) -> dict[str, Any]:
        return {"main": dict(main), "lores": dict(lores), "controls": dict(controls)}

    def configure(self, config: dict[str, Any]) -> None:
        self.frame_rate = float(config["controls"].get("FrameRate", 30.0))
        lw, lh = config["lores"]["size"]
        # Like libcamera: pad rows to the alignment, and always pad a little
        # so that the test exercises the stride even for aligned widths.
        stride = -(-lw // self.align) * self.align
        if stride == lw:
            stride += self.align
        lores_rgb = np.asarray(
            cv2.resize(self.photo, (lw, lh), interpolation=cv2.INTER_AREA), dtype=np.uint8
        )
        mw, mh = config["main"]["size"]
        main_rgb = cv2.resize(self.photo, (mw, mh), interpolation=cv2.INTER_AREA)
        self._streams = {
            "lores": {"size": (lw, lh), "stride": stride, "format": config["lores"]["format"]},
            "main": {"size": (mw, mh), "stride": mw * 3, "format": config["main"]["format"]},
        }
        self._arrays = {
            "lores": padded_i420(lores_rgb, stride),
            "main": np.asarray(cv2.cvtColor(main_rgb, cv2.COLOR_RGB2BGR), dtype=np.uint8),
        }

    def stream_configuration(self, name: str) -> dict[str, Any]:
        return dict(self._streams[name])

    def start(self) -> None:
        self.started = True
        self._due = time.monotonic()

    def capture_arrays(
        self, names: list[str]
    ) -> tuple[list[npt.NDArray[np.uint8]], dict[str, Any]]:
        if not self.started:
            raise RuntimeError("camera not started")
        # Block until the next frame is "exposed", like a real sensor does.
        self._due += 1.0 / self.frame_rate
        delay = self._due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.captures += 1
        return [self._arrays[n].copy() for n in names], {"SensorTimestamp": time.monotonic_ns()}

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True
