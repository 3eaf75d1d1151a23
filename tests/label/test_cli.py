"""Progress bars stay out of pipes and logs: drawn only when stderr is a terminal."""

from __future__ import annotations

import pytest

from edged.label.cli import DownloadBars, StepBar, progress


def test_no_bars_without_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(progress(iter([1, 2, 3]), total=3, desc="bench")) == [1, 2, 3]
    DownloadBars()("yamnet.tflite", 10, 20)
    StepBar("calibration")(1, 2)
    assert capsys.readouterr() == ("", "")
