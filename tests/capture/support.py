"""Helpers shared by the capture tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edged.config.settings import SourceSettings

WALKING_CLIP = "person_walking_0-30s.mp4"
WALKING_FRAMES = 301


def settings(**overrides: Any) -> SourceSettings:
    """Source settings with fast reconnects, so failure tests take milliseconds, not seconds."""
    values: dict[str, Any] = {
        "name": "cam0",
        "kind": "file",
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.3,
    }
    values.update(overrides)
    return SourceSettings(**values)


def u8(image: object) -> npt.NDArray[np.uint8]:
    """``image`` (an OpenCV result, typed loosely by its stubs) as a uint8 array."""
    return np.asarray(image, dtype=np.uint8)


def read_rgb(path: Path) -> npt.NDArray[np.uint8]:
    """The image file at ``path`` as RGB."""
    bgr = cv2.imread(str(path))
    assert bgr is not None, path
    return u8(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
