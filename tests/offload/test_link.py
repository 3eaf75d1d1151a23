"""Acceptance 2 of issue 5: with the link down nothing but probes goes out, at no local cost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edged.publish.payloads import OffloadResult
from tests.helpers.broker import RunningBroker, TlsMaterial, matching
from tests.helpers.daemon import Daemon
from tests.offload.conftest import decisions, offload_config, rate, stats, wait_stats
from tests.offload.servers import CloudServer

pytestmark = pytest.mark.broker


@pytest.mark.slow  # fault injection: CI runs it; the fast lane leaves it out
def test_link_down_sends_nothing_costs_nothing_and_recovers_by_itself(
    tmp_path: Path,
    models_dir: Path,
    media_dir: Path,
    broker: RunningBroker,
    tls_material: TlsMaterial,
    token_file: Path,
    walking_frames: Path,
) -> None:
    """Server stopped: refusals counted, no request, local rate as without offload; then it resumes."""
    server = CloudServer(models_dir, tls_material, token_file, tmp_path)  # not started yet
    common = {
        "ca": tls_material.ca,
        "token_file": token_file,
        "band": (0.3, 1.0),
        "source": {"kind": "images", "uri": walking_frames, "loop": True, "fps": 10},
        "pipeline": {"max_fps": 5},
        "max_rtt_ms": 5000,
    }
    # The offload-disabled run, at the same time on the same machine: same noise.
    base_cfg = offload_config(
        tmp_path, models_dir, media_dir, broker, url="", enabled=False, device="basedev", **common
    )
    cfg = offload_config(tmp_path, models_dir, media_dir, broker, url=server.url, **common)
    sub = broker.subscriber("edged/#")
    try:
        with Daemon(base_cfg) as base, Daemon(cfg) as daemon:
            for dev in ("basedev", "testdev"):
                sub.wait_for(matching(f"edged/{dev}/availability", b"online"), timeout=30)
            # Measure over 10 s, past start-up, while the link is down.
            start = wait_stats(sub, lambda d: d["pipelines"]["door"]["processed"] > 0, 30)
            marks = (len(stats(sub, "basedev")), stats(sub).index(start) + 1)
            down = wait_stats(
                sub,
                lambda d: (
                    d["uptime_s"] >= start["uptime_s"] + 10
                    and decisions(d).get("link_down", 0) >= 10
                ),
                60,
            )
            base_docs = stats(sub, "basedev")[marks[0] :]
            down_docs = stats(sub)[marks[1] : stats(sub).index(down) + 1]
            state = json.loads(sub.messages("edged/testdev/state")[-1].payload)

            server.start()
            up = wait_stats(sub, lambda d: decisions(d).get("sent", 0) >= 3, 60)
            for d in (base, daemon):
                rc, _ = d.stop()
                assert rc == 0, d.output
    finally:
        server.stop()

    counts = decisions(down)
    r_base, r_down = rate(base_docs), rate(down_docs)
    print(f"down: {counts}, probes {down['offload']['probes']}; rate {r_down:.2f} vs {r_base:.2f}")
    print(f"up: {decisions(up)}")
    # Down: every uncertain frame was refused at the gate; only probes went out.
    assert down["offload"]["link"] == "down"
    assert down["offload"]["requests"] == 0
    assert counts["sent"] == counts["failed"] == counts["queue_full"] == 0
    assert down["offload"]["probes"] >= 3
    assert state["link"]["status"] == "down"
    assert "connect" in state["link"]["reason"]
    # The local detection rate is the one of the daemon without offload, within noise.
    assert r_base > 2.0
    assert r_down >= 0.85 * r_base, f"{r_down:.2f} frames/s vs {r_base:.2f} without offload"
    # Up again: offloading resumed without anyone touching the daemon.
    assert up["offload"]["link"] == "up"
    verdicts = sub.messages("edged/testdev/door/offload")
    assert len(verdicts) >= 3
    for verdict in verdicts:  # each live verdict honours the payload contract
        OffloadResult.model_validate_json(verdict.payload)
