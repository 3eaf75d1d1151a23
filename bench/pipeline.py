"""End-to-end pipeline vs a bare loop, on the same model and threads, in one process.

Run ``python -m bench.pipeline`` from the repository root (mosquitto must be
installed; models come from ``EDGED_MODEL_MIRROR`` or ``../shared/models``,
the clip from ``EDGED_MEDIA_DIR`` or ``../shared/media``). Prints one table.

- *bare loop*: ``cv2.VideoCapture.read`` → BGR→RGB → edged's preprocess →
  ``model.run``, one frame after the other: the least a program can do to run
  this model on this clip.
- *edged pipeline*: the real daemon (``App``) on the same clip read as fast as
  possible: file source → latest-frame slot → preprocess → infer → decode →
  payload → durable outbox → MQTT QoS 1 to a local mosquitto. Timed from
  start until the last result's PUBACK, so publishing is inside the figure.
- *capture → PUBACK*: per result, from the frame's capture to the broker's
  acknowledgement, measured by a subscriber-side clock on the same host.

Target (issue 2): pipeline fps / bare fps >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edged.app import App
from edged.broker import LocalBroker
from edged.catalog.catalog import load_catalog
from edged.catalog.fetch import pull
from edged.check import preflight
from edged.infer.registry import load_model
from edged.log import configure_logging
from edged.preprocess.image import preprocess
from edged.settings import load_settings
from edged.tasks.detection import image_spec

REPO = Path(__file__).resolve().parents[1]


def shared(var: str, sub: str) -> Path:
    return Path(os.environ.get(var, REPO.parent / "shared" / sub))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def bare_loop(
    model_path: Path, clip: Path, threads: int, passes: int
) -> tuple[int, float, list[float]]:
    """Frames, seconds and per-frame inference ms of the minimal loop."""
    catalog = load_catalog()
    model = load_model(model_path, threads=threads)
    entry = catalog.get("ssd-mobilenet-v1-coco-int8")
    from edged.catalog.resolve import ResolvedModel  # noqa: PLC0415

    resolved = ResolvedModel(
        entry.name,
        entry.task,
        model_path,
        entry.file.sha256,
        entry.decoder,
        entry.runtime,
        (),
        entry.input,
        entry,
    )
    spec = image_spec(resolved, model)
    frames, infer_ms = 0, []
    t0 = time.perf_counter()
    for _ in range(passes):
        cap = cv2.VideoCapture(str(clip))
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            tensor, _ = preprocess(rgb, spec)
            t = time.perf_counter()
            model.run([tensor])
            infer_ms.append((time.perf_counter() - t) * 1e3)
            frames += 1
        cap.release()
    return frames, time.perf_counter() - t0, infer_ms


class Acks:
    """Subscriber that records when each result arrived and its frame's capture time."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        time.sleep(0.3)

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.arrivals.append((time.time(), json.loads(msg.payload)))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def edged_pipeline(
    models_dir: Path, clip: Path, threads: int, passes: int, broker: LocalBroker, work: Path
) -> tuple[int, float, list[float], list[float]]:
    """Frames, seconds, capture→arrival ms and inference ms of the real daemon."""
    settings = load_settings(
        None,
        {
            "device_id": "bench",
            "state_dir": str(work / "state"),
            "stats_interval_s": 60,
            "mqtt": {"host": broker.host, "port": broker.port, "homeassistant": False},
            "outbox": {"path": str(work / "state" / "outbox.sqlite3")},
            "models": {"dir": str(models_dir)},
            "sources": [
                {
                    "name": "clip",
                    "kind": "file",
                    "uri": str(clip),
                    "realtime": False,
                    "fps": 240,
                    "loop": passes > 1,
                }
            ],
            "pipelines": [
                {
                    "name": "bench",
                    "source": "clip",
                    "task": "detection",
                    "model": "ssd-mobilenet-v1-coco-int8",
                    "publish": "all",
                    "max_fps": 240,
                    "threads": threads,
                    "track": False,
                }
            ],
        },
    )
    checked = preflight(settings, load_catalog(), connect_broker=True)
    assert not checked.problems, checked.problems
    acks = Acks(broker.host, broker.port, "edged/bench/bench/detections")
    app = App(settings, checked)
    want = 301 * passes
    t0 = time.perf_counter()
    app.start()
    pipeline = app.graph.pipelines["bench"]
    while pipeline.processed < want and time.perf_counter() - t0 < 300:
        time.sleep(0.005)
    for source in app.graph.video.values():
        source.stop()
    done = pipeline.processed
    while app.outbox.stats().delivered < done and time.perf_counter() - t0 < 300:
        time.sleep(0.002)
    elapsed = time.perf_counter() - t0
    infer = list(pipeline._infer_ms)
    app.stop()
    time.sleep(0.2)
    acks.close()
    # A result's ts is the wall clock at capture; arrival is the subscriber's
    # wall clock on the same host. Duplicates (same id) count once.
    with acks.lock:
        latency = {
            doc["id"]: (
                arrived - datetime.fromisoformat(doc["ts"].replace("Z", "+00:00")).timestamp()
            )
            * 1e3
            for arrived, doc in acks.arrivals
        }
    return done, elapsed, list(latency.values()), infer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--passes", type=int, default=2, help="times through the 301-frame clip")
    args = parser.parse_args()
    configure_logging("error")
    mirror = shared("EDGED_MODEL_MIRROR", "models")
    clip = shared("EDGED_MEDIA_DIR", "media") / "person_walking_0-30s.mp4"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        catalog = load_catalog()
        pull(catalog.get("ssd-mobilenet-v1-coco-int8"), work / "models", mirror=mirror)
        model_path = work / "models" / catalog.get("ssd-mobilenet-v1-coco-int8").file.name
        bare_loop(model_path, clip, args.threads, 1)  # warm the page cache and CPU clocks
        b_frames, b_s, b_inf = bare_loop(model_path, clip, args.threads, args.passes)
        with LocalBroker() as broker:
            e_frames, e_s, lat, e_inf = edged_pipeline(
                work / "models", clip, args.threads, args.passes, broker, work
            )
    bare_fps, edged_fps = b_frames / b_s, e_frames / e_s
    rows = [
        (
            "bare loop (read+resize+invoke)",
            b_frames,
            b_s,
            bare_fps,
            pct(b_inf, 0.5),
            pct(b_inf, 0.99),
            "",
            "",
        ),
        (
            "edged pipeline (…→ MQTT PUBACK)",
            e_frames,
            e_s,
            edged_fps,
            pct(e_inf, 0.5),
            pct(e_inf, 0.99),
            f"{pct(lat, 0.5):.1f}",
            f"{pct(lat, 0.99):.1f}",
        ),
    ]
    print(
        f"model ssd-mobilenet-v1-coco-int8, threads={args.threads}, clip 768x432 x {args.passes} passes, "
        f"numpy {np.__version__}, cpus {os.cpu_count()}"
    )
    print(
        f"{'run':34} {'frames':>6} {'s':>7} {'fps':>7} {'inf p50':>8} {'inf p99':>8} {'e2e p50':>8} {'e2e p99':>8}"
    )
    for name, n, s, fps, p50, p99, l50, l99 in rows:
        print(f"{name:34} {n:6d} {s:7.2f} {fps:7.1f} {p50:8.1f} {p99:8.1f} {l50:>8} {l99:>8}")
    print(f"ratio pipeline/bare: {edged_fps / bare_fps:.3f} (target >= 0.95)")
    print(
        f"results delivered: {len(lat)}/{e_frames}; median inference "
        f"{statistics.median(e_inf):.1f} ms in pipeline vs {statistics.median(b_inf):.1f} ms bare"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
