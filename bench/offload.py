"""Hybrid offload on the walking clip: what the policy sends versus every frame, and local fps.

Run ``python -m bench.offload`` from the repository root (mosquitto and
openssl must be installed, and aiohttp for the reference server; models come
from ``EDGED_MODEL_MIRROR`` or ``../shared/models``, the clip from
``EDGED_MEDIA_DIR`` or ``../shared/media``). Prints one table.

Every run is the real daemon (``App``) in this process on the 301-frame clip,
read in lock-step (``realtime = false``: every frame is processed, as fast as
the pipeline goes), with SSD-MobileNet int8 locally and ``edged cloud serve``
running yolox-nano-coco over TLS on loopback:

- *offload off*: the local frame rate without offload;
- *policy, band only*: offload on with the default band [0.35, 0.6) and no
  frame budget — what the uncertainty test alone sends;
- *policy, defaults*: the shipped budget too (6 frames a minute, 50 MB a day);
- *every frame*: each processed frame prepared as a request (whole frame,
  ``max_side`` 640, JPEG quality 80) and counted, not sent;
- *offload off, again* last, so that the spread of the two "off" runs shows
  the machine's noise next to the difference offload makes.

The reference server shares this machine's cores; it runs at nice 19 so that
it takes what the device leaves, as a remote server would take nothing.
"""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np

from bench.common import daemon_config, in_process
from edged.catalog.catalog import load_catalog
from edged.catalog.fetch import pull
from edged.config.settings import OffloadSettings
from edged.demo.broker import LocalBroker, free_port
from edged.log import configure_logging
from edged.offload.client import CloudClient, CloudError
from edged.offload.protocol import DetectRequest, FrameSize
from edged.preprocess.jpeg import WHOLE, prepare

# The tests' TLS helper: a CA and a server certificate for 127.0.0.1, made with openssl.
from tests.helpers.broker import make_tls_material

REPO = Path(__file__).resolve().parents[1]
MODELS = ("ssd-mobilenet-v1-coco-int8", "yolox-nano-coco")


def shared(var: str, sub: str) -> Path:
    return Path(os.environ.get(var, REPO.parent / "shared" / sub))


def start_server(work: Path, ca: Path, cert: Path, key: Path, token: Path) -> tuple[Any, str]:
    """``edged cloud serve`` at nice 19; returns the process and its URL once /health answers."""
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "edged", "cloud", "serve", "--models-dir", str(work / "models"),
            "--port", str(port), "--cert", str(cert), "--key", str(key),
            "--token-file", str(token),
        ],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.nice(19),  # noqa: PLW1509  (no threads exist yet in the child)
    )  # fmt: skip
    probe = CloudClient(OffloadSettings(url=url, ca_file=ca), token.read_text().strip())
    for _ in range(300):
        try:
            probe.health()
            return proc, url
        except CloudError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the reference server did not come up")


def run(
    work: Path, name: str, clip: Path, broker: LocalBroker, offload: dict[str, Any] | None
) -> dict[str, Any]:
    """One daemon run over the clip; frames, seconds and the offload counters."""
    state = work / name
    app = in_process(
        daemon_config(
            state,
            work / "models",
            sources=[
                {"name": "clip", "kind": "file", "uri": str(clip), "realtime": False, "fps": 240}
            ],
            pipelines=[
                {
                    "name": "door",
                    "source": "clip",
                    "task": "detection",
                    "model": "ssd-mobilenet-v1-coco-int8",
                    "labels": ["person"],
                    "max_fps": 240,
                    "offload": {"enabled": offload is not None},
                }
            ],
            offload=offload or {},
            broker=(broker.host, broker.port),
        ),
        connect_broker=True,
    )
    t0 = time.perf_counter()
    app.start()
    if offload is not None:  # let the first probe finish, as on a device that has been up
        while app.offload.link.current.status != "up" and time.perf_counter() - t0 < 10:
            time.sleep(0.01)
    pipeline = app.graph.pipelines["door"]
    pipeline.finished.wait(600)  # type: ignore[union-attr]
    elapsed = time.perf_counter() - t0
    processed: int = pipeline.processed  # type: ignore[union-attr]
    totals: dict[str, int] = {}
    if offload is not None:
        while time.perf_counter() - t0 < elapsed + 60:
            totals = app.offload.counters.totals()
            if sum(totals.values()) >= processed:
                break
            time.sleep(0.05)
    out = {
        "frames": processed,
        "seconds": elapsed,
        "decisions": totals,
        "requests": app.offload.worker.requests if offload is not None else 0,
        "bytes": app.offload.daily.sent_today if offload is not None else 0,
    }
    app.stop()
    return out


