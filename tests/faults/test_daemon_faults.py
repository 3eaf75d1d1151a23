"""Fault matrix, daemon level: SIGKILL with a backlog, clock set back, broken reloads."""

from __future__ import annotations

import itertools
import json
import shutil
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from edged.demo.broker import LocalBroker, free_port
from tests.helpers.broker import RunningBroker, Subscriber, matching
from tests.helpers.daemon import Daemon, base_config, ssd_pipeline, walking_source, write_config

pytestmark = pytest.mark.broker

DEV = "edged/testdev"
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def clip_config(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker | None, **mqtt: Any
) -> dict[str, Any]:
    cfg = base_config(tmp_path, models_dir, broker, **mqtt)
    cfg["sources"] = [walking_source(media_dir, realtime=False, fps=30, loop=True)]
    cfg["pipelines"] = [ssd_pipeline(publish="all", max_fps=30, track=False)]
    return cfg


def outbox_rows(path: Path) -> tuple[int, int]:
    """(rows waiting, highest seq) in an outbox file left by a killed daemon."""
    with sqlite3.connect(path) as db:
        depth = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        top = db.execute("SELECT max(seq) FROM outbox").fetchone()[0] or 0
    db.close()
    return int(depth), int(top)


def live_depth(path: Path) -> int:
    """Rows in the outbox of a running daemon (0 until it has created the file)."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            depth = int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        db.close()
    except sqlite3.OperationalError:  # not created yet
        return 0
    return depth


def test_sigkill_with_a_backlog_loses_nothing(
    tmp_path: Path, models_dir: Path, media_dir: Path
) -> None:
    """Results accepted while the broker is down survive SIGKILL and arrive after restart."""
    port = free_port()
    cfg = clip_config(tmp_path, models_dir, media_dir, None, port=port)
    config = write_config(tmp_path / "edged.toml", cfg)
    with Daemon(config) as first:
        # No broker: every result waits in the outbox. Kill once it holds a
        # backlog, while the daemon keeps writing (not after a fixed time: a
        # slow start left too few rows in 6 s).
        outbox = tmp_path / "state" / "outbox.sqlite3"
        deadline = time.monotonic() + 60
        assert first.proc is not None
        while live_depth(outbox) < 60 and time.monotonic() < deadline:
            assert first.proc.poll() is None, first.output
            time.sleep(0.2)
        first.signal(signal.SIGKILL)
        first.wait(5)
    depth, top = outbox_rows(tmp_path / "state" / "outbox.sqlite3")
    assert depth >= 50, "the daemon accepted too few results to make the test meaningful"
    with LocalBroker(port=port) as late:
        running = RunningBroker(late)
        sub = running.subscriber(f"{DEV}/door/detections")
        with Daemon(config) as second:
            sub.wait_for(lambda m: json.loads(m.payload)["seq"] > top, timeout=60)
            rc, _ = second.stop()
        running.close()
    seqs = {json.loads(m.payload)["seq"] for m in sub.messages()}
    missing = set(range(1, top + 1)) - seqs
    assert not missing, f"{len(missing)} of {top} accepted results never arrived"
    assert rc == 0


@pytest.mark.skipif(
    not LIBFAKETIME.exists(), reason="libfaketime is not installed (.ci/run installs it)"
)
def test_clock_set_back_keeps_seq_and_order(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """Setting the wall clock back an hour mid-run leaves seq monotonic and gap-free."""
    clock = tmp_path / "faketime"
    clock.write_text("+0\n")
    env = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(clock),
        "FAKETIME_NO_CACHE": "1",
        # A real clock step (settimeofday) never moves CLOCK_MONOTONIC either.
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    sub = broker.subscriber(f"{DEV}/door/detections")
    with Daemon(
        write_config(tmp_path / "edged.toml", clip_config(tmp_path, models_dir, media_dir, broker)),
        env=env,
    ) as d:
        sub.wait_for(lambda m: json.loads(m.payload)["seq"] >= 20, timeout=30)
        clock.write_text("-3600\n")
        before = len(sub.messages())
        sub.wait_for(lambda _m: len(sub.messages()) >= before + 40, timeout=30)
        rc, _ = d.stop()
    assert rc == 0, d.output
    docs = [json.loads(m.payload) for m in sub.messages()]
    seqs = [doc["seq"] for doc in docs]
    assert seqs == sorted(seqs)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    stamps = [doc["ts"] for doc in docs]
    assert any(b < a for a, b in itertools.pairwise(stamps)), "the clock never went back"


def reload_and_wait(daemon: Daemon, sub: Subscriber, needle: str, timeout: float = 30) -> None:
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while needle not in daemon.output and time.monotonic() < deadline:
        time.sleep(0.2)
    assert needle in daemon.output, daemon.output[-3000:]


@pytest.mark.parametrize("breakage", ["syntax", "corrupt_model", "misfit_model"])
def test_broken_reload_keeps_the_running_config(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker, breakage: str
) -> None:
    """SIGHUP with a broken config, a corrupt model or a misfit model is refused; the old graph runs on."""
    private = tmp_path / "models"
    shutil.copytree(models_dir, private)
    cfg = clip_config(tmp_path, private, media_dir, broker)
    config = write_config(tmp_path / "edged.toml", cfg)
    sub = broker.subscriber(f"{DEV}/#")
    with Daemon(config) as daemon:
        sub.wait_for(matching(f"{DEV}/door/detections"), timeout=30)
        if breakage == "syntax":
            config.write_text(config.read_text() + "\n[mqtt\n")
        elif breakage == "corrupt_model":
            model = private / "coco_ssd_mobilenet_v1_1.0_quant.tflite"
            data = bytearray(model.read_bytes())
            data[len(data) // 2] ^= 0xFF
            model.write_bytes(bytes(data))
        else:  # the YOLOX file where an SSD post-processed model is expected
            cfg["pipelines"][0].update(
                model=str(private / "yolox_nano.onnx"), decoder="ssd-postprocess"
            )
            write_config(config, cfg)
        reload_and_wait(daemon, sub, "app.reload_refused")
        before = len(sub.messages(f"{DEV}/door/detections"))
        time.sleep(2)
        assert len(sub.messages(f"{DEV}/door/detections")) > before + 5, "the old pipeline stopped"
        state = json.loads(sub.messages(f"{DEV}/state")[-1].payload)
        assert state["pipelines"]["door"]["status"] == "running"
        rc, _ = daemon.stop()
        assert rc == 0


def test_valid_reload_applies_without_dropping_the_session(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """SIGHUP with a valid new pipeline set swaps the graph; the MQTT session is never 'offline'."""
    cfg = clip_config(tmp_path, models_dir, media_dir, broker)
    config = write_config(tmp_path / "edged.toml", cfg)
    sub = broker.subscriber(f"{DEV}/#")
    with Daemon(config) as daemon:
        sub.wait_for(matching(f"{DEV}/door/detections"), timeout=30)
        cfg["pipelines"][0]["name"] = "porch"
        write_config(config, cfg)
        reload_and_wait(daemon, sub, '"app.reloaded"')
        sub.wait_for(matching(f"{DEV}/porch/detections"), timeout=30)
        rc, _ = daemon.stop()
        assert rc == 0
    availability = [m.payload for m in sub.messages(f"{DEV}/availability")]
    assert b"offline" not in availability
