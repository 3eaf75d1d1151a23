"""Zones, masks and a line on the walking clip: the real daemon, model and mosquitto.

The ground truth below was made by hand, by looking at the clip's frames
with the zone drawn on them (not from any model output). The clip is 10 fps,
301 frames; frame id / 10 = seconds into the clip. The zone is the floor
around the table; a person is in it when their feet are inside:

* 0-6 s: the room is empty.
* A woman walks in from the bottom left; her feet come into view at the
  bottom edge at ~7.0 s, the front foot crosses the zone's lower edge
  (y = 0.97) at frame 71 and both feet are inside from frame 72-73 (7.2 s).
  She stands at the table, feet at ~(0.57, 0.87).
* She turns and walks out to the right: her feet straddle the zone's right
  edge (x = 0.75) at frame 189 and are past it at frame 190 (19.0 s).
* 19.5-23 s: nobody's feet are in the zone (a man comes into view at the
  bottom at ~22.8 s, feet below the frame).
* The man's feet reach the lower edge at frames 236-239 and are inside from
  frame 239-240 (23.9 s); he stays
  at the table to the end of the clip (30.0 s), when the source ends and
  every track with it.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from edged.demo.broker import LocalBroker
from edged.geometry import anchor_point, contains
from edged.publish.payloads import EventResult, ZoneCount, ZoneOccupancy, ZoneState
from tests.helpers.broker import RunningBroker, _running, matching
from tests.helpers.daemon import Daemon, base_config, write_config

pytestmark = [pytest.mark.broker, pytest.mark.slow]

FPS = 10.0
LAST_FRAME = 300
# The lower edge stays clear of the bottom of the frame: the box of a person
# cut off by the frame's edge reaches it, whatever their feet do.
ZONE = [(0.35, 0.55), (0.75, 0.55), (0.75, 0.97), (0.35, 0.97)]
#: Per second of the clip (at s + 0.5): are a person's feet inside ZONE? (by hand, see above)
FEET_IN_ZONE = "0000000" + "1" * 12 + "00000" + "1" * 6
#: The same, as the moments the zone's occupancy changes (seconds, occupied after).
TRUTH = [(7.2, True), (19.0, False), (23.9, True), (30.0, False)]
#: The woman's feet cross the vertical line x = 0.75 to the right at 19.0 s (frames 189-190).
LINE_CROSSING_S = 19.0
TOLERANCE_S = 1.0


def zones_config(tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker) -> Path:
    cfg = base_config(tmp_path, models_dir, broker)
    cfg["sources"] = [
        {
            "name": "cam0",
            "kind": "file",
            "uri": media_dir / "person_walking_0-30s.mp4",
            # Every frame, in lock-step with both pipelines: times come from frame ids.
            "realtime": False,
            "fps": 240,
        }
    ]
    common = {
        "source": "cam0",
        "task": "detection",
        "model": "ssd-mobilenet-v1-coco-int8",
        "threshold": 0.5,
        "labels": ["person"],
        "publish": "all",
        "max_fps": 240,
        "threads": 1,
    }
    # min_frames = 3: the detector loses the woman for two frames as she
    # steps in (7.4-7.5 s), and her box bottom jumps by a few percent.
    zone = {
        "name": "table",
        "polygon": [list(p) for p in ZONE],
        "labels": ["person"],
        "min_frames": 3,
    }
    cfg["pipelines"] = [
        {
            **common,
            "name": "zoned",
            "zones": [zone],
            "lines": [
                {"name": "exit", "a": [0.75, 1.0], "b": [0.75, 0.4], "direction": "left_to_right"}
            ],
        },
        {**common, "name": "masked", "zones": [zone], "masks": [{"polygon": zone["polygon"]}]},
    ]
    return write_config(tmp_path / "edged.toml", cfg)


def payloads(sub: Any, topic: str) -> list[bytes]:
    return [m.payload for m in sub.messages(topic)]


def flips(states: list[ZoneState]) -> list[tuple[float, bool]]:
    """(seconds into the clip, occupied) at each change of occupancy."""
    out: list[tuple[float, bool]] = []
    for s in states:
        if not out or out[-1][1] != s.occupied:
            out.append((s.frame / FPS, s.occupied))
    return out


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, media_dir: Path
) -> dict[str, list[bytes]]:
    """One daemon run over the whole clip; every message on the device's topics, by topic."""
    tmp = tmp_path_factory.mktemp("zones")
    # One broker for the module's single run (the ``broker`` fixture is per test).
    with contextlib.contextmanager(_running)(LocalBroker(workdir=tmp / "broker")) as broker:
        cfg = zones_config(tmp, models_dir, media_dir, broker)
        sub = broker.subscriber("edged/testdev/#")
        base = "edged/testdev"
        with Daemon(cfg) as daemon:
            sub.wait_for(matching(f"{base}/availability", b"online"), timeout=30)
            # The source ended and the pipeline emptied its zone: the last state.
            # (The masked zone never changes after its first state.)
            sub.wait_for(
                lambda m: (
                    m.topic == f"{base}/zoned/zones/table"
                    and json.loads(m.payload)["frame"] >= LAST_FRAME - 5
                    and not json.loads(m.payload)["occupied"]
                ),
                timeout=240,
            )
            sub.wait_for(
                lambda m: (
                    m.topic == f"{base}/masked/detections"
                    and json.loads(m.payload)["frame"]["id"] >= LAST_FRAME - 5
                ),
                timeout=30,
            )
            rc, _ = daemon.stop()
            assert rc == 0, daemon.output
        topics = {m.topic for m in sub.messages()}
        return {t: payloads(sub, t) for t in topics}


