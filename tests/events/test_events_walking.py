"""Acceptance of event media on the walking clip: real daemon, real mosquitto, real SSD, real files.

Hand check of the clip (frames 70, 120, 230 and 280 extracted with OpenCV and
looked at): the room is empty until ~6.2 s, a woman walks in from the left
(detected from 6.2 s), stands at the table and leaves to the right by ~19.6 s;
it is empty ~19.7-22.8 s; a man walks in at ~22.9 s and stays until the end
(30 s). So two person tracks: two ``start`` and two ``end`` events.

The clip is read with ``realtime = false`` and ``fps = 10`` (its own rate): the
reader is lock-stepped with the pipeline (no frame dropped) and paced at the
clip's rate, so frame timestamps advance like the clip's own clock. All
timing below is judged from frame timestamps in the payloads, never from the
test's wall clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edged.demo.broker import LocalBroker
from edged.preprocess.jpeg import _pixels, crop_region
from edged.publish.payloads import EventResult
from tests.events.conftest import WALKING_FPS, walking_config
from tests.helpers.broker import RunningBroker, _running, matching
from tests.helpers.commands import CommandClient
from tests.helpers.daemon import Daemon, write_config
from tests.helpers.video import ffprobe

pytestmark = [pytest.mark.broker, pytest.mark.slow]

BASE = "edged/testdev"
EVENTS = f"{BASE}/door/events"
FPS = WALKING_FPS
PRE_ROLL_S = 3.0
POST_ROLL_S = 3.0  # longer than the tracker's 2 s max age: the end waits for it
MARGIN = 0.15
W, H = 768, 432


def config(tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker) -> Path:
    # Every frame's result, so that a wall-clock timestamp maps to clip time.
    cfg = walking_config(tmp_path, models_dir, media_dir, broker, publish="all")
    cfg["events"] = {
        "dir": tmp_path / "events",
        "snapshots": True,
        "clips": True,
        "pre_roll_s": PRE_ROLL_S,
        "post_roll_s": POST_ROLL_S,
        "crop_margin": MARGIN,
        "publish_snapshots": True,
    }
    cfg["commands"] = {"allow": ["ping", "event_snapshot"]}
    return write_config(tmp_path / "edged.toml", cfg)


def seconds(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def broker_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """One mosquitto for the one daemon run every test here judges."""
    yield from _running(LocalBroker(workdir=tmp_path_factory.mktemp("broker")))


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory,
    models_dir: Path,
    media_dir: Path,
    broker_module: RunningBroker,
) -> dict[str, Any]:
    """The daemon over the whole clip; every message it sent, and a fetched event snapshot."""
    tmp = tmp_path_factory.mktemp("walking-events")
    broker = broker_module
    sub = broker.subscriber(f"{BASE}/#")
    with Daemon(config(tmp, models_dir, media_dir, broker)) as daemon:
        sub.wait_for(matching(f"{BASE}/availability", b"online"), timeout=30)
        # The man is tracked to the end of the clip: his end comes when the file ends.
        for _ in range(2):
            sub.wait_for(
                lambda m: (
                    m.topic == EVENTS
                    and json.loads(m.payload)["event"] == "end"
                    and len([x for x in sub.messages(EVENTS) if b'"end"' in x.payload]) >= 2
                ),
                timeout=120,
            )
        ends = [json.loads(m.payload) for m in sub.messages(EVENTS)]
        ends = [e for e in ends if e["event"] == "end"]
        with CommandClient(broker.host, broker.port) as client:
            fetched = client.request(
                "event_snapshot", {"event_id": ends[0]["event_id"], "crop": True}
            )
            topic = f"{EVENTS}/{ends[0]['event_id']}/snapshot"
            sub.wait_for(lambda m: m.topic == topic and len(sub.messages(topic)) >= 2, timeout=10)
            refused = client.request("event_snapshot", {"event_id": "../../etc/passwd"})
        sub.wait_for(
            lambda m: (
                m.topic == f"{BASE}/stats"
                and json.loads(m.payload).get("events", {}).get("clips") == 2
            ),
            timeout=10,
        )
        rc, _ = daemon.stop()
        assert rc == 0, daemon.output
    return {"sub": sub, "fetched": fetched, "refused": refused}


def events(run: dict[str, Any]) -> list[dict[str, Any]]:
    msgs = [json.loads(m.payload) for m in run["sub"].messages(EVENTS)]
    for m in msgs:
        EventResult.model_validate(m)  # every live message honours the payload contract
    return msgs


def test_one_start_and_one_end_per_person(run: dict[str, Any]) -> None:
    """Two people walk through: exactly two events, each one start and one end, at the right
    times of the clip (woman from ~6.2 s to ~19.6 s, man from ~22.9 s to the end)."""
    msgs = events(run)
    ids = list(dict.fromkeys(m["event_id"] for m in msgs))
    assert len(ids) == 2, [(m["event"], m["event_id"], m["data"]) for m in msgs]
    clock = clip_clock(run)
    spans = []
    for eid in ids:
        phases = [m["event"] for m in msgs if m["event_id"] == eid]
        assert phases.count("start") == 1, phases
        assert phases.count("end") == 1, phases
        assert phases[0] == "start"
        assert phases[-1] == "end"
        end = next(m for m in msgs if m["event_id"] == eid and m["event"] == "end")
        assert end["label"] == "person"
        spans.append((clock(end["start"]), clock(end["end"])))
    (w0, w1), (m0, m1) = sorted(spans)
    assert 5.7 <= w0 <= 7.5, spans
    assert 18.5 <= w1 <= 20.6, spans
    assert 22.4 <= m0 <= 24.0, spans
    assert m1 >= 28.5, spans


def clip_clock(run: dict[str, Any]) -> Callable[[str], float]:
    """Maps a payload timestamp to seconds into the clip, by the nearest earlier frame's id.

    Frame timestamps are taken at delivery: a frame that waited for the
    pipeline shifts every later one, so one offset for the whole run would drift.
    """
    frames = sorted(
        (seconds(d["ts"]), d["frame"]["id"] / FPS)
        for d in (json.loads(m.payload) for m in run["sub"].messages(f"{BASE}/door/detections"))
    )

    def clock(ts: str) -> float:
        t = seconds(ts)
        wall, clip = next(((w, c) for w, c in reversed(frames) if w <= t), frames[0])
        return clip + (t - wall)

    return clock


def test_each_end_names_a_snapshot_and_crop_holding_the_box(run: dict[str, Any]) -> None:
    """Each end's snapshot is a full-frame JPEG; its crop is the best box plus the margin."""
    ends = [m for m in events(run) if m["event"] == "end"]
    snapshots: dict[str, bytes] = {}
    for m in run["sub"].messages(f"{EVENTS}/+/snapshot"):  # the first: the one sent at the end
        snapshots.setdefault(m.topic, m.payload)
    for end in ends:
        media, box = end["media"], end["box"]
        full = cv2.imread(media["snapshot"])
        assert full is not None
        assert full.shape == (H, W, 3)
        crop = cv2.imread(media["crop"])
        assert crop is not None
        region = crop_region([tuple(box)], MARGIN)
        assert region[0] <= box[0] < box[2] <= region[2]
        assert region[1] <= box[1] < box[3] <= region[3]
        x0, x1 = _pixels(region[0], region[2], W)
        y0, y1 = _pixels(region[1], region[3], H)
        assert crop.shape[:2] == (y1 - y0, x1 - x0)
        bw, bh = (box[2] - box[0]) * W, (box[3] - box[1]) * H
        assert bw <= crop.shape[1] <= bw * (1 + 2 * MARGIN) + 2
        assert bh <= crop.shape[0] <= bh * (1 + 2 * MARGIN) + 2
        assert end["top_score"] >= 0.55
        # Published once on its topic (publish_snapshots = true), the same bytes as the file.
        topic = f"{EVENTS}/{end['event_id']}/snapshot"
        assert snapshots[topic] == Path(media["snapshot"]).read_bytes()
        assert np.frombuffer(snapshots[topic][:3], np.uint8).tolist() == [0xFF, 0xD8, 0xFF]


