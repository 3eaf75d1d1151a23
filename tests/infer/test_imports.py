"""The runtimes import on a bare device image: numpy and the runtime, nothing else of ours."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Blocks every third-party package the daemon needs but a runtime module must not.
SCRIPT = """
import sys
for name in ("pydantic", "pydantic_settings", "structlog", "paho", "cv2", "tomli_w"):
    sys.modules[name] = None
import edged.infer.litert, edged.infer.onnx
print("ok")
"""


def test_the_runtime_modules_import_without_the_daemons_dependencies() -> None:
    """tests/infer/test_tflite_legacy.py runs LiteRTModel in a venv with only numpy and tflite-runtime.

    That slow test failed in CI when the accelerator names moved into the
    settings module (pydantic); this fast one catches such an import at once.
    """
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
