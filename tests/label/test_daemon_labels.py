"""The daemon publishes each loaded model's label, retained, at start and after a reload."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from edged.label.nutrition import NutritionLabel, label_path
from tests.helpers.broker import RunningBroker, matching
from tests.helpers.daemon import Daemon, base_config, write_config

pytestmark = pytest.mark.broker

LABELS = "edged/testdev/models/+/label"


def topic(model: str) -> str:
    return f"edged/testdev/models/{model}/label"


def config(tmp: Path, models: Path, media: Path, broker: RunningBroker, pose: bool) -> Path:
    cfg = base_config(tmp, models, broker)
    cfg["sources"] = [
        {"name": "cam0", "kind": "images", "uri": media / "*.jpg", "fps": 2, "loop": True}
    ]
    second: dict[str, Any] = (
        {"name": "body", "task": "pose", "model": "movenet-lightning-int8", "threshold": 0.3}
        if pose
        else {"name": "door2", "task": "detection", "model": "yolox-nano-coco"}
    )
    cfg["pipelines"] = [
        {
            "name": "door",
            "source": "cam0",
            "task": "detection",
            "model": "ssd-mobilenet-v1-coco-int8",
        },
        {"source": "cam0", **second},
    ]
    return write_config(tmp / "edged.toml", cfg)


def test_labels_at_start_and_after_a_model_change(
    benched: dict[str, NutritionLabel],
    label_models: Path,
    media_dir: Path,
    broker: RunningBroker,
    tmp_path: Path,
) -> None:
    # The daemon's models dir: every model, but only SSD and YOLOX have a measured label.
    models = tmp_path / "models"
    models.mkdir()
    for f in label_models.iterdir():
        if f.is_file() and not f.name.endswith(".label.json"):
            shutil.copy2(f, models / f.name)
    for name in ("ssd-mobilenet-v1-coco-int8", "yolox-nano-coco"):
        for accelerator in ("cpu", "xnnpack"):
            if label_path(label_models, name, accelerator).exists():
                shutil.copy2(
                    label_path(label_models, name, accelerator),
                    label_path(models, name, accelerator),
                )

    cfg = config(tmp_path, models, media_dir, broker, pose=True)
    sub = broker.subscriber(LABELS)
    states = broker.subscriber("edged/testdev/state")
    with Daemon(cfg) as daemon:
        ssd = json.loads(sub.wait_for(matching(topic("ssd-mobilenet-v1-coco-int8")), 30).payload)
        pose = json.loads(sub.wait_for(matching(topic("movenet-lightning-int8")), 5).payload)
        # SSD runs on LiteRT's XNNPACK (auto): its XNNPACK label, never the CPU one.
        assert ssd == benched["ssd-mobilenet-v1-coco-int8"].model_dump(mode="json")
        assert ssd["accelerator"] == "xnnpack"
        assert ssd["parity"]["passed"] is True
        assert ssd["measured"] is True
        assert ssd["latency_ms"]["p95"] > 0
        # Never measured: the static part only.
        assert pose["measured"] is False
        assert pose["sha256"] == benched["movenet-lightning-int8"].sha256
        assert (pose["quantization"], pose["size_bytes"]) == ("int8", 2894840)
        assert pose["runtime"].startswith("ai-edge-litert")
        assert pose["accelerator"] == "xnnpack"
        # state names where each loaded model runs.
        state = json.loads(
            states.wait_for(lambda m: bool(json.loads(m.payload).get("models")), 10).payload
        )
        assert {n: m["accelerator"] for n, m in state["models"].items()} == {
            "ssd-mobilenet-v1-coco-int8": "xnnpack",
            "movenet-lightning-int8": "xnnpack",
        }
        assert pose["latency_ms"] is None

        # A late subscriber gets both from the broker: they are retained.
        late = broker.subscriber(LABELS)
        late.wait_for(matching(topic("movenet-lightning-int8"), retain=True), 5)
        late.wait_for(matching(topic("ssd-mobilenet-v1-coco-int8"), retain=True), 5)

        # Model change: the pose pipeline is replaced by a YOLOX detector; reload.
        config(tmp_path, models, media_dir, broker, pose=False)
        daemon.signal(signal.SIGHUP)
        yolox = json.loads(sub.wait_for(matching(topic("yolox-nano-coco")), 30).payload)
        assert yolox["measured"] is True
        assert yolox["accuracy"]["golden"] == "coco-photos"
        assert yolox["accelerator"] == "cpu"  # auto on a CPU-only onnxruntime
        sub.wait_for(lambda m: m.topic == topic("movenet-lightning-int8") and m.payload == b"", 5)
        rc, _ = daemon.stop()
        assert rc == 0

    # What stays on the broker: the labels of the models now loaded, and no other.
    after = broker.subscriber(LABELS)
    after.wait_for(matching(topic("yolox-nano-coco"), retain=True), 5)
    after.wait_for(matching(topic("ssd-mobilenet-v1-coco-int8"), retain=True), 5)
    retained = {m.topic for m in after.messages(LABELS) if m.retain and m.payload}
    assert retained == {topic("ssd-mobilenet-v1-coco-int8"), topic("yolox-nano-coco")}
