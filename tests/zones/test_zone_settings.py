"""Zones, masks and lines in the configuration: what is refused, with which key path."""

from __future__ import annotations

from typing import Any

import pytest

from edged.config.settings import Settings, load_settings
from edged.errors import ConfigError
from edged.publish.topics import Topics

ZONE = {"name": "drive", "polygon": [[0.1, 0.5], [0.9, 0.5], [0.9, 1.0], [0.1, 1.0]]}


def config(task: str = "detection", **pipeline: Any) -> dict[str, Any]:
    kind = "wav" if task == "audio" else "file"
    return {
        "device_id": "dev",
        "sources": [{"name": "cam", "kind": kind, "uri": "/srv/x"}],
        "pipelines": [{"name": "door", "source": "cam", "task": task, "model": "m", **pipeline}],
    }


def problems(cfg: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_settings(None, cfg)
    return info.value.problems


def test_a_full_zone_configuration_loads() -> None:
    """Zones with every key, a mask and a line load with their defaults filled in."""
    s: Settings = load_settings(
        None,
        config(
            zones=[
                {**ZONE, "labels": ["person"], "anchor": "center", "min_frames": 3, "dwell_s": 2}
            ],
            masks=[{"polygon": [[0, 0], [0.2, 0], [0.2, 0.2]]}],
            lines=[{"name": "gate", "a": [0.5, 1], "b": [0.5, 0], "direction": "left_to_right"}],
        ),
    )
    (p,) = s.pipelines
    assert p.zones[0].min_frames == 3
    assert p.masks[0].anchor == "bottom_center"
    assert p.lines[0].labels == []


@pytest.mark.parametrize(
    ("polygon", "words"),
    [
        ([[0.1, 0.1], [0.2, 0.2]], "at least 3"),
        ([[0, 0], [640, 0], [640, 480]], "outside [0, 1]"),
        ([[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]], "no area"),
        ([[0.1, 0.1], [0.9, 0.5], [0.9, 0.1], [0.1, 0.9]], "cross"),
    ],
)
def test_bad_polygons_are_refused_with_their_key_path(polygon: Any, words: str) -> None:
    """A short, pixel, collinear or self-crossing polygon is named at pipelines[0].zones[0].polygon."""
    found = problems(config(zones=[{**ZONE, "polygon": polygon}]))
    assert [k for k, _ in found] == ["pipelines[0].zones[0].polygon"]
    assert words in found[0][1]


def test_zones_need_a_tracked_detection_pipeline() -> None:
    """Zones on a pose pipeline, or with track = false, are refused with the fix."""
    (found,) = problems(config(task="pose", zones=[ZONE]))
    assert "task = 'detection'" in found[1]
    (found,) = problems(config(track=False, lines=[{"name": "l", "a": [0, 0], "b": [1, 1]}]))
    assert "track = true" in found[1]
    # A mask needs no tracker.
    load_settings(None, config(track=False, masks=[{"polygon": ZONE["polygon"]}]))


def test_names_and_labels_must_be_topic_segments_and_unique() -> None:
    """A zone name with '/', a duplicate zone, a label with '#', a zero-length line are refused."""
    assert problems(config(zones=[{**ZONE, "name": "a/b"}]))[0][0] == "pipelines[0].zones[0].name"
    assert "more than once" in problems(config(zones=[ZONE, ZONE]))[0][1]
    assert problems(config(zones=[{**ZONE, "labels": ["#"]}]))[0][0] == (
        "pipelines[0].zones[0].labels"
    )
    (found,) = problems(config(lines=[{"name": "l", "a": [0.5, 0.5], "b": [0.5, 0.5]}]))
    assert "same point" in found[1]
    (found,) = problems(config(lines=[{"name": "l", "a": [0, 0], "b": [2, 0]}]))
    assert "outside [0, 1]" in found[1]


def test_zone_topics() -> None:
    """The zone's state, occupancy and count topics sit under the pipeline's zones/ level."""
    t = Topics("edged", "pi")
    assert t.zone("door", "drive") == "edged/pi/door/zones/drive"
    assert t.zone_occupancy("door", "drive") == "edged/pi/door/zones/drive/occupancy"
    assert t.zone_count("door", "drive") == "edged/pi/door/zones/drive/count"
    assert t.zone_count("door", "drive", "traffic light") == (
        "edged/pi/door/zones/drive/count/traffic light"
    )
    with pytest.raises(ValueError, match="label"):
        t.zone_count("door", "drive", "a/b")
