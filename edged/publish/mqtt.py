"""The MQTT session of the daemon: availability, reconnects, PUBACK tracking.

:class:`MqttClient` wraps one paho-mqtt 2.x client running its network loop in
paho's own thread. It owns the availability contract (README "MQTT topics and payloads"): the Last
Will publishes ``offline`` (retained, QoS 1) when the daemon dies, every
(re)connect publishes ``online`` and calls the ``on_connect`` hooks (so state
and labels are re-published), and :meth:`MqttClient.stop` publishes
``stopped`` and disconnects cleanly, which suppresses the Will.

An unreachable broker is never fatal: :meth:`MqttClient.start` returns at
once and the session keeps retrying (:mod:`edged.publish.reconnect`: capped
exponential backoff for full connects, and a cheap TCP probe every 0.5 s
while the broker is unreachable, so delivery resumes within about a second of
its return). A broker that *answers but refuses* (bad credentials, client id
rejected) is logged once per burst with the broker's reason and retried
slowly, because it needs an operator, not a faster retry.

Topics: every topic is checked with :func:`~edged.publish.topics.check_topic`
before it is handed to paho; a broker drops the connection over a topic it
cannot take, and paho would re-send that message after every reconnect.

Unpublishable messages: should the broker still end the session right after
(re)connecting, every time, with the same message at the head of the unacked
ones (a payload over its packet size limit, a topic within our limits but
over its own), that message is dropped after :data:`POISON_STRIKES` such
sessions, all its copies with it, counted and logged once per burst, and
reported to :meth:`MqttClient.on_dropped` (the outbox then drops its row):
one message must never cut a device off.

Duplicate client ids: a broker ends the session of a client when another one
connects with the same client id (two devices cloned from one SD card share
their host name, hence ``device_id`` and client id). Both then reconnect and
knock each other off. MQTT 5 brokers may say so (reason 142, "Session taken
over"); mosquitto just closes the socket. Either that reason or
:data:`TAKEOVER_SESSIONS` sessions in a row that the broker closed within
seconds of accepting them *while it kept accepting connections* (a TCP probe
right after each close: a broker that stops or restarts closes its port
first) log ``mqtt.duplicate_client_id`` (an error, once per burst) naming the
client id and the fix, and :attr:`MqttClient.problem` says so.

Threading: :meth:`publish` / :meth:`send` may be called from any thread
(paho's publish is thread-safe). Hooks and callbacks run on paho's network
thread and must not block; they may call :meth:`publish`.

Subscriptions: :meth:`subscribe` registers a topic filter and a callback;
the filter is subscribed on every (re)connect, because the session starts
clean and the broker forgets subscriptions with it. Callbacks get the topic,
the payload and the MQTT 5 request/response properties, on paho's thread:
they must hand real work to a thread of their own.

Delivery: a QoS 1 message handed to :meth:`send` stays in paho's session
until its PUBACK and is re-sent by paho after a reconnect, within this
process. The outbox must therefore hand each stored row over once per
process and delete it when :meth:`on_delivered` reports it; rows still
unacknowledged at exit are re-sent from the database after a restart
(consumers deduplicate on the result ``id``).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edged.config.settings import MqttSettings
from edged.errors import PublishError
from edged.publish.payloads import Message, MqttState, availability_payload
from edged.publish.reconnect import SHORT_SESSION_S, Backoff
from edged.publish.topics import Topics, check_topic
from edged.sched import lower_this_thread

log = structlog.get_logger(__name__)

# The retained ``availability`` payloads (``Availability`` in edged/publish/payloads.py).
ONLINE: Final = availability_payload("online")
STOPPED: Final = availability_payload("stopped")
OFFLINE: Final = availability_payload("offline")

_EXPIRY_CACHE = 256  # distinct Message Expiry values kept as shared Properties
_TOPIC_CACHE = 1024  # distinct topics remembered as valid (results use a handful)
#: Short sessions in a row, ended by the broker with the same message at the
#: head of the unacknowledged ones, before that message is dropped.
POISON_STRIKES = 3
#: Short sessions in a row, ended by the broker closing the connection, that
#: make a duplicate client id the likely cause (reason 142 says so at once).
TAKEOVER_SESSIONS = 3
#: A burst of drops or takeovers ends after this long without one (log once per burst).
_BURST_QUIET_S = 60.0
_SESSION_TAKEN_OVER = 142
_DUPLICATE_HINT = (
    "another client connects with the same client id and takes the session over, "
    "e.g. a device cloned from the same SD card: give each device a unique device_id "
    "(default: the host name) or set mqtt.client_id"
)
_AUTH_HINT = "check mqtt.username and the password file (or credential 'mqtt_password')"
_HINTS = {
    "Not authorized": _AUTH_HINT,
    "Bad user name or password": _AUTH_HINT,
    "Client identifier not valid": "another client may use the same mqtt.client_id",
    "Unsupported protocol version": "set mqtt.protocol = '3.1.1' for this broker",
}


class _ExpiryProperties(Properties):
    """PUBLISH properties holding only a Message Expiry Interval, serialized once.

    paho serializes a message's properties on every send and re-send; for
    shared, never mutated objects the bytes are the same each time.
    """

    def __init__(self, expiry_s: int) -> None:
        super().__init__(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        self.MessageExpiryInterval = expiry_s
        # Properties.__setattr__ accepts only MQTT property names.
        object.__setattr__(self, "_packed", super().pack())  # type: ignore[no-untyped-call]

    def pack(self) -> bytes:
        """The serialized properties (computed once)."""
        packed: bytes = self.__dict__["_packed"]
        return packed


@dataclass(frozen=True, slots=True)
class RequestProperties:
    """The MQTT 5 request/response properties of a received message.

    Both are None for a message without them, and always under MQTT 3.1.1,
    which has no properties; such a requester is answered on a fixed topic.
    """

    response_topic: str | None = None
    correlation_data: bytes | None = None
    #: MQTT 5 User Properties, (name, value) pairs in the order sent: set by
    #: the sender, so they say what it *claims* (docs/commands.md).
    user_properties: tuple[tuple[str, str], ...] = ()


#: ``callback(topic, payload, properties)`` for :meth:`MqttClient.subscribe`.
MessageCallback = Callable[[str, bytes, RequestProperties], None]


class _Client(paho.Client):
    """paho's client with the wait before each reconnect attempt delegated to ``wait``.

    paho's own wait is a capped exponential backoff that nothing can cut
    short; :class:`~edged.publish.reconnect.Backoff` probes the broker while
    it waits. ``_reconnect_wait`` is paho's (2.x) single place for that wait,
    called on its network thread with no lock held.
    """

    wait: Callable[[], None] | None = None

    def _reconnect_wait(self) -> None:
        if self.wait is None:
            super()._reconnect_wait()
        else:
            self.wait()


def check_filter(topic_filter: str) -> str:
    """Return ``topic_filter`` if it is a valid MQTT subscription filter, else raise ValueError."""
    levels = topic_filter.split("/")
    if not topic_filter or "\x00" in topic_filter:
        raise ValueError(f"topic filter {topic_filter!r} is empty or contains NUL")
    for i, level in enumerate(levels):
        if ("+" in level and level != "+") or ("#" in level and level != "#"):
            raise ValueError(f"topic filter {topic_filter!r}: a wildcard must fill its level")
        if level == "#" and i != len(levels) - 1:
            raise ValueError(f"topic filter {topic_filter!r}: '#' must be the last level")
    return topic_filter


def show_topic(topic: str, limit: int = 80) -> str:
    """``topic`` for a log line or an error: repr, cut to ``limit`` characters with its length."""
    if len(topic) <= limit:
        return repr(topic)
    return f"{topic[:limit]!r}… ({len(topic)} characters)"


def use_tls(client: paho.Client, ca_file: Path | None) -> None:
    """Connect over TLS, verifying the broker against ``ca_file`` (system CAs when None).

    Verification is always on: CERT_REQUIRED + hostname check; there is
    deliberately no setting to turn it off. ``edged check`` probes with the
    same call, so that it tests what the daemon will do. Raises OSError or
    :class:`ssl.SSLError` when the CA bundle cannot be loaded.
    """
    client.tls_set(
        ca_certs=str(ca_file) if ca_file else None,
        cert_reqs=ssl.CERT_REQUIRED,
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )


def _no_delay(_client: paho.Client, _userdata: Any, sock: Any) -> None:
    """Turn Nagle's algorithm off on the broker connection.

    Results, state and command replies are small messages. With Nagle on, a
    message written while the previous one is unacknowledged waits for the
    broker's delayed ACK (40 ms on Linux); measured here, a command round
    trip through mosquitto took 45-90 ms instead of under 1 ms.
    """
    with contextlib.suppress(OSError, AttributeError):  # not a TCP socket (e.g. a unix socket)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class MqttClient:
    """The daemon's MQTT session, built from :class:`~edged.config.settings.MqttSettings`.

    ``password`` is the secret already read by the caller (``read_secret``);
    it is never logged. ``max_inflight`` bounds QoS 1 messages awaiting PUBACK
    on the wire; more are queued inside paho (the outbox bounds the total).
    """

    def __init__(
        self,
        settings: MqttSettings,
        device_id: str,
        password: str | None = None,
        *,
        max_inflight: int = 20,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.prefix, device_id)
        self.client_id = settings.client_id or f"edged-{device_id}"
        self._v5 = settings.protocol == "5"
        self._min_s = settings.reconnect_min_s
        self._max_s = max(settings.reconnect_max_s, settings.reconnect_min_s)
        # A refusal is retried slowly: ten first-delays, at most the cap.
        self._refused_s = min(self._max_s, 10 * self._min_s)
        self._backoff = Backoff(
            settings.host,
            settings.port,
            min_s=self._min_s,
            max_s=self._max_s,
            refused_s=self._refused_s,
        )
        self._stop_wait = threading.Event()
        self._log = log.bind(host=settings.host, port=settings.port, client_id=self.client_id)
        self._max_levels, self._max_bytes = settings.max_topic_levels, settings.max_topic_bytes
        self._valid_topics: set[str] = set()
        for topic in (self.topics.availability, self.topics.state, self.topics.stats):
            self.check_topic(topic)

        self._connected = threading.Event()
        self._stopping = False
        self._started = False
        self._ever_connected = False
        # Log once per burst: the reason/error of the burst in progress.
        self._refusal: str | None = None
        self._refusals = 0
        self._failure: str | None = None
        # Sessions: when the current one began, and the run of short ones the
        # broker ended (for unpublishable messages and duplicate client ids).
        self._session_at = 0.0
        self._closed_short = 0  # short sessions in a row ended by a closed connection
        self._suspect: int | None = None  # mid at the head of the unacked at each short end
        self._strikes = 0
        self._takeover_at: float | None = None  # last takeover seen (burst open while recent)
        self._dropped_at: float | None = None  # last unpublishable message dropped
        #: Messages dropped as unpublishable (all copies counted).
        self.dropped = 0
        #: Sessions taken over by another client with our client id.
        self.takeovers = 0
        #: Sessions the broker ended (not by us), and connects made.
        self.disconnects = 0

        self._connect_hooks: list[Callable[[], None]] = []
        self._delivered_hooks: list[Callable[[Message], None]] = []
        self._dropped_hooks: list[Callable[[Message], None]] = []
        # topic filter -> qos; re-subscribed on every connect (see _on_connect).
        self._subscriptions: dict[str, int] = {}
        # mid -> (qos, Message from send() or None) until acknowledged; see _handed_over.
        self._track_lock = threading.Lock()
        self._tracked: dict[int, tuple[int, Message | None]] = {}
        self._early: set[int] = set()
        self._expiry_props: dict[int, Properties] = {}
        self._network_tid = 0  # paho's network thread, once lowered to background priority

        self._client = self._build(password, max_inflight)

    # --- construction ----------------------------------------------------------

    def _build(self, password: str | None, max_inflight: int) -> paho.Client:
        s = self.settings
        protocol = MQTTProtocolVersion.MQTTv5 if self._v5 else MQTTProtocolVersion.MQTTv311
        client = _Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=protocol)
        client.max_inflight_messages_set(max_inflight)
        client.wait = self._wait_to_reconnect
        client.will_set(self.topics.availability, OFFLINE, qos=1, retain=True)
        if s.username:
            client.username_pw_set(s.username, password)
        elif password:
            self._log.warning("mqtt.password_ignored", reason="mqtt.username is empty")
        if s.tls:
            try:
                use_tls(client, s.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise PublishError(
                    f"mqtt.ca_file {s.ca_file}: cannot load CA certificates ({exc}); "
                    "point it at a readable PEM bundle"
                ) from None
        elif s.ca_file:
            self._log.warning("mqtt.ca_file_ignored", reason="mqtt.tls is false")
        client.on_socket_open = _no_delay
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    # --- hooks -----------------------------------------------------------------

    def on_connect(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` after every successful (re)connect, after ``online`` is queued."""
        self._connect_hooks.append(hook)

    def on_delivered(self, callback: Callable[[Message], None]) -> None:
        """Call ``callback(message)`` once for every :meth:`send` message the broker acknowledged.

        Called after :meth:`send` was entered for that message, so the caller
        may register the message (e.g. by ``message.id``) before sending. Runs
        on paho's thread, or on the sending thread when the PUBACK overtook
        :meth:`send`'s return.
        """
        self._delivered_hooks.append(callback)

    def on_dropped(self, callback: Callable[[Message], None]) -> None:
        """Call ``callback(message)`` for every :meth:`send` message dropped as unpublishable.

        It will never be acknowledged: the broker ended the session each
        time it was (re)sent (see the module docstring). Runs on paho's thread.
        """
        self._dropped_hooks.append(callback)

    def subscribe(self, topic_filter: str, callback: MessageCallback, qos: int = 1) -> None:
        """Deliver every message matching ``topic_filter`` to ``callback``, across reconnects.

        Subscribes at once when connected, and again after every (re)connect.
        ``callback(topic, payload, properties)`` runs on paho's network
        thread: it must return quickly (hand work to a queue) and may call
        :meth:`publish`. An exception from it is logged, never raised into
        paho. Raises ValueError on an invalid filter. With MQTT 5 the
        subscription is *no local*, so the daemon never receives its own
        publishes on a topic it also listens to.
        """
        check_filter(topic_filter)
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")

        def on_message(_client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
            props = msg.properties
            request = RequestProperties(
                response_topic=getattr(props, "ResponseTopic", None),
                correlation_data=getattr(props, "CorrelationData", None),
                user_properties=tuple(getattr(props, "UserProperty", ())),
            )
            # paho only routes messages whose topic decoded as UTF-8 here.
            self._call(callback, msg.topic, bytes(msg.payload), request)

        self._client.message_callback_add(topic_filter, on_message)
        self._subscriptions[topic_filter] = qos
        if self.connected:
            self._subscribe(topic_filter, qos)

    def _subscribe(self, topic_filter: str, qos: int) -> None:
        options = SubscribeOptions(qos=qos, noLocal=True) if self._v5 else None
        result, _ = (
            self._client.subscribe(topic_filter, options=options)
            if options is not None
            else self._client.subscribe(topic_filter, qos=qos)
        )
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            # Not connected after all: the next on_connect subscribes again.
            self._log.debug("mqtt.subscribe_deferred", filter=topic_filter, rc=str(result))
        else:
            self._log.debug("mqtt.subscribed", filter=topic_filter, qos=qos)

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Start connecting in the background; returns at once, whether or not a broker is up."""
        if self._started:
            raise RuntimeError("MqttClient.start() called twice")
        self._started = True
        s = self.settings
        self._log.info(
            "mqtt.starting",
            protocol=s.protocol,
            tls=s.tls,
            username=s.username or None,
            keepalive_s=s.keepalive_s,
        )
        self._client.connect_async(s.host, s.port, keepalive=s.keepalive_s)
        self._client.loop_start()

    @property
    def connected(self) -> bool:
        """True while a session is established (a successful CONNACK, not just TCP)."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a session; True if connected."""
        return self._connected.wait(timeout)

    @property
    def problem(self) -> str | None:
        """What keeps the session from being healthy, for ``state``; None when nothing."""
        now = time.monotonic()
        if self._takeover_at is not None and now - self._takeover_at < _BURST_QUIET_S:
            return f"duplicate client id {self.client_id!r}: {_DUPLICATE_HINT}"
        if self._dropped_at is not None and now - self._dropped_at < _BURST_QUIET_S:
            return f"{self.dropped} unpublishable message(s) dropped; see mqtt.unpublishable"
        return None

    def state(self) -> MqttState:
        """The ``mqtt`` section of ``state``: down, up, or degraded while :attr:`problem` says why."""
        problem = self.problem
        return MqttState(
            # The problem first: in a takeover storm the session is down half the time.
            status="degraded" if problem else "up" if self.connected else "down",
            problem=problem,
            dropped=self.dropped,
            takeovers=self.takeovers,
        )

    def stats(self) -> dict[str, Any]:
        """The ``mqtt`` section of ``stats``: session health, drops, takeovers, the problem."""
        return {
            "connected": self.connected,
            "disconnects": self.disconnects,
            "dropped_unpublishable": self.dropped,
            "takeovers": self.takeovers,
            "problem": self.problem,
        }

    def check_topic(self, topic: str) -> str:
        """Return ``topic`` if it may be published to, else raise :class:`PublishError`.

        :func:`~edged.publish.topics.check_topic` with the configured
        ``max_topic_levels`` and ``max_topic_bytes``.
        """
        if topic in self._valid_topics:
            return topic
        try:
            check_topic(topic, max_levels=self._max_levels, max_bytes=self._max_bytes)
        except ValueError as exc:
            raise PublishError(f"cannot publish to {show_topic(topic)}: the topic {exc}") from None
        if len(self._valid_topics) >= _TOPIC_CACHE:
            self._valid_topics.clear()
        self._valid_topics.add(topic)
        return topic

    @property
    def pending(self) -> int:
        """Messages handed to this client and not yet acknowledged."""
        with self._track_lock:
            return len(self._tracked)

    def stop(self, timeout: float = 5.0) -> None:
        """Publish ``stopped`` (retained), wait up to ``timeout`` s for its PUBACK, disconnect.

        The clean DISCONNECT makes the broker discard the Last Will, so
        ``stopped`` stays the retained availability. Safe to call twice.
        """
        if not self._started or self._stopping:
            return
        self._stopping = True
        self._stop_wait.set()
        acked = False
        if self.connected:
            info = self._publish(
                self.topics.availability, STOPPED, qos=1, retain=True, expiry_s=None, message=None
            )
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                info.wait_for_publish(timeout)
                acked = info.is_published()
        self._client.disconnect()
        self._client.loop_stop()
        # paho 2.2 keeps the network loop's wake-up socket pair open until the
        # client is garbage collected (ResourceWarnings under cyclic GC); a
        # stopped client should hold no sockets.
        self._client._reset_sockets(sockpair_only=True)
        self._connected.clear()
        self._log.info("mqtt.stopped", stopped_acked=acked, unacked=self.pending)

    # --- publishing ------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        expiry_s: int | None = None,
        *,
        correlation_data: bytes | None = None,
    ) -> int:
        """Queue one message and return its paho message id (``mid``).

        Never blocks on the network. QoS 1/2 messages published while
        disconnected are kept and sent after the next connect; QoS 0 messages
        are dropped then. ``expiry_s`` sets the MQTT 5 Message Expiry Interval
        and ``correlation_data`` the Correlation Data of a reply (both ignored
        with MQTT 3.1.1). Raises :class:`PublishError` on an invalid topic or
        payload.
        """
        return self._publish(
            topic,
            payload,
            qos=qos,
            retain=retain,
            expiry_s=expiry_s,
            message=None,
            correlation_data=correlation_data,
        ).mid

    def send(self, message: Message) -> int:
        """Publish ``message``; :meth:`on_delivered` reports it once acknowledged."""
        m = message
        return self._publish(
            m.topic, m.payload, qos=m.qos, retain=m.retain, expiry_s=m.expiry_s, message=m
        ).mid

    def _publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int,
        retain: bool,
        expiry_s: int | None,
        message: Message | None,
        correlation_data: bytes | None = None,
    ) -> paho.MQTTMessageInfo:
        if qos not in (0, 1, 2):
            raise PublishError(f"cannot publish to {topic!r}: qos must be 0, 1 or 2, not {qos!r}")
        self.check_topic(topic)
        props: Properties | None = None
        if self._v5 and correlation_data is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.CorrelationData = correlation_data
            if expiry_s is not None:
                props.MessageExpiryInterval = int(expiry_s)
        elif self._v5 and expiry_s is not None:
            props = self._expiry_properties(int(expiry_s))
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        except (ValueError, TypeError) as exc:
            raise PublishError(f"cannot publish to {topic!r}: {exc}") from None
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise PublishError(f"cannot publish to {topic!r}: {paho.error_string(info.rc)}")
        if qos > 0 or info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            # (A QoS 0 message published while disconnected is dropped: no ack will come.)
            self._handed_over(info.mid, qos, message)
        return info

    def _expiry_properties(self, expiry_s: int) -> Properties:
        """A shared, never mutated Properties carrying only ``expiry_s`` as Message Expiry.

        Building a paho Properties object per message was the MQTT 5 ceiling of
        a backlog drain (~5,000 msgs/s against ~10,000 with MQTT 3.1.1). paho
        only reads it (to pack the PUBLISH and its re-sends; packing is cached
        too, see :class:`_ExpiryProperties`), so messages with
        the same expiry share one. Consecutive outbox rows were born within
        the same second or so and mostly share their expiry; the cache is
        emptied when it grows past a bound, so it never holds more than that.
        """
        props = self._expiry_props.get(expiry_s)
        if props is None:
            if len(self._expiry_props) >= _EXPIRY_CACHE:
                self._expiry_props.clear()
            props = self._expiry_props[expiry_s] = _ExpiryProperties(expiry_s)
        return props

    def _handed_over(self, mid: int, qos: int, message: Message | None) -> None:
        """Record ``mid`` as awaiting acknowledgement, unless its ack already came.

        paho calls on_publish on its thread while holding its own lock, and
        the PUBACK of a fast local broker can arrive before ``publish()``
        returned the mid. Neither side may wait for the other (deadlock), so
        an ack for a mid not recorded yet is parked in ``_early`` and
        completed here.
        """
        with self._track_lock:
            if mid in self._early:
                self._early.discard(mid)
                done = True
            else:
                self._tracked[mid] = (qos, message)
                done = False
        if done and message is not None:
            self._deliver(message)

    def _on_publish(
        self,
        _client: paho.Client,
        _userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        _properties: Properties,
    ) -> None:
        if reason_code.is_failure:
            # The broker took the message but will not route it (e.g. an ACL
            # denies the topic). Retrying cannot help, so it counts as done.
            self._log.warning("mqtt.publish_refused", mid=mid, reason=str(reason_code))
        with self._track_lock:
            if mid in self._tracked:
                _, message = self._tracked.pop(mid)
            else:
                self._early.add(mid)
                return
        if message is not None:
            self._deliver(message)

    def _deliver(self, message: Message) -> None:
        for hook in self._delivered_hooks:
            self._call(hook, message)

    # --- connection events (paho's thread) --------------------------------------

    def _on_connect(
        self,
        _client: paho.Client,
        _userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self._network_thread_started()
        if reason_code.is_failure:
            self._refused(str(reason_code))
            return
        self._session_at = time.monotonic()
        if self._strikes >= POISON_STRIKES and self._suspect is not None:
            # Before paho re-sends its unacknowledged messages (right after
            # this callback): the suspect must not go out again.
            self._call(self._drop_unpublishable, self._suspect)  # never raise into paho
        extra = {"after_refusals": self._refusals} if self._refusals else {}
        self._log.info(
            "mqtt.connected",
            reconnect=self._ever_connected,
            session_present=flags.session_present,
            **extra,
        )
        self._refusal, self._refusals, self._failure = None, 0, None
        self._ever_connected = True
        self._connected.set()
        if self._stopping:
            return
        # Subscriptions before `online`: the broker takes a connection's packets
        # in order, so whoever reacts to `online` finds the daemon listening.
        for topic_filter, qos in list(self._subscriptions.items()):
            self._subscribe(topic_filter, qos)
        self._publish(
            self.topics.availability, ONLINE, qos=1, retain=True, expiry_s=None, message=None
        )
        for hook in self._connect_hooks:
            self._call(hook)

    def _refused(self, reason: str) -> None:
        self._connected.clear()
        self._refusals += 1
        self._failure = None
        self._backoff.refused()
        if reason != self._refusal:
            # First refusal of a burst: say it clearly, once, and slow down.
            self._refusal = reason
            self._log.warning(
                "mqtt.refused",
                reason=reason,
                username=self.settings.username or None,
                hint=_HINTS.get(reason, "see the broker's log"),
                retry_s=self._refused_s,
            )
        else:
            self._log.debug("mqtt.refused", reason=reason, attempt=self._refusals)

    def _network_thread_started(self) -> None:
        """Once per paho network thread (its first callback): background CPU priority."""
        tid = threading.get_native_id()
        if tid != self._network_tid:
            self._network_tid = tid
            lower_this_thread()

    def _on_connect_fail(self, _client: paho.Client, _userdata: Any) -> None:
        # paho calls this from inside its ``except OSError`` block, so the
        # exception (refused port, DNS, TLS verification) is still available.
        exc = sys.exception()
        self._network_thread_started()
        error = f"{type(exc).__name__}: {exc}" if exc is not None else "connection failed"
        self._refusal = None
        self._backoff.connect_failed(exc)
        if error != self._failure:
            self._failure = error
            self._log.warning(
                "mqtt.connect_failed",
                error=error,
                retry_min_s=self._min_s,
                retry_max_s=self._max_s,
            )
        else:
            self._log.debug("mqtt.connect_failed", error=error)

    def _wait_to_reconnect(self) -> None:
        """paho's wait before each reconnect attempt (its network thread, no lock held)."""
        self._backoff.wait(self._stop_wait)

    def _on_disconnect(
        self,
        _client: paho.Client,
        _userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        with self._track_lock:
            # QoS 0 packets not yet written are discarded by paho on reconnect
            # and never acknowledged; QoS 1/2 messages are re-sent.
            for mid in [m for m, (qos, _) in self._tracked.items() if qos == 0]:
                del self._tracked[mid]
            head = next(iter(self._tracked), None)  # the oldest unacknowledged message
        if self._stopping:
            self._log.debug("mqtt.disconnected", reason=str(reason_code))
            return
        if not was_connected:
            return  # paho reports some ends twice; the first one counted
        lasted = time.monotonic() - self._session_at
        self.disconnects += 1
        self._backoff.session_ended(lasted)
        packet = flags.is_disconnect_packet_from_server
        self._call(self._session_ended, lasted, reason_code, packet, head)  # never raise into paho
        storm = self._closed_short > 1 or self._strikes > 1
        # In a storm of short sessions the patterns below are what to log.
        (self._log.debug if storm else self._log.warning)(
            "mqtt.disconnected",
            reason=str(reason_code),
            by_broker=packet,
            unacked=self.pending,
            session_s=round(lasted, 2),
        )

    def _session_ended(
        self, lasted: float, reason: ReasonCode, packet: bool, head: int | None
    ) -> None:
        """Look for an unpublishable message and for a duplicate client id.

        A session that ends with a message still unacknowledged at the head
        ended within a round trip of paho re-sending it (re-sends start with
        the oldest, right after the CONNACK): on a working link its PUBACK
        would have come. The same head at every such end is a message the
        broker refuses.
        """
        short = lasted < SHORT_SESSION_S
        taken_over = packet and reason.value == _SESSION_TAKEN_OVER
        if short and head is not None and not taken_over:
            self._strikes = self._strikes + 1 if head == self._suspect else 1
            self._suspect = head
        else:
            self._suspect, self._strikes = None, 0
        # mosquitto ends a taken-over session by closing the socket, no reason
        # given (paho may not even read a DISCONNECT before the close). A broker
        # that stops closes its port before (or as) it closes its clients: a
        # probe that is accepted right after the close means it is still serving.
        kicked = short and not taken_over and self._backoff.probe()
        self._closed_short = self._closed_short + 1 if kicked else 0
        if taken_over:
            self._took_over("the broker said so: reason 142, session taken over")
        elif self._closed_short >= TAKEOVER_SESSIONS and self._strikes < 2:
            self._took_over(
                f"likely: {self._closed_short} sessions in a row closed within "
                f"{SHORT_SESSION_S:g} s of connecting by a broker that kept accepting connections"
            )

    def _took_over(self, cause: str) -> None:
        """Another client with our client id took the session: log once per burst."""
        self.takeovers += 1
        now = time.monotonic()
        new_burst = self._takeover_at is None or now - self._takeover_at >= _BURST_QUIET_S
        self._takeover_at = now
        if new_burst:
            self._log.error(
                "mqtt.duplicate_client_id",
                error=f"the broker keeps ending the session of client id {self.client_id!r}",
                cause=cause,
                hint=_DUPLICATE_HINT,
            )
        else:
            self._log.debug("mqtt.duplicate_client_id", takeovers=self.takeovers)

    def _drop_unpublishable(self, mid: int) -> None:
        """Drop message ``mid`` and every copy of it from paho's session and from tracking.

        Called from :meth:`_on_connect`, before paho re-sends what is
        unacknowledged: paho has just reset every message to "to be sent"
        (none counts as in flight), so removing entries is safe. Copies are
        the same topic and payload (the outbox re-sends its rows as new
        messages after each reconnect).
        """
        self._suspect, self._strikes = None, 0
        client = self._client
        with client._out_message_mutex:
            found = client._out_messages.get(mid)
            if found is None:
                return  # acknowledged after all
            topic, payload = found.topic, found.payload
            victims = [
                m
                for m, msg in client._out_messages.items()
                if msg.qos > 0 and msg.payload == payload and msg.topic == topic
            ]
            for m in victims:
                del client._out_messages[m]
        with self._track_lock:
            dropped = [self._tracked.pop(m, (1, None))[1] for m in victims]
        self.dropped += len(victims)
        now = time.monotonic()
        new_burst = self._dropped_at is None or now - self._dropped_at >= _BURST_QUIET_S
        self._dropped_at = now
        (self._log.error if new_burst else self._log.debug)(
            "mqtt.unpublishable",
            topic=show_topic(topic),
            payload_bytes=len(payload),
            copies=len(victims),
            dropped_total=self.dropped,
            error=f"the broker ended the session {POISON_STRIKES} times in a row right after "
            "this message was sent; it is dropped so that the rest can flow",
        )
        for message in dropped:
            if message is not None:
                for hook in self._dropped_hooks:
                    self._call(hook, message)

    def _call(self, hook: Callable[..., None], *args: object) -> None:
        # An exception escaping a callback would end paho's network thread,
        # i.e. the daemon would silently stop publishing.
        try:
            hook(*args)
        except Exception:  # noqa: BLE001 -- a hook bug must not kill the MQTT loop
            self._log.exception("mqtt.hook_failed", hook=getattr(hook, "__qualname__", repr(hook)))
