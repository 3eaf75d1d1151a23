"""The real daemon (``edged run``) on the walking video, against a real mosquitto."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from edged.demo.broker import LocalBroker, free_port
from edged.publish.payloads import Availability
from tests.helpers.broker import RunningBroker, matching
from tests.helpers.daemon import Daemon, base_config, ssd_pipeline, walking_source, write_config

pytestmark = pytest.mark.broker

AVAIL = "edged/testdev/availability"
AVAILABILITY: TypeAdapter[Availability] = TypeAdapter(Availability)


def availability(sub: Any) -> list[str]:
    """Every ``availability`` payload received, each checked against the published type."""
    return [AVAILABILITY.validate_python(m.payload.decode()) for m in sub.messages(AVAIL)]


FPS = 10.0  # the walking clip's frame rate: frame id / FPS = seconds into the clip


def walking_config(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker | None, **mqtt: Any
) -> Path:
    cfg = base_config(tmp_path, models_dir, broker, **mqtt)
    # realtime=false reads the 30 s clip as fast as the decoder allows (capped
    # at 60 fps), so the test sees the whole timeline in a few seconds while the
    # pipeline still works on a latest-frame slot exactly as in production.
    cfg["sources"] = [walking_source(media_dir, realtime=False, fps=60)]
    cfg["pipelines"] = [ssd_pipeline(threshold=0.5, publish="all", max_fps=60, threads=2)]
    return write_config(tmp_path / "edged.toml", cfg)


def detections(sub: Any) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in sub.messages("edged/testdev/door/detections")]


def assert_person_timeline(results: list[dict[str, Any]]) -> None:
    """No person in the empty room (first 5 s), a person after people enter (8-18 s)."""
    early = [r for r in results if r["frame"]["id"] / FPS < 5.0]
    later = [r for r in results if 8.0 <= r["frame"]["id"] / FPS <= 18.0]
    assert early, "no results from the first 5 s of the clip"
    assert later, "no results from 8-18 s of the clip"
    assert not any(d["label"] == "person" for r in early for d in r["detections"])
    with_person = [r for r in later if any(d["label"] == "person" for d in r["detections"])]
    assert len(with_person) >= len(later) // 2, (
        f"person in only {len(with_person)}/{len(later)} frames"
    )


def run_walking(cfg: Path, broker: RunningBroker) -> list[dict[str, Any]]:
    sub = broker.subscriber("edged/testdev/#")
    with Daemon(cfg) as daemon:
        sub.wait_for(matching(AVAIL, b"online"), timeout=20)
        sub.wait_for(
            lambda m: (
                m.topic.endswith("/detections") and json.loads(m.payload)["frame"]["id"] > 200
            ),
            timeout=60,
        )
        rc, _ = daemon.stop()
        assert rc == 0, daemon.output
    return detections(sub)


def test_walking_video_with_password(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker_auth: RunningBroker
) -> None:
    """With a password file: no person in the empty room, a person after people enter."""
    results = run_walking(walking_config(tmp_path, models_dir, media_dir, broker_auth), broker_auth)
    assert_person_timeline(results)
    first = results[0]
    assert first["v"] == 1
    assert first["device"] == "testdev"
    assert first["source"] == "cam0"
    assert first["model"]["name"] == "ssd-mobilenet-v1-coco-int8"
    assert [r["seq"] for r in results] == sorted(r["seq"] for r in results)


def test_walking_video_over_tls(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker_tls: RunningBroker
) -> None:
    """Over TLS with a self-signed CA (verified) and a password, the same timeline arrives."""
    assert_person_timeline(
        run_walking(walking_config(tmp_path, models_dir, media_dir, broker_tls), broker_tls)
    )


def test_sigterm_publishes_stopped_and_exits_fast(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """SIGTERM: retained 'stopped', exit code 0, within 10 s."""
    cfg = walking_config(tmp_path, models_dir, media_dir, broker)
    sub = broker.subscriber(AVAIL)
    with Daemon(cfg) as daemon:
        sub.wait_for(matching(AVAIL, b"online"), timeout=20)
        rc, took = daemon.stop()
    assert rc == 0
    assert took < 10.0
    sub.wait_for(matching(AVAIL, b"stopped"), timeout=2)
    assert availability(sub) == ["online", "stopped"]
    with broker.subscriber(AVAIL) as late:  # retained for newcomers
        assert late.wait_for(matching(AVAIL, retain=True), timeout=3).payload == b"stopped"


def test_sigkill_leaves_offline_last_will(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """A killed daemon is reported 'offline' by the broker's Last Will."""
    cfg = walking_config(tmp_path, models_dir, media_dir, broker)
    sub = broker.subscriber(AVAIL)
    with Daemon(cfg) as daemon:
        sub.wait_for(matching(AVAIL, b"online"), timeout=20)
        daemon.signal(signal.SIGKILL)
        daemon.wait(5)
    sub.wait_for(matching(AVAIL, b"offline"), timeout=15)
    assert availability(sub) == ["online", "offline"]


def test_broker_down_at_start_is_not_fatal(
    tmp_path: Path, models_dir: Path, media_dir: Path
) -> None:
    """With no broker the daemon keeps running and connects once one appears on its port."""
    port = free_port()
    cfg = base_config(tmp_path, models_dir, None, port=port)
    cfg["sources"] = [walking_source(media_dir, loop=True)]
    cfg["pipelines"] = [ssd_pipeline()]
    with Daemon(write_config(tmp_path / "edged.toml", cfg)) as daemon:
        time.sleep(3)
        assert daemon.proc is not None
        assert daemon.proc.poll() is None, daemon.output
        with LocalBroker(port=port) as late:
            running = RunningBroker(late)
            sub = running.subscriber(AVAIL)
            sub.wait_for(matching(AVAIL, b"online"), timeout=10)
            rc, _ = daemon.stop()
            running.close()
        assert rc == 0
