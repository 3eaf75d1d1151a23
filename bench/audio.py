"""Audio real-time factor: YAMNet over a sound file, through the real daemon in this process.

The file is ``music_jazz_guitar.wav`` (11.5 s, 44.1 kHz stereo), so downmix
and resampling to YAMNet's 16 kHz are inside the figure, as for a USB
microphone. It is read as fast as the pipeline takes it (``realtime =
false``, nothing skipped), one inference thread, every window published to
the outbox (no broker needed). Real-time factor = processing seconds / audio
seconds, where processing is the wall time from the daemon's start until the
pipeline has finished the file; the pipeline's own figure (seconds it was
busy resampling and classifying / audio seconds) is reported beside it.

Run with ``python -m bench --only audio``.
"""

from __future__ import annotations

import time

import soundfile

from bench.common import AUDIO, EARS, Context, Row, daemon_config, in_process
from edged.runtime.audio import AudioPipeline

SOUND = "music_jazz_guitar.wav"


def realtime_factor(ctx: Context) -> Row:
    """YAMNet's processing seconds per audio second over :data:`SOUND` (target < 1)."""
    path = ctx.media / SOUND
    info = soundfile.info(str(path))
    audio_s = float(info.duration)
    work = ctx.scratch("audio")
    app = in_process(
        daemon_config(
            work,
            ctx.models,
            sources=[{"name": "mic", "kind": "wav", "uri": str(path), "realtime": False}],
            pipelines=[EARS],
        ),
        connect_broker=False,
    )
    pipeline = app.graph.pipelines["ears"]
    assert isinstance(pipeline, AudioPipeline)
    t0 = time.perf_counter()
    app.start()
    finished = pipeline.finished.wait(120)
    wall = time.perf_counter() - t0
    stats = pipeline.stats()
    app.stop(timeout=3.0)
    assert finished, "the audio pipeline did not finish the file within 120 s"
    rtf = wall / audio_s
    return Row(
        key="audio_rtf",
        measurement=(
            f"audio real-time factor, {AUDIO}, {audio_s:.1f} s of "
            f"{info.samplerate / 1000:g} kHz {'stereo' if info.channels == 2 else 'audio'}"
        ),
        figure=(
            f"{rtf:.3f} ({1 / rtf:.0f}x real time); pipeline busy {stats.realtime_factor:.4f}, "
            f"{stats.processed} windows, infer p50 {stats.infer_p50_ms:.1f} ms"
        ),
        target="< 1",
        ok=rtf < 1.0 and stats.processed > 0 and stats.skipped == 0,
        values={
            "file": SOUND,
            "audio_s": round(audio_s, 3),
            "processing_s": round(wall, 4),
            "realtime_factor": round(rtf, 5),
            "pipeline_busy_realtime_factor": stats.realtime_factor,
            "windows": stats.processed,
            "skipped": stats.skipped,
            "infer_p50_ms": stats.infer_p50_ms,
        },
    )
