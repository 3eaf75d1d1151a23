"""Publish policies: all, changes (+ heartbeat), nonempty."""

from __future__ import annotations

from edged.runtime.policy import PublishPolicy
from edged.types import Detection

PERSON = Detection("person", 0, 0.9, (0.1, 0.1, 0.5, 0.9))
DOG = Detection("dog", 16, 0.8, (0.5, 0.5, 0.9, 0.9))


def test_all_publishes_everything() -> None:
    """Mode 'all' publishes empty and repeated results alike."""
    p = PublishPolicy("all", heartbeat_s=30)
    assert all(p.should_publish(items, t) for t, items in enumerate([[], [], [PERSON], [PERSON]]))


def test_nonempty_skips_empty_results() -> None:
    """Mode 'nonempty' publishes only results with something in them."""
    p = PublishPolicy("nonempty", heartbeat_s=30)
    assert [p.should_publish(i, t) for t, i in enumerate([[], [PERSON], [], [DOG]])] == [
        False,
        True,
        False,
        True,
    ]


def test_changes_publishes_on_label_or_count_change() -> None:
    """Mode 'changes' publishes when the labels or their counts change, not on repeats."""
    p = PublishPolicy("changes", heartbeat_s=30)
    seq = [[PERSON], [PERSON], [PERSON, PERSON], [PERSON, PERSON], [DOG, PERSON, PERSON], []]
    assert [p.should_publish(i, float(t)) for t, i in enumerate(seq)] == [
        True,
        False,
        True,
        False,
        True,
        True,
    ]


def test_changes_heartbeat_republishes_unchanged() -> None:
    """An unchanged result is published again once the heartbeat period has passed."""
    p = PublishPolicy("changes", heartbeat_s=10)
    assert p.should_publish([PERSON], 0.0)
    assert not p.should_publish([PERSON], 9.9)
    assert p.should_publish([PERSON], 10.0)
    assert not p.should_publish([PERSON], 15.0)
