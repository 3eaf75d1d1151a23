"""Live messages of a running daemon fit their payload models, ``stats`` (``Stats``) first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from edged.label.nutrition import NutritionLabel
from edged.publish.payloads import (
    AudioResult,
    Availability,
    DetectionResult,
    EventResult,
    PoseResult,
    State,
    Stats,
    StatsAudioPipeline,
    StatsVideoPipeline,
    ZoneCount,
    ZoneOccupancy,
    ZoneState,
)
from tests.helpers.broker import RunningBroker, matching
from tests.helpers.daemon import Daemon, base_config, ssd_pipeline, walking_source, write_config

DEV = "edged/testdev"


def _all_pipelines_ran(payload: bytes) -> bool:
    pipelines = json.loads(payload)["pipelines"]
    return all(pipelines.get(n, {}).get("processed", 0) > 0 for n in ("door", "body", "ears"))


#: Payload model of every topic this daemon publishes (README "MQTT topics and payloads").
LIVE_MODELS: dict[str, TypeAdapter[Any]] = {
    f"{DEV}/availability": TypeAdapter(Availability),
    f"{DEV}/state": TypeAdapter(State),
    f"{DEV}/stats": TypeAdapter(Stats),
    f"{DEV}/door/detections": TypeAdapter(DetectionResult),
    f"{DEV}/door/events": TypeAdapter(EventResult),
    f"{DEV}/door/zones/room": TypeAdapter(ZoneState),
    f"{DEV}/door/zones/room/occupancy": TypeAdapter(ZoneOccupancy),
    f"{DEV}/door/zones/room/count": TypeAdapter(ZoneCount),
    f"{DEV}/door/zones/room/count/person": TypeAdapter(ZoneCount),
    f"{DEV}/body/pose": TypeAdapter(PoseResult),
    f"{DEV}/ears/audio": TypeAdapter(AudioResult),
    f"{DEV}/models/ssd-mobilenet-v1-coco-int8/label": TypeAdapter(NutritionLabel),
    f"{DEV}/models/yamnet/label": TypeAdapter(NutritionLabel),
    f"{DEV}/models/movenet-lightning-int8/label": TypeAdapter(NutritionLabel),
}
#: Topics whose payload is a bare word, not JSON.
PLAIN_TEXT = {f"{DEV}/availability", f"{DEV}/door/zones/room/occupancy"}


@pytest.mark.broker
def test_live_stats_of_a_video_and_an_audio_pipeline_fit_the_model(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """Every live ``stats`` message validates; video and audio pipelines get their own variant.

    Every other message of the run (detections, pose with its keypoints,
    audio, events, a zone's state, occupancy and counts, …) is checked against its topic's model too, and a topic
    without one fails the test.
    """
    cfg = base_config(tmp_path, models_dir, broker)
    cfg["stats_interval_s"] = 1
    cfg["sources"] = [
        walking_source(media_dir, realtime=True, fps=10),
        {"name": "mic0", "kind": "wav", "uri": media_dir / "speech_jfk.wav", "realtime": True},
    ]
    cfg["pipelines"] = [
        ssd_pipeline(
            labels=["person"],
            publish="all",
            max_fps=10,
            zones=[
                {"name": "room", "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]], "labels": ["person"]}
            ],
        ),
        {
            # Threshold 0: MoveNet's one pose is published even in the empty room,
            # so that keypoints are validated without waiting for the people.
            "name": "body",
            "source": "cam0",
            "task": "pose",
            "model": "movenet-lightning-int8",
            "threshold": 0.0,
            "publish": "all",
            "max_fps": 10,
        },
        {
            "name": "ears",
            "source": "mic0",
            "task": "audio",
            "model": "yamnet",
            "publish": "all",
            "threshold": 0.1,
        },
    ]
    # Snapshots on, so that the ``events`` section is in the message too.
    cfg["events"] = {"dir": tmp_path / "events", "snapshots": True}
    sub = broker.subscriber(f"{DEV}/#")
    with Daemon(write_config(tmp_path / "edged.toml", cfg)) as daemon:
        sub.wait_for(
            lambda m: matching(f"{DEV}/stats")(m) and _all_pipelines_ran(m.payload), timeout=90
        )
        rc, _ = daemon.stop()
        assert rc == 0, daemon.output

    received = sub.messages(f"{DEV}/stats")
    samples = [Stats.model_validate_json(m.payload) for m in received]
    last = samples[-1]
    assert isinstance(last.pipelines["door"], StatsVideoPipeline)
    assert isinstance(last.pipelines["ears"], StatsAudioPipeline)
    assert isinstance(last.pipelines["body"], StatsVideoPipeline)
    assert last.pipelines["door"].accelerator is not None
    assert set(last.sources) == {"cam0", "mic0"}
    assert last.outbox is not None
    assert last.events is not None
    # The model writes back exactly what was published: no key lost, none added.
    for m, sample in zip(received, samples, strict=True):
        assert json.loads(sample.model_dump_json(exclude_unset=True)) == json.loads(m.payload)

    topics = {m.topic for m in sub.messages()}
    assert topics - set(LIVE_MODELS) == set(), "a published topic without a payload model"
    zone = {t for t in LIVE_MODELS if "/zones/" in t}
    assert zone <= topics, f"zone topics not published: {zone - topics}"
    poses = [PoseResult.model_validate_json(m.payload) for m in sub.messages(f"{DEV}/body/pose")]
    assert any(p.poses and len(p.poses[0].keypoints) == 17 for p in poses), "no pose published"
    for m in sub.messages():
        if m.topic in PLAIN_TEXT:
            LIVE_MODELS[m.topic].validate_python(m.payload.decode())
        else:
            LIVE_MODELS[m.topic].validate_json(m.payload)


def _sample() -> dict[str, Any]:
    return {
        "v": 1,
        "ts": "2026-11-21T23:37:53.123Z",
        "device": "pi-kitchen",
        "uptime_s": 12.3,
        "pipelines": {},
        "sources": {"mic0": {"state": "up", "fps": None}},
        "cpu_percent": 3.5,
        "rss_mb": 120.0,
        "temperature_c": None,
        "mqtt": {
            "connected": True,
            "disconnects": 0,
            "dropped_unpublishable": 0,
            "takeovers": 0,
            "problem": None,
        },
    }


def test_stats_refuses_a_field_the_schema_does_not_name() -> None:
    """A key added to a section without adding it to the model is refused, not published."""
    Stats.model_validate(_sample())
    drifted = _sample()
    drifted["mqtt"]["pending"] = 3
    with pytest.raises(ValidationError, match="pending"):
        Stats.model_validate(drifted)
    unknown_section = {**_sample(), "gpu": {"load": 0.5}}
    with pytest.raises(ValidationError, match="gpu"):
        Stats.model_validate(unknown_section)
