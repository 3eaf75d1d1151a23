"""Outbox throughput: accept rate into SQLite and backlog drain rate to a local mosquitto.

Run ``python -m bench.outbox`` (or ``python bench/outbox.py``) from the
repository root; mosquitto must be installed. It prints one table and takes
about half a minute. Every drain row is measured from the moment the MQTT
session is up until the last row was deleted after its PUBACK (QoS 1).

- *accept*: ``Outbox.accept`` of pre-built results plus the final ``flush``;
  building the payload is the pipeline's cost and is not counted.
- *drain*: a backlog accepted while the broker was down, sent as fast as the
  outbox may (``drain_per_s=None``), with the MQTT 5 expiry property the
  outbox always sets; the same over MQTT 3.1.1 (no properties); and with the
  default rate cap, which should read close to the cap.
- *MqttClient.send alone*: the ceiling the MQTT layer sets, without the outbox.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt
import structlog

from edged.config.settings import MqttSettings
from edged.demo.broker import LocalBroker
from edged.publish.mqtt import MqttClient
from edged.publish.outbox import Outbox
from edged.publish.payloads import (
    DetectionItem,
    DetectionResult,
    FrameRef,
    Message,
    ModelRef,
    ResultEnvelope,
    Timing,
    iso_utc,
)
from edged.publish.topics import Topics

DEVICE = "bench"
TOPICS = Topics("edged", DEVICE)
MODEL = ModelRef(name="ssd-mobilenet-v1-coco-int8", sha256="0" * 64)


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    what: str
    messages: int
    seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def envelopes(n: int) -> list[ResultEnvelope]:
    """``n`` detection results (~400 bytes of JSON each) over three topics."""
    out = []
    for i in range(n):
        result = DetectionResult(
            ts=iso_utc(time.time()),
            device=DEVICE,
            pipeline=("front", "back", "yard")[i % 3],
            source="cam0",
            model=MODEL,
            frame=FrameRef(id=i, w=640, h=480),
            timing_ms=Timing(pre=1.2, infer=35.1, post=0.4),
            detections=[
                DetectionItem(label="person", class_id=0, score=0.9, box=(0.1, 0.2, 0.4, 0.9))
            ],
        )
        out.append(ResultEnvelope.of(TOPICS, result))
    return out


def bench_accept(work: Path, batch: list[ResultEnvelope]) -> Row:
    """Accept throughput; the note gives the slowest single accept() call."""
    with Outbox(work / "accept.sqlite3", max_mb=256, max_age_hours=24) as outbox:
        slowest = 0.0
        start = time.perf_counter()
        for envelope in batch:
            t = time.perf_counter()
            outbox.accept(envelope)
            slowest = max(slowest, time.perf_counter() - t)
        outbox.flush()
        took = time.perf_counter() - start
    return Row("accept (commit included)", len(batch), took, f"slowest call {slowest * 1e3:.1f} ms")


def bench_drain(
    work: Path,
    broker: LocalBroker,
    batch: list[ResultEnvelope],
    name: str,
    *,
    protocol: Literal["5", "3.1.1"] = "5",
    drain_per_s: float | None = None,
) -> Row:
    """Fill an outbox with no broker in reach, then time its drain through a live session."""
    path = work / f"{name}.sqlite3"
    outbox = Outbox(path, max_mb=256, max_age_hours=24, drain_per_s=drain_per_s)
    for envelope in batch:
        outbox.accept(envelope)
    outbox.flush()
    settings = MqttSettings(host=broker.host, port=broker.port, protocol=protocol, client_id=name)
    client = MqttClient(settings, DEVICE)
    try:
        client.start()
        if not client.wait_connected(10):
            raise SystemExit(f"no MQTT session with {broker!r}")
        start = time.perf_counter()
        outbox.start(client)
        while outbox.stats().depth:
            time.sleep(0.01)
        took = time.perf_counter() - start
        delivered = outbox.stats().delivered
    finally:
        outbox.close()
        client.stop(timeout=2)
    cap = "unlimited" if drain_per_s is None else f"cap {drain_per_s:.0f}/s"
    return Row(f"drain, MQTT {protocol}", delivered, took, cap)


def bench_send_only(broker: LocalBroker, n: int) -> Row:
    """MqttClient.send of ready messages with expiry, until every PUBACK: the MQTT ceiling."""
    client = MqttClient(MqttSettings(host=broker.host, port=broker.port, client_id="raw"), DEVICE)
    done = threading.Event()
    count = [0]

    def delivered(_: Message) -> None:
        count[0] += 1
        if count[0] == n:
            done.set()

    client.on_delivered(delivered)
    messages = [
        Message(f"edged/{DEVICE}/front/detections", bytes(400), 1, False, str(i), 3600)
        for i in range(n)
    ]
    try:
        client.start()
        client.wait_connected(10)
        start = time.perf_counter()
        for message in messages:
            client.send(message)
        done.wait(120)
        took = time.perf_counter() - start
    finally:
        client.stop(timeout=2)
    return Row("MqttClient.send alone, MQTT 5", count[0], took, "no outbox, expiry set")


def table(rows: list[Row], header: str) -> str:
    """A Markdown table of ``rows`` under ``header``."""
    cols = f"| {'measurement':<30} | {'messages':>8} | {'seconds':>7} | {'msgs/s':>7} | note"
    rule = "|" + "-" * 32 + "|" + "-" * 10 + "|" + "-" * 9 + "|" + "-" * 9 + "|-----"
    body = [
        f"| {r.what:<30} | {r.messages:>8} | {r.seconds:>7.2f} | {r.rate:>7.0f} | {r.note}"
        for r in rows
    ]
    return "\n".join([header, "", cols, rule, *body])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accept", type=int, default=50_000, help="results for the accept run")
    parser.add_argument("--drain", type=int, default=20_000, help="backlog size for the drain runs")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))

    batch = envelopes(max(args.accept, args.drain))
    runs: list[Callable[[Path, LocalBroker], Row]] = [
        lambda work, _: bench_accept(work, batch[: args.accept]),
        lambda work, b: bench_drain(work, b, batch[: args.drain], "drain5"),
        lambda work, b: bench_drain(work, b, batch[: args.drain], "drain311", protocol="3.1.1"),
        lambda work, b: bench_drain(work, b, batch[: args.drain // 2], "capped", drain_per_s=2e3),
        lambda _, b: bench_send_only(b, args.drain),
    ]
    with (
        tempfile.TemporaryDirectory(prefix="edged-bench-") as tmp,
        LocalBroker(workdir=Path(tmp) / "broker") as broker,
    ):
        rows = [run(Path(tmp), broker) for run in runs]
    header = (
        f"edged outbox benchmark: Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"paho-mqtt {paho.mqtt.__version__}, {os.cpu_count()} CPUs, local mosquitto, QoS 1, "
        "~400-byte results on 3 topics"
    )
    print(table(rows, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
