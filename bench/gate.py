"""Motion gate savings on the walking clip: frames skipped, CPU saved, people still seen.

Two runs of the real daemon (``App``) in this process, the same in all but
``motion_gate``: SSD-MobileNet int8 (2 threads, ``publish = all``, no tracker)
over ``person_walking_0-30s.mp4`` played in real time at its own 10 fps, as a
fixed camera delivers it. The clip shows an empty room for its first ~6 s,
a woman from ~7 s to ~19 s, the empty room again and a man from ~23 s.

Real time matters here: the gate's background model and keep-alive run on
frame time, so a file read as fast as possible would squeeze its 10 s time
constants into a fraction of the clip. No broker is needed: results wait in
the outbox, and a tap in front of it records which frames had a person.

CPU is the whole process's (``getrusage``) from start to the end of the clip,
so the decoding both runs share cancels out of the difference.

Run with ``python -m bench --only gate``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bench.common import DETECTOR, Context, Row, cpu_s, daemon_config, in_process
from edged.publish.payloads import DetectionResult, ResultEnvelope
from edged.publish.results import Sink
from edged.runtime.video import Pipeline

#: Frames per second of the walking clip.
CLIP_FPS = 10.0


@dataclass
class PersonTap:
    """A sink in front of the outbox that notes the frames whose result has a person."""

    inner: Sink
    frames: list[int] = field(default_factory=list)

    def accept(self, envelope: ResultEnvelope) -> None:
        result = envelope.result
        if isinstance(result, DetectionResult) and any(
            d.label == "person" for d in result.detections
        ):
            self.frames.append(result.frame.id)
        self.inner.accept(envelope)


@dataclass(frozen=True, slots=True)
class GateRun:
    """One real-time run over the clip."""

    seen: int  # frames the pipeline took from its slot
    inferred: int  # frames that reached the model
    skipped: int  # frames the gate let pass without inference
    cpu_s: float  # process CPU seconds over the run
    infer_s: float  # sum of the model's invoke times, seconds
    person_frames: list[int]  # frame ids whose result had a person


def run_clip(ctx: Context, *, gate: bool, seconds: float | None) -> GateRun:
    """The daemon over the clip in real time, with or without the motion gate."""
    work = ctx.scratch("gate-on" if gate else "gate-off")
    app = in_process(
        daemon_config(
            work,
            ctx.models,
            sources=[
                {"name": "cam", "kind": "file", "uri": str(ctx.clip), "realtime": True, "fps": 30}
            ],
            pipelines=[
                {
                    "name": "door",
                    "source": "cam",
                    "task": "detection",
                    "model": DETECTOR,
                    "publish": "all",
                    "max_fps": 30,
                    "threads": 2,
                    "track": False,
                    "motion_gate": gate,
                }
            ],
        ),
        connect_broker=False,
    )
    tap = PersonTap(app.results.sink)
    app.results.sink = tap
    pipeline = app.graph.pipelines["door"]
    assert isinstance(pipeline, Pipeline)
    c0, t0 = cpu_s(), time.perf_counter()
    app.start()
    pipeline.finished.wait(seconds if seconds is not None else 120.0)
    cpu = cpu_s() - c0
    stats = pipeline.stats()
    infer_s = sum(pipeline._infer_ms) / 1e3
    app.stop(timeout=3.0)
    assert time.perf_counter() - t0 < 200
    return GateRun(
        seen=stats.processed + stats.gated,
        inferred=stats.processed,
        skipped=stats.gated,
        cpu_s=cpu,
        infer_s=infer_s,
        person_frames=tap.frames,
    )


def motion_gate(ctx: Context) -> Row:
    """Fraction of frames the gate skips and the CPU it saves; whether people are still seen."""
    seconds = 12.0 if ctx.quick else None  # quick: the empty room and the first arrival
    off = run_clip(ctx, gate=False, seconds=seconds)
    on = run_clip(ctx, gate=True, seconds=seconds)
    skipped = on.skipped / on.seen if on.seen else 0.0
    saved = off.cpu_s - on.cpu_s
    first = (
        f"first at {on.person_frames[0] / CLIP_FPS:.1f} s vs {off.person_frames[0] / CLIP_FPS:.1f} s"
        if on.person_frames and off.person_frames
        else ""
    )
    people = (
        f"person in {len(on.person_frames)} vs {len(off.person_frames)} frames, {first}"
        if on.person_frames
        else f"NO person detected (gate off: {len(off.person_frames)} frames)"
    )
    span = "first 12 s" if seconds is not None else "30 s"
    return Row(
        key="motion_gate",
        measurement=f"motion gate on the walking clip ({span}, real time)",
        figure=(
            f"skips {skipped:.0%} ({on.skipped}/{on.seen}); CPU {off.cpu_s:.1f} → "
            f"{on.cpu_s:.1f} s (saves {saved:.1f} s, {saved / off.cpu_s:.0%}); {people}"
        ),
        values={
            "frames": on.seen,
            "skipped": on.skipped,
            "skipped_fraction": round(skipped, 4),
            "cpu_s_gate_off": round(off.cpu_s, 3),
            "cpu_s_gate_on": round(on.cpu_s, 3),
            "cpu_s_saved": round(saved, 3),
            "infer_s_gate_off": round(off.infer_s, 3),
            "infer_s_gate_on": round(on.infer_s, 3),
            "person_frames_gate_off": len(off.person_frames),
            "person_frames_gate_on": len(on.person_frames),
            "person_seen_with_gate": bool(on.person_frames),
        },
    )
