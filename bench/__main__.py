"""Run every benchmark and print one table: ``python -m bench`` from the repository root.

Needs mosquitto (``apt-get install mosquitto``); models come from
``EDGED_MODEL_MIRROR`` or ``../shared/models``, media from ``EDGED_MEDIA_DIR``
or ``../shared/media``. Takes about four minutes (``--quick``: about two);
``--only`` runs a subset, ``--json FILE`` also writes the figures. Each row
is measured by one function that returns a :class:`~bench.common.Row`:

==========  ===========================================================================
pipeline    daemon vs bare loop fps per ``--threads`` value (``bench.pipeline.ratio``)
latency     capture → PUBACK p99 vs inference p99, clip in real time (``bench.pipeline``)
gate        motion gate on vs off on the walking clip, in real time (``bench.gate``)
audio       YAMNet real-time factor over a sound file (``bench.audio``)
outbox      accept throughput and backlog drain rate (``bench.outbox``, reused as is)
rss         memory of the daemon subprocess with three models running (``bench.daemon``)
startup     spawn to sd_notify READY=1 of that daemon, median of 5 (``bench.daemon``)
==========  ===========================================================================

The exit code is 1 when a measurement failed to run (its row says why), not
when a figure misses its target: benchmarks report, they do not gate.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import cv2

from bench import audio, daemon, gate, outbox, pipeline
from bench.common import Context, Row, pull_models, shared
from edged.demo.broker import LocalBroker
from edged.log import configure_logging

OUTBOX_TARGET = 5_000.0  # msgs/s, accept and drain alike


def outbox_accept(ctx: Context) -> Row:
    """Results accepted into the SQLite outbox per second, commits included."""
    n = 5_000 if ctx.quick else 50_000
    r = outbox.bench_accept(ctx.scratch("outbox-accept"), outbox.envelopes(n))
    return Row(
        key="outbox_accept",
        measurement=f"outbox accept, {r.messages:,} results (commit included)",
        figure=f"{r.rate:,.0f} msgs/s ({r.note})",
        target=f"≥ {OUTBOX_TARGET:,.0f} msgs/s",
        ok=r.rate >= OUTBOX_TARGET,
        values={"messages": r.messages, "seconds": round(r.seconds, 3), "rate": round(r.rate)},
    )


def outbox_drain(ctx: Context) -> Row:
    """A backlog sent to a local mosquitto at QoS 1, MQTT 5, until every PUBACK, per second."""
    n = 2_000 if ctx.quick else 20_000
    work = ctx.scratch("outbox-drain")
    with LocalBroker(workdir=work / "broker") as broker:
        r = outbox.bench_drain(work, broker, outbox.envelopes(n), "drain5")
    return Row(
        key="outbox_drain",
        measurement=f"outbox backlog drain, {n:,} results, MQTT 5 QoS 1",
        figure=f"{r.rate:,.0f} msgs/s ({r.messages:,} delivered)",
        target=f"≥ {OUTBOX_TARGET:,.0f} msgs/s",
        ok=r.rate >= OUTBOX_TARGET and r.messages == n,
        values={"messages": r.messages, "seconds": round(r.seconds, 3), "rate": round(r.rate)},
    )


#: ``--only`` names, in the order they run.
MEASUREMENTS: dict[str, Callable[[Context], list[Row]]] = {
    "pipeline": lambda ctx: [pipeline.ratio(ctx, t) for t in ctx.threads],
    "latency": lambda ctx: [pipeline.latency(ctx)],
    "gate": lambda ctx: [gate.motion_gate(ctx)],
    "audio": lambda ctx: [audio.realtime_factor(ctx)],
    "outbox": lambda ctx: [outbox_accept(ctx), outbox_drain(ctx)],
    "rss": lambda ctx: [daemon.footprint(ctx)],
    "startup": lambda ctx: [daemon.startup(ctx)],
}


def _version(*dists: str) -> str:
    for dist in dists:
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return f"{dists[0]} not installed"


def _mosquitto() -> str:
    try:
        out = subprocess.run(
            ["mosquitto", "-h"], capture_output=True, text=True, check=False, timeout=5
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "mosquitto ?"
    return out.splitlines()[0] if out else "mosquitto ?"


def machine() -> dict[str, str]:
    """The facts a figure depends on."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or platform.machine(),
    )
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable)",
        "system": f"Linux {platform.release()} {platform.machine()}",
        "python": f"Python {platform.python_version()}",
        "libraries": ", ".join(
            [
                _version("numpy"),
                _version("onnxruntime"),
                _version("ai-edge-litert", "tflite-runtime"),
                f"opencv {cv2.__version__}",
                _version("paho-mqtt"),
                f"SQLite {sqlite3.sqlite_version}",
            ]
        ),
        "broker": _mosquitto(),
    }


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def table(rows: list[Row]) -> str:
    """A Markdown table: measurement | figure | target | verdict."""
    head = ("measurement", "figure", "target", "verdict")
    cells = [head, *((r.measurement, r.figure, r.target or "—", r.verdict) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]

    def line(c: tuple[str, ...]) -> str:
        return "| " + " | ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), rule, *(line(c) for c in cells[1:])])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").split("\n", 1)[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer passes, smaller sizes")
    parser.add_argument(
        "--only",
        default="",
        metavar="NAME[,NAME]",
        help=f"run only these: {', '.join(MEASUREMENTS)}",
    )
    parser.add_argument(
        "--threads",
        default="1,2",
        metavar="N[,N]",
        help="inference threads of the pipeline/bare-loop rows, one row each (default 1,2); "
        "the latency run uses the largest",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    args = parser.parse_args(argv)
    args.names = [n.strip() for n in args.only.split(",") if n.strip()] or list(MEASUREMENTS)
    if unknown := [n for n in args.names if n not in MEASUREMENTS]:
        parser.error(f"unknown --only {', '.join(unknown)}; choose from {', '.join(MEASUREMENTS)}")
    try:
        args.thread_counts = tuple(int(t) for t in args.threads.split(","))
    except ValueError:
        parser.error(f"--threads takes integers separated by commas, not {args.threads!r}")
    if not args.thread_counts or min(args.thread_counts) < 1:
        parser.error("--threads: at least one count, each >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("error")
    facts = machine()
    started = load()
    rows: list[Row] = []
    took: dict[str, float] = {}
    failed = False
    with tempfile.TemporaryDirectory(prefix="edged-bench-") as tmp:
        work = Path(tmp)
        ctx = Context(
            work=work,
            models=pull_models(work / "models"),
            media=shared("EDGED_MEDIA_DIR", "media"),
            quick=args.quick,
            threads=args.thread_counts,
        )
        for i, name in enumerate(args.names, 1):
            print(f"[{i}/{len(args.names)}] {name} …", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            try:
                rows += MEASUREMENTS[name](ctx)
            # One measurement that cannot run must not cost the figures of the others.
            except Exception as exc:  # noqa: BLE001
                failed = True
                rows.append(Row(key=name, measurement=name, figure=f"error: {exc!r}", ok=False))
            took[name] = round(time.perf_counter() - t0, 1)
    print(f"edged benchmarks{' (--quick)' if args.quick else ''}")
    for key, value in facts.items():
        print(f"{key:>9}: {value}")
    print(f"{'load':>9}: {started} at start, {load()} at end (1, 5, 15 min)")
    print()
    print(table(rows))
    if args.json is not None:
        doc = {
            "machine": {**facts, "load_start": started, "load_end": load()},
            "options": {"quick": args.quick, "only": args.names, "threads": args.thread_counts},
            "seconds": took,
            "rows": [{**asdict(r), "verdict": r.verdict} for r in rows],
        }
        args.json.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
