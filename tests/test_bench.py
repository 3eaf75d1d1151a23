"""``python -m bench`` runs, prints its table and writes its figures (one cheap row only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.broker


def test_quick_startup_row(tmp_path: Path, model_mirror: Path, media_dir: Path) -> None:
    """The start-to-READY measurement spawns the real daemon and reports a sane median."""
    out = tmp_path / "bench.json"
    env = {
        **os.environ,
        "EDGED_MODEL_MIRROR": str(model_mirror),
        "EDGED_MEDIA_DIR": str(media_dir),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "startup", "--json", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| start to READY=1" in done.stdout
    doc = json.loads(out.read_text())
    (row,) = doc["rows"]
    assert row["key"] == "startup"
    assert row["verdict"] in {"✓", "✗"}
    assert 0 < min(row["values"]["times_s"]) <= row["values"]["median_s"] < 60
    assert doc["machine"]["python"].startswith("Python ")
