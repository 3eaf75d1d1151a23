"""Home Assistant discovery configs built from settings, checked against the documented schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edged.config.settings import Settings, ZoneSettings
from edged.control.commands import SetThreshold, parse
from edged.publish.homeassistant import Discovery, expire_after_s, sound_labels, zone_names
from edged.publish.topics import Topics
from tests.publish.ha_schema import problems, render, render_command

CONTROLS = ["ping", "set_enabled", "set_threshold", "snapshot"]


def settings(tmp_path: Path, *, allow: list[str] | None = None, **extra: Any) -> Settings:
    return Settings(
        device_id="pi-kitchen",
        state_dir=tmp_path,
        sources=[
            {"name": "cam0", "kind": "file", "uri": str(tmp_path / "a.mp4")},
            {"name": "mic0", "kind": "wav", "uri": str(tmp_path / "a.wav")},
        ],
        pipelines=[
            {"name": "door", "source": "cam0", "task": "detection", "model": "m"},
            {"name": "body", "source": "cam0", "task": "pose", "model": "movenet"},
            {"name": "ears", "source": "mic0", "task": "audio", "model": "yamnet"},
        ],
        commands={"allow": allow or ["ping"]},
        **extra,
    )


def configs(s: Settings) -> dict[str, dict[str, Any]]:
    return {
        m.topic: json.loads(m.payload)
        for m in Discovery(s, Topics("edged", s.device_id)).messages()
    }


def test_every_config_matches_the_schema_from_the_documentation(tmp_path: Path) -> None:
    """All components (sensor … event), with every control allowed: no schema problem at all."""
    found = configs(settings(tmp_path, allow=CONTROLS))
    assert {t.split("/")[1] for t in found} == {
        "sensor",
        "binary_sensor",
        "switch",
        "number",
        "button",
        "image",
        "event",
    }
    assert {t: problems(t, d) for t, d in found.items() if problems(t, d)} == {}


def test_no_object_id_but_default_entity_id_and_origin(tmp_path: Path) -> None:
    """object_id (deprecated in Home Assistant 2025.10) is gone; default_entity_id is domain.id."""
    for topic, doc in configs(settings(tmp_path, allow=CONTROLS)).items():
        assert "object_id" not in doc
        component = topic.split("/")[1]
        assert doc["default_entity_id"].startswith(f"{component}.edged_pi_kitchen_")
        assert doc["origin"]["name"] == "edged"
        assert doc["origin"]["sw_version"]


def test_discovery_prefix_is_configurable(tmp_path: Path) -> None:
    """[mqtt] discovery_prefix moves every config; the default is Home Assistant's own."""
    assert all(t.startswith("homeassistant/") for t in configs(settings(tmp_path)))
    moved = configs(settings(tmp_path, mqtt={"discovery_prefix": "ha-test"}))
    assert moved
    assert all(t.startswith("ha-test/") for t in moved)
    assert not [t for t, d in moved.items() if problems(t, d, prefix="ha-test")]


def test_discovery_prefix_must_be_one_topic_segment(tmp_path: Path) -> None:
    """A prefix with a wildcard or a slash is refused with the key named."""
    with pytest.raises(ValueError, match="discovery_prefix"):
        settings(tmp_path, mqtt={"discovery_prefix": "home/assistant"})


def test_controls_are_announced_only_for_allowed_commands(tmp_path: Path) -> None:
    """Default allow-list (ping): no switch, number or button; each appears with its command."""
    components = {t.split("/")[1] for t in configs(settings(tmp_path))}
    assert not components & {"switch", "number", "button"}
    only_threshold = configs(settings(tmp_path, allow=["ping", "set_threshold"]))
    assert {t.split("/")[1] for t in only_threshold} & {"switch", "number", "button"} == {"number"}
    full = configs(settings(tmp_path, allow=CONTROLS))
    switches = [d for t, d in full.items() if t.split("/")[1] == "switch"]
    buttons = [d for t, d in full.items() if t.split("/")[1] == "button"]
    assert len(switches) == 3  # one per pipeline
    assert [json.loads(b["payload_press"]) for b in buttons] == [{"source": "cam0"}]  # video only


def test_number_command_template_renders_a_valid_set_threshold(tmp_path: Path) -> None:
    """The number's command_template, rendered as Home Assistant does, is a set_threshold payload."""
    found = configs(settings(tmp_path, allow=CONTROLS))
    [number] = [d for t, d in found.items() if t.endswith("/door_threshold/config")]
    sent = render_command(number["command_template"], 0.72)
    assert parse("set_threshold", sent.encode()) == SetThreshold(pipeline="door", threshold=0.72)
    assert number["command_topic"] == "edged/pi-kitchen/cmd/set_threshold"


@pytest.mark.parametrize(
    ("pipeline", "expected"),
    [
        ({"publish": "changes", "heartbeat_s": 30}, 90),  # an unchanged result every 30 s
        ({"publish": "all", "max_fps": 5}, 10),  # floor: a few seconds of slack
        ({"publish": "nonempty", "motion_gate": True, "keepalive_s": 8}, 24),
        ({"publish": "all", "max_fps": 0.1}, 30),
    ],
)
def test_expire_after_is_three_result_periods(
    tmp_path: Path, pipeline: dict[str, Any], expected: int
) -> None:
    """expire_after / off_delay cover three gaps between results of the pipeline's policy."""
    p = settings(tmp_path).pipelines[0].model_copy(update=pipeline)
    assert expire_after_s(p) == expected


