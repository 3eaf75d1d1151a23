"""MqttClient.subscribe against a real mosquitto: delivery, MQTT 5 properties, reconnects."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edged.publish.mqtt import MqttClient, RequestProperties, check_filter
from tests.helpers.broker import RunningBroker, matching

pytestmark = pytest.mark.broker

CMD = "edged/dev1/cmd/+"


class Inbox:
    """Records (topic, payload, properties) delivered to a subscribe callback."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes, RequestProperties]] = []
        self._cond = threading.Condition()

    def __call__(self, topic: str, payload: bytes, props: RequestProperties) -> None:
        with self._cond:
            self.items.append((topic, payload, props))
            self._cond.notify_all()

    def wait_for(self, topic: str, timeout: float = 5.0) -> None:
        """Wait until a message on ``topic`` was delivered."""
        with self._cond:
            ok = self._cond.wait_for(lambda: any(t == topic for t, _, _ in self.items), timeout)
            assert ok, self.items


@pytest.fixture
def publisher(broker: RunningBroker) -> Iterator[paho.Client]:
    """A plain MQTT 5 paho client publishing to the broker."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()
    client._reset_sockets(sockpair_only=True)  # see MqttClient.stop


def started(broker: RunningBroker, **settings: object) -> MqttClient:
    client = MqttClient(broker.settings(**settings), "dev1")
    client.start()
    assert client.wait_connected(5)
    return client


def subscribed(client: MqttClient, inbox: Inbox, publisher: paho.Client) -> None:
    """Subscribe and wait until a probe message arrives (the SUBACK is then through)."""
    client.subscribe(CMD, inbox)
    for _ in range(50):
        publisher.publish("edged/dev1/cmd/probe", b"", qos=1).wait_for_publish(1)
        if inbox.items:
            return
        threading.Event().wait(0.1)
    raise AssertionError("subscription never became active")


def test_callback_gets_topic_payload_and_request_properties(
    broker: RunningBroker, publisher: paho.Client
) -> None:
    """A matching message reaches the callback with its Response Topic and Correlation Data."""
    client = started(broker)
    inbox = Inbox()
    try:
        subscribed(client, inbox, publisher)
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = "edged/dev1/cmd/ping/reply/me"
        props.CorrelationData = b"\x01\x02"
        publisher.publish("edged/dev1/other", b"x", qos=1)  # not matching
        publisher.publish("edged/dev1/cmd/ping", b"{}", qos=1, properties=props)
        inbox.wait_for("edged/dev1/cmd/ping")
    finally:
        client.stop(timeout=1)
    assert ("edged/dev1/other", b"x") not in [(t, p) for t, p, _ in inbox.items]
    pings = [(p, props) for t, p, props in inbox.items if t == "edged/dev1/cmd/ping"]
    assert pings == [(b"{}", RequestProperties("edged/dev1/cmd/ping/reply/me", b"\x01\x02"))]


def test_subscription_is_renewed_after_a_broker_restart(
    broker: RunningBroker, publisher: paho.Client
) -> None:
    """After the broker restarts (forgetting every session), messages arrive again."""
    client = started(broker)
    inbox = Inbox()
    try:
        subscribed(client, inbox, publisher)
        broker.broker.restart()
        assert client.wait_connected(10)
        for _ in range(100):  # the publisher reconnects by itself (paho's loop)
            if publisher.is_connected():
                break
            threading.Event().wait(0.1)
        for _ in range(50):  # until the renewed subscription is in place
            publisher.publish("edged/dev1/cmd/again", b"1", qos=1)
            if any(t == "edged/dev1/cmd/again" for t, _, _ in inbox.items):
                break
            threading.Event().wait(0.1)
        inbox.wait_for("edged/dev1/cmd/again")
    finally:
        client.stop(timeout=1)


def test_own_publishes_are_not_delivered_back(
    broker: RunningBroker, publisher: paho.Client
) -> None:
    """MQTT 5 no-local: what the client publishes on a subscribed topic does not come back."""
    client = started(broker)
    inbox = Inbox()
    spy = broker.subscriber(CMD)
    try:
        subscribed(client, inbox, publisher)
        client.publish("edged/dev1/cmd/echo", b"mine", qos=1)
        spy.wait_for(matching("edged/dev1/cmd/echo"))
        threading.Event().wait(0.3)
    finally:
        client.stop(timeout=1)
    # Only the echo topic counts: a second subscription probe may still land
    # after subscribed() returned on a busy machine, and it is not ours.
    assert [t for t, _, _ in inbox.items if t == "edged/dev1/cmd/echo"] == []


def test_replies_carry_correlation_data(broker: RunningBroker) -> None:
    """publish(correlation_data=…) sets the MQTT 5 Correlation Data of the message."""
    spy = broker.subscriber("edged/dev1/cmd/+/reply")
    client = started(broker)
    try:
        client.publish("edged/dev1/cmd/ping/reply", b"{}", qos=1, correlation_data=b"abc")
        got = spy.wait_for(matching("edged/dev1/cmd/ping/reply"))
    finally:
        client.stop(timeout=1)
    assert bytes.fromhex(got.props["CorrelationData"]) == b"abc"


@pytest.mark.parametrize("bad", ["", "a/#/b", "a/b+", "a#", "x\x00y"])
def test_invalid_filters_are_refused(bad: str) -> None:
    """A malformed subscription filter raises ValueError before anything is sent."""
    with pytest.raises(ValueError, match="topic filter"):
        check_filter(bad)
