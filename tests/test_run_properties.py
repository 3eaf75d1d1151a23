"""Property (issue 17.6): whatever ``edged check`` accepts, ``edged run`` starts and runs.

Hypothesis draws configs with a few numeric keys set at or near the ends of
their ranges (and now and then beyond them). ``check`` must exit 0 or 78 —
78 naming one of the keys set — and every config it accepts runs as a real
daemon for 5 s (SSD on photos, or YAMNet on a WAV file, real mosquitto)
without a dead thread: the process is alive, ``state`` lists every pipeline
as running or degraded, nothing is logged as a traceback, and SIGTERM ends
it with exit 0. A handful of examples keeps the whole test within ~2 minutes.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from edged.__main__ import main
from edged.errors import EX_CONFIG, EX_OK
from tests.control.conftest import photos_config
from tests.helpers.broker import RunningBroker, matching
from tests.helpers.commands import BASE
from tests.helpers.daemon import Daemon, write_config
from tests.helpers.settings_keys import NumericKey, numeric_keys

pytestmark = [pytest.mark.broker, pytest.mark.slow]

RUN_S = 5.0
EXAMPLES = 16

#: Keys a drawn value must not change: the broker's port, and the metrics
#: endpoint (off here). Everything else is fair game.
_FIXED = {"mqtt.port", "metrics.port"}
KEYS = [k for k in numeric_keys() if k.path not in _FIXED]


@st.composite
def near_edges(draw: st.DrawFn, key: NumericKey) -> Any:
    """A value of ``key``: mostly at or near an end of its range, one in eight beyond it."""
    low, high = key.range
    if key.integer:
        inside = st.sampled_from([int(low), int(high)]) | st.integers(int(low), int(high))
        outside = st.sampled_from([int(low) - 1, int(high) + 1])
    else:
        inside = st.sampled_from([low, high, low * 1.5 or 0.5, high / 2]) | st.floats(low, high)
        outside = st.sampled_from([low / 2 if low else -1.0, high * 2, 5e-324, 1e308])
    return draw(outside if draw(st.integers(0, 7)) == 0 else inside)


@st.composite
def drawn(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """(pipeline kind, {key path: value}) for 2 to 6 keys."""
    kind = draw(st.sampled_from(["video", "audio"]))
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=2, max_size=6, unique_by=lambda k: k.path))
    return kind, {k.path: draw(near_edges(k)) for k in keys}


def audio_config(video: dict[str, Any], media_dir: Path) -> dict[str, Any]:
    cfg = copy.deepcopy(video)
    cfg["sources"] = [
        {"name": "mic0", "kind": "wav", "uri": media_dir / "speech_jfk.wav", "loop": True}
    ]
    cfg["pipelines"] = [
        {"name": "door", "source": "mic0", "task": "audio", "model": "yamnet", "threshold": 0.0}
    ]
    return cfg


def run_for_a_while(config: Path, broker: RunningBroker) -> None:
    """Run the daemon RUN_S seconds; assert it lived, its pipelines ran, and it stopped cleanly."""
    sub = broker.subscriber(f"{BASE}/state")
    with Daemon(config) as daemon:
        sub.wait_for(matching(f"{BASE}/state"), timeout=30)
        time.sleep(RUN_S)
        assert daemon.proc is not None
        assert daemon.proc.poll() is None, daemon.output[-3000:]
        state = json.loads(sub.messages()[-1].payload)
        statuses = {p["status"] for p in state["pipelines"].values()}
        assert statuses <= {"running", "degraded"}, state
        rc, _ = daemon.stop()
        log = daemon.output
    assert rc == 0, log[-3000:]
    assert "Traceback" not in log
    assert "Exception in thread" not in log


def test_what_check_accepts_runs_without_a_dead_thread(
    tmp_path: Path,
    models_dir: Path,
    media_dir: Path,
    broker: RunningBroker,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Configs drawn at the edges of the numeric ranges: check gives 0 or 78 (naming a drawn key),
    and each accepted one runs 5 s with every pipeline thread alive."""
    video = photos_config(tmp_path, models_dir, media_dir, broker)
    by_path = {k.path: k for k in KEYS}
    ran: list[dict[str, Any]] = []
    refused = 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # no shrinking: each example runs a daemon
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(drawn())
    def one(example: tuple[str, dict[str, Any]]) -> None:
        nonlocal refused
        kind, values = example
        cfg = copy.deepcopy(video) if kind == "video" else audio_config(video, media_dir)
        if kind == "video":  # the motion gate's keys only matter with the gate on
            cfg["pipelines"][0]["motion_gate"] = any(
                "motion" in p or "keepalive" in p for p in values
            )
        for path, value in values.items():
            by_path[path].set(cfg, value)
        config = write_config(tmp_path / "edged.toml", cfg)
        capsys.readouterr()
        code = main(["check", "--offline", "--config", str(config)])
        err = capsys.readouterr().err
        assert code in (EX_OK, EX_CONFIG), err
        assert "Traceback" not in err
        if code == EX_CONFIG:
            assert any(f"{path}: " in err for path in values), (values, err)
            refused += 1
            return
        run_for_a_while(config, broker)
        ran.append(values)

    one()
    print(f"\nproperty: {len(ran)} configs ran, {refused} refused; ran: {ran}")
    assert ran, "no drawn config was accepted: the property was never exercised"
