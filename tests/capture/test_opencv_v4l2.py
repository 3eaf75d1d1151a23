"""V4L2 devices: an absent camera is reported, not fatal (no /dev/video* on CI machines)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edged.capture import VideoSource
from tests.capture.support import wait_for

MakeSource = Callable[..., VideoSource]


def test_absent_device_is_down_with_a_hint(make_source: MakeSource, tmp_path: Path) -> None:
    """Opening a V4L2 device that does not exist gives 'down' with the path and the group hint."""
    device = tmp_path / "video9"
    source = make_source(kind="v4l2", uri=str(device))
    source.start()
    assert wait_for(lambda: source.status.state == "down", 3.0)
    assert str(device) in source.status.reason
    assert "'video' group" in source.status.reason