def every_frame_bytes(clip: Path) -> tuple[int, int]:
    """Requests and request bytes if every frame of the clip were sent whole."""
    cap = cv2.VideoCapture(str(clip))
    frames = total = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        p = prepare(rgb, WHOLE, max_side=640, quality=80)
        body = DetectRequest(
            device="bench",
            pipeline="door",
            ref="0193a5c4-0000-7000-8000-000000000000",
            frame=FrameSize(w=rgb.shape[1], h=rgb.shape[0]),
            crop=p.crop,
            labels=["person"],
            threshold=0.5,
            image=base64.b64encode(p.jpeg).decode(),
        ).model_dump_json()
        frames += 1
        total += len(body)
    cap.release()
    return frames, total


def main() -> int:
    argparse.ArgumentParser(description=__doc__.split("\n", 1)[0]).parse_args()
    configure_logging("error")
    mirror = shared("EDGED_MODEL_MIRROR", "models")
    clip = shared("EDGED_MEDIA_DIR", "media") / "person_walking_0-30s.mp4"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        catalog = load_catalog()
        for name in MODELS:
            pull(catalog.get(name), work / "models", mirror=mirror)
        tls = make_tls_material(work)
        token = work / "token"
        token.write_text("bench-token\n")
        server, url = start_server(work, tls.ca, tls.cert, tls.key, token)
        # max_rtt_ms: the niced server answers probes late while inference holds the
        # CPU; on loopback that says nothing about a link, so it must not gate here.
        common = {"url": url, "ca_file": str(tls.ca), "token_file": str(token), "max_rtt_ms": 5000}
        try:
            with LocalBroker() as broker:
                off = run(work, "off", clip, broker, None)
                band = run(work, "band", clip, broker, {**common, "frames_per_minute": 100_000})
                defaults = run(work, "defaults", clip, broker, common)
                again = run(work, "off-again", clip, broker, None)  # the noise, measured
        finally:
            server.terminate()
            server.wait(10)
    n_all, b_all = every_frame_bytes(clip)

    print(
        f"walking clip 768x432, {off['frames']} frames; local ssd-mobilenet-v1-coco-int8, "
        f"cloud yolox-nano-coco on loopback (TLS); band [0.35, 0.6); cpus {os.cpu_count()}"
    )
    print(f"{'run':28} {'fps':>6} {'requests':>9} {'sent':>5} {'kB sent':>9} {'of all':>7}")
    rows = [
        ("offload off", off, 0, 0),
        ("policy, band only", band, band["requests"], band["bytes"]),
        ("policy, defaults (6/min)", defaults, defaults["requests"], defaults["bytes"]),
        ("offload off, again", again, 0, 0),
    ]
    for name, r, req, sent in rows:
        fps = r["frames"] / r["seconds"]
        share = f"{100 * sent / b_all:6.1f}%"
        print(
            f"{name:28} {fps:6.1f} {req:9d} {r['decisions'].get('sent', 0):5d} "
            f"{sent / 1e3:9.1f} {share:>7}"
        )
    print(
        f"{'every frame (not sent)':28} {'':>6} {n_all:9d} {'':>5} {b_all / 1e3:9.1f} {'100.0%':>7}"
    )
    fps_off = (off["frames"] + again["frames"]) / (off["seconds"] + again["seconds"])
    fps_on = (band["frames"] + defaults["frames"]) / (band["seconds"] + defaults["seconds"])
    print(f"local fps with offload on / off: {fps_on:.1f} / {fps_off:.1f} = {fps_on / fps_off:.3f}")
    for name, r, _, _ in rows[1:3]:
        print(f"decisions, {name}: {r['decisions']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
