"""Each command end to end: a real App on photos with the SSD model, a real mosquitto."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edged import __version__
from tests.control.conftest import RunningApp, photos_config
from tests.helpers.broker import Received, Subscriber, matching

pytestmark = pytest.mark.broker

BASE = "edged/testdev"
DETECTIONS = f"{BASE}/door/detections"
STATE = f"{BASE}/state"
SNAPSHOT = f"{BASE}/cam0/snapshot"


def frame_ts(result: dict[str, Any]) -> float:
    """Capture time of the frame a result was computed on, epoch seconds."""
    return datetime.fromisoformat(result["ts"]).timestamp()


def results(
    sub: Subscriber, topic: str = DETECTIONS, *, after: float = 0.0
) -> list[dict[str, Any]]:
    """Results on ``topic`` whose frame was captured after ``after`` (epoch seconds)."""
    docs = [json.loads(m.payload) for m in sub.messages(topic)]
    return [d for d in docs if frame_ts(d) > after]


def wait_results(
    sub: Subscriber, *, after: float, count: int = 1, topic: str = DETECTIONS, timeout: float = 15
) -> list[dict[str, Any]]:
    """Wait until ``count`` results on ``topic`` from frames captured after ``after`` arrived."""
    deadline = time.monotonic() + timeout
    while len(got := results(sub, topic, after=after)) < count:
        assert time.monotonic() < deadline, f"{len(got)}/{count} results after {after}"
        time.sleep(0.05)
    return got


def state_where(sub: Subscriber, check: Any, timeout: float = 5.0) -> dict[str, Any]:
    """The first ``state`` document for which ``check(doc)`` is true."""

    def predicate(m: Received) -> bool:
        return m.topic == STATE and bool(check(json.loads(m.payload)))

    doc: dict[str, Any] = json.loads(sub.wait_for(predicate, timeout).payload)
    return doc


def test_disable_shows_disabled_in_state_and_stops_results(running: RunningApp) -> None:
    """disable: state shows the pipeline disabled with the reason; no frame after it is published."""
    sub = running.broker.subscriber(f"{BASE}/#")
    wait_results(sub, after=0.0)
    with running.client() as client:
        reply = client.request("disable", {"pipeline": "door", "reason": "window cleaning"})
    replied = time.time()
    assert reply == {
        "ok": True,
        "command": "disable",
        "pipeline": "door",
        "enabled": False,
        "changed": True,
    }
    state = state_where(sub, lambda d: d["pipelines"]["door"]["status"] == "disabled")
    assert state["pipelines"]["door"]["reason"] == "window cleaning"
    time.sleep(1.5)  # 15 frames at 10 fps
    assert results(sub, after=replied) == []


def test_enable_resumes_results(running: RunningApp) -> None:
    """enable after disable: state shows it running again and new frames are published."""
    sub = running.broker.subscriber(f"{BASE}/#")
    with running.client() as client:
        assert client.request("disable", {"pipeline": "door"})["ok"]
        reply = client.request("enable", {"pipeline": "door"})
    enabled = time.time()
    assert reply["ok"] is True
    assert reply["changed"] is True
    state_where(sub, lambda d: d["pipelines"]["door"]["status"] == "running")
    assert wait_results(sub, after=enabled, count=3)


def test_set_threshold_changes_what_is_published(running: RunningApp) -> None:
    """set_threshold 0.7: frames taken afterwards report only detections scoring >= 0.7."""
    sub = running.broker.subscriber(f"{BASE}/#")
    # At 0.5 the people in people_group.jpg score 0.52-0.67.
    deadline = time.monotonic() + 15
    while not any(d["score"] < 0.7 for r in results(sub) for d in r["detections"]):
        assert time.monotonic() < deadline, "no detection below 0.7 at threshold 0.5"
        time.sleep(0.05)
    with running.client() as client:
        reply = client.request("set_threshold", {"pipeline": "door", "threshold": 0.7})
    changed = time.time()
    assert reply == {
        "ok": True,
        "command": "set_threshold",
        "pipeline": "door",
        "threshold": 0.7,
        "previous": 0.5,
    }
    after = wait_results(sub, after=changed, count=12)  # three rounds of the four photos
    scores = [d["score"] for r in after for d in r["detections"]]
    assert scores, "the two dogs (0.75, 0.81) should still be reported"
    assert min(scores) >= 0.7


def test_snapshot_publishes_jpeg_scaled_to_max_side(running: RunningApp) -> None:
    """snapshot with max_side: a JPEG (QoS 1, not retained) that cv2 decodes at the scaled size."""
    sub = running.broker.subscriber(SNAPSHOT)
    with running.client() as client:
        reply = client.request("snapshot", {"source": "cam0", "max_side": 320, "quality": 70})
    assert reply["ok"] is True, reply
    message = sub.wait_for(matching(SNAPSHOT))
    assert (message.qos, message.retain) == (1, False)
    image = cv2.imdecode(np.frombuffer(message.payload, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable JPEG"
    assert message.payload[:2] == b"\xff\xd8"
    height, width = image.shape[:2]
    assert (width, height) == (reply["width"], reply["height"])
    assert max(width, height) == 320
    frame = reply["frame"]
    assert abs(width / height - frame["w"] / frame["h"]) < 0.01
    assert reply["bytes"] == len(message.payload)
    assert reply["topic"] == SNAPSHOT


def test_snapshot_without_max_side_keeps_the_frame_size(running: RunningApp) -> None:
    """snapshot without max_side: the JPEG has the frame's own size."""
    sub = running.broker.subscriber(SNAPSHOT)
    with running.client() as client:
        reply = client.request("snapshot", {"source": "cam0"})
    want = (reply["frame"]["w"], reply["frame"]["h"])
    assert (reply["width"], reply["height"]) == want

    def full_size(m: Received) -> bool:
        # A snapshot another test requested may still be in flight: look for ours.
        image = cv2.imdecode(np.frombuffer(m.payload, np.uint8), cv2.IMREAD_COLOR)
        return m.topic == SNAPSHOT and image is not None and image.shape[1::-1] == want

    sub.wait_for(full_size)


