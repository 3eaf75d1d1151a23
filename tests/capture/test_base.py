"""The shared capture loop: backoff, logging once per state change, credentials in URIs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edged.capture import VideoSource
from edged.capture.lifecycle import display_uri
from edged.capture.opencv import OpenCVSource
from tests.capture.support import settings, wait_for

MakeSource = Callable[..., VideoSource]


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    """Reopen delays double from reconnect_min_s, stay below the cap, and are jittered down."""
    source = OpenCVSource(settings(uri="/x.mp4", reconnect_min_s=1.0, reconnect_max_s=8.0))
    delays = [source._backoff() for _ in range(6)]
    for delay, nominal in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert 0.75 * nominal <= delay <= nominal


def test_state_changes_are_logged_once_not_per_frame(
    make_source: MakeSource, walking_clip: Path
) -> None:
    """Playing a whole clip logs starting, up and ended, and nothing per frame."""
    with capture_logs() as logs:
        source = make_source(uri=str(walking_clip), realtime=False, fps=240)
        source.start()
        assert source.ended.wait(5.0)
        source.stop()
    assert [e["event"] for e in logs] == ["source.starting", "source.up", "source.ended"]
    assert all(e["source"] == "cam0" for e in logs)


def test_repeated_failures_with_the_same_reason_log_once(
    make_source: MakeSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source that keeps failing to open logs 'source.down' once, not once per retry."""
    with capture_logs() as logs:
        source = make_source(
            uri=str(tmp_path / "gone.mp4"), reconnect_min_s=0.01, reconnect_max_s=0.02
        )
        opens: list[float] = []
        real_open = source._open

        def counting_open() -> float | None:
            opens.append(time.monotonic())
            return real_open()

        monkeypatch.setattr(source, "_open", counting_open)
        source.start()
        assert wait_for(lambda: len(opens) >= 5, 2.0)
        source.stop()
    assert [e["event"] for e in logs].count("source.down") == 1


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/s1", "rtsp://admin:***@10.0.0.5:554/s1"),
        ("rtsp://10.0.0.5/s1", "rtsp://10.0.0.5/s1"),
        ("/srv/clips/door.mp4", "/srv/clips/door.mp4"),
    ],
)
def test_passwords_in_uris_are_masked(uri: str, shown: str) -> None:
    """A password in a stream URL never reaches logs or status."""
    assert display_uri(uri) == shown


def test_start_twice_is_refused(make_source: MakeSource, walking_clip: Path) -> None:
    """A source runs one capture thread; a second start() is a programming error."""
    source = make_source(uri=str(walking_clip))
    source.start()
    with pytest.raises(RuntimeError, match="already started"):
        source.start()
