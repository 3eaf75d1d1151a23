"""The event snapshot topic: where it is, and that no event id can turn it into a wildcard."""

from __future__ import annotations

import pytest

from edged.publish.topics import Topics


def test_event_snapshot_topic_sits_under_the_pipelines_events() -> None:
    """``<prefix>/<dev>/<pipeline>/events/<event_id>/snapshot``."""
    topics = Topics("edged", "pi")
    assert topics.event_snapshot("door", "0190-ab") == "edged/pi/door/events/0190-ab/snapshot"


@pytest.mark.parametrize("bad", ["+", "#", "a/b", ""])
def test_an_event_id_that_is_not_a_segment_is_refused(bad: str) -> None:
    """A wildcard or separator in an id would publish elsewhere: refused, naming the id."""
    with pytest.raises(ValueError, match="event id"):
        Topics("edged", "pi").event_snapshot("door", bad)
