"""Small MQTT client steps of the deploy tests: is a broker up, publish and wait for every PUBACK."""

from __future__ import annotations

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion


def accepts(port: int, host: str = "127.0.0.1") -> bool:
    """Whether an MQTT broker on ``host``:``port`` accepts a TCP connection now."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    try:
        client.connect(host, port, keepalive=5)
    except OSError:
        return False
    client.disconnect()
    return True


def publish_acknowledged(
    port: int, topic: str, payloads: list[bytes], username: str, password: str
) -> None:
    """Publish ``payloads`` with QoS 1 and return once the broker acknowledged every one."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(username, password)
    client.connect("127.0.0.1", port, keepalive=5)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for payload in payloads]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published(), f"no PUBACK for message {info.mid}"
    finally:
        client.disconnect()
        client.loop_stop()