def test_reload_applies_a_changed_config(
    running: RunningApp, tmp_path: Path, models_dir: Path, media_dir: Path
) -> None:
    """reload after adding a pipeline to the file: applied, in state, and it publishes."""
    cfg = photos_config(tmp_path, models_dir, media_dir, running.broker)
    cfg["pipelines"].append({**cfg["pipelines"][0], "name": "yard", "threshold": 0.6})
    running.rewrite(cfg)
    sub = running.broker.subscriber(f"{BASE}/#")
    with running.client() as client:
        reply = client.request("reload", timeout=30)
    reloaded = time.time()
    assert reply == {
        "ok": True,
        "command": "reload",
        "applied": True,
        "pipelines": ["door", "yard"],
        "restart_needed": [],
    }
    state_where(sub, lambda d: set(d["pipelines"]) == {"door", "yard"})
    assert wait_results(sub, after=reloaded, topic=f"{BASE}/yard/detections")


def test_reload_with_a_broken_config_keeps_the_old_one(
    running: RunningApp, tmp_path: Path, models_dir: Path, media_dir: Path
) -> None:
    """reload of an invalid file: not applied, the error names the key, results keep coming."""
    running.rewrite(photos_config(tmp_path, models_dir, media_dir, running.broker, threshold=7))
    sub = running.broker.subscriber(f"{BASE}/#")
    with running.client() as client:
        reply = client.request("reload", timeout=30)
    replied = time.time()
    assert reply["ok"] is False
    assert reply["applied"] is False
    assert reply["error"].startswith(f"config: {running.config}: pipelines[0].threshold: ")
    assert reply["problems"] == [reply["error"].removeprefix("config: ").rsplit(" (", 1)[0]]
    assert wait_results(sub, after=replied, count=3)
    assert running.app.graph.pipelines["door"].threshold == 0.5


def test_ping_replies_with_version_and_uptime(running: RunningApp) -> None:
    """ping: ok, the package version, the device id and a plausible uptime."""
    with running.client() as client:
        reply = client.request("ping")
    assert reply["ok"] is True
    assert reply["version"] == __version__
    assert reply["device"] == "testdev"
    assert 0 < reply["uptime_s"] < 120
