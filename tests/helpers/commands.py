"""A command client for tests: MQTT 5 request/response with correlation data, or MQTT 3.1.1.

Replies are matched to requests by their Correlation Data (MQTT 5), so many
requests may be in flight at once; an MQTT 3.1.1 client instead reads the
default reply topic ``<prefix>/<dev>/cmd/<command>/reply``.

Every reply a test waits for is validated against
:class:`~edged.publish.payloads.CommandReply` (``validate=False`` only for a
router whose ``execute`` is a test stand-in), so every command test also
checks the published reply schema on live messages.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
from dataclasses import dataclass
from typing import Any, Self

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edged.publish.payloads import CommandReply

BASE = "edged/testdev"


@dataclass(frozen=True)
class Reply:
    """One reply as the client saw it."""

    topic: str
    payload: bytes
    correlation: bytes | None

    @property
    def doc(self) -> dict[str, Any]:
        value = json.loads(self.payload)
        assert isinstance(value, dict), self.payload
        return value


def _no_delay(_client: paho.Client, _userdata: Any, sock: Any) -> None:
    # Without it each request waits for the broker's delayed ACK (Nagle, ~40 ms).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class CommandClient:
    """Sends commands to ``edged/testdev`` and collects every reply under ``…/cmd/#``."""

    def __init__(
        self, host: str, port: int, *, v5: bool = True, base: str = BASE, validate: bool = True
    ) -> None:
        self.base = base
        self.v5 = v5
        self.validate = validate
        self._cond = threading.Condition()
        self._by_corr: dict[bytes, Reply] = {}
        self._all: list[Reply] = []
        self._subscribed = threading.Event()
        self._ids = itertools.count(1)
        protocol = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
        self._client = paho.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
        self._client.max_inflight_messages_set(200)
        self._client.on_socket_open = _no_delay
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._host, self._port = host, port

    def __enter__(self) -> Self:
        self._client.connect(self._host, self._port, keepalive=10)
        self._client.loop_start()
        assert self._subscribed.wait(5), "command client: no SUBACK"
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._client._reset_sockets(sockpair_only=True)  # see MqttClient.stop

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            return
        # Everything below cmd/ that is not a command itself: replies only.
        filt = f"{self.base}/cmd/+/#"
        if self.v5:
            client.subscribe(filt, options=SubscribeOptions(qos=1, noLocal=True))
        else:
            client.subscribe(filt, qos=1)

    def _on_subscribe(self, *_args: Any) -> None:
        self._subscribed.set()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        corr = getattr(msg.properties, "CorrelationData", None) if msg.properties else None
        reply = Reply(msg.topic, bytes(msg.payload), corr)
        with self._cond:
            self._all.append(reply)
            if corr is not None:
                self._by_corr[corr] = reply
            self._cond.notify_all()

    # -- requests ----------------------------------------------------------------

    def send(
        self,
        command: str,
        payload: bytes | dict[str, Any] | None = None,
        *,
        response_topic: str | None = "",
        correlation: bytes | None = None,
        user_properties: dict[str, str] | None = None,
    ) -> bytes:
        """Publish one command; returns its correlation data (MQTT 5) for :meth:`wait`.

        ``response_topic=""`` picks ``<base>/cmd/<command>/reply/test``; None sends none.
        ``user_properties`` are sent as MQTT 5 User Properties.
        """
        body = json.dumps(payload).encode() if isinstance(payload, dict) else (payload or b"")
        corr = correlation if correlation is not None else f"req-{next(self._ids)}".encode()
        props = None
        if self.v5:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.CorrelationData = corr
            if response_topic == "":
                response_topic = f"{self.base}/cmd/{command}/reply/test"
            if response_topic is not None:
                props.ResponseTopic = response_topic
            if user_properties:
                props.UserProperty = list(user_properties.items())
        info = self._client.publish(f"{self.base}/cmd/{command}", body, qos=1, properties=props)
        assert info.rc == paho.MQTT_ERR_SUCCESS, info.rc
        return corr

    def wait(self, correlation: bytes, timeout: float = 10.0) -> Reply:
        """The reply carrying ``correlation``."""
        with self._cond:
            if not self._cond.wait_for(lambda: correlation in self._by_corr, timeout):
                raise AssertionError(f"no reply with correlation {correlation!r} in {timeout} s")
            return self._checked(self._by_corr[correlation])

    def request(
        self, command: str, payload: bytes | dict[str, Any] | None = None, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Send and wait (MQTT 5): the reply document."""
        return self.wait(self.send(command, payload), timeout).doc

    def wait_topic(self, topic: str, count: int = 1, timeout: float = 10.0) -> list[Reply]:
        """The first ``count`` messages received on ``topic`` (for MQTT 3.1.1 clients)."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: sum(r.topic == topic for r in self._all) >= count, timeout
            )
            got = [r for r in self._all if r.topic == topic]
        assert ok, f"{len(got)} of {count} messages on {topic} in {timeout} s: {self._all[-5:]}"
        return [self._checked(r) for r in got[:count]]

    def _checked(self, reply: Reply) -> Reply:
        """``reply``, once it validates against the published reply model."""
        if self.validate:
            CommandReply.model_validate_json(reply.payload)
        return reply

    def received(self) -> list[Reply]:
        """Every reply so far."""
        with self._cond:
            return list(self._all)
