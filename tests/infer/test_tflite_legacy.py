"""The tflite-runtime fallback, for real: its own venv with numpy < 2, as old device images have."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edged.infer.litert import LiteRTModel
from tests.helpers.vision import read_rgb

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, sys
sys.modules["ai_edge_litert"] = None  # as on an image without LiteRT
import numpy as np
from pathlib import Path
from edged.infer.litert import LiteRTModel
model = LiteRTModel(Path(sys.argv[1]))
image = np.load(sys.argv[2])
boxes, classes, scores, count = model.run([image])
print(json.dumps({"runtime": model.runtime, "numpy": np.__version__,
                  "scores": scores[0].tolist(), "classes": classes[0].tolist()}))
"""


@pytest.mark.slow
def test_tflite_runtime_in_a_numpy1_venv(
    tmp_path: Path, model_mirror: Path, media_dir: Path
) -> None:
    """In a venv with numpy < 2 and tflite-runtime only, edged's LiteRT module falls back and agrees."""
    venv = tmp_path / "venv"
    # No pip of its own (bootstrapping one took half the test's time): this
    # environment's pip installs into it (pip >= 22.3, --python).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "-q",
            "numpy<2",
            "tflite-runtime",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if pip.returncode != 0:
        pytest.skip(f"tflite-runtime cannot be installed here: {pip.stderr.strip()[-300:]}")
    import cv2  # noqa: PLC0415

    image = cv2.resize(read_rgb(media_dir / "grace_hopper.jpg"), (300, 300))[np.newaxis]
    np.save(tmp_path / "image.npy", image)
    model = model_mirror / "coco_ssd_mobilenet_v1_1.0_quant.tflite"
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", SCRIPT, str(model), str(tmp_path / "image.npy")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO)},
    )
    legacy = json.loads(out.stdout.strip().splitlines()[-1])
    assert legacy["runtime"].startswith("tflite-runtime 2.")
    assert legacy["numpy"].startswith("1.")
    _, classes, scores, _ = LiteRTModel(model).run([image])
    assert legacy["classes"][:2] == classes[0][:2].tolist()  # person, tie
    assert np.allclose(legacy["scores"], scores[0], atol=0.02)
