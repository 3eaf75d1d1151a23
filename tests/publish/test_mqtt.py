"""MqttClient against a real mosquitto: availability, auth, TLS, reconnects, PUBACKs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edged.config.settings import MqttSettings
from edged.demo.broker import LocalBroker, free_port
from edged.publish.mqtt import MqttClient
from edged.publish.payloads import Message
from tests.helpers.broker import RunningBroker, TlsMaterial, matching
from tests.publish.conftest import MakeClient, events, wait_until

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[2]
DEV = "dev1"
AVAIL = f"edged/{DEV}/availability"


def test_connects_with_password_and_publishes_online_retained(
    broker_auth: RunningBroker, make_client: MakeClient
) -> None:
    """With the right password the client connects and publishes `online`, retained, QoS 1."""
    live = broker_auth.subscriber(AVAIL)
    client = make_client(broker_auth.settings(), broker_auth.password)
    assert client.wait_connected(5)
    assert live.wait_for(matching(AVAIL, b"online")).qos == 1
    late = broker_auth.subscriber(AVAIL)
    assert late.wait_for(matching(AVAIL, retain=True)).payload == b"online"


def test_wrong_password_is_refused_logged_once_and_retried(broker_auth: RunningBroker) -> None:
    """A refused login is never reported as connected, is logged once per burst, and is retried."""
    settings = broker_auth.settings(reconnect_min_s=0.05, reconnect_max_s=0.2)
    client = MqttClient(settings, DEV, "wrong-password")
    with capture_logs() as logs:
        client.start()
        assert wait_until(lambda: len(events(logs, "mqtt.refused")) >= 3, timeout=10)
        assert not client.connected
        client.stop(timeout=1)
    refused = events(logs, "mqtt.refused")
    warnings = [e for e in refused if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["reason"] == "Not authorized"
    assert "mqtt.username" in warnings[0]["hint"]
    assert not events(logs, "mqtt.connected")
    assert "wrong-password" not in repr(logs)


def test_password_is_never_logged(broker_auth: RunningBroker) -> None:
    """No log line of a full session carries the password."""
    with capture_logs() as logs:
        client = MqttClient(broker_auth.settings(), DEV, broker_auth.password)
        client.start()
        assert client.wait_connected(5)
        client.stop()
    assert logs
    assert broker_auth.password not in repr(logs)


def test_tls_with_right_ca_connects(broker_tls: RunningBroker, make_client: MakeClient) -> None:
    """Over TLS with the issuing CA the client verifies the broker and connects."""
    client = make_client(broker_tls.settings(), broker_tls.password)
    assert client.wait_connected(5)
    broker_tls.subscriber(AVAIL).wait_for(matching(AVAIL, b"online"))


# paho 2.2 leaves the SSLSocket of a failed handshake to the garbage collector
# (its _ssl_wrap_socket does not close it); refcounting frees it at once, but
# CPython reports it as an unraisable ResourceWarning.
@pytest.mark.filterwarnings(
    r"ignore:Exception ignored in. <ssl\.SSLSocket:pytest.PytestUnraisableExceptionWarning"
)
def test_tls_with_wrong_ca_never_connects(
    broker_tls: RunningBroker, tls_material: TlsMaterial
) -> None:
    """Over TLS with an unrelated CA the certificate is rejected and the client stays down."""
    settings = broker_tls.settings(ca_file=tls_material.other_ca)
    client = MqttClient(settings, DEV, broker_tls.password)
    with capture_logs() as logs:
        client.start()
        assert not client.wait_connected(1.5)
        client.stop(timeout=1)
    failures = events(logs, "mqtt.connect_failed")
    assert failures
    assert "CERTIFICATE_VERIFY_FAILED" in failures[0]["error"]


def test_unreachable_broker_is_not_fatal_and_reconnects_later(
    tmp_path: Path, make_client: MakeClient
) -> None:
    """With no broker start() returns at once; a broker appearing later is connected by itself."""
    port = free_port()
    settings = MqttSettings(port=port, keepalive_s=5, reconnect_min_s=0.05, reconnect_max_s=0.3)
    t0 = time.monotonic()
    client = make_client(settings)
    assert time.monotonic() - t0 < 0.5
    assert not client.wait_connected(0.5)
    # QoS 1 messages published while down wait in the session.
    client.publish(f"edged/{DEV}/early", b"queued", qos=1, retain=True)
    with LocalBroker(port=port, workdir=tmp_path / "late") as late:
        assert client.wait_connected(5)
        running = RunningBroker(late)
        try:
            sub = running.subscriber("edged/#")
            sub.wait_for(matching(AVAIL, b"online"))
            sub.wait_for(matching(f"edged/{DEV}/early", b"queued"))
        finally:
            running.subscribers[0].close()


def test_reconnect_republishes_online_and_calls_hook(
    broker: RunningBroker, make_client: MakeClient
) -> None:
    """After a broker restart the client reconnects, republishes `online`, calls on_connect."""
    connects = threading.Semaphore(0)
    client = MqttClient(broker.settings(), DEV)
    client.on_connect(connects.release)
    client.start()
    try:
        assert connects.acquire(timeout=5)
        broker.broker.restart()
        assert connects.acquire(timeout=5)
        # The restarted broker has no persistence: any `online` it holds or
        # forwards now (retained or live, depending on timing) is a re-publish.
        sub = broker.subscriber(AVAIL)
        sub.wait_for(matching(AVAIL, b"online"))
        assert client.connected
    finally:
        client.stop(timeout=1)


def test_failing_hook_does_not_stop_the_client(
    broker: RunningBroker, make_client: MakeClient
) -> None:
    """An exception in an on_connect hook is logged and the session carries on."""

    def broken() -> None:
        raise RuntimeError("boom")

    client = MqttClient(broker.settings(), DEV)
    client.on_connect(broken)
    with capture_logs() as logs:
        client.start()
        assert client.wait_connected(5)
        assert wait_until(lambda: bool(events(logs, "mqtt.hook_failed")))
        sub = broker.subscriber("t")
        client.publish("t", b"still alive")
        sub.wait_for(matching("t", b"still alive"))
        client.stop(timeout=1)


def test_stop_publishes_stopped_retained_and_no_will(
    broker: RunningBroker, make_client: MakeClient
) -> None:
    """stop() leaves `stopped` as the retained availability; the Last Will is not sent."""
    client = make_client(broker.settings())
    assert client.wait_connected(5)
    sub = broker.subscriber(AVAIL)
    sub.wait_for(matching(AVAIL, b"online"))
    client.stop(timeout=2)
    sub.wait_for(matching(AVAIL, b"stopped"))
    assert not client.connected
    late = broker.subscriber(AVAIL)
    retained = late.wait_for(matching(AVAIL, retain=True))
    assert retained.payload == b"stopped"
    time.sleep(0.2)
    assert [m.payload for m in sub.messages(AVAIL)] == [b"online", b"stopped"]


def test_killed_process_leaves_offline_will(broker: RunningBroker) -> None:
    """When the process holding the session is SIGKILLed, the broker publishes `offline`."""
    script = textwrap.dedent(
        f"""
        import time
        from edged.publish.mqtt import MqttClient
        from edged.config.settings import MqttSettings
        c = MqttClient(MqttSettings(port={broker.port}, keepalive_s=5), "victim")
        c.start()
        time.sleep(60)
        """
    )
    topic = "edged/victim/availability"
    sub = broker.subscriber(topic)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        sub.wait_for(matching(topic, b"online"), timeout=10)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        msg = sub.wait_for(matching(topic, b"offline"), timeout=10)
        assert msg.qos == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    late = broker.subscriber(topic)
    assert late.wait_for(matching(topic, retain=True)).payload == b"offline"


def test_mqtt_311_is_selectable(broker_auth: RunningBroker, make_client: MakeClient) -> None:
    """protocol = '3.1.1' connects with MQTT 3.1.1 (as the broker's log confirms)."""
    client = make_client(broker_auth.settings(protocol="3.1.1"), broker_auth.password)
    assert client.wait_connected(5)
    broker_auth.subscriber(AVAIL).wait_for(matching(AVAIL, b"online"))
    # mosquitto logs "(p2, …)" for protocol level 4 = MQTT 3.1.1, "(p5, …)" for MQTT 5.
    assert wait_until(lambda: f"as edged-{DEV} (p2," in broker_auth.broker.log_tail(100))


def test_expiry_sets_message_expiry_interval(
    broker: RunningBroker, make_client: MakeClient
) -> None:
    """expiry_s is sent as the MQTT 5 Message Expiry Interval."""
    client = make_client(broker.settings())
    assert client.wait_connected(5)
    sub = broker.subscriber("r")
    client.publish("r", b"x", expiry_s=3600)
    msg = sub.wait_for(matching("r", b"x"))
    assert 3590 <= msg.props["MessageExpiryInterval"] <= 3600


def test_send_reports_every_message_once_after_puback(
    broker: RunningBroker, make_client: MakeClient
) -> None:
    """Each sent message is reported delivered exactly once, and nothing stays pending."""
    delivered: list[str] = []
    client = MqttClient(broker.settings(), DEV, max_inflight=5)
    client.on_delivered(lambda m: delivered.append(m.id or ""))
    client.start()
    try:
        assert client.wait_connected(5)
        ids = [f"id-{i}" for i in range(300)]
        for i in ids:
            client.send(Message(f"edged/{DEV}/p/detections", b"{}", id=i))
        assert wait_until(lambda: len(delivered) >= len(ids))
        assert sorted(delivered) == sorted(ids)
        assert wait_until(lambda: client.pending == 0)
    finally:
        client.stop(timeout=1)


def test_start_is_nonblocking_and_stop_is_idempotent(make_client: MakeClient) -> None:
    """stop() on a client that never connected returns quickly, twice."""
    client = make_client(MqttSettings(port=free_port(), reconnect_max_s=0.2))
    t0 = time.monotonic()
    client.stop(timeout=1)
    client.stop(timeout=1)
    assert time.monotonic() - t0 < 3


def test_qos0_publish_is_delivered_and_not_left_pending(
    broker: RunningBroker, make_client: MakeClient
) -> None:
    """A QoS 0 message (stats) reaches subscribers and leaves nothing pending."""
    client = make_client(broker.settings())
    assert client.wait_connected(5)
    sub = broker.subscriber(f"edged/{DEV}/stats", qos=0)
    client.publish(f"edged/{DEV}/stats", b'{"fps":5}', qos=0)
    assert sub.wait_for(matching(f"edged/{DEV}/stats")).qos == 0
    assert wait_until(lambda: client.pending == 0)
