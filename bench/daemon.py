"""The real daemon as a subprocess: its memory footprint, and its time from start to READY.

Both run ``python -m edged run --config FILE`` with the same three-model
configuration, as a device would: SSD-MobileNet int8 and MoveNet Lightning
int8 on the walking clip (one capture, played in real time and looped, like a
camera), YAMNet on ``speech_jfk.wav`` (real time, looped, like a
microphone), every result published to a local mosquitto.

- *footprint*: once every pipeline has published, results flow for a warm-up
  (15 s) and then ``VmRSS`` (now), ``VmHWM`` (peak since start) and its
  anonymous and file-backed parts come from ``/proc/<pid>/status``, ``Pss``
  from ``/proc/<pid>/smaps_rollup`` (shared library pages split between the
  processes using them). The verdict is on the peak: that is what has to fit
  in the device's memory. The file-backed part (mapped shared libraries and
  models) depends on the kernel as much as on the daemon: a block device with
  a large read-ahead (``/sys/block/*/queue/read_ahead_kb``) makes each page
  fault map a large folio, so the row also names the read-ahead of the disk
  the libraries are on.
- *startup*: ``NOTIFY_SOCKET`` names a unix datagram socket bound here, as
  systemd's would be; the figure is the time from spawning the process to
  ``READY=1``, which the daemon sends after loading and warming up the
  models, connecting nothing that blocks, and starting every source.

Run with ``python -m bench --only rss,startup``.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import paho.mqtt.client as paho
import tomlkit
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import DETECTOR, EARS, POSE, REPO, Context, Row
from edged.demo.broker import LocalBroker

#: Peak resident memory allowed with the three models loaded and running, MiB.
RSS_TARGET_MIB = 150.0
#: Spawn to READY=1 allowed, seconds.
STARTUP_TARGET_S = 3.0
PIPELINES = ("door", "body", "ears")


def write_config(ctx: Context, work: Path, broker: LocalBroker) -> Path:
    """The three-model configuration as a TOML file in ``work``."""
    config: dict[str, Any] = {
        "device_id": "bench",
        "state_dir": str(work / "state"),
        "log_level": "warning",
        "stats_interval_s": 10,
        "mqtt": {"host": broker.host, "port": broker.port, "homeassistant": False},
        "outbox": {"path": str(work / "state" / "outbox.sqlite3")},
        "models": {"dir": str(ctx.models)},
        "sources": [
            {"name": "cam", "kind": "file", "uri": str(ctx.clip), "realtime": True, "loop": True},
            {
                "name": "mic",
                "kind": "wav",
                "uri": str(ctx.media / "speech_jfk.wav"),
                "realtime": True,
                "loop": True,
            },
        ],
        "pipelines": [
            {
                "name": "door",
                "source": "cam",
                "task": "detection",
                "model": DETECTOR,
                "publish": "all",
                "max_fps": 10,
            },
            {
                "name": "body",
                "source": "cam",
                "task": "pose",
                "model": POSE,
                "publish": "all",
                "max_fps": 10,
            },
            EARS,
        ],
    }
    path = work / "edged.toml"
    path.write_text(tomlkit.dumps(config))
    return path


@contextmanager
def daemon(config: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m edged run --config FILE``, its output in ``FILE.log``; stopped with SIGTERM."""
    log = config.with_suffix(".log")
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edged", "run", "--config", str(config)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def exited(proc: subprocess.Popen[bytes], config: Path) -> str:
    """Why the daemon is gone: its exit code and the end of its log."""
    tail = config.with_suffix(".log").read_text(errors="replace").strip().splitlines()[-5:]
    return f"edged exited with {proc.returncode}: " + " | ".join(tail)


# -- footprint ------------------------------------------------------------------------------


class FirstResults:
    """Subscriber noting when each pipeline published its first result."""

    def __init__(self, broker: LocalBroker) -> None:
        self.first: dict[str, float] = {}
        self.count = 0
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        for kind in ("detections", "pose", "audio"):
            self.client.subscribe(f"edged/bench/+/{kind}", qos=0)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        pipeline = msg.topic.split("/")[2]
        with self._lock:
            self.count += 1
            self.first.setdefault(pipeline, time.monotonic())

    def all_started(self) -> bool:
        with self._lock:
            return all(p in self.first for p in PIPELINES)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def proc_kib(path: Path, *keys: str) -> dict[str, int]:
    """``Key:   N kB`` lines of a /proc file, as KiB."""
    out: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in keys:
            out[key] = int(rest.split()[0])
    return out


