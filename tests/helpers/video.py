"""Reading video files back the way a user's player would: through ffprobe."""

from __future__ import annotations

import json
import subprocess


def ffprobe(path: str) -> tuple[float, str]:
    """``(duration in seconds, codec name of the first stream)`` of a video file."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_name",
         "-of", "json", path],
        capture_output=True, check=True, text=True,
    ).stdout  # fmt: skip
    doc = json.loads(out)
    return float(doc["format"]["duration"]), doc["streams"][0]["codec_name"]
