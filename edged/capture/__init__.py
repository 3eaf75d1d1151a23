"""Capture: cameras, streams, files and images become :class:`~edged.types.Frame` s.

One :class:`VideoSource` per configured source runs its own capture thread and
fans every frame out to each subscriber's :class:`LatestSlot` (README "How it works").
"""

from __future__ import annotations

from edged.capture.base import SourceStatus, VideoSource
from edged.capture.factory import open_video_source
from edged.capture.lifecycle import LifecycleState
from edged.capture.slot import LatestSlot

__all__ = ["LatestSlot", "LifecycleState", "SourceStatus", "VideoSource", "open_video_source"]
