"""A reload is checked like a start: a config that cannot run is refused, the old graph runs on."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.broker import RunningBroker, matching
from tests.helpers.daemon import Daemon, base_config, ssd_pipeline, walking_source, write_config

pytestmark = pytest.mark.broker

DEV = "edged/testdev"


def clip_config(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> dict[str, Any]:
    cfg = base_config(tmp_path, models_dir, broker)
    cfg["sources"] = [walking_source(media_dir, loop=True, fps=10)]
    cfg["pipelines"] = [ssd_pipeline(publish="all", track=False)]
    return cfg


def break_config(cfg: dict[str, Any], media_dir: Path, breakage: str) -> None:
    if breakage == "detection_on_wav":
        cfg["sources"].append({"name": "mic", "kind": "wav", "uri": media_dir / "speech_jfk.wav"})
        cfg["pipelines"].append(
            {"name": "ears", "source": "mic", "task": "detection", "model": "yolox-nano-coco"}
        )
    else:  # a label in the wrong case: the new graph would never publish a detection
        cfg["pipelines"][0]["labels"] = ["Person"]


@pytest.mark.parametrize(
    ("breakage", "key"),
    [("detection_on_wav", "pipelines[1].task"), ("label_case", "pipelines[0].labels[0]")],
)
def test_reload_refuses_a_config_that_cannot_run(
    tmp_path: Path,
    models_dir: Path,
    media_dir: Path,
    broker: RunningBroker,
    breakage: str,
    key: str,
) -> None:
    """SIGHUP with a task on the wrong source kind or an unknown label: refused, named, still running."""
    cfg = clip_config(tmp_path, models_dir, media_dir, broker)
    config = write_config(tmp_path / "edged.toml", cfg)
    sub = broker.subscriber(f"{DEV}/#")
    with Daemon(config) as daemon:
        sub.wait_for(matching(f"{DEV}/door/detections"), timeout=30)
        break_config(cfg, media_dir, breakage)
        write_config(config, cfg)
        daemon.signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "reload_refused" not in daemon.output and time.monotonic() < deadline:
            assert daemon.proc is not None
            assert daemon.proc.poll() is None, daemon.output[-3000:]
            time.sleep(0.2)
        refusal = next(
            json.loads(line[line.index("{") :])  # past any journald priority prefix
            for line in daemon.output.splitlines()
            if "reload_refused" in line
        )
        # "<key>: <problem>", possibly after the config file's name
        assert any(f"{key}: " in p for p in refusal["problems"]), refusal
        before = len(sub.messages(f"{DEV}/door/detections"))
        sub.wait_for(lambda _m: len(sub.messages(f"{DEV}/door/detections")) > before + 3)
        rc, _ = daemon.stop()
        assert rc == 0, daemon.output[-3000:]
