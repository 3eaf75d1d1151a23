"""Audio real-time factor and the cost of video fan-out, with the real daemon in one process.

Run ``python -m bench.fanout`` from the repository root (models from
``EDGED_MODEL_MIRROR`` or ``../shared/models``, media from ``EDGED_MEDIA_DIR``
or ``../shared/media``). No broker is needed: results wait in the outbox.
Prints one table.

- *audio*: YAMNet over ``speech_jfk.wav`` (11 s) read as fast as possible, one
  inference thread; real-time factor = wall time / audio duration (target
  <= 0.01).
- *fan-out*: detection + pose over the walking clip (301 frames) from ONE
  capture feeding both pipelines, against TWO captures of the same file, one
  per pipeline. Both read as fast as possible; the figure is wall time and
  process CPU time until both pipelines processed every frame.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import daemon_config, in_process
from edged.catalog.catalog import load_catalog
from edged.catalog.fetch import pull
from edged.log import configure_logging

REPO = Path(__file__).resolve().parents[1]
CLIP_FRAMES = 301


def shared(var: str, sub: str) -> Path:
    return Path(os.environ.get(var, REPO.parent / "shared" / sub))


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(
    work: Path, sources: list[dict[str, Any]], pipelines: list[dict[str, Any]], want: dict[str, int]
) -> tuple[float, float]:
    """Start the daemon, wait until each pipeline processed ``want[name]`` inputs; (wall s, CPU s)."""
    app = in_process(
        daemon_config(
            work,
            work / "models",
            sources=sources,
            pipelines=pipelines,
            outbox={"path": str(work / "state" / f"outbox-{time.monotonic_ns()}.sqlite3")},
        ),
        connect_broker=False,
    )
    c0, t0 = cpu_s(), time.perf_counter()
    app.start()
    while (
        any(app.graph.pipelines[n].processed < k for n, k in want.items())
        and time.perf_counter() - t0 < 300
    ):
        time.sleep(0.002)
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    app.stop()
    return wall, cpu


def main() -> int:
    configure_logging("error")
    mirror, media = shared("EDGED_MODEL_MIRROR", "models"), shared("EDGED_MEDIA_DIR", "media")
    clip, speech = media / "person_walking_0-30s.mp4", media / "speech_jfk.wav"
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        catalog = load_catalog()
        for name in ("ssd-mobilenet-v1-coco-int8", "movenet-lightning-int8", "yamnet"):
            pull(catalog.get(name), work / "models", mirror=mirror)

        windows = (int(11.0 * 16000) - 15600) // 7680 + 1
        wall, cpu = run(
            work,
            [{"name": "mic", "kind": "wav", "uri": str(speech), "realtime": False}],
            [
                {
                    "name": "ears",
                    "source": "mic",
                    "task": "audio",
                    "model": "yamnet",
                    "threads": 1,
                    "publish": "all",
                    "threshold": 0.0,
                }
            ],
            {"ears": windows},
        )
        rows.append(
            (
                "audio: YAMNet, 11.0 s of speech, 1 thread",
                f"{wall:.3f} s wall, {cpu:.3f} s CPU",
                f"real-time factor {wall / 11.0:.4f} (target <= 0.01)",
            )
        )

        det = {
            "task": "detection",
            "model": "ssd-mobilenet-v1-coco-int8",
            "publish": "all",
            "max_fps": 240,
            "threads": 2,
            "track": False,
        }
        pose = {
            "task": "pose",
            "model": "movenet-lightning-int8",
            "publish": "all",
            "max_fps": 240,
            "threads": 2,
        }
        src = {"kind": "file", "uri": str(clip), "realtime": False, "fps": 240}
        want = {"det": CLIP_FRAMES, "pose": CLIP_FRAMES}
        one = run(
            work,
            [{"name": "cam", **src}],
            [{"name": "det", "source": "cam", **det}, {"name": "pose", "source": "cam", **pose}],
            want,
        )
        two = run(
            work,
            [{"name": "cam1", **src}, {"name": "cam2", **src}],
            [{"name": "det", "source": "cam1", **det}, {"name": "pose", "source": "cam2", **pose}],
            want,
        )
        for label, (w, c) in (
            ("fan-out: one capture, detection + pose", one),
            ("two captures, one per pipeline", two),
        ):
            rows.append(
                (
                    label,
                    f"{w:.2f} s wall, {c:.2f} s CPU",
                    f"{CLIP_FRAMES / w:.1f} frames/s per pipeline",
                )
            )
        rows.append(
            (
                "one capture vs two",
                f"wall {one[0] / two[0]:.2f}x, CPU {one[1] / two[1]:.2f}x",
                "below 1: sharing the capture saves work",
            )
        )
    print(f"{'run':44} {'time':28} figure")
    for name, t, fig in rows:
        print(f"{name:44} {t:28} {fig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
