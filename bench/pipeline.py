"""End-to-end pipeline vs a bare loop, on the same model and threads, in one process.

Run ``python -m bench.pipeline`` from the repository root (mosquitto must be
installed; models come from ``EDGED_MODEL_MIRROR`` or ``../shared/models``,
the clip from ``EDGED_MEDIA_DIR`` or ``../shared/media``). Prints one table;
``python -m bench`` reports the same figures in its summary.

- *bare loop*: ``cv2.VideoCapture.read`` → BGR→RGB → edged's preprocess →
  ``model.run``, one frame after the other: the least a program can do to run
  this model on this clip.
- *edged pipeline*: the real daemon (``App``) on the same clip read as fast as
  possible: file source → latest-frame slot → preprocess → infer → decode →
  payload → durable outbox → MQTT QoS 1 to a local mosquitto. Timed from
  start until the last result's PUBACK, so publishing is inside the figure.
- *edged pipeline, real time*: the same daemon with the clip played at its own
  frame rate (``realtime = true``), as a camera delivers frames. This is the
  run the capture → PUBACK latency is judged on: read as fast as possible,
  each frame waits in the latest-frame slot for the previous inference by
  design, which is throughput, not latency.
- *capture → PUBACK*: per result, from the frame's capture (the result's
  ``ts``, wall clock) to its arrival at a subscriber on the same host (wall
  clock), which follows the broker's PUBACK to edged by well under a
  millisecond on loopback.

Targets: pipeline fps / bare fps >= 0.95; in real time, capture → PUBACK p99
<= the pipeline's own inference p99 + 5 ms.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import numpy.typing as npt
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import (
    CLIP,
    CLIP_FRAMES,
    DETECTOR,
    Context,
    Row,
    daemon_config,
    in_process,
    pct,
    pull_models,
    shared,
)
from edged.catalog.catalog import load_catalog
from edged.catalog.resolve import resolve_entry
from edged.demo.broker import LocalBroker
from edged.infer.registry import load_model
from edged.log import configure_logging
from edged.preprocess.image import preprocess
from edged.runtime.video import Pipeline
from edged.tasks.detection import image_spec

#: Latency target: capture → PUBACK p99 at most this much above inference p99, ms.
LATENCY_SLACK_MS = 5.0
#: Throughput target: pipeline fps / bare-loop fps.
RATIO_TARGET = 0.95


def bare_loop(
    model_path: Path, clip: Path, threads: int, passes: int
) -> tuple[int, float, list[float]]:
    """Frames, seconds and per-frame inference ms of the minimal loop."""
    catalog = load_catalog()
    model = load_model(model_path, threads=threads)
    resolved = resolve_entry(catalog, catalog.get(DETECTOR), model_path.parent)
    spec = image_spec(resolved, model)
    frames, infer_ms = 0, []
    t0 = time.perf_counter()
    for _ in range(passes):
        cap = cv2.VideoCapture(str(clip))
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = cast("npt.NDArray[np.uint8]", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            tensor, _ = preprocess(rgb, spec)
            t = time.perf_counter()
            model.run([tensor])
            infer_ms.append((time.perf_counter() - t) * 1e3)
            frames += 1
        cap.release()
    took = time.perf_counter() - t0
    model.close()
    return frames, took, infer_ms


@functools.cache
def warm_up(model_path: Path, clip: Path) -> None:
    """One unmeasured bare pass per process: warms the page cache and the CPU clocks."""
    bare_loop(model_path, clip, 2, 1)


class Acks:
    """Subscriber that records when each result arrived and its frame's capture time."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.arrivals: list[tuple[float, bytes]] = []
        self.last_perf = 0.0  # perf_counter() of the latest arrival
        self.lock = threading.Lock()
        # MQTT 3.1.1 and no parsing in the callback: this subscriber shares the
        # process (and the GIL) with the daemon it measures, so it does as
        # little as it can per message; payloads are parsed after the run.
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        time.sleep(0.3)

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.arrivals.append((time.time(), bytes(msg.payload)))
            self.last_perf = time.perf_counter()

    def latency_ms(self) -> list[float]:
        """Arrival wall clock minus the result's ``ts`` (capture wall clock); a duplicate counts once."""
        with self.lock:
            arrivals = [(arrived, json.loads(payload)) for arrived, payload in self.arrivals]
        by_id = {
            doc["id"]: arrived
            - datetime.fromisoformat(doc["ts"].replace("Z", "+00:00")).timestamp()
            for arrived, doc in arrivals
        }
        return [s * 1e3 for s in by_id.values()]

    def count(self) -> int:
        """Messages received so far (a re-sent duplicate counts twice)."""
        with self.lock:
            return len(self.arrivals)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass(frozen=True, slots=True)
