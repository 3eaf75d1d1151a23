"""Request/response over MQTT: response topics, correlation data, MQTT 3.1.1, errors, busy."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from edged.control.commands import Command
from edged.control.router import QUEUE_SIZE, CommandRouter
from edged.publish.mqtt import MqttClient
from edged.publish.payloads import (
    CommandRefusal,
    CommandReply,
    PingReply,
    ReloadReply,
    SetThresholdReply,
    SnapshotReply,
    ToggleReply,
)
from tests.control.conftest import RunningApp, photos_config
from tests.helpers.broker import RunningBroker
from tests.helpers.commands import BASE, CommandClient

pytestmark = pytest.mark.broker


def test_reply_goes_to_the_response_topic_with_the_correlation_data(running: RunningApp) -> None:
    """MQTT 5: the reply is published on the request's Response Topic with its Correlation Data."""
    topic = f"{BASE}/cmd/ping/reply/client-9"
    with running.client() as client:
        corr = client.send("ping", response_topic=topic, correlation=b"\x00\xffopaque")
        reply = client.wait(corr)
    assert reply.topic == topic
    assert reply.correlation == b"\x00\xffopaque"
    assert reply.doc["ok"] is True


def test_without_response_topic_the_reply_goes_to_the_default_topic(running: RunningApp) -> None:
    """MQTT 5 without a Response Topic: reply on …/cmd/<command>/reply, correlation kept."""
    with running.client() as client:
        corr = client.send("ping", response_topic=None)
        reply = client.wait(corr)
    assert reply.topic == f"{BASE}/cmd/ping/reply"


def test_mqtt311_client_gets_its_reply_on_the_default_topic(running: RunningApp) -> None:
    """An MQTT 3.1.1 client (no properties) reads …/cmd/ping/reply and matches it by `id`."""
    with running.client(v5=False) as client:
        client.send("ping", {"id": "r-311"})
        (reply,) = client.wait_topic(f"{BASE}/cmd/ping/reply")
    assert reply.doc["ok"] is True
    assert reply.doc["id"] == "r-311"
    assert reply.correlation is None


@pytest.mark.parametrize(
    "response_topic",
    [
        "home/front-door/lock/set",  # somebody else's device
        f"{BASE}/state",  # the device's own retained state
        f"{BASE}/door/detections",  # forged results
        f"{BASE}/cmd/enable",  # a command: a reply loop
        "edged/otherdev/cmd/ping/reply",  # another device
        f"{BASE}/cmd//reply",  # an empty level
    ],
)
def test_response_topics_outside_the_reply_space_are_refused(
    running: RunningApp, response_topic: str
) -> None:
    """A response topic not two levels below …/cmd/: nothing runs, nothing goes there, the
    error reply goes to the default topic."""
    spy = running.broker.subscriber("#")
    with running.client() as client:
        corr = client.send(
            "disable", {"pipeline": "door"}, response_topic=response_topic, correlation=b"c1"
        )
        reply = client.wait(corr)
    assert reply.topic == f"{BASE}/cmd/disable/reply"
    assert reply.doc["ok"] is False
    assert reply.doc["error"].startswith("response_topic: ")
    assert running.app.graph.pipelines["door"].enabled
    time.sleep(0.2)
    # (state and detections do arrive there, from the daemon itself; a reply has "ok")
    assert not any(m.topic == response_topic and b'"ok"' in m.payload for m in spy.messages())


@pytest.mark.parametrize(
    ("command", "payload", "error"),
    [
        ("reboot", b"{}", "command: unknown command 'reboot'"),
        ("ping", b"not json", "payload: not valid JSON"),
        ("ping", b"\xc3\x28", "payload: not UTF-8 text"),
        ("ping", b"{" + b" " * 70_000 + b"}", "payload: 70002 bytes is more than the limit"),
        ("set_threshold", b'{"pipeline":"door","threshold":"high"}', "threshold: "),
        (
            "enable",
            b'{"pipeline":"garage"}',
            "pipeline: no pipeline named 'garage' (pipelines: door)",
        ),
        ("snapshot", b'{"source":"mic9"}', "source: no video source named 'mic9' (video: cam0)"),
        ("commänd", b"{}", "command: unknown command 'commänd'"),
    ],
)
def test_bad_requests_get_an_error_naming_the_field(
    running: RunningApp, command: str, payload: bytes, error: str
) -> None:
    """Unknown command, bad JSON, non-UTF-8, oversize, wrong type, unknown names: ok=false +
    an error that starts with the field."""
    with running.client() as client:
        reply = client.wait(client.send(command, payload))
    assert reply.doc["ok"] is False
    assert reply.doc["error"].startswith(error), reply.doc["error"]


