"""Fixtures for the offload tests: the reference cloud server, a hostile server, daemon configs."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import pytest

from edged.publish.payloads import Stats
from tests.helpers.broker import RunningBroker, Subscriber, TlsMaterial
from tests.helpers.daemon import base_config, ssd_pipeline, walking_source, write_config
from tests.offload.servers import CloudServer, HostileServer

DEV = "edged/testdev"
#: A recognisable token, so tests can assert it never appears in a log.
TOKEN = "offload-T0ken-" + secrets.token_hex(8)


@pytest.fixture(scope="session")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("token") / "offload_token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def walking_frames(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The walking clip's eventful part as still frames (JPEG q95), for lock-step runs.

    Frames 58-198 (every second one: a woman enters, stands, leaves) and
    200-240 (every fourth: the empty room, then a man enters). Reading the
    whole 30 s clip would take most of the test's time in the empty room.
    """
    out = tmp_path_factory.mktemp("walking")
    cap = cv2.VideoCapture(str(media_dir / "person_walking_0-30s.mp4"))
    wanted = set(range(58, 200, 2)) | set(range(200, 241, 4))
    index = 0
    while True:
        ok, bgr = cap.read()
        if not ok or index > max(wanted):
            break
        if index in wanted:
            cv2.imwrite(str(out / f"{index:04d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        index += 1
    cap.release()
    return out


@pytest.fixture(scope="module")
def cloud_server(
    models_dir: Path,
    tls_material: TlsMaterial,
    token_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CloudServer]:
    """``edged cloud serve --model yolox-nano-coco`` over TLS on loopback, shared by a module."""
    server = CloudServer(models_dir, tls_material, token_file, tmp_path_factory.mktemp("cloud"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def hostile(tls_material: TlsMaterial, tmp_path: Path) -> Iterator[HostileServer]:
    server = HostileServer(tls_material, tmp_path).start()
    try:
        yield server
    finally:
        server.close()


def offload_config(
    tmp: Path,
    models_dir: Path,
    media_dir: Path,
    broker: RunningBroker,
    *,
    url: str,
    ca: Path,
    token_file: Path,
    name: str = "edged.toml",
    device: str = "testdev",
    source: dict[str, Any] | None = None,
    pipeline: dict[str, Any] | None = None,
    band: tuple[float, float] = (0.35, 0.65),
    enabled: bool = True,
    **offload: Any,
) -> Path:
    """A daemon config: the walking clip, one SSD pipeline ``door``, offload to ``url``."""
    cfg = base_config(tmp / device, models_dir, broker)
    cfg["device_id"] = device
    cfg["stats_interval_s"] = 1
    cfg["sources"] = [walking_source(media_dir, **{"realtime": True, "fps": 10, **(source or {})})]
    cfg["pipelines"] = [
        ssd_pipeline(
            **{
                "threshold": 0.3,
                "labels": ["person"],
                "publish": "all",
                "max_fps": 10,
                "threads": 2,
                "offload": {"enabled": enabled, "band": list(band)},
                **(pipeline or {}),  # overrides the keys above
            }
        )
    ]
    cfg["offload"] = {
        "url": url,
        "ca_file": ca,
        "token_file": token_file,
        "probe_interval_s": 1,
        "frames_per_minute": 600,
        "mb_per_day": 500,
        **offload,
    }
    (tmp / device).mkdir(parents=True, exist_ok=True)
    return write_config(tmp / device / name, cfg)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def stats(sub: Subscriber, device: str = "testdev") -> list[dict[str, Any]]:
    """Every ``stats`` document of ``device`` received so far, each checked against ``Stats``."""
    payloads = [m.payload for m in sub.messages(f"edged/{device}/stats")]
    for payload in payloads:  # the offload section only appears in these tests' daemons
        Stats.model_validate_json(payload)
    return [json.loads(p) for p in payloads]


def wait_stats(
    sub: Subscriber,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float,
    device: str = "testdev",
) -> dict[str, Any]:
    """The first ``stats`` document (received or arriving within ``timeout``) matching."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        docs = stats(sub, device)
        for doc in docs[seen:]:
            if predicate(doc):
                return doc
        seen = len(docs)
        time.sleep(0.2)
    last = stats(sub, device)[-1:] or ["(no stats)"]
    raise AssertionError(f"no stats matching within {timeout} s; last: {last}")


def decisions(doc: dict[str, Any], pipeline: str = "door") -> dict[str, int]:
    """The offload decision counters of ``pipeline`` in a stats document."""
    per: dict[str, int] = doc.get("offload", {}).get("pipelines", {}).get(pipeline, {})
    return per


def rate(docs: list[dict[str, Any]], pipeline: str = "door") -> float:
    """Frames processed per second by ``pipeline`` from the first to the last of ``docs``."""
    assert len(docs) >= 2, "too few stats documents to measure a rate"
    a, b = docs[0], docs[-1]
    done = b["pipelines"][pipeline]["processed"] - a["pipelines"][pipeline]["processed"]
    return float(done / (b["uptime_s"] - a["uptime_s"]))