class PipelineRun:
    """What one run of the daemon over the clip measured."""

    frames: int  # results the pipeline produced
    seconds: float  # start until the last result's PUBACK
    latency_ms: list[float]  # capture → arrival at the subscriber, per delivered result
    infer_ms: list[float]  # the pipeline's own inference timings (its last 512)
    dropped: int  # frames replaced in the latest-frame slot before the pipeline took them

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


def edged_pipeline(
    models_dir: Path,
    clip: Path,
    threads: int,
    passes: int,
    broker: LocalBroker,
    work: Path,
    *,
    realtime: bool = False,
    seconds: float | None = None,
) -> PipelineRun:
    """The real daemon in this process over ``passes`` of the clip, every result to ``broker``.

    ``realtime=False`` reads the file as fast as the pipeline takes frames
    (throughput); ``realtime=True`` plays it at its own frame rate, as a
    camera would (latency). ``seconds`` ends the run early.
    """
    config = daemon_config(
        work,
        models_dir,
        sources=[
            {
                "name": "clip",
                "kind": "file",
                "uri": str(clip),
                "realtime": realtime,
                "fps": 240,  # a cap only: real time plays the file at its own rate
                "loop": passes > 1,
            }
        ],
        pipelines=[
            {
                "name": "bench",
                "source": "clip",
                "task": "detection",
                "model": DETECTOR,
                "publish": "all",
                "max_fps": 240,
                "threads": threads,
                "track": False,
            }
        ],
        broker=(broker.host, broker.port),
    )
    acks = Acks(broker.host, broker.port, "edged/bench/bench/detections")
    app = in_process(config, connect_broker=True)
    pipeline = app.graph.pipelines["bench"]
    assert isinstance(pipeline, Pipeline)
    want = CLIP_FRAMES * passes
    t0 = time.perf_counter()
    limit = t0 + (seconds if seconds is not None else 300.0)
    app.start()
    while (
        pipeline.processed < want and not pipeline.finished.is_set() and time.perf_counter() < limit
    ):
        time.sleep(0.02)  # coarse: this loop shares the GIL with what it measures
    for source in app.graph.video.values():
        source.stop()
    done = pipeline.processed
    # Until the last result reached the subscriber (right after its PUBACK on
    # loopback); the outbox's own counters commit PUBACKs in batches.
    while acks.count() < done and time.perf_counter() - t0 < 300:
        time.sleep(0.01)
    elapsed = acks.last_perf - t0
    infer = list(pipeline._infer_ms)
    dropped = pipeline.stats().dropped
    app.stop()
    time.sleep(0.2)
    acks.close()
    return PipelineRun(done, elapsed, acks.latency_ms(), infer, dropped)


# -- rows of ``python -m bench`` ------------------------------------------------------------


def ratio(ctx: Context, threads: int) -> Row:
    """Pipeline fps / bare-loop fps at ``threads`` inference threads (throughput runs).

    Shared virtual machines run at a speed that drifts over seconds, so one
    bare run followed by one pipeline run compares two different machines.
    Instead the two alternate, one pass each, for several rounds; the figure
    is the median of the per-round ratios, with their range beside it.
    """
    rounds = 1 if ctx.quick else 3
    model_path = ctx.models / load_catalog().get(DETECTOR).file.name
    if not ctx.quick:
        warm_up(model_path, ctx.clip)
    ratios, bare, piped, b_inf, p_inf = [], [], [], list[float](), list[float]()
    for i in range(rounds):
        b_frames, b_s, b_ms = bare_loop(model_path, ctx.clip, threads, 1)
        work = ctx.scratch(f"pipeline-t{threads}-{i}")
        with LocalBroker(workdir=work / "broker") as broker:
            run = edged_pipeline(ctx.models, ctx.clip, threads, 1, broker, work)
        bare.append(b_frames / b_s)
        piped.append(run.fps)
        ratios.append(run.fps / bare[-1])
        b_inf += b_ms
        p_inf += run.infer_ms
    value = statistics.median(ratios)
    plural = "thread" if threads == 1 else "threads"
    spread = f" (rounds {min(ratios):.2f}-{max(ratios):.2f})" if rounds > 1 else ""
    return Row(
        key=f"pipeline_ratio_t{threads}",
        measurement=f"pipeline / bare loop fps, {threads} {plural}, median of {rounds}",
        figure=(
            f"{statistics.median(piped):.1f} / {statistics.median(bare):.1f} fps = "
            f"{value:.3f}{spread}"
        ),
        target=f"≥ {RATIO_TARGET}",
        ok=value >= RATIO_TARGET,
        values={
            "threads": threads,
            "rounds": rounds,
            "pipeline_fps": [round(f, 2) for f in piped],
            "bare_fps": [round(f, 2) for f in bare],
            "ratios": [round(r, 4) for r in ratios],
            "ratio": round(value, 4),
            "pipeline_infer_p50_ms": round(pct(p_inf, 0.5), 2),
            "bare_infer_p50_ms": round(pct(b_inf, 0.5), 2),
        },
    )


