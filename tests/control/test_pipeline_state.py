"""``state`` shows a pipeline whose stages keep failing as ``degraded``, and ``running`` again after.

A real App (its main loop, a real mosquitto, SSD on photos). The failures are
recorded through the pipeline's own counters, as a failing stage records them;
recovery is the real pipeline's clean frames.
"""

from __future__ import annotations

import pytest

from edged.runtime.video import Pipeline
from tests.control.conftest import RunningApp
from tests.control.test_commands_e2e import BASE, state_where

pytestmark = pytest.mark.broker


def test_state_shows_degraded_with_the_error_then_running(running: RunningApp) -> None:
    """A burst of emit failures: state 'degraded' with the count and error; clean frames end it."""
    sub = running.broker.subscriber(f"{BASE}/#")
    pipeline = running.app.graph.pipelines["door"]
    assert isinstance(pipeline, Pipeline)
    for _ in range(3):
        pipeline.failures.failed("emit", OSError(5, "disk I/O error"))
    running.app.publish_state()
    doc = state_where(sub, lambda d: d["pipelines"]["door"]["status"] == "degraded")
    reason = doc["pipelines"]["door"]["reason"]
    assert reason.startswith("3 failures since it last ran clean")
    assert "emit: OSError: [Errno 5] disk I/O error" in reason
    # The housekeeping thread republishes state once the pipeline's clean frames end the burst.
    state_where(sub, lambda d: d["pipelines"]["door"]["status"] == "running", timeout=15)
