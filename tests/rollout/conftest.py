"""A real App on photos with the SSD model, a fresh models dir and a real mosquitto, for rollouts.

The models dir holds only the SSD model, pulled from the mirror: a rollout of
``yolox-nano-coco`` really copies it from the mirror (``EDGED_MODEL_MIRROR``)
with its sha256 checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edged.catalog.catalog import load_catalog
from edged.catalog.fetch import pull
from edged.daemon.check import Preflight
from edged.publish.payloads import RolloutStatus
from tests.control.conftest import RunningApp, photos_config, start_app, wait_until_serving
from tests.helpers.broker import RunningBroker, Subscriber
from tests.helpers.commands import CommandClient

BASE = "edged/testdev"
DETECTIONS = f"{BASE}/door/detections"
ROLLOUT = f"{BASE}/models/rollout"

StartRollout = Callable[..., RunningApp]


@pytest.fixture
def fresh_models(tmp_path: Path, model_mirror: Path) -> Path:
    """A models dir with only the SSD model (and its labels) in it."""
    dest = tmp_path / "models"
    pull(load_catalog().get("ssd-mobilenet-v1-coco-int8"), dest, mirror=model_mirror)
    return dest


@pytest.fixture
def start_rollout_app(
    tmp_path: Path, fresh_models: Path, media_dir: Path, broker: RunningBroker
) -> Iterator[StartRollout]:
    """Start an App (pipeline ``door`` on SSD, no tracking) with extra pipeline/rollout keys.

    ``prepare`` sees the pre-flight's loaded models before the graph is built.
    """
    stops: list[Callable[[], None]] = []

    def start(
        rollout: dict[str, Any] | None = None,
        prepare: Callable[[Preflight], None] | None = None,
        **pipeline: Any,
    ) -> RunningApp:
        cfg = photos_config(tmp_path, fresh_models, media_dir, broker, track=False, **pipeline)
        cfg["rollout"] = {"probation_s": 2, "min_frames": 3, **(rollout or {})}
        path = tmp_path / "edged.toml"
        app, stop = start_app(cfg, path, prepare=prepare)
        stops.append(stop)
        with CommandClient(broker.host, broker.port) as client:
            wait_until_serving(client)
        return RunningApp(app, path, broker)

    try:
        yield start
    finally:
        for stop in stops:
            stop()


def docs(sub: Subscriber, topic: str) -> list[dict[str, Any]]:
    """Every JSON document received on ``topic``, in arrival order."""
    return [json.loads(m.payload) for m in sub.messages(topic)]


def statuses(sub: Subscriber) -> list[dict[str, Any]]:
    """Every rollout status received, each checked against :class:`RolloutStatus` key for key."""
    found = []
    for m in sub.messages(ROLLOUT):
        status = RolloutStatus.model_validate_json(m.payload)
        doc = json.loads(m.payload)
        assert json.loads(status.model_dump_json(by_alias=True, exclude_unset=True)) == doc
        found.append(doc)
    return found


def phases(sub: Subscriber) -> list[str]:
    """The rollout phases published so far."""
    return [d["phase"] for d in statuses(sub)]
