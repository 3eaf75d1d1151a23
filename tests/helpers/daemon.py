"""Run the real ``edged`` daemon as a subprocess against a real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import tomli_w

from tests.helpers.broker import RunningBroker


def write_config(path: Path, config: dict[str, Any]) -> Path:
    """Write ``config`` as TOML (paths turned into strings)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items() if x is not None}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    path.write_text(tomli_w.dumps(plain(config)))
    return path


def base_config(
    tmp: Path, models_dir: Path, broker: RunningBroker | None, **mqtt: Any
) -> dict[str, Any]:
    """A config with state in ``tmp``, models from ``models_dir``, and the broker's settings."""
    m: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 1,
        "keepalive_s": 5,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
        "homeassistant": False,
    }
    if broker is not None:
        m.update(
            host=broker.host,
            port=broker.port,
            tls=broker.ca_file is not None,
            ca_file=broker.ca_file,
            username=broker.username,
        )
        if broker.password:
            pw = tmp / "mqtt_password"
            pw.write_text(broker.password + "\n")
            pw.chmod(0o600)
            m["password_file"] = pw
    m.update(mqtt)
    return {
        "device_id": "testdev",
        "state_dir": tmp / "state",
        "stats_interval_s": 2,
        "mqtt": m,
        "outbox": {"path": tmp / "state" / "outbox.sqlite3"},
        "models": {"dir": models_dir},
        "sources": [],
        "pipelines": [],
    }


class Daemon:
    """``python -m edged run --config FILE`` with its output captured to a file."""

    def __init__(self, config: Path, *, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log_path = config.with_suffix(".log")
        self._env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edged", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env,
            )
        return self

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 12.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds until exit)."""
        t0 = time.monotonic()
        self.signal(signal.SIGTERM)
        rc = self.wait(timeout)
        return rc, time.monotonic() - t0

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The walking clip of the shared media: a person crosses a room, 30 s at 30 fps.
WALKING_CLIP = "person_walking_0-30s.mp4"
#: The reference person detector of most daemon tests.
SSD = "ssd-mobilenet-v1-coco-int8"


def walking_source(media_dir: Path, **keys: Any) -> dict[str, Any]:
    """Source ``cam0``: the walking clip read as a file; ``keys`` add or override keys."""
    return {"name": "cam0", "kind": "file", "uri": media_dir / WALKING_CLIP, **keys}


def ssd_pipeline(**keys: Any) -> dict[str, Any]:
    """Pipeline ``door``: SSD MobileNet detection on ``cam0``; ``keys`` add or override keys."""
    return {"name": "door", "source": "cam0", "task": "detection", "model": SSD, **keys}