def test_zone_entities_follow_the_zone_topics(tmp_path: Path) -> None:
    """A pipeline with zones gets occupancy, a total count and a count per watched label per
    zone, on the topics the zone publisher writes; none without zones."""
    s = settings(tmp_path)
    door = s.pipelines[0]
    square = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    zoned = door.model_copy(
        update={
            "zones": [
                ZoneSettings(name="drive", polygon=square),
                ZoneSettings(name="gate", polygon=square, labels=["dog"]),
            ],
            "labels": ["person", "car"],
        }
    )
    assert zone_names(zoned) == ["drive", "gate"]
    assert zone_names(door) == []
    topics = Topics("edged", s.device_id)
    discovery = Discovery(s, topics)
    docs = {m.topic: json.loads(m.payload) for m in discovery._zones(zoned, zone_names(zoned))}
    assert {d["state_topic"] for d in docs.values()} == {
        topics.zone_occupancy("door", "drive"),
        topics.zone_count("door", "drive"),
        topics.zone_count("door", "drive", "person"),
        topics.zone_count("door", "drive", "car"),
        topics.zone_occupancy("door", "gate"),
        topics.zone_count("door", "gate"),
        topics.zone_count("door", "gate", "dog"),
    }
    assert (
        topics.zone_count("door", "drive", "car") == "edged/pi-kitchen/door/zones/drive/count/car"
    )
    assert not [t for t, d in docs.items() if problems(t, d)]
    assert discovery._zones(door, zone_names(door)) == []


def test_pipeline_templates_work_for_names_that_are_not_identifiers(tmp_path: Path) -> None:
    """A name with a dash and a quote: availability and switch templates read its own entry."""
    name = "front-door's"
    s = settings(tmp_path, allow=CONTROLS)
    s = s.model_copy(update={"pipelines": [s.pipelines[0].model_copy(update={"name": name})]})
    found = configs(s)
    [switch] = [d for t, d in found.items() if t.split("/")[1] == "switch"]
    [count] = [d for d in found.values() if d["name"] == f"{name} person count"]
    state = json.dumps({"pipelines": {name: {"status": "disabled", "threshold": 0.4}}})
    assert render(switch["value_template"], state) == "OFF"
    assert render(count["availability"][1]["value_template"], state) == "offline"
    running = json.dumps({"pipelines": {name: {"status": "degraded"}}})
    assert render(count["availability"][1]["value_template"], running) == "online"
    assert render(count["availability"][1]["value_template"], '{"pipelines": {}}') == "offline"


def test_event_snapshot_image_reads_the_fixed_latest_topic(tmp_path: Path) -> None:
    """Per-event snapshot topics vary; the image entity reads …/<pipeline>/events/snapshot/latest,
    and exists only where snapshots are published at all ([events] publish_snapshots)."""

    def images(s: Settings) -> dict[str, str]:
        found = configs(s)
        return {d["name"]: d["image_topic"] for t, d in found.items() if t.split("/")[1] == "image"}

    assert images(settings(tmp_path)) == {}
    assert images(settings(tmp_path, events={"publish_snapshots": True})) == {
        "door event snapshot": "edged/pi-kitchen/door/events/snapshot/latest",
        "body event snapshot": "edged/pi-kitchen/body/events/snapshot/latest",
    }


def test_sound_sensors_follow_sound_events(tmp_path: Path) -> None:
    """Per watched sound label: ON at its start event, OFF at its end; other events change nothing."""
    s = settings(tmp_path)
    ears = s.pipelines[2]
    discovery = Discovery(s, Topics("edged", s.device_id))
    assert discovery.sounds(ears, []) == []
    [msg] = discovery.sounds(ears, ["dog"])
    doc = json.loads(msg.payload)
    assert not problems(msg.topic, doc)
    assert doc["state_topic"] == "edged/pi-kitchen/ears/events"

    def event(phase: str, label: str = "dog", kind: str = "sound") -> str:
        return json.dumps({"event": phase, "type": kind, "label": label})

    assert render(doc["value_template"], event("start")) == "ON"
    assert render(doc["value_template"], event("update")) == "ON"
    assert render(doc["value_template"], event("end")) == "OFF"
    assert render(doc["value_template"], event("start", label="speech")) == ""
    assert render(doc["value_template"], event("start", kind="object")) == ""


def test_sound_groups_of_an_audio_pipeline_get_a_sensor_each(tmp_path: Path) -> None:
    """[pipelines.sound_events] groups are announced as one sound binary sensor each."""
    s = settings(tmp_path)
    ears = s.pipelines[2]
    groups = ears.sound_events.model_copy(update={"groups": {"dog": ["Dog", "Bark"]}})
    heard = ears.model_copy(update={"sound_events": groups})
    assert sound_labels(heard) == ["dog"]
    assert sound_labels(ears) == []
    assert sound_labels(s.pipelines[0]) == []
