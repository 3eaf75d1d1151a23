"""A daemon stand-in for the SIGKILL test, plus what the outbox tests share.

Run as ``python -m tests.helpers.outbox_child OUTBOX N PORT``: it opens the
outbox file OUTBOX, forwards through an MQTT client pointed at PORT (where no
broker listens: the broker is "down"), accepts N results on three topics,
flushes, writes their ids to ``OUTBOX.ids``, prints ``accepted N`` and then
keeps accepting more results without flushing until it is SIGKILLed, so that
the kill lands in the middle of batched writes.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

from edged.config.settings import MqttSettings
from edged.demo.broker import LocalBroker
from edged.log import configure_logging
from edged.publish.mqtt import MqttClient
from edged.publish.outbox import Outbox
from edged.publish.payloads import (
    DetectionItem,
    DetectionResult,
    FrameRef,
    ModelRef,
    ResultEnvelope,
    Timing,
    iso_utc,
)
from edged.publish.topics import Topics
from tests.helpers.ports import PortHold

DEVICE = "dev1"
TOPICS = Topics("edged", DEVICE)
PIPELINES = ("front", "back", "yard")
MODEL = ModelRef(name="ssd-mobilenet-v1-coco-int8", sha256="0" * 64)


def stored(path: Path) -> list[tuple[int, int | None, str | None, str]]:
    """(pos, seq, id, topic) of every stored row, in send order, read as a separate client."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT pos, seq, id, topic FROM outbox ORDER BY pos").fetchall()
    finally:
        db.close()


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``cond`` until it holds or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def result(i: int, pipeline: str = PIPELINES[0]) -> ResultEnvelope:
    """Result number ``i`` of ``pipeline``: a real detection payload, ~400 bytes of JSON."""
    r = DetectionResult(
        ts=iso_utc(time.time()),
        device=DEVICE,
        pipeline=pipeline,
        source="cam0",
        model=MODEL,
        frame=FrameRef(id=i, w=640, h=480),
        timing_ms=Timing(pre=1.2, infer=35.1, post=0.4),
        detections=[
            DetectionItem(label="person", class_id=0, score=0.91, box=(0.1, 0.2, 0.4, 0.9))
        ],
    )
    return ResultEnvelope.of(TOPICS, r)


def results(n: int, start: int = 0) -> Iterator[ResultEnvelope]:
    """``n`` results spread round-robin over the three pipelines' topics."""
    for i in range(start, start + n):
        yield result(i, PIPELINES[i % len(PIPELINES)])


class RoomyBroker(LocalBroker):
    """A LocalBroker that queues without limit for offline or slow subscribers.

    mosquitto drops QoS 1 messages beyond ``max_queued_messages`` (default
    1,000) for a subscriber that is offline or behind. The test subscriber
    reconnects a second after a broker restart while the outbox drains
    thousands of messages a second, so the default would lose messages in the
    *broker*, which is not what these tests measure.

    While stopped it keeps its port (:class:`~tests.helpers.ports.PortHold`):
    a restart after a long outage (5 min in tests/publish/test_reconnect.py)
    then cannot find it handed out by ``free_port()`` to a test running
    meanwhile.
    """

    _hold: PortHold | None = None

    def _config(self) -> str:
        return super()._config() + "max_queued_messages 0\n"

    def start(self) -> Self:
        self._release_port()
        return super().start()

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        self._hold_port()

    def kill(self) -> None:
        super().kill()
        self._hold_port()

    def close(self) -> None:
        super().close()
        self._release_port()

    def _hold_port(self) -> None:
        if self._hold is None or self._hold.port != self.port:  # a new port after "in use"
            self._release_port()
            self._hold = PortHold(self.host, self.port)
        self._hold.hold()

    def _release_port(self) -> None:
        if self._hold is not None:
            self._hold.release()


def mqtt_settings(port: int, **overrides: Any) -> MqttSettings:
    """Client settings for a local broker on ``port`` with fast reconnects."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "keepalive_s": 5,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
    }
    values.update(overrides)
    return MqttSettings(**values)


def main(argv: list[str]) -> int:
    path, n, port = Path(argv[0]), int(argv[1]), int(argv[2])
    configure_logging("warning")  # logs to stderr, as the daemon does: stdout is the report
    outbox = Outbox(path, max_mb=64, max_age_hours=24)
    mqtt = MqttClient(mqtt_settings(port), DEVICE)
    outbox.start(mqtt)
    mqtt.start()
    envelopes = list(results(n))
    for envelope in envelopes:
        outbox.accept(envelope)
    outbox.flush()
    path.with_suffix(".ids").write_text("\n".join(e.id for e in envelopes) + "\n")
    print(f"accepted {n}", flush=True)
    i = n
    while True:  # until SIGKILL: keep the writer busy
        for envelope in results(50, i):
            outbox.accept(envelope)
        i += 50
        time.sleep(0.005)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
