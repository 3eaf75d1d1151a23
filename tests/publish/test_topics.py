"""Topic names of README "MQTT topics and payloads" and validation of every variable segment."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from edged.publish.topics import Topics, check_topic

T = Topics("edged", "pi-kitchen")

BAD = ["a+b", "a#", "a/b", "nul\x00", "tab\t", "del\x7f", ""]


def test_layout_matches_design() -> None:
    """Every topic has the layout of the README "MQTT topics and payloads" table."""
    assert T.availability == "edged/pi-kitchen/availability"
    assert T.state == "edged/pi-kitchen/state"
    assert T.stats == "edged/pi-kitchen/stats"
    assert T.result("front", "detections") == "edged/pi-kitchen/front/detections"
    assert T.result("front", "offload") == "edged/pi-kitchen/front/offload"
    assert T.cmd("snapshot") == "edged/pi-kitchen/cmd/snapshot"
    assert T.cmd_reply("snapshot") == "edged/pi-kitchen/cmd/snapshot/reply"
    assert T.cmd_filter == "edged/pi-kitchen/cmd/+"
    assert T.label("yamnet") == "edged/pi-kitchen/models/yamnet/label"
    assert T.snapshot("cam0") == "edged/pi-kitchen/cam0/snapshot"


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize(
    ("what", "build"),
    [
        ("topic prefix", lambda v: Topics(v, "dev")),
        ("device id", lambda v: Topics("edged", v)),
        ("pipeline name", lambda v: T.result(v, "pose")),
        ("command name", T.cmd),
        ("command name", T.cmd_reply),
        ("model name", T.label),
        ("source name", T.snapshot),
    ],
)
def test_bad_segment_refused(what: str, build: Callable[[str], object], value: str) -> None:
    """A wildcard, separator, control character or empty segment is refused, naming the segment."""
    with pytest.raises(ValueError, match=f"^{what} ") as info:
        build(value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("name", ["cmd", "models"])
def test_reserved_pipeline_and_source_names_refused(name: str) -> None:
    """A pipeline or source named like a reserved segment is refused (its topics would clash)."""
    with pytest.raises(ValueError, match="reserved"):
        T.result(name, "detections")
    with pytest.raises(ValueError, match="reserved"):
        T.snapshot(name)


def test_unknown_result_kind_refused() -> None:
    """A result kind outside the contract is refused."""
    with pytest.raises(ValueError, match="result kind 'faces'"):
        T.result("front", "faces")  # type: ignore[arg-type]


def test_topics_is_frozen() -> None:
    """Topics cannot be changed after validation."""
    with pytest.raises(AttributeError):
        T.device = "other/dev"  # type: ignore[misc]


GOOD_TOPICS = [
    "edged/pi-kitchen/front/detections",
    "edged/pi-kitchen/cmd/ping/reply/client-7",
    "homeassistant/sensor/pi-kitchen/front_fps/config",
    "edged/Küche/🐈/état",
    "/".join(["l"] * 32),
    "x" * 1024,
]


@pytest.mark.parametrize("topic", GOOD_TOPICS)
def test_check_topic_accepts_what_brokers_take(topic: str) -> None:
    """Topics within the default limits pass unchanged."""
    assert check_topic(topic) == topic


@pytest.mark.parametrize(
    ("topic", "problem"),
    [
        ("", "is empty"),
        ("/".join(["l"] * 33), "has 33 levels; at most 32 are allowed"),
        ("/".join(["l"] * 250), "has 250 levels"),
        ("x" * 1025, "is 1025 bytes long; at most 1024 are allowed"),
        ("é" * 513, "is 1026 bytes long"),
        ("edged/dev/+/reply", "wildcard '+' at offset 10"),
        ("edged/dev/#", "wildcard '#'"),
        ("edged/a+b", "wildcard '+'"),
        ("edged//x", "empty level"),
        ("/edged/x", "empty level"),
        ("edged/x/", "empty level"),
        ("$SYS/broker", "starts with '$'"),
        ("edged/\x00x", "U+0000 at offset 6"),
        ("edged/\tx", "U+0009"),
        ("edged/\x85x", "U+0085"),
        ("edged/\ud800x", "U+D800"),
        ("edged/\ufffe", "U+FFFE"),
        ("edged/\U0010ffff", "U+10FFFF"),
        ("edged/\ufdd0", "U+FDD0"),
    ],
)
def test_check_topic_refuses_what_a_broker_would_drop_the_session_over(
    topic: str, problem: str
) -> None:
    """Each refusal names the problem (and where, for a character)."""
    with pytest.raises(ValueError, match=re.escape(problem)):
        check_topic(topic)


def test_check_topic_limits_are_configurable_but_never_above_the_protocol() -> None:
    """max_levels/max_bytes tighten or loosen the check; 65,535 bytes stays the ceiling."""
    deep = "/".join(["l"] * 201)
    assert check_topic(deep, max_levels=201) == deep
    with pytest.raises(ValueError, match="has 6 levels; at most 5 are allowed"):
        check_topic("a/b/c/d/e/f", max_levels=5)
    with pytest.raises(ValueError, match="at most 65535 are allowed"):
        check_topic("x" * 65536, max_bytes=10**6)


@pytest.mark.parametrize("pipeline", ["front", "p" * 128])
def test_every_topic_of_the_tree_passes_check_topic(pipeline: str) -> None:
    """What Topics builds (even from 128-byte names) is always publishable."""
    t = Topics("p" * 128, "d" * 128)
    for topic in (t.availability, t.state, t.stats, t.result(pipeline, "detections")):
        assert check_topic(topic, max_bytes=512) == topic
    assert check_topic(t.label("m" * 128), max_bytes=512)
