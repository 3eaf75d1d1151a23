"""The MQTT session of the daemon: availability, reconnects, PUBACK tracking.

:class:`MqttClient` wraps one paho-mqtt 2.x client running its network loop in
paho's own thread. It owns the availability contract (DESIGN §2): the Last
Will publishes ``offline`` (retained, QoS 1) when the daemon dies, every
(re)connect publishes ``online`` and calls the ``on_connect`` hooks (so state
and labels are re-published), and :meth:`MqttClient.stop` publishes
``stopped`` and disconnects cleanly, which suppresses the Will.

An unreachable broker is never fatal: :meth:`MqttClient.start` returns at
once and paho keeps retrying with capped exponential backoff. A broker that
*answers but refuses* (bad credentials, client id rejected) is logged once per
burst with the broker's reason and retried slowly, because it needs an
operator, not a faster retry.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edged.errors import PublishError
from edged.publish.payloads import Message
from edged.publish.topics import Topics
from edged.sched import lower_this_thread
from edged.settings import MqttSettings

log = structlog.get_logger(__name__)

ONLINE = b"online"
STOPPED = b"stopped"
OFFLINE = b"offline"

_EXPIRY_CACHE = 256  # distinct Message Expiry values kept as shared Properties
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
    """The daemon's MQTT session, built from :class:`~edged.settings.MqttSettings`.

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
        self._log = log.bind(host=settings.host, port=settings.port, client_id=self.client_id)

        self._connected = threading.Event()
        self._stopping = False
        self._started = False
        self._ever_connected = False
        # Log once per burst: the reason/error of the burst in progress.
        self._refusal: str | None = None
        self._refusals = 0
        self._failure: str | None = None
        self._slow = False  # reconnect delays currently slowed by a refusal

        self._connect_hooks: list[Callable[[], None]] = []
        self._published_hooks: list[Callable[[int], None]] = []
        self._delivered_hooks: list[Callable[[Message], None]] = []
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
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=protocol
        )
        client.max_inflight_messages_set(max_inflight)
        # paho annotates the delays as int but sleeps float seconds.
        client.reconnect_delay_set(cast(int, self._min_s), cast(int, self._max_s))
        client.will_set(self.topics.availability, OFFLINE, qos=1, retain=True)
        if s.username:
            client.username_pw_set(s.username, password)
        elif password:
            self._log.warning("mqtt.password_ignored", reason="mqtt.username is empty")
        if s.tls:
            try:
                # Verification is always on: CERT_REQUIRED + hostname check.
                # There is deliberately no setting to turn it off.
                client.tls_set(
                    ca_certs=str(s.ca_file) if s.ca_file else None,
                    cert_reqs=ssl.CERT_REQUIRED,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
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

    def on_published(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(mid)`` when the broker acknowledges a message (PUBACK for QoS 1).

        This fires on paho's thread and may fire *before* :meth:`publish`
        has returned that ``mid`` to its caller; to track messages use
        :meth:`send` and :meth:`on_delivered`, which handle that race.
        """
        self._published_hooks.append(callback)

    def on_delivered(self, callback: Callable[[Message], None]) -> None:
        """Call ``callback(message)`` once for every :meth:`send` message the broker acknowledged.

        Called after :meth:`send` was entered for that message, so the caller
        may register the message (e.g. by ``message.id``) before sending. Runs
        on paho's thread, or on the sending thread when the PUBACK overtook
        :meth:`send`'s return.
        """
        self._delivered_hooks.append(callback)

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
        for hook in self._published_hooks:
            self._call(hook, mid)
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
        self._set_slow(False)
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
        self._publish(
            self.topics.availability, ONLINE, qos=1, retain=True, expiry_s=None, message=None
        )
        for topic_filter, qos in list(self._subscriptions.items()):
            self._subscribe(topic_filter, qos)
        for hook in self._connect_hooks:
            self._call(hook)

    def _refused(self, reason: str) -> None:
        self._connected.clear()
        self._refusals += 1
        self._failure = None
        if reason != self._refusal:
            # First refusal of a burst: say it clearly, once, and slow down.
            self._refusal = reason
            self._set_slow(True)
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
        self._set_slow(False)
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

    def _set_slow(self, slow: bool) -> None:
        """Switch paho's reconnect delays between the refused and the network-error regime.

        ``reconnect_delay_set`` restarts the backoff at its minimum, so it is
        called only on a change of regime, never on every attempt.
        """
        if slow == self._slow:
            return
        self._slow = slow
        first = self._refused_s if slow else self._min_s
        # paho annotates the delays as int but sleeps float seconds.
        self._client.reconnect_delay_set(cast(int, first), cast(int, self._max_s))

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
        if self._stopping:
            self._log.debug("mqtt.disconnected", reason=str(reason_code))
        elif was_connected:
            self._log.warning(
                "mqtt.disconnected",
                reason=str(reason_code),
                by_broker=flags.is_disconnect_packet_from_server,
                unacked=self.pending,
            )

    def _call(self, hook: Callable[..., None], *args: object) -> None:
        # An exception escaping a callback would end paho's network thread,
        # i.e. the daemon would silently stop publishing.
        try:
            hook(*args)
        except Exception:  # noqa: BLE001 -- a hook bug must not kill the MQTT loop
            self._log.exception("mqtt.hook_failed", hook=getattr(hook, "__qualname__", repr(hook)))