def test_the_latest_snapshot_stays_retained_for_home_assistant(
    run: dict[str, Any], broker_module: RunningBroker
) -> None:
    """The last ended event's snapshot is retained on …/events/snapshot/latest, the one fixed
    topic a Home Assistant image entity can follow."""
    ends = sorted((m for m in events(run) if m["event"] == "end"), key=lambda m: m["seq"])
    latest = f"{EVENTS}/snapshot/latest"
    with broker_module.subscriber(latest) as late:
        got = late.wait_for(matching(latest, retain=True), timeout=5)
    assert got.payload == Path(ends[-1]["media"]["snapshot"]).read_bytes()


def test_each_end_names_a_playable_clip_with_pre_and_post_roll(run: dict[str, Any]) -> None:
    """The woman's clip lasts pre-roll + event + post-roll (ffprobe, ±0.5 s); the man's, cut
    by the end of the file, lasts what it reports, at most that."""
    ends = sorted((m for m in events(run) if m["event"] == "end"), key=lambda m: m["start"])
    woman, man = ends
    for end in ends:
        duration, codec = ffprobe(end["media"]["clip"])
        assert codec == "h264"
        assert abs(duration - end["media"]["clip_duration_s"]) <= 0.5
    expected = PRE_ROLL_S + woman["duration_s"] + POST_ROLL_S
    assert abs(ffprobe(woman["media"]["clip"])[0] - expected) <= 0.5, expected
    man_full = PRE_ROLL_S + man["duration_s"] + POST_ROLL_S
    assert PRE_ROLL_S + man["duration_s"] - 0.5 <= man["media"]["clip_duration_s"] <= man_full
    # The end waited for the post-roll: it arrived after the result of a frame taken
    # post_roll_s after the event's end (frame time).
    order = run["sub"].messages(f"{BASE}/door/+")
    at = next(
        i for i, m in enumerate(order) if m.topic == EVENTS and woman["id"] in m.payload.decode()
    )
    seen = [json.loads(m.payload) for m in order[:at] if m.topic.endswith("/detections")]
    assert max(seconds(d["ts"]) for d in seen) >= seconds(woman["end"]) + POST_ROLL_S - 0.15


def test_event_snapshot_command_publishes_the_stored_crop(run: dict[str, Any]) -> None:
    """`event_snapshot` with crop=true republishes the stored crop; a path-like id is refused."""
    fetched = run["fetched"]
    assert fetched["ok"] is True, fetched
    assert fetched["crop"] is True
    topic = fetched["topic"]
    payloads = [m.payload for m in run["sub"].messages(topic)]
    assert payloads[-1] == Path(fetched["path"]).read_bytes()
    assert fetched["path"].endswith(".crop.jpg")
    refused = run["refused"]
    assert refused["ok"] is False
    assert refused["error"].startswith("event_id:")


def test_stats_count_event_media(run: dict[str, Any]) -> None:
    """`stats` shows the store: two snapshots, two clips, the encoder, no failures."""
    stats = [json.loads(m.payload) for m in run["sub"].messages(f"{BASE}/stats")]
    last = [s for s in stats if "events" in s][-1]["events"]
    assert last["snapshots"] == 2, last
    assert last["clips"] == 2, last
    assert last["clip_encoder"] in {"opencv-h264", "ffmpeg-libx264"}
    assert last["failures"] == {}
    assert last["files"] == 6