def readahead_kb(path: Path) -> int | None:
    """The read-ahead, in kB, of the block device holding ``path``; None when unknown."""
    dev = path.stat().st_dev
    base = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    # A partition has no queue of its own: its disk's is one level up.
    for queue in (base / "queue", base.resolve().parent / "queue"):
        try:
            return int((queue / "read_ahead_kb").read_text())
        except (OSError, ValueError):
            continue
    return None


def footprint(ctx: Context) -> Row:
    """RSS (now and peak) and PSS of the daemon with detection, pose and audio running."""
    warm_s = 5.0 if ctx.quick else 15.0
    work = ctx.scratch("footprint")
    with LocalBroker(workdir=work / "broker") as broker:
        config = write_config(ctx, work, broker)
        results = FirstResults(broker)
        try:
            with daemon(config) as proc:
                deadline = time.monotonic() + 60
                while not results.all_started():
                    if proc.poll() is not None:
                        raise RuntimeError(exited(proc, config))
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"no results from every pipeline in 60 s: {results.first}"
                        )
                    time.sleep(0.1)
                time.sleep(warm_s)
                if proc.poll() is not None:
                    raise RuntimeError(exited(proc, config))
                status = proc_kib(
                    Path(f"/proc/{proc.pid}/status"), "VmRSS", "VmHWM", "RssAnon", "RssFile"
                )
                rollup = Path(f"/proc/{proc.pid}/smaps_rollup")
                pss = proc_kib(rollup, "Pss").get("Pss") if rollup.exists() else None
        finally:
            results.close()
    rss, hwm = status["VmRSS"] / 1024, status["VmHWM"] / 1024
    anon, mapped = status["RssAnon"] / 1024, status["RssFile"] / 1024
    pss_mib = pss / 1024 if pss is not None else None
    pss_text = f", PSS {pss_mib:.0f} MiB" if pss_mib is not None else ""
    ra = readahead_kb(Path(cv2.__file__))
    ra_text = f"; disk read-ahead {ra} kB" if ra is not None else ""
    return Row(
        key="rss",
        measurement=f"memory, detection + pose + audio running ({warm_s:.0f} s warm)",
        figure=(
            f"RSS {rss:.0f} MiB (anon {anon:.0f} + file {mapped:.0f}), "
            f"peak (VmHWM) {hwm:.0f} MiB{pss_text}{ra_text}"
        ),
        target=f"peak ≤ {RSS_TARGET_MIB:.0f} MiB",
        ok=hwm <= RSS_TARGET_MIB,
        values={
            "rss_mib": round(rss, 1),
            "hwm_mib": round(hwm, 1),
            "pss_mib": round(pss_mib, 1) if pss_mib is not None else None,
            "anon_mib": round(anon, 1),
            "file_mib": round(mapped, 1),
            "readahead_kb": ra,
            "results_seen": results.count,
            "warm_s": warm_s,
        },
    )


# -- startup --------------------------------------------------------------------------------


def time_to_ready(config: Path, sock_path: Path, timeout: float = 60.0) -> float:
    """Seconds from spawning the daemon to its READY=1; the daemon is stopped afterwards."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock_path.unlink(missing_ok=True)
        sock.bind(str(sock_path))
        sock.settimeout(0.5)
        t0 = time.perf_counter()
        with daemon(config, {"NOTIFY_SOCKET": str(sock_path)}) as proc:
            while time.perf_counter() - t0 < timeout:
                try:
                    fields = sock.recv(4096).decode().split("\n")
                except TimeoutError:
                    if proc.poll() is not None:
                        raise RuntimeError(exited(proc, config)) from None
                    continue
                if "READY=1" in fields:
                    return time.perf_counter() - t0
    raise RuntimeError(f"no READY=1 within {timeout:.0f} s")


def startup(ctx: Context) -> Row:
    """Spawn → READY=1 of the three-model daemon: median of 5 starts (2 with --quick)."""
    runs = 2 if ctx.quick else 5
    work = ctx.scratch("startup")
    with LocalBroker(workdir=work / "broker") as broker:
        config = write_config(ctx, work, broker)
        times = [time_to_ready(config, work / "notify") for _ in range(runs)]
    median = statistics.median(times)
    return Row(
        key="startup",
        measurement=f"start to READY=1, three models, median of {runs}",
        figure=f"{median:.2f} s (min {min(times):.2f}, max {max(times):.2f})",
        target=f"≤ {STARTUP_TARGET_S:g} s",
        ok=median <= STARTUP_TARGET_S,
        values={
            "runs": runs,
            "median_s": round(median, 3),
            "times_s": [round(t, 3) for t in times],
        },
    )