def test_zone_occupancy_follows_the_hand_made_ground_truth(run: dict[str, list[bytes]]) -> None:
    """The zone goes ON when each person's feet enter it and OFF when they leave, within 1 s."""
    states = [ZoneState.model_validate_json(p) for p in run["edged/testdev/zoned/zones/table"]]
    got = flips(states)
    print(f"zone flips (s, occupied): {got}; truth: {TRUTH}")
    assert got[0][1] is False  # the first state (first frame) resets the retained one
    assert [o for _, o in got[1:]] == [o for _, o in TRUTH], got
    for (t, _), (want, _) in zip(got[1:], TRUTH, strict=True):
        assert abs(t - want) <= TOLERANCE_S, (got, TRUTH)
    # The per-second table agrees with the flips (a check on the hand-made truth itself).
    for second, inside in enumerate(FEET_IN_ZONE):
        at = second + 0.5
        on = [o for t, o in TRUTH if t <= at]
        assert (on[-1] if on else False) == (inside == "1")


def test_plain_occupancy_and_count_topics_match_the_zone_state(
    run: dict[str, list[bytes]],
) -> None:
    """Every live occupancy/count message validates against its payload model and agrees."""
    base = "edged/testdev/zoned/zones/table"
    states = [ZoneState.model_validate_json(p) for p in run[base]]
    occupancy = TypeAdapter(ZoneOccupancy)
    count = TypeAdapter(ZoneCount)
    plain = [occupancy.validate_python(p.decode()) for p in run[f"{base}/occupancy"]]
    assert plain == ["ON" if s.occupied else "OFF" for s in states]
    totals = [count.validate_json(p) for p in run[f"{base}/count"]]
    assert totals == [s.count for s in states]
    people = [count.validate_json(p) for p in run[f"{base}/count/person"]]
    assert people == [s.counts["person"] for s in states]
    assert max(people) == 1  # one person at a time on this clip


def test_detections_and_events_carry_their_zones(run: dict[str, list[bytes]]) -> None:
    """Detections at the table name the zone; object events name it while the person is in it."""
    results = [json.loads(p) for p in run["edged/testdev/zoned/detections"]]
    assert all("zones" in d for r in results for d in r["detections"])
    standing = [r for r in results if 10.0 <= r["frame"]["id"] / FPS <= 17.0]
    in_zone = [r for r in standing if any(d["zones"] == ["table"] for d in r["detections"])]
    assert len(in_zone) >= len(standing) * 0.8, (len(in_zone), len(standing))
    empty = [r for r in results if r["frame"]["id"] / FPS < 6.0]
    assert empty
    assert not any(d["zones"] for r in empty for d in r["detections"])
    events = [EventResult.model_validate_json(p) for p in run["edged/testdev/zoned/events"]]
    objects = [e for e in events if e.type == "object"]
    assert any(e.zones == ["table"] for e in objects)


def test_line_crossing_is_one_event_at_the_exit(run: dict[str, list[bytes]]) -> None:
    """The woman walking out to the right crosses the exit line once, left to right, at ~19 s."""
    events = [EventResult.model_validate_json(p) for p in run["edged/testdev/zoned/events"]]
    lines = [e for e in events if e.type == "line"]
    assert len(lines) == 1, [(e.data, e.ts) for e in lines]
    (line,) = lines
    assert line.event == "start"
    assert line.end == line.start == line.ts
    assert line.data["line"] == "exit"
    assert line.data["direction"] == "left_to_right"
    frame = line.data["frame"]
    assert isinstance(frame, int)
    print(f"line crossing at {frame / FPS:.1f} s; truth: {LINE_CROSSING_S} s")
    assert abs(frame / FPS - LINE_CROSSING_S) <= TOLERANCE_S


def test_mask_over_the_zone_suppresses_everyone_in_it(run: dict[str, list[bytes]]) -> None:
    """With a mask over the zone no detection is inside it and the zone never turns ON."""
    base = "edged/testdev/masked"
    states = [ZoneState.model_validate_json(p) for p in run[f"{base}/zones/table"]]
    assert states
    assert not any(s.occupied for s in states)
    assert set(run[f"{base}/zones/table/occupancy"]) == {b"OFF"}
    results = [json.loads(p) for p in run[f"{base}/detections"]]
    assert results[-1]["frame"]["id"] >= LAST_FRAME - 5
    inside = [
        (r["frame"]["id"], d["box"])
        for r in results
        for d in r["detections"]
        if contains(ZONE, anchor_point(tuple(d["box"]), "bottom_center"))
    ]
    assert inside == []
    # The unmasked pipeline on the same frames did see people in the area.
    assert any(
        d["zones"]
        for p in run["edged/testdev/zoned/detections"]
        for d in json.loads(p)["detections"]
    )
