"""The outbox forwarder's bookkeeping of what it handed to MQTT."""

from __future__ import annotations

from pathlib import Path

from edged.demo.broker import free_port
from edged.publish.forwarder import Forwarder
from edged.publish.mqtt import MqttClient
from edged.publish.outbox import Outbox
from edged.publish.payloads import Message
from tests.helpers.outbox_child import DEVICE, mqtt_settings


def test_a_qos1_copy_sent_sessions_ago_still_names_its_row_when_dropped(tmp_path: Path) -> None:
    """paho re-sends a QoS 1 copy every session; its row is found when it is finally dropped.

    The MQTT client decides a message is unpublishable only after several
    short sessions; by then the forwarder has reset for each of them. A CI
    run lost the row that way (it was re-sent for ever): this pins the
    bookkeeping without depending on thread timing.
    """
    outbox = Outbox(tmp_path / "outbox.sqlite3", max_mb=16, max_age_hours=1)
    forwarder = Forwarder(outbox, MqttClient(mqtt_settings(free_port()), DEVICE))
    try:
        poison = Message(f"edged/{DEVICE}/x", b"poison", qos=1)
        forwarder._sent[id(poison)] = (7, forwarder._epoch, poison)
        for _ in range(3):  # three short sessions, each a reset on the forwarder's thread
            forwarder._reset()
        forwarder._on_dropped(poison)
        assert forwarder._unpublishable == [7]
        assert 7 in forwarder._skip
    finally:
        outbox.close()


def test_a_qos0_copy_from_before_the_previous_session_is_forgotten(tmp_path: Path) -> None:
    """paho discards unsent QoS 0 messages on reconnect: their entries must not pile up."""
    outbox = Outbox(tmp_path / "outbox.sqlite3", max_mb=16, max_age_hours=1)
    forwarder = Forwarder(outbox, MqttClient(mqtt_settings(free_port()), DEVICE))
    try:
        lost = Message(f"edged/{DEVICE}/x", b"qos0", qos=0)
        forwarder._sent[id(lost)] = (3, forwarder._epoch, lost)
        forwarder._reset()
        assert id(lost) in forwarder._sent  # the previous session's copies may still be acked
        forwarder._reset()
        assert id(lost) not in forwarder._sent
    finally:
        outbox.close()
