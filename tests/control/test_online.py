"""`online` means listening: a command sent the moment a client sees it is answered.

Home Assistant (and any hub) sends a queued switch change as soon as the
device's availability turns ``online``. A real ``edged run`` against a real
mosquitto: a client publishes ``set_enabled`` from inside the callback that
receives ``online``, before anything else can happen.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.control.conftest import photos_config
from tests.helpers.broker import Received, RunningBroker
from tests.helpers.commands import BASE, CommandClient
from tests.helpers.daemon import Daemon, write_config

pytestmark = pytest.mark.broker


def test_a_command_sent_on_seeing_online_is_answered(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """set_enabled published from the `online` callback gets its reply and takes effect."""
    config = write_config(
        tmp_path / "edged.toml", photos_config(tmp_path, models_dir, media_dir, broker)
    )
    sent: list[bytes] = []
    states = broker.subscriber(f"{BASE}/state")

    def disabled(msg: Received) -> bool:
        return json.loads(msg.payload)["pipelines"]["door"]["status"] == "disabled"

    online = threading.Event()
    with CommandClient(broker.host, broker.port) as commands:

        def on_message(_c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
            if msg.payload == b"online" and not sent:
                sent.append(commands.send("set_enabled", {"pipeline": "door", "enabled": False}))
                online.set()

        watcher = paho.Client(CallbackAPIVersion.VERSION2)
        watcher.on_message = on_message
        watcher.connect(broker.host, broker.port)
        watcher.subscribe(f"{BASE}/availability", qos=1)
        watcher.loop_start()
        try:
            with Daemon(config) as daemon:
                assert online.wait(30), daemon.output[-2000:]
                reply = commands.wait(sent[0], timeout=15).doc
                assert reply["ok"] is True, reply
                states.wait_for(disabled, timeout=15)
                rc, _ = daemon.stop()
                assert rc == 0
        finally:
            watcher.disconnect()
            watcher.loop_stop()
