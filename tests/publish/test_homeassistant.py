"""Home Assistant MQTT discovery from the real daemon, checked against the keys HA requires."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.broker import RunningBroker, matching
from tests.helpers.daemon import Daemon, base_config, write_config

pytestmark = pytest.mark.broker

DEV = "edged/testdev"
#: Keys Home Assistant's MQTT discovery needs for an entity edged publishes.
REQUIRED = {"name", "unique_id", "state_topic", "value_template", "availability_topic", "device"}
REQUIRED_BY_COMPONENT = {
    "binary_sensor": {"payload_on", "payload_off", "device_class"},
    "sensor": set(),
}


def config(
    tmp_path: Path,
    models_dir: Path,
    media_dir: Path,
    broker: RunningBroker,
    pipelines: list[dict[str, Any]],
) -> Path:
    cfg = base_config(tmp_path, models_dir, broker, homeassistant=True)
    cfg["sources"] = [
        {
            "name": "cam0",
            "kind": "file",
            "uri": media_dir / "person_walking_0-30s.mp4",
            "loop": True,
        },
        {"name": "mic0", "kind": "wav", "uri": media_dir / "speech_jfk.wav", "loop": True},
    ]
    cfg["pipelines"] = pipelines
    return write_config(tmp_path / "edged.toml", cfg)


DETECT = {
    "name": "door",
    "source": "cam0",
    "task": "detection",
    "model": "ssd-mobilenet-v1-coco-int8",
    "labels": ["person", "dog"],
}
AUDIO = {"name": "ears", "source": "mic0", "task": "audio", "model": "yamnet"}


def discovery(sub: Any) -> dict[str, dict[str, Any]]:
    return {
        m.topic: (json.loads(m.payload) if m.payload else {})
        for m in sub.messages("homeassistant/#")
    }


def test_every_config_has_the_keys_home_assistant_requires(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """One HA device; occupancy and count per watched label, top sound, fps and inference sensors."""
    sub = broker.subscriber("homeassistant/#")
    with Daemon(config(tmp_path, models_dir, media_dir, broker, [DETECT, AUDIO])) as daemon:
        sub.wait_for(matching("homeassistant/+/+/+/config"), timeout=30)
        sub.wait_for(lambda _m: len(discovery(sub)) >= 9, timeout=10)
        rc, _ = daemon.stop()
        assert rc == 0
    configs = discovery(sub)
    devices = {json.dumps(c["device"]["identifiers"]) for c in configs.values()}
    assert len(devices) == 1, devices
    for topic, doc in configs.items():
        component = topic.split("/")[1]
        missing = (REQUIRED | REQUIRED_BY_COMPONENT[component]) - set(doc)
        assert not missing, f"{topic} lacks {missing}"
        assert doc["availability_topic"] == f"{DEV}/availability"
        assert doc["state_topic"].startswith(f"{DEV}/")
        assert doc["device"]["identifiers"]
    with broker.subscriber(
        "homeassistant/#"
    ) as late:  # retained for a Home Assistant that starts later
        late.wait_for(lambda _m: len(late.messages()) >= len(configs), timeout=5)
        assert all(m.retain for m in late.messages())
    names = {doc["name"] for doc in configs.values()}
    assert {
        "door person",
        "door dog",
        "door person count",
        "ears sound",
        "door fps",
        "door inference",
        "outbox problem",
    } <= names
    [problem] = [c for c in configs.values() if c["name"] == "outbox problem"]
    assert problem["device_class"] == "problem"
    assert problem["state_topic"] == f"{DEV}/state"
    assert "value_json.outbox.status != 'durable'" in problem["value_template"]


def test_removed_pipeline_configs_are_cleared(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """When a pipeline leaves the config, its retained discovery configs are emptied at the next start."""
    first = broker.subscriber("homeassistant/#")
    cfg = config(tmp_path, models_dir, media_dir, broker, [DETECT, AUDIO])
    with Daemon(cfg) as daemon:
        first.wait_for(lambda _m: len(discovery(first)) >= 9, timeout=30)
        daemon.stop()
    audio_topics = {t for t, d in discovery(first).items() if d.get("name", "").startswith("ears")}
    assert audio_topics
    config(tmp_path, models_dir, media_dir, broker, [DETECT])
    second = broker.subscriber("homeassistant/#")
    with Daemon(cfg) as daemon:
        second.wait_for(lambda m: m.topic in audio_topics and m.payload == b"", timeout=30)
        daemon.stop()
    with broker.subscriber("homeassistant/#") as late:
        late.wait_for(matching("homeassistant/+/+/+/config", retain=True), timeout=5)
        assert not (audio_topics & {m.topic for m in late.messages() if m.payload})
