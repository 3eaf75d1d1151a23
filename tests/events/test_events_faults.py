"""Event media faults against the real daemon: an unwritable store costs the media, never the event."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.events.conftest import walking_config
from tests.helpers.broker import RunningBroker, matching
from tests.helpers.daemon import Daemon, write_config

pytestmark = [pytest.mark.broker, pytest.mark.slow]

BASE = "edged/testdev"


def test_an_unwritable_event_store_publishes_bare_ends_and_shows_degraded(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """With ``[events] dir`` taken by a file, every event still ends (without media), the
    failure is counted in ``stats`` and the pipeline shows ``degraded`` in ``state``."""
    blocker = tmp_path / "events"
    blocker.write_text("a file where the store's directory should be")
    # At the clip's rate the woman's event ends ~8 s before the file.
    cfg = walking_config(tmp_path, models_dir, media_dir, broker)
    cfg["events"] = {"dir": blocker, "snapshots": True}
    sub = broker.subscriber(f"{BASE}/#")
    with Daemon(write_config(tmp_path / "edged.toml", cfg)) as daemon:
        sub.wait_for(matching(f"{BASE}/availability", b"online"), timeout=30)
        degraded = sub.wait_for(
            lambda m: (
                m.topic == f"{BASE}/state"
                and json.loads(m.payload)["pipelines"]["door"]["status"] == "degraded"
            ),
            timeout=90,
        )
        stats = sub.wait_for(
            lambda m: (
                m.topic == f"{BASE}/stats"
                and json.loads(m.payload).get("events", {}).get("failures", {}).get("snapshot")
            ),
            timeout=10,
        )
        rc, _ = daemon.stop()
        assert rc == 0, daemon.output
    reason = json.loads(degraded.payload)["pipelines"]["door"]["reason"]
    assert reason.startswith("event media:"), reason
    assert "snapshot" in reason
    events = [json.loads(m.payload) for m in sub.messages(f"{BASE}/door/events")]
    ends = [e for e in events if e["event"] == "end"]
    starts = [e for e in events if e["event"] == "start"]
    assert ends, events
    assert all(e.get("media") is None for e in ends)
    assert {e["event_id"] for e in ends} <= {e["event_id"] for e in starts}
    assert json.loads(stats.payload)["events"]["snapshots"] == 0
    assert blocker.read_text().startswith("a file")  # nothing was written over it