def test_every_live_reply_fits_the_reply_model(
    running: RunningApp, tmp_path: Path, models_dir: Path, media_dir: Path
) -> None:
    """ping, a refused response topic, invalid JSON, an unknown command, a failing command,
    commands that change things, a reload, then a command the reloaded allow-list refuses:
    every reply validates as the CommandReply variant of its kind, key for key."""
    cfg = photos_config(tmp_path, models_dir, media_dir, running.broker)
    with running.client() as client:
        sent = {
            "ping": client.send("ping", {"id": "p1"}),
            "refused topic": client.send(
                "disable", {"pipeline": "door"}, response_topic="home/lock/set"
            ),
            "invalid": client.send("ping", b"not json"),
            "unknown": client.send("reboot", b"{}"),
            "failing": client.send("enable", {"pipeline": "garage"}),
            "threshold": client.send("set_threshold", {"pipeline": "door", "threshold": 0.6}),
            "disable": client.send("disable", {"pipeline": "door", "reason": "test"}),
            "enable": client.send("enable", {"pipeline": "door"}),
            "snapshot": client.send("snapshot", {"source": "cam0", "max_side": 64}),
        }
        replies = {name: client.wait(corr) for name, corr in sent.items()}
        running.rewrite({**cfg, "commands": {"allow": ["ping"]}})
        replies["reload"] = client.wait(client.send("reload"), timeout=60)
        replies["not allowed"] = client.wait(
            client.send("disable", {"pipeline": "door", "id": "n"})
        )
    models = {name: CommandReply.model_validate_json(r.payload).root for name, r in replies.items()}
    want = {
        "ping": PingReply,
        "refused topic": CommandRefusal,
        "invalid": CommandRefusal,
        "unknown": CommandRefusal,
        "failing": CommandRefusal,
        "threshold": SetThresholdReply,
        "disable": ToggleReply,
        "enable": ToggleReply,
        "snapshot": SnapshotReply,
        "reload": ReloadReply,
        "not allowed": CommandRefusal,
    }
    assert {n: type(m) for n, m in models.items()} == want, {n: r.doc for n, r in replies.items()}
    for name, model in models.items():  # nothing published that the model does not hold
        dumped = model.model_dump_json(by_alias=True, exclude_unset=True)
        assert json.loads(dumped) == replies[name].doc, name
    assert models["unknown"].command is None
    not_allowed = models["not allowed"]
    assert isinstance(not_allowed, CommandRefusal)
    assert not_allowed.id == "n"
    assert not_allowed.error.startswith("command: 'disable' is not allowed")


# -- the bounded queue -------------------------------------------------------------------


@contextmanager
def serving(
    broker: RunningBroker, execute: Callable[[Command], dict[str, Any]]
) -> Iterator[CommandRouter]:
    """A router running ``execute`` for every command, on a real MQTT session."""
    mqtt = MqttClient(broker.settings(), "testdev")
    router = CommandRouter(mqtt, execute)
    mqtt.start()
    router.start()
    assert mqtt.wait_connected(5)
    try:
        yield router
    finally:
        router.stop()
        mqtt.stop(timeout=1)


@pytest.fixture
def gated_router(broker: RunningBroker) -> Iterator[tuple[CommandRouter, threading.Event]]:
    """A router on a real MQTT session whose commands wait for an event before they finish."""
    release = threading.Event()

    def execute(command: Command) -> dict[str, Any]:
        release.wait(10)
        return {"device": "testdev", "version": "0", "uptime_s": 0.0}  # what ping replies

    with serving(broker, execute) as router:
        try:
            yield router, release
        finally:
            release.set()  # before the router stops: its worker may be waiting


def test_commands_beyond_the_queue_get_busy_and_every_request_one_reply(
    broker: RunningBroker, gated_router: tuple[CommandRouter, threading.Event]
) -> None:
    """With the worker stuck, at most QUEUE_SIZE (+1 running) wait; the rest are answered busy."""
    router, release = gated_router
    sent = QUEUE_SIZE + 30
    with CommandClient(broker.host, broker.port) as client:
        time.sleep(0.3)  # the router's SUBSCRIBE is through
        corrs = [client.send("ping") for _ in range(sent)]
        busy = [client.wait(c) for c in corrs[QUEUE_SIZE + 1 :]]
        assert all(r.doc["error"].startswith("command: busy") for r in busy)
        assert all(r.topic == f"{BASE}/cmd/ping/reply/test" for r in busy)  # its response topic
        release.set()
        replies = [client.wait(c) for c in corrs]
        time.sleep(0.2)
        assert len(client.received()) == sent  # exactly one reply each
    ok = [r for r in replies if r.doc["ok"]]
    assert QUEUE_SIZE <= len(ok) <= QUEUE_SIZE + 1
    assert router.counters.busy == sent - len(ok)
    assert all(json.loads(r.payload)["ok"] in (True, False) for r in replies)


def test_a_reply_that_does_not_fit_its_model_is_replaced_by_a_refusal(
    broker: RunningBroker,
) -> None:
    """A command whose reply grew a field without its model answers a refusal, logged once."""

    def execute(command: Command) -> dict[str, Any]:
        return {"device": "testdev", "version": "0", "uptime_s": 0.0, "surprise": 1}

    with (
        serving(broker, execute) as router,
        capture_logs() as logs,
        CommandClient(broker.host, broker.port) as client,
    ):
        time.sleep(0.3)  # the router's SUBSCRIBE is through
        replies = [client.wait(client.send("ping", {"id": f"r{i}"})) for i in range(3)]
    for i, reply in enumerate(replies):
        assert reply.doc["ok"] is False
        assert reply.doc["command"] == "ping"
        assert reply.doc["id"] == f"r{i}"
        assert "internal error" in reply.doc["error"]
        assert "surprise" not in reply.payload.decode()
    assert router.counters.error == 3
    assert router.counters.ok == 0
    assert [e["event"] for e in logs if e["event"] == "command.reply_invalid"] == [
        "command.reply_invalid"
    ]
