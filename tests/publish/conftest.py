"""What the publish tests share: outboxes and MQTT clients closed at teardown, a roomy broker.

Also ``wait_until`` (polling) and ``events`` (log events by name), imported by the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest

from edged.config.settings import MqttSettings
from edged.publish.mqtt import MqttClient
from edged.publish.outbox import Outbox
from tests.helpers.broker import RunningBroker
from tests.helpers.outbox_child import DEVICE, RoomyBroker, wait_until

__all__ = ["MakeClient", "MakeOutbox", "events", "wait_until"]

MakeOutbox = Callable[..., Outbox]
MakeClient = Callable[..., MqttClient]


@pytest.fixture
def make_outbox(tmp_path: Path) -> Iterator[MakeOutbox]:
    """Build outboxes (default file in tmp_path); every one is closed at teardown."""
    made: list[Outbox] = []

    def make(path: Path | None = None, **kw: Any) -> Outbox:
        kw.setdefault("max_mb", 64)
        kw.setdefault("max_age_hours", 24)
        outbox = Outbox(path or tmp_path / "outbox.sqlite3", **kw)
        made.append(outbox)
        return outbox

    yield make
    for outbox in made:
        outbox.close()


@pytest.fixture
def make_client() -> Iterator[MakeClient]:
    """Build and start MqttClients; every one is stopped at teardown."""
    made: list[MqttClient] = []

    def make(
        settings: MqttSettings, password: str | None = None, *, device: str = DEVICE, **kw: Any
    ) -> MqttClient:
        client = MqttClient(settings, device, password, **kw)
        made.append(client)
        client.start()
        return client

    yield make
    for client in made:
        client.stop(timeout=1.0)


@pytest.fixture
def roomy(tmp_path: Path) -> Iterator[RunningBroker]:
    """A mosquitto that never drops queued messages for a slow subscriber."""
    running = RunningBroker(RoomyBroker(workdir=tmp_path / "broker"))
    try:
        running.broker.start()
        yield running
    finally:
        running.close()


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    """The captured log events called ``name``."""
    return [e for e in logs if e["event"] == name]
