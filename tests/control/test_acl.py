"""The shipped broker ACL (docs/mosquitto/edged.acl) in a real mosquitto, with the real command path.

The daemon's side is a real :class:`~edged.publish.mqtt.MqttClient` logged in
as its device user and a real :class:`~edged.control.router.CommandRouter`
that allows every command, so that only the broker stands between a client
and a command: whatever reaches the router would run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from edged.config.settings import MqttSettings
from edged.control.commands import COMMANDS, Command
from edged.control.router import CommandRouter
from edged.demo.broker import LocalBroker
from edged.publish.mqtt import MqttClient
from tests.helpers.broker import Subscriber, matching

pytestmark = pytest.mark.broker

ACL = Path(__file__).resolve().parents[2] / "docs" / "mosquitto" / "edged.acl"
DEVICE = "pi-kitchen"
USERS = {
    DEVICE: "dev-pw-1",
    "pi-garage": "dev-pw-2",  # another device
    "edged-admin": "admin-pw",
    "homeassistant": "ha-pw",
    "ops-kitchen": "ops-pw",  # operator of pi-kitchen only
    "intruder": "intruder-pw",  # a valid broker login the ACL grants nothing
}


class AclBroker(LocalBroker):
    """A password-protected mosquitto that loads :data:`ACL`."""

    def _config(self) -> str:
        return super()._config() + f"acl_file {ACL}\n"


@dataclass
class Setup:
    broker: AclBroker
    device: MqttClient
    router: CommandRouter
    executed: list[str]

    def login(self, user: str, topic_filter: str = "#") -> Subscriber:
        return Subscriber(
            self.broker.host, self.broker.port, topic_filter, username=user, password=USERS[user]
        ).start()


class Publisher:
    """An MQTT 5 client that reports the PUBACK reason of each QoS 1 publish."""

    def __init__(self, broker: AclBroker, user: str) -> None:
        self._client = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self._client.username_pw_set(user, USERS[user])
        self._acks: dict[int, ReasonCode] = {}
        self._cond = threading.Condition()
        self._client.on_publish = self._on_publish
        self._client.connect(broker.host, broker.port, keepalive=10)
        self._client.loop_start()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        with self._cond:
            self._acks[mid] = reason
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes = b"") -> ReasonCode:
        """Publish at QoS 1; the broker's PUBACK reason."""
        info = self._client.publish(topic, payload, qos=1)
        with self._cond:
            assert self._cond.wait_for(lambda: info.mid in self._acks, 5), f"no PUBACK: {topic}"
            return self._acks[info.mid]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


#: What the stand-in command executor answers: the fields of each real reply.
REPLIES: dict[str, dict[str, Any]] = {
    "ping": {"device": DEVICE, "version": "0", "uptime_s": 0.0},
    "reload": {"applied": True, "pipelines": [], "restart_needed": []},
    "disable": {"pipeline": "door", "enabled": False},
}


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    broker = AclBroker(workdir=tmp_path / "broker", users=USERS)
    broker.start()
    executed: list[str] = []

    def execute(command: Command) -> dict[str, Any]:
        executed.append(command.NAME)
        return REPLIES[command.NAME]  # the router checks replies against their models

    settings = MqttSettings(
        host=broker.host,
        port=broker.port,
        username=DEVICE,
        keepalive_s=5,
        reconnect_min_s=0.05,
        reconnect_max_s=0.5,
    )
    device = MqttClient(settings, DEVICE, USERS[DEVICE])
    router = CommandRouter(device, execute, allowed=lambda: COMMANDS)
    device.start()
    router.start()
    try:
        assert device.wait_connected(5), broker.log_tail()
        yield Setup(broker, device, router, executed)
    finally:
        router.stop()
        device.stop(timeout=1)
        broker.close()


@pytest.mark.parametrize("user", ["intruder", "pi-garage", "homeassistant"])
def test_users_the_acl_does_not_grant_cannot_command_the_device(setup: Setup, user: str) -> None:
    """intruder / another device / Home Assistant: every command is refused by the broker
    (PUBACK 'Not authorized'), never routed to anyone, and the daemon sees none of them."""
    spy = setup.login("edged-admin", f"edged/{DEVICE}/cmd/#")
    admin = Publisher(setup.broker, "edged-admin")
    sender = Publisher(setup.broker, user)
    try:
        for name in sorted(COMMANDS):
            reason = sender.publish(f"edged/{DEVICE}/cmd/{name}", b"{}")
            assert reason.value == 0x87, f"{user} {name}: {reason}"  # Not authorized
        # A command the admin sends afterwards is routed and run: the daemon was listening.
        assert admin.publish(f"edged/{DEVICE}/cmd/ping").value == 0
        spy.wait_for(matching(f"edged/{DEVICE}/cmd/ping/reply"))
    finally:
        sender.close()
        admin.close()
        spy.close()
    assert setup.executed == ["ping"]
    commands = [m.topic for m in spy.messages() if m.topic.count("/") == 3]
    assert commands == [f"edged/{DEVICE}/cmd/ping"]


@pytest.mark.parametrize("user", ["edged-admin", "ops-kitchen"])
def test_the_admin_and_the_devices_operator_can_command_it(setup: Setup, user: str) -> None:
    """edged-admin and ops-kitchen: the command runs and they can read its reply."""
    replies = setup.login(user, f"edged/{DEVICE}/cmd/+/reply/#")
    sender = Publisher(setup.broker, user)
    try:
        assert sender.publish(f"edged/{DEVICE}/cmd/reload", b"{}").value == 0
        reply = replies.wait_for(matching(f"edged/{DEVICE}/cmd/reload/reply"))
    finally:
        sender.close()
        replies.close()
    assert b'"ok":true' in reply.payload
    assert setup.executed == ["reload"]


def test_the_operator_of_one_device_cannot_command_another(setup: Setup) -> None:
    """ops-kitchen may command pi-kitchen only."""
    sender = Publisher(setup.broker, "ops-kitchen")
    try:
        assert sender.publish("edged/pi-garage/cmd/reload", b"{}").value == 0x87
    finally:
        sender.close()


def test_the_device_publishes_its_results_state_and_discovery(setup: Setup) -> None:
    """The device's own user may publish under edged/<device>/ and its HA discovery configs;
    Home Assistant receives them."""
    ha = setup.login("homeassistant")
    topics = [
        f"edged/{DEVICE}/state",
        f"edged/{DEVICE}/door/detections",
        f"homeassistant/binary_sensor/edged_{DEVICE}/door_person/config",
    ]
    try:
        for topic in topics:
            setup.device.publish(topic, b"{}", qos=1)
            ha.wait_for(matching(topic))
    finally:
        ha.close()


def test_a_device_cannot_forge_another_devices_results_or_commands(setup: Setup) -> None:
    """pi-kitchen's user is refused on pi-garage's tree and discovery configs."""
    device = Publisher(setup.broker, DEVICE)
    try:
        for topic in (
            "edged/pi-garage/state",
            "edged/pi-garage/door/detections",
            "edged/pi-garage/cmd/disable",
            "homeassistant/binary_sensor/edged_pi-garage/door_person/config",
        ):
            assert device.publish(topic, b"{}").value == 0x87, topic
    finally:
        device.close()
