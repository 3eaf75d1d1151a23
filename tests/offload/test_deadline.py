"""Issue 17.4: one absolute deadline per request and per probe, against servers that trickle.

A server sending its status line and headers a byte at a time never lets one
read time out. The probe and the worker must still give up at their
deadline, the link must say so, and the log must say it once per burst.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from edged.config.settings import OffloadSettings
from edged.offload.client import CloudClient
from edged.offload.link import LinkMonitor
from tests.helpers.broker import RunningBroker, TlsMaterial, matching
from tests.helpers.daemon import Daemon
from tests.offload.conftest import TOKEN, decisions, offload_config, wait_stats, wait_until
from tests.offload.servers import TrickleServer


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


@pytest.mark.slow  # fault injection: CI runs it; the fast lane leaves it out
def test_a_trickled_health_probe_marks_the_link_down_at_its_deadline_logged_once(
    tls_material: TlsMaterial,
) -> None:
    """Probe deadline 1 s: the link goes from up to down within it, one log line for the burst."""
    server = TrickleServer(tls_material, slow_path="/nothing", interval_s=0.2).start()
    settings = OffloadSettings(
        url=server.url,
        ca_file=tls_material.ca,
        probe_interval_s=0.5,
        connect_timeout_s=0.5,
        read_timeout_s=0.5,  # > 0.2 s between bytes: no single read ever times out
        max_rtt_ms=5000,
    )
    client = CloudClient(settings, TOKEN)
    link = LinkMonitor(client, settings)
    try:
        with capture_logs() as logs:
            link.start()
            wait_until(lambda: link.current.status == "up", 10, "link up")
            server.slow_path = "/health"
            switched = time.monotonic()
            wait_until(lambda: link.current.status == "down", 5, "link down")
            # At most one probe interval, then the probe's 1 s deadline, then slack.
            assert time.monotonic() - switched <= 0.5 + 1.0 + 1.0
            assert "timeout" in (link.current.reason or "")
            probes = link.probes
            wait_until(lambda: link.probes >= probes + 3, 10, "three more failed probes")
            assert link.current.status == "down"
            assert all(held <= 1.0 + 1.0 for held in server.held_s), server.held_s
            server.slow_path = "/nothing"
            wait_until(lambda: link.current.status == "up", 5, "link up again")
    finally:
        link.stop(timeout=3)
        client.close()
        server.close()
    down = events(logs, "offload.link_down")
    assert len(down) == 1, down  # one burst of ≥ 4 failed probes: one line
    assert "deadline" in down[0]["reason"]
    assert [e["status"] for e in events(logs, "offload.link_status")] == ["up", "up"]


@pytest.mark.slow
@pytest.mark.broker
def test_trickled_headers_are_abandoned_at_the_frame_deadline_and_take_the_link_down(
    tmp_path: Path,
    models_dir: Path,
    media_dir: Path,
    broker: RunningBroker,
    tls_material: TlsMaterial,
    token_file: Path,
    walking_frames: Path,
) -> None:
    """The daemon against a trickling /v1/detect: held max_age_s (± 1 s), link down, logged once."""
    server = TrickleServer(tls_material, slow_path="/v1/detect", interval_s=0.2).start()
    cfg = offload_config(
        tmp_path,
        models_dir,
        media_dir,
        broker,
        url=server.url,
        ca=tls_material.ca,
        token_file=token_file,
        band=(0.3, 1.0),
        source={"kind": "images", "uri": walking_frames, "loop": True, "fps": 10},
        pipeline={"max_fps": 5},
        max_rtt_ms=5000,
        probe_interval_s=0.5,
        connect_timeout_s=1.5,
        read_timeout_s=1.5,  # far above the 0.2 s between bytes
        max_age_s=4,
    )
    sub = broker.subscriber("edged/#")
    try:
        with Daemon(cfg) as daemon:
            sub.wait_for(matching("edged/testdev/availability", b"online"), timeout=30)
            doc = wait_stats(sub, lambda d: decisions(d).get("failed", 0) >= 2, 60)
            state = json.loads(sub.messages("edged/testdev/state")[-1].payload)
            wait_until(lambda: server.hung_up >= 1, 5, "the server sees the client hang up")
            rc, _ = daemon.stop()
            assert rc == 0, daemon.output
            output = daemon.output
    finally:
        server.close()
    lines = [json.loads(x) for x in output.splitlines() if x.startswith("{")]
    failed = [x for x in lines if x["event"] == "offload.failed"]
    print("held", [round(h, 1) for h in server.held_s], "decisions", decisions(doc))
    # The first request was sent as its frame was queued: held for max_age_s, ± 1 s.
    assert abs(server.held_s[0] - 4.0) <= 1.0, server.held_s
    assert all(h <= 4.0 + 1.0 for h in server.held_s), server.held_s
    # The failed frame took the link down, and state says why.
    assert doc["offload"]["link"] == "down"
    assert state["link"]["status"] == "down"
    assert "timeout" in state["link"]["reason"]
    # One burst of failures: one line from the worker.
    assert len(failed) == 1, failed
    assert failed[0]["kind"] == "timeout"
    assert TOKEN not in output
