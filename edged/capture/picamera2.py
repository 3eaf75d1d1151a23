"""Raspberry Pi camera through picamera2 (libcamera), inference on the ``lores`` stream.

The ISP scales the sensor image twice in hardware: a small ``lores`` YUV420
stream at ``width x height`` for inference (converting it costs far less CPU
than scaling a full-size frame), and a larger ``main`` stream kept for
snapshots and offload (:meth:`Picamera2Source.latest_main`). Both come from
the same request, so they always show the same instant.

picamera2 only imports on Raspberry Pi OS (it needs the distribution's
``python3-libcamera``), so it is imported lazily when the camera is opened and
a missing import is a :class:`SourceError` the capture loop reports as ``down``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, cast

import cv2
import numpy as np
import numpy.typing as npt

from edged.capture.base import VideoSource
from edged.config.settings import SourceSettings
from edged.errors import SourceError

#: The main stream is this many times the lores size: sharp enough for an
#: offload crop, small enough for the Pi's memory bandwidth at video rates.
MAIN_SCALE = 2

NOT_IMPORTABLE = (
    "picamera2 is not importable: install the 'pi' extra and Raspberry Pi OS's python3-libcamera"
)


class Camera(Protocol):
    """The part of ``picamera2.Picamera2`` this source uses (and the test fake provides)."""

    def create_video_configuration(
        self, main: dict[str, Any], lores: dict[str, Any], controls: dict[str, Any]
    ) -> Any: ...  # picamera2's configuration is untyped

    def configure(self, config: Any) -> None: ...

    def stream_configuration(self, name: str) -> dict[str, Any]: ...

    def start(self) -> None: ...

    def capture_arrays(
        self, names: list[str]
    ) -> tuple[list[npt.NDArray[np.uint8]], dict[str, Any]]: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


def yuv420_to_rgb(
    buffer: npt.NDArray[np.uint8], width: int, height: int, stride: int
) -> npt.NDArray[np.uint8]:
    """Convert a libcamera YUV420 (I420) buffer with padded rows to ``H x W x 3`` RGB.

    libcamera pads every Y row to ``stride`` bytes and every U and V row to
    ``stride / 2``. Seen as picamera2's ``(height * 3/2, stride)`` array, each
    chroma "row" therefore holds *two* chroma rows, so cropping that array to
    ``width`` columns is right for Y but scrambles colour: the planes are cut
    apart and each cropped on its own stride here.
    """
    flat = buffer.reshape(-1)
    y_size = stride * height
    c_stride, c_height = stride // 2, height // 2
    c_size = c_stride * c_height
    if flat.size < y_size + 2 * c_size:
        raise SourceError(
            f"lores buffer of {flat.size} bytes is too small for YUV420 "
            f"{width}x{height} with stride {stride}"
        )
    if stride == width:
        i420 = flat[: y_size + 2 * c_size].reshape(height * 3 // 2, width)
    else:
        i420 = np.empty((height * 3 // 2, width), dtype=np.uint8)
        packed = i420.reshape(-1)
        c_packed = (width // 2) * c_height
        packed[: width * height] = flat[:y_size].reshape(height, stride)[:, :width].reshape(-1)
        for plane in range(2):  # U, then V
            src = flat[y_size + plane * c_size : y_size + (plane + 1) * c_size]
            dst = width * height + plane * c_packed
            rows = src.reshape(c_height, c_stride)[:, : width // 2]
            packed[dst : dst + c_packed] = rows.reshape(-1)
    # cv2 types its results as any numeric array; these are uint8 in, uint8 out.
    return cast("npt.NDArray[np.uint8]", cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420))


class Picamera2Source(VideoSource):
    """``picamera2`` source. ``uri`` may name the camera number ("0", "1"); default 0."""

    def __init__(self, settings: SourceSettings) -> None:
        super().__init__(settings, finite=False)
        self._camera: Camera | None = None
        self._lores = (0, 0, 0)  # width, height, stride as configured by libcamera
        self._main: npt.NDArray[np.uint8] | None = None

    @staticmethod
    def _camera_factory() -> Callable[[int], Camera]:
        """The ``Picamera2`` class; tests patch this to return a fake camera."""
        try:
            from picamera2 import Picamera2  # noqa: PLC0415 - only importable on a Pi
        except ImportError as exc:  # also "No module named 'libcamera'" off Raspberry Pi OS
            raise SourceError(f"{NOT_IMPORTABLE} ({exc})") from exc
        factory: Callable[[int], Camera] = Picamera2
        return factory

    def latest_main(self) -> npt.NDArray[np.uint8] | None:
        """The ``main`` stream image of the last frame as RGB, or None before the first.

        Converted on demand: most frames are never snapshotted or offloaded.
        """
        main = self._main
        if main is None:
            return None
        # picamera2's "RGB888" is B, G, R in memory (libcamera's naming).
        return cast("npt.NDArray[np.uint8]", cv2.cvtColor(main, cv2.COLOR_BGR2RGB))

    def _open(self) -> float | None:
        camera_cls = self._camera_factory()
        uri = self.settings.uri
        camera = camera_cls(int(uri) if uri.isdigit() else 0)
        self._camera = camera
        # I420 needs even sizes; the ISP would round them anyway.
        width, height = self.settings.width & ~1, self.settings.height & ~1
        config = camera.create_video_configuration(
            main={"size": (width * MAIN_SCALE, height * MAIN_SCALE), "format": "RGB888"},
            lores={"size": (width, height), "format": "YUV420"},
            # The sensor runs at the cap, so no frame is produced only to be dropped.
            controls={"FrameRate": self.settings.fps},
        )
        camera.configure(config)
        # libcamera may align the size and pads rows to its own stride: read
        # back what it chose instead of assuming what was asked for.
        lores = camera.stream_configuration("lores")
        (lw, lh), stride = lores["size"], lores["stride"]
        self._lores = (int(lw), int(lh), int(stride))
        camera.start()
        return None

    def _read(self) -> npt.NDArray[np.uint8] | None:
        camera = self._camera
        if camera is None:
            return None
        # One request for both streams, so the main image matches the frame.
        (main, lores), _metadata = camera.capture_arrays(["main", "lores"])
        self._main = main
        width, height, stride = self._lores
        return yuv420_to_rgb(lores, width, height, stride)

    def _close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is None:
            return
        try:
            camera.stop()
        finally:
            # close() releases the camera for the next open (or another process).
            camera.close()
