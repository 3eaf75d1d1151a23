"""The MQTT session cannot be wedged: refused topics, unpublishable messages, duplicate client ids.

Against a real mosquitto 2.0, which drops the connection of a client that
publishes to a topic of more than 201 levels (or with a control character),
and which ends the session of a client when another one connects with the
same client id (closing the socket, no reason code).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edged.errors import PublishError
from edged.publish.payloads import Message
from tests.helpers.broker import RunningBroker, matching
from tests.helpers.daemon import Daemon, base_config, write_config
from tests.publish.conftest import MakeClient, events, wait_until

pytestmark = pytest.mark.broker

DEV = "dev1"
GOOD = f"edged/{DEV}/front/detections"
#: Within mosquitto's packet limits but over its 201-level topic limit.
DEEP = f"edged/{DEV}/" + "/".join(["x"] * 250)


def test_publish_refuses_a_topic_the_broker_would_drop_the_session_over(
    broker: RunningBroker, make_client: MakeClient
) -> None:
    """A 250-level topic is refused before paho sees it, naming the problem; the session stays."""
    client = make_client(broker.settings())
    assert client.wait_connected(5)
    with pytest.raises(PublishError, match="has 252 levels; at most 32 are allowed"):
        client.publish(DEEP, b"x", qos=1)
    with pytest.raises(PublishError, match="wildcard"):
        client.publish(f"edged/{DEV}/a/+", b"x", qos=1)
    assert wait_until(lambda: client.pending == 0)  # nothing refused was handed to paho
    sub = broker.subscriber(GOOD)
    client.publish(GOOD, b"still here", qos=1)
    sub.wait_for(matching(GOOD, b"still here"))
    assert client.disconnects == 0


def test_an_unpublishable_message_is_dropped_and_the_session_recovers(
    broker: RunningBroker, make_client: MakeClient
) -> None:
    """A message the broker drops the session over is dropped after 3 tries; the rest flows.

    Limits above the broker's (a misconfiguration) let the topic through
    edged's own check, so the broker is the one that refuses it: without the
    guard paho re-sends it after every reconnect and nothing else ever
    arrives.
    """
    client = make_client(broker.settings(max_topic_levels=1000))
    assert client.wait_connected(5)
    sub = broker.subscriber(GOOD)
    dropped: list[Message] = []
    client.on_dropped(dropped.append)
    poison = Message(DEEP, b"poison", qos=1)
    with capture_logs() as logs:
        client.send(poison)
        for i in range(5):
            client.send(Message(GOOD, f"after-{i}".encode(), qos=1))
        for i in range(5):
            sub.wait_for(matching(GOOD, f"after-{i}".encode()), timeout=15)
        assert wait_until(lambda: client.pending == 0, timeout=5)
    assert dropped == [poison]
    assert client.dropped == 1
    unpublishable = events(logs, "mqtt.unpublishable")
    assert len(unpublishable) == 1, unpublishable
    assert unpublishable[0]["log_level"] == "error"
    assert "252 characters" not in unpublishable[0]["topic"]  # shortened for the log
    assert client.stats()["dropped_unpublishable"] == 1
    assert "unpublishable" in (client.problem or "")
    assert client.state().status == "degraded"
    assert client.state().dropped == 1
    # Not a duplicate client id: the broker said why it ended each session.
    assert not events(logs, "mqtt.duplicate_client_id")
    # And the session now holds.
    before = client.disconnects
    time.sleep(1.0)
    assert client.connected
    assert client.disconnects == before


def test_duplicate_client_id_is_named_as_such(
    broker: RunningBroker, make_client: MakeClient
) -> None:
    """Two clients with one client id knock each other off: an error names the id and the fix."""
    settings = broker.settings(client_id="edged-cloned", reconnect_min_s=0.2, reconnect_max_s=0.5)
    with capture_logs() as logs:
        first = make_client(settings)
        assert first.wait_connected(5)
        second = make_client(settings, device="dev2")
        assert wait_until(lambda: first.takeovers + second.takeovers > 0, timeout=15)
    errors = events(logs, "mqtt.duplicate_client_id")
    assert errors, [e["event"] for e in logs]
    error = errors[0]
    assert error["log_level"] == "error"
    assert error["client_id"] == "edged-cloned"
    assert "device_id" in error["hint"]
    assert "mqtt.client_id" in error["hint"]
    # Once per burst, not once per takeover.
    assert len([e for e in errors if e["log_level"] == "error"]) <= 2
    flagged = [c for c in (first, second) if c.problem]
    assert flagged
    assert "duplicate client id 'edged-cloned'" in (flagged[0].problem or "")
    assert flagged[0].stats()["takeovers"] >= 1
    state = flagged[0].state()  # the ``mqtt`` section of the retained state
    assert state.status == "degraded"
    assert "edged-cloned" in (state.problem or "")


def test_two_daemons_with_one_device_id_each_log_the_duplicate(
    tmp_path: Path, models_dir: Path, broker: RunningBroker
) -> None:
    """Two `edged run` with the same device_id (cloned SD cards): both name the duplicate id."""
    daemons = []
    for name in ("a", "b"):
        home = tmp_path / name
        home.mkdir()
        cfg = base_config(home, models_dir, broker, reconnect_min_s=0.2, reconnect_max_s=30)
        daemons.append(Daemon(write_config(home / "edged.toml", cfg)).start())
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(
            "mqtt.duplicate_client_id" in d.output for d in daemons
        ):
            time.sleep(0.2)
        print(f"\nwaited {time.monotonic() - deadline + 20:.1f} s for both to name the duplicate")
        for d in daemons:
            rc, _ = d.stop()
            assert rc == 0, d.output[-2000:]
    finally:
        for d in daemons:
            d.close()
    for d in daemons:
        log = d.output
        lines = [x for x in log.splitlines() if "mqtt.duplicate_client_id" in x]
        assert lines, f"no mqtt.duplicate_client_id in:\n{log[-3000:]}"
        line = lines[0]
        assert "edged-testdev" in line, line
        assert "mqtt.client_id" in line, line
        assert "Traceback" not in log
