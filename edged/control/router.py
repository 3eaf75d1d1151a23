"""Commands over MQTT: subscribe to ``<prefix>/<dev>/cmd/+``, run each on a worker, reply.

Threads. paho delivers messages on its network thread, which also carries
every result to the broker, so it must never wait for a command.
:meth:`CommandRouter._on_message` only puts the request on a bounded queue;
one worker thread validates and runs commands in arrival order. When the
queue is full the request is answered at once, without being parsed, with a
``busy`` error: a flood of commands costs one small reply per message and
never memory. Busy replies are QoS 0, so that a client flooding the daemon
cannot also fill paho's queue of unacknowledged QoS 1 messages.

Replies. Every request gets exactly one reply, ``{"ok": true, …}`` or
``{"ok": false, "error": "<field>: <problem>"}``. It goes to the request's
MQTT 5 Response Topic, with its Correlation Data, when the request names one;
else to ``<prefix>/<dev>/cmd/<command>/reply`` (with the Correlation Data if
there was any), which is where MQTT 3.1.1 clients, who cannot send
properties, listen.

Response topics are checked (:meth:`CommandRouter.reply_topic`): they must
lie *under the device's command tree*, at least two levels below ``cmd``
(e.g. ``edged/pi-kitchen/cmd/ping/reply/client-7``). The daemon usually holds
wider publish rights than the clients that command it (its results, its
retained state, in many brokers ``#``); without the rule any client allowed
to send a command could make it publish to any topic — someone's
``…/lock/set``, or forged ``detections`` and ``state`` of this device. Under
``cmd/`` a reply can only ever land where command replies live, and two
levels below ``cmd`` it can never be a command itself (no reply loops).
Broker ACLs written per device (``edged/<dev>/cmd/#``) cover both directions.
They must also be topics a broker takes (:meth:`MqttClient.check_topic`: at
most ``mqtt.max_topic_levels`` levels and ``mqtt.max_topic_bytes`` bytes, no
wildcards, no control characters): a reply to a topic the broker refuses
makes it drop the daemon's connection, and paho would re-send that reply
after every reconnect. A request with a refused response topic is not run;
its error reply, naming the problem, goes to the default reply topic, so the
client still learns why.

Allow-list. Only the commands listed in ``[commands] allow`` run (read-only
``ping`` by default, :data:`~edged.config.settings.READ_ONLY_COMMANDS`); any other
is answered ``command: '<name>' is not allowed …`` naming the key that
enables it, counted (``not_allowed``) and logged once per burst. Every
accepted command that is not read-only is logged (``command.accepted``) with
what the request says about its sender: the MQTT 5 User Property
``client_id`` and the response topic. MQTT carries no authenticated sender in
a PUBLISH, so both are claims of the requester; the broker's ACL on
``<prefix>/<dev>/cmd/#`` decides who may send commands at all
(docs/commands.md).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Final

import structlog
from pydantic import ValidationError

from edged.config.settings import READ_ONLY_COMMANDS, check_segment
from edged.control.commands import COMMANDS, Command, encode_reply, parse, show
from edged.errors import CommandError, PublishError
from edged.log import BurstLog
from edged.publish.mqtt import MqttClient, RequestProperties, show_topic
from edged.publish.payloads import CommandReply
from edged.sched import background

log = structlog.get_logger(__name__)

#: Commands waiting for the worker; more are answered ``busy``.
QUEUE_SIZE: Final = 32
#: Stand-in command name in the default reply topic when the name received
#: cannot be a topic segment of ours (longer than 128 bytes, say).
INVALID_NAME: Final = "invalid"
#: Refusals are logged at most this often, with a count (a fuzzing or
#: misconfigured client must not flood the journal).
_REFUSAL_LOG_EVERY_S: Final = 10.0
#: The MQTT 5 User Property a requester may set to say who it is (logged, not trusted).
CLIENT_ID_PROPERTY: Final = "client_id"
#: A claimed client id is logged cut to this many characters.
_CLIENT_ID_MAX: Final = 128

Execute = Callable[[Command], dict[str, Any]]
#: Returns the names of the commands allowed right now (read per request: reload changes it).
Allowed = Callable[[], Collection[str]]


@dataclass(frozen=True, slots=True)
class Request:
    """One command as received: its name (the last topic level), payload and properties."""

    command: str
    payload: bytes
    props: RequestProperties


@dataclass
class CommandCounters:
    """How requests ended (for metrics): replied ok, replied with an error, or busy."""

    ok: int = 0
    error: int = 0
    busy: int = 0
    #: Refused because ``[commands] allow`` does not list the command.
    not_allowed: int = 0


def claimed_client_id(request: Request) -> str | None:
    """The ``client_id`` User Property of ``request``, if it set one: what the sender *claims*."""
    for name, value in request.props.user_properties:
        if name == CLIENT_ID_PROPERTY:
            return value[:_CLIENT_ID_MAX]
    return None


class CommandRouter:
    """Receives commands for one device, runs them with ``execute``, and replies."""

    def __init__(
        self,
        mqtt: MqttClient,
        execute: Execute,
        *,
        allowed: Allowed = lambda: READ_ONLY_COMMANDS,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self._mqtt = mqtt
        self._allowed = allowed
        self._not_allowed_log = BurstLog("command.not_allowed")
        self._invalid = BurstLog("command.reply_invalid")
        self._topics = mqtt.topics
        self._execute = execute
        self._reply_root = f"{self._topics.base}/cmd/"
        self._queue: queue.Queue[Request] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=background(self._work), name="commands", daemon=True)
        self.counters = CommandCounters()
        self._refusals = 0
        self._last_refusal_log = -_REFUSAL_LOG_EVERY_S

    def start(self) -> None:
        """Start the worker, then subscribe (kept across reconnects by the client)."""
        self._thread.start()
        self._mqtt.subscribe(self._topics.cmd_filter, self._on_message, qos=1)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop taking commands; requests still queued are dropped (the daemon is stopping)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- paho's thread ----------------------------------------------------------

    def _on_message(self, topic: str, payload: bytes, props: RequestProperties) -> None:
        # ``cmd/+`` matches exactly one level below ``cmd``: the command name.
        request = Request(topic.rsplit("/", 1)[-1], payload, props)
        if self._stop.is_set():
            self._reply_error(request, CommandError("command", "the daemon is stopping"), qos=0)
            return
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            self.counters.busy += 1
            busy = CommandError(
                "command", f"busy: {self._queue.maxsize} commands are waiting; retry later"
            )
            self._reply_error(request, busy, qos=0)

    # -- the worker -------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                request = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._handle(request)
            except Exception:  # one bad request must not end the worker
                log.exception("command.failed", command=show(request.command))

    def _handle(self, request: Request) -> None:
        """Validate, run and answer one request."""
        try:
            reply_to = self.reply_topic(request)
        except CommandError as exc:
            self.counters.error += 1
            self._refused(request, exc)
            self._reply_error(request, exc, qos=1)
            return
        if request.command in COMMANDS and request.command not in (allowed := self._allowed()):
            self._not_allowed(request, reply_to, allowed)
            return
        command: Command | None = None
        doc: dict[str, Any] = {"ok": True}
        try:
            command = parse(request.command, request.payload)
            if command.NAME not in READ_ONLY_COMMANDS:
                self._accepted(request, reply_to, command)
            doc.update(self._execute(command))
        except CommandError as exc:
            doc = {"ok": False, "error": str(exc), **exc.details}
            self._refused(request, exc)
        except Exception:  # a bug in one command must still get an answer
            log.exception("command.crashed", command=request.command)
            doc = {"ok": False, "error": f"{request.command}: internal error; see the daemon's log"}
        reply = self._checked(self._frame(request, command, doc))
        if reply["ok"]:
            self.counters.ok += 1
        else:
            self.counters.error += 1
        self._send(reply_to, request, reply, qos=1)

    # -- the allow-list ----------------------------------------------------------

    def _not_allowed(self, request: Request, reply_to: str, allowed: Collection[str]) -> None:
        """Answer a command that ``[commands] allow`` does not list; count it, log the burst."""
        self.counters.not_allowed += 1
        listed = ", ".join(f'"{name}"' for name in [*allowed, request.command])
        error = CommandError(
            "command",
            f"{request.command!r} is not allowed on this device; the operator enables it with "
            f"[commands] allow = [{listed}] in the configuration file (docs/commands.md)",
        )
        self._not_allowed_log.note(
            command=request.command,
            client_id=claimed_client_id(request),
            response_topic=request.props.response_topic,
        )
        try:  # only to echo the request's "id" (MQTT 3.1.1 clients match replies by it)
            command: Command | None = parse(request.command, request.payload)
        except CommandError:
            command = None
        doc = {"ok": False, "error": str(error)}
        self._publish(reply_to, request, self._frame(request, command, doc), qos=1)

    @staticmethod
    def _accepted(request: Request, reply_to: str, command: Command) -> None:
        """The audit line of a command that changes something or reveals a camera image."""
        log.info(
            "command.accepted",
            command=command.NAME,
            client_id=claimed_client_id(request),
            response_topic=request.props.response_topic,
            reply_topic=reply_to,
            id=command.id,
        )

    # -- replies ------------------------------------------------------------------

    def default_reply_topic(self, command: str) -> str:
        """``<prefix>/<dev>/cmd/<command>/reply`` (``invalid`` for a name that is no segment)."""
        try:
            return self._topics.cmd_reply(command)
        except ValueError:
            return self._topics.cmd_reply(INVALID_NAME)

    def reply_topic(self, request: Request) -> str:
        """Where to answer ``request``; raises CommandError for a refused response topic."""
        wanted = request.props.response_topic
        if wanted is None:
            return self.default_reply_topic(request.command)
        levels = wanted.removeprefix(self._reply_root).split("/")
        if not wanted.startswith(self._reply_root) or len(levels) < 2:
            raise CommandError(
                "response_topic",
                f"{show(wanted)} is refused: replies are published only at least two levels "
                f"below {self._reply_root!r}, e.g. '{self._reply_root}<command>/reply/<client-id>'",
            )
        try:
            self._mqtt.check_topic(wanted)  # first: it bounds the work of the loop below
        except PublishError as exc:
            problem = str(exc).removeprefix(f"cannot publish to {show_topic(wanted)}: ")
            raise CommandError("response_topic", f"{show(wanted)} is refused: {problem}") from None
        for level in levels:
            try:
                check_segment(level)
            except ValueError as exc:
                raise CommandError(
                    "response_topic", f"{show(wanted)} is refused: its level {show(level)} {exc}"
                ) from None
        return wanted

    @staticmethod
    def _frame(request: Request, command: Command | None, doc: dict[str, Any]) -> dict[str, Any]:
        """Put ``ok``, ``command`` and the client's ``id`` first in the reply."""
        head: dict[str, Any] = {"ok": doc.pop("ok")}
        if request.command in COMMANDS:
            head["command"] = request.command
        if command is not None and command.id is not None:
            head["id"] = command.id
        return {**head, **doc}

    def _reply_error(self, request: Request, error: CommandError, *, qos: int) -> None:
        """Answer ``request`` with ``error`` without running it.

        To its response topic when that is allowed (an MQTT 5 client may
        listen there only), else to the default reply topic.
        """
        try:
            topic = self.reply_topic(request)
        except CommandError:
            topic = self.default_reply_topic(request.command)
        doc = self._frame(request, None, {"ok": False, "error": str(error), **error.details})
        self._publish(topic, request, doc, qos=qos)

    def _publish(self, topic: str, request: Request, doc: dict[str, Any], *, qos: int) -> None:
        """Check ``doc`` against the reply model (:meth:`_checked`), then send it."""
        self._send(topic, request, self._checked(doc), qos=qos)

    def _send(self, topic: str, request: Request, doc: dict[str, Any], *, qos: int) -> None:
        """Send a reply already checked by :meth:`_checked`."""
        try:
            self._mqtt.publish(
                topic, encode_reply(doc), qos=qos, correlation_data=request.props.correlation_data
            )
        except PublishError as exc:
            log.warning("command.reply_failed", topic=show(topic), error=str(exc))

    def _checked(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``doc`` if it fits :class:`CommandReply`, else a refusal saying the reply was lost.

        The reply models are the published contract (docs/commands.md "Reply"):
        a command that grows a field without its model must not reach
        subscribers that validate, and must be noticed here rather than there.
        """
        try:
            CommandReply.model_validate(doc)
        except ValidationError as exc:
            command = doc.get("command")
            self._invalid.note(command=str(command), error=str(exc).splitlines()[0])
            head: dict[str, Any] = {k: doc[k] for k in ("command", "id") if k in doc}
            return {
                "ok": False,
                **head,
                "error": f"{command or 'command'}: internal error: its reply did not fit the "
                "reply model (see the daemon's log, command.reply_invalid)",
            }
        return doc

    def _refused(self, request: Request, error: CommandError) -> None:
        """Log refusals once per interval, with how many there were (worker thread only)."""
        self._refusals += 1
        now = time.monotonic()
        if now - self._last_refusal_log >= _REFUSAL_LOG_EVERY_S:
            self._last_refusal_log = now
            log.info(
                "command.refused",
                command=show(request.command),
                error=str(error),
                refused_since_last_log=self._refusals,
            )
            self._refusals = 0
