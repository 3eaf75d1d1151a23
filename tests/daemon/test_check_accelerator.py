"""``edged check`` and ``run`` on ``[[pipelines]] accelerator``: absent is exit 78, auto falls back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edged.errors import EX_CONFIG
from edged.infer import accel
from tests.helpers.broker import RunningBroker
from tests.helpers.daemon import base_config, write_config

pytestmark = pytest.mark.broker


def edged(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edged", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def config(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker, accelerator: str
) -> Path:
    cfg: dict[str, Any] = base_config(tmp_path, models_dir, broker)
    cfg["sources"] = [{"name": "cam0", "kind": "images", "uri": media_dir / "*.jpg"}]
    cfg["pipelines"] = [
        {
            "name": "door",
            "source": "cam0",
            "task": "detection",
            "model": "ssd-mobilenet-v1-coco-int8",
        },
        {
            "name": "yard",
            "source": "cam0",
            "task": "detection",
            "model": "yolox-nano-coco",
            "accelerator": accelerator,
        },
    ]
    return write_config(tmp_path / "edged.toml", cfg)


def warnings(stderr: str) -> list[dict[str, Any]]:
    out = []
    for line in stderr.splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            doc = json.loads(line[start:])
        except ValueError:
            continue
        if doc.get("level") == "warning":
            out.append(doc)
    return out


@pytest.mark.parametrize("command", ["check", "run"])
def test_an_absent_accelerator_is_a_config_error_naming_the_key_and_the_providers(
    command: str, tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """accelerator = "cuda" without onnxruntime-gpu: exit 78, key path and ORT's providers."""
    if "cuda" in accel.available("onnxruntime"):
        pytest.skip("CUDA is installed here")
    cfg = config(tmp_path, models_dir, media_dir, broker, "cuda")
    result = edged(command, "--config", str(cfg))
    assert result.returncode == EX_CONFIG, result.stderr
    assert "pipelines[1].accelerator: cuda is not installed on this device" in result.stderr
    assert "get_available_providers()" in result.stderr
    assert "'CPUExecutionProvider'" in result.stderr
    assert "Traceback" not in result.stderr


def test_auto_falls_back_to_the_cpu_with_one_warning(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """auto with two ONNX pipelines on a CPU-only ORT: check passes, one fallback warning."""
    if accel.available("onnxruntime") != ["cpu"]:
        pytest.skip("this onnxruntime has an execution provider besides the CPU")
    cfg: dict[str, Any] = base_config(tmp_path, models_dir, broker)
    cfg["sources"] = [{"name": "cam0", "kind": "images", "uri": media_dir / "*.jpg"}]
    cfg["pipelines"] = [
        {"name": n, "source": "cam0", "task": "detection", "model": "yolox-nano-coco"}
        for n in ("door", "yard")
    ]
    result = edged("check", "--config", str(write_config(tmp_path / "edged.toml", cfg)))
    assert result.returncode == 0, result.stderr
    found = warnings(result.stderr)
    assert [w["event"] for w in found] == ["infer.accelerator_fallback"], result.stderr
    assert found[0]["accelerator"] == "cpu"
    assert "CPUExecutionProvider" in found[0]["hint"]
