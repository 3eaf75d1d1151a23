"""Topic names of DESIGN §2 and validation of every variable segment."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from edged.publish.topics import Topics

T = Topics("edged", "pi-kitchen")

BAD = ["a+b", "a#", "a/b", "nul\x00", "tab\t", "del\x7f", ""]


def test_layout_matches_design() -> None:
    """Every topic has the layout of the DESIGN §2 table."""
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
