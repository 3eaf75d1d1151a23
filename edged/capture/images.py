"""Still images as a video source: a folder, one file, or a glob, delivered at ``fps``.

Useful for demos, golden-set runs and for feeding a pipeline the frames an
operator saved. Files are read in sorted order; a file that cannot be read or
decoded is logged once and skipped, so one bad upload does not stop the source.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from edged.capture.base import VideoSource
from edged.config.settings import SourceSettings
from edged.errors import SourceError

#: File name suffixes read from a folder or glob (case-insensitive).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


def list_images(uri: str) -> list[Path]:
    """The image files ``uri`` names: a directory's images, one file, or a glob's matches.

    Sorted by path so that the order is the same on every run.
    """
    path = Path(uri)
    if path.is_dir():
        candidates = [p for p in path.iterdir() if p.is_file()]
    elif path.is_file():
        return [path]  # named explicitly: trust it, whatever its suffix
    else:
        candidates = [Path(p) for p in glob.glob(uri) if Path(p).is_file()]  # uri is a pattern here
    return sorted(p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES)


class ImagesSource(VideoSource):
    """``images`` source: every image under ``uri`` in order, then loop or end."""

    def __init__(self, settings: SourceSettings) -> None:
        super().__init__(settings, finite=True)
        self._files: list[Path] = []
        self._index = 0
        self._bad: set[Path] = set()  # already logged, so each is reported once

    def _open(self) -> float | None:
        # Listed on every (re)open so that a loop picks up files added meanwhile.
        self._files = list_images(self.settings.uri)
        self._index = 0
        if not self._files:
            raise SourceError(
                f"no images found at {self.settings.uri!r}: give a folder, a file or a glob "
                f"of {', '.join(sorted(IMAGE_SUFFIXES))} files"
            )
        return None

    def _read(self) -> npt.NDArray[np.uint8] | None:
        while self._index < len(self._files):
            path = self._files[self._index]
            self._index += 1
            image = self._load(path)
            if image is not None:
                return image
        return None

    def _load(self, path: Path) -> npt.NDArray[np.uint8] | None:
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as exc:
            self._skip(path, f"cannot read: {exc.strerror}")
            return None
        # imdecode (not imread) so a read error and a decode error get
        # different messages; IMREAD_COLOR also flattens grey and alpha to 3 channels.
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if bgr is None:
            self._skip(path, "not a decodable image")
            return None
        # cv2 types its results as any numeric array; these are uint8 in, uint8 out.
        return cast("npt.NDArray[np.uint8]", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    def _skip(self, path: Path, why: str) -> None:
        if path not in self._bad:
            self._bad.add(path)
            self._log.warning("source.image_skipped", path=str(path), reason=why)

    def _close(self) -> None:
        self._files = []
        self._index = 0
