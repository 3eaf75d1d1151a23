"""Object tracking: stable ids for detections across frames, and track events."""

from __future__ import annotations

from edged.track.tracker import Track, Tracker, TrackEvent

__all__ = ["Track", "TrackEvent", "Tracker"]
