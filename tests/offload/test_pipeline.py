"""A real pipeline with its offload gate, worker and client, against a real HTTPS server.

No MQTT here: the pipeline's ``emit`` records what it would publish, which
lets the test see exactly which local results were published and why.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.capture.slot import LatestSlot
from edged.catalog.catalog import load_catalog
from edged.catalog.resolve import resolve
from edged.config.settings import Settings
from edged.infer.registry import load_model
from edged.offload.budget import DailyBytes, TokenBucket
from edged.offload.client import CloudClient
from edged.offload.gate import Counters, Job, OffloadGate
from edged.offload.link import LinkMonitor
from edged.offload.protocol import DetectResponse
from edged.offload.worker import Worker
from edged.publish.payloads import new_id
from edged.runtime.video import Pipeline
from edged.tasks import VisionResult
from edged.tasks.detection import DetectionTask
from edged.types import Detection, Frame
from tests.helpers.broker import TlsMaterial
from tests.offload.conftest import TOKEN, wait_until
from tests.offload.servers import HostileServer


def best_person(result: VisionResult) -> float | None:
    scores = [d.score for d in result.items if isinstance(d, Detection) and d.label == "person"]
    return max(scores, default=None)


@pytest.fixture
def settings(
    tmp_path: Path,
    models_dir: Path,
    media_dir: Path,
    hostile: HostileServer,
    tls_material: TlsMaterial,
) -> Settings:
    return Settings(
        state_dir=tmp_path,
        models={"dir": models_dir},  # type: ignore[arg-type]
        sources=[
            {"name": "cam0", "kind": "file", "uri": str(media_dir / "person_walking_0-30s.mp4")}
        ],  # type: ignore[list-item]
        pipelines=[
            {  # type: ignore[list-item]
                "name": "door",
                "source": "cam0",
                "task": "detection",
                "model": "ssd-mobilenet-v1-coco-int8",
                "threshold": 0.5,
                "labels": ["person"],
                "publish": "nonempty",
                "track": False,
                "offload": {"enabled": True, "band": [0.35, 0.6]},
            }
        ],
        offload={"url": hostile.url, "ca_file": tls_material.ca, "probe_interval_s": 0.2},  # type: ignore[arg-type]
    )


@pytest.fixture
def task(settings: Settings) -> Iterator[DetectionTask]:
    resolved = resolve(settings.pipelines[0], settings, load_catalog())
    model = load_model(resolved.path, runtime=resolved.runtime, threads=2)
    yield DetectionTask(resolved, model)
    model.close()


def pick_frames(clip: Path, task: DetectionTask) -> dict[str, Frame]:
    """One frame of each kind, as scored by this very model: empty, uncertain-below-threshold, sure."""
    wanted: dict[str, Frame] = {}
    cap = cv2.VideoCapture(str(clip))
    index = 0
    while len(wanted) < 3:
        ok, bgr = cap.read()
        assert ok, f"the clip has no frame of every kind: {sorted(wanted)}"
        frame = Frame(
            index, time.time(), time.monotonic(), "cam0", np.ascontiguousarray(bgr[:, :, ::-1])
        )
        best = best_person(task(frame, 0.3))
        kind = (
            "empty"
            if best is None
            else "uncertain"
            if 0.35 <= best < 0.5
            else "sure"
            if best >= 0.6
            else ""
        )
        if kind and kind not in wanted:
            wanted[kind] = frame
        index += 1
    cap.release()
    return wanted


def test_uncertain_scores_below_the_threshold_are_offered_and_their_result_published(
    settings: Settings, task: DetectionTask, hostile: HostileServer, media_dir: Path
) -> None:
    """Threshold 0.5, band [0.35, 0.6): a 0.4 person is not reported locally but is offered,
    and its (empty) local result is published although ``publish = nonempty`` would skip it."""
    frames = pick_frames(media_dir / "person_walking_0-30s.mp4", task)
    off = settings.offload
    emitted: dict[int, tuple[VisionResult, str]] = {}
    verdicts: list[tuple[Job, DetectResponse]] = []

    def emit(_p: Pipeline, frame: Frame, result: VisionResult) -> str:
        emitted[frame.id] = (result, new_id())
        return emitted[frame.id][1]

    client = CloudClient(off, TOKEN)
    link = LinkMonitor(client, off)
    counters = Counters()
    daily = DailyBytes(settings.state_dir / "budget.json", off.mb_per_day)
    worker = Worker(
        off, "dev", client=client, link=link, daily=daily, counters=counters,
        publish=lambda job, answer: verdicts.append((job, answer)),
    )  # fmt: skip
    slot: LatestSlot[Frame] = LatestSlot()
    pipeline = Pipeline(settings.pipelines[0], task, slot, emit)
    pipeline.offload = OffloadGate(
        pipeline.name, labels=pipeline.settings.labels, band=pipeline.settings.offload.band,
        threshold=lambda: pipeline.threshold, enabled=lambda: pipeline.enabled, link=link, bucket=TokenBucket(60), daily=daily, counters=counters,
        enqueue=worker.put,
    )  # fmt: skip
    link.start()
    worker.start()
    pipeline.start()
    try:
        wait_until(lambda: link.current.status == "up", 5, "link up")
        for n, kind in enumerate(("empty", "sure", "uncertain"), start=1):
            slot.put(frames[kind])
            wait_until(lambda n=n: pipeline.processed >= n, 10, f"{kind} frame processed")
        wait_until(lambda: bool(verdicts), 10, "a verdict")
    finally:
        pipeline.stop()
        worker.stop()
        link.stop()

    assert counters.snapshot()["door"]["not_uncertain"] == 2
    assert counters.snapshot()["door"]["sent"] == 1
    uncertain = frames["uncertain"]
    assert set(emitted) == {frames["sure"].id, uncertain.id}  # nonempty skipped the empty frame
    local, local_id = emitted[uncertain.id]
    assert local.items == ()  # nothing at or above the threshold of 0.5…
    ((job, answer),) = verdicts
    assert job.ref == local_id == answer.ref  # …yet it went to the cloud, and is published
    assert job.threshold == 0.5
    assert hostile.count("ok", "/v1/detect") == 1
