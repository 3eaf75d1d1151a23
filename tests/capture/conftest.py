"""Fixtures for capture tests: the walking clip, and sources that are always stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edged.capture import VideoSource, open_video_source
from tests.capture.support import WALKING_CLIP, settings


@pytest.fixture
def walking_clip(media_dir: Path) -> Path:
    """The 768x432, 10 fps, 301-frame walking clip."""
    return media_dir / WALKING_CLIP


@pytest.fixture
def make_source() -> Iterator[Callable[..., VideoSource]]:
    """Build (not start) sources from settings overrides; every one is stopped at teardown."""
    made: list[VideoSource] = []

    def make(**overrides: Any) -> VideoSource:
        source = open_video_source(settings(**overrides))
        made.append(source)
        return source

    yield make
    for source in made:
        source.stop(timeout=5.0)