def latency(ctx: Context) -> Row:
    """Capture → PUBACK p99 against inference p99, with the clip played in real time."""
    threads = max(ctx.threads)
    seconds = 10.0 if ctx.quick else None
    work = ctx.scratch("latency")
    with LocalBroker(workdir=work / "broker") as broker:
        run = edged_pipeline(
            ctx.models, ctx.clip, threads, 1, broker, work, realtime=True, seconds=seconds
        )
    lat99, inf99 = pct(run.latency_ms, 0.99), pct(run.infer_ms, 0.99)
    return Row(
        key="latency",
        measurement=f"capture → PUBACK p99 vs inference p99, real time, {threads} threads",
        figure=f"{lat99:.1f} vs {inf99:.1f} ms (+{lat99 - inf99:.1f}); p50 {pct(run.latency_ms, 0.5):.1f} ms",
        target=f"≤ inference p99 + {LATENCY_SLACK_MS:g} ms",
        ok=bool(run.latency_ms) and lat99 <= inf99 + LATENCY_SLACK_MS,
        values={
            "threads": threads,
            "results": len(run.latency_ms),
            "frames": run.frames,
            "dropped": run.dropped,
            "latency_p50_ms": round(pct(run.latency_ms, 0.5), 2),
            "latency_p99_ms": round(lat99, 2),
            "infer_p50_ms": round(pct(run.infer_ms, 0.5), 2),
            "infer_p99_ms": round(inf99, 2),
        },
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--passes", type=int, default=2, help="times through the 301-frame clip")
    args = parser.parse_args()
    configure_logging("error")
    clip = shared("EDGED_MEDIA_DIR", "media") / CLIP
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = pull_models(work / "models", (DETECTOR,))
        model_path = models / load_catalog().get(DETECTOR).file.name
        warm_up(model_path, clip)
        b_frames, b_s, b_inf = bare_loop(model_path, clip, args.threads, args.passes)
        with LocalBroker(workdir=work / "broker") as broker:
            fast = edged_pipeline(models, clip, args.threads, args.passes, broker, work / "fast")
            live = edged_pipeline(
                models, clip, args.threads, 1, broker, work / "live", realtime=True
            )
    bare_fps = b_frames / b_s
    print(
        f"model {DETECTOR}, threads={args.threads}, clip 768x432 x {args.passes} passes "
        f"(real time: 1 pass at 10 fps), numpy {np.__version__}"
    )
    print(
        f"{'run':34} {'frames':>6} {'s':>7} {'fps':>7} {'inf p50':>8} {'inf p99':>8} {'e2e p50':>8} {'e2e p99':>8}"
    )
    print(
        f"{'bare loop (read+resize+invoke)':34} {b_frames:6d} {b_s:7.2f} {bare_fps:7.1f} "
        f"{pct(b_inf, 0.5):8.1f} {pct(b_inf, 0.99):8.1f} {'':>8} {'':>8}"
    )
    for name, r in (("edged pipeline (…→ MQTT PUBACK)", fast), ("edged pipeline, real time", live)):
        print(
            f"{name:34} {r.frames:6d} {r.seconds:7.2f} {r.fps:7.1f} {pct(r.infer_ms, 0.5):8.1f} "
            f"{pct(r.infer_ms, 0.99):8.1f} {pct(r.latency_ms, 0.5):8.1f} {pct(r.latency_ms, 0.99):8.1f}"
        )
    print(f"ratio pipeline/bare: {fast.fps / bare_fps:.3f} (target >= {RATIO_TARGET})")
    slack = pct(live.latency_ms, 0.99) - pct(live.infer_ms, 0.99)
    print(
        f"real time: capture → PUBACK p99 is inference p99 + {slack:.1f} ms "
        f"(target <= +{LATENCY_SLACK_MS:g}); {live.dropped} frames dropped in the slot"
    )
    print(
        f"results delivered: {len(fast.latency_ms)}/{fast.frames}; median inference "
        f"{statistics.median(fast.infer_ms):.1f} ms in pipeline vs {statistics.median(b_inf):.1f} ms bare"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
