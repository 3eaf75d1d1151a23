"""The audio pipeline on the real YAMNet, fed by the file source and by the virtual microphone."""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import soundfile

from edged.capture.audio import AudioSource, ChunkQueue
from edged.capture.audio_factory import open_audio_source
from edged.config.settings import PipelineSettings, SourceSettings
from edged.decode.audio import ScoreSmoother
from edged.errors import ModelError
from edged.runtime.audio import AudioPipeline
from edged.tasks.audio import WINDOW, AudioTask, AudioTaskResult
from edged.types import AudioChunk
from tests.helpers.alsa import virtual_microphone
from tests.helpers.mic_capture import record
from tests.helpers.yamnet import top_labels, yamnet_task

#: clip → (labels of which one must be among the clip's top n, n), as MODELS.md reports.
EXPECTED = {
    "speech_jfk.wav": ({"Speech"}, 1),
    "dog_bark_chihuahua.wav": ({"Dog", "Animal"}, 3),
    "dog_bark_charlie.wav": ({"Dog", "Animal"}, 3),
    "music_jazz_guitar.wav": ({"Music"}, 1),
    "typing.wav": ({"Typing"}, 1),
}


@dataclass
class Collected:
    """Everything a pipeline emitted: (window start ts, duration, result)."""

    items: list[tuple[float, float, AudioTaskResult]] = field(default_factory=list)

    def __call__(
        self, pipeline: AudioPipeline, ts: float, duration_s: float, result: AudioTaskResult
    ) -> None:
        self.items.append((ts, duration_s, result))

    def mean_scores(self) -> npt.NDArray[np.float32]:
        mean: npt.NDArray[np.float32] = np.mean([r.scores for _, _, r in self.items], axis=0)
        return mean


@pytest.fixture(scope="module")
def task(models_dir: Path) -> AudioTask:
    return yamnet_task(models_dir, threads=1)


def _pipeline_settings(**overrides: Any) -> PipelineSettings:
    values: dict[str, Any] = {
        "name": "sound",
        "source": "mic0",
        "task": "audio",
        "model": "yamnet",
        "threshold": 0.0,
    }
    return PipelineSettings(**(values | overrides))


def _windows(samples_at_16k: int, hop: int) -> int:
    return 0 if samples_at_16k < WINDOW else (samples_at_16k - WINDOW) // hop + 1


@pytest.fixture
def running() -> Iterator[list[AudioSource | AudioPipeline]]:
    """Sources and pipelines to stop at teardown, whatever the test did."""
    things: list[AudioSource | AudioPipeline] = []
    yield things
    for thing in things:
        thing.stop(timeout=5.0)


def _run_file(
    path: Path,
    task: Any,
    running: list[AudioSource | AudioPipeline],
    realtime: bool = False,
    **settings: Any,
) -> tuple[AudioPipeline, AudioSource, Collected]:
    source = open_audio_source(
        SourceSettings(name="mic0", kind="wav", uri=str(path), realtime=realtime)
    )
    collected = Collected()
    pipeline = AudioPipeline(_pipeline_settings(**settings), task, source.subscribe(), collected)
    running += [pipeline, source]
    pipeline.start()
    source.start()
    assert pipeline.finished.wait(9.0), pipeline.stats()
    return pipeline, source, collected


class TestAcceptance:
    """Clip-level classes (mean of window scores) match MODELS.md, by file and by microphone."""

    @pytest.mark.parametrize("clip", sorted(EXPECTED))
    def test_file_source(
        self, clip: str, task: AudioTask, media_dir: Path, running: list[Any]
    ) -> None:
        pipeline, _, collected = _run_file(media_dir / clip, task, running)
        wanted, n = EXPECTED[clip]
        assert wanted & set(top_labels(collected.mean_scores(), task.labels, n))
        info = soundfile.info(media_dir / clip)
        resampled = round(info.frames * 16000 / info.samplerate)
        assert pipeline.processed == _windows(resampled, pipeline.hop) == len(collected.items)
        assert (pipeline.skipped, pipeline.errors, pipeline.status) == (0, 0, "ended")

    @pytest.mark.parametrize("clip", sorted(EXPECTED))
    def test_microphone_source(
        self, clip: str, task: AudioTask, media_dir: Path, tmp_path: Path, running: list[Any]
    ) -> None:
        """The chunks the real microphone source captured are replayed into the pipeline."""
        mic = virtual_microphone(media_dir / clip, tmp_path)
        recording = record(mic, tmp_path / "mic.npz")
        # The clip, without the silence the virtual device plays after it.
        queue, have = ChunkQueue(len(recording.chunks), live=False), 0
        for chunk in recording.chunks:
            keep = min(len(chunk.samples), mic.frames - have)
            if keep > 0:
                queue.put(
                    AudioChunk(chunk.ts, chunk.mono, chunk.source, chunk.samples[:keep], chunk.rate)
                )
            have += keep
        queue.close()
        collected = Collected()
        pipeline = AudioPipeline(_pipeline_settings(), task, queue, collected)
        running.append(pipeline)
        pipeline.start()
        assert pipeline.finished.wait(9.0)
        wanted, n = EXPECTED[clip]
        assert wanted & set(top_labels(collected.mean_scores(), task.labels, n))
        assert pipeline.processed == _windows(round(mic.frames * 16000 / mic.rate), pipeline.hop)


class TestWindows:
    """Window timing, threshold, allow-list, smoothing and gaps."""

    def test_windows_are_stamped_from_the_source_clock(
        self, task: AudioTask, media_dir: Path, running: list[Any]
    ) -> None:
        _, _, collected = _run_file(media_dir / "dog_bark_charlie.wav", task, running)
        starts = [ts for ts, _, _ in collected.items]
        assert np.diff(starts) == pytest.approx([0.48] * (len(starts) - 1), abs=1e-6)
        assert {d for _, d, _ in collected.items} == {0.975}

    def test_only_windows_reaching_the_threshold_are_emitted(
        self, task: AudioTask, media_dir: Path, running: list[Any]
    ) -> None:
        pipeline, _, collected = _run_file(
            media_dir / "dog_bark_charlie.wav", task, running, threshold=0.8
        )
        assert 0 < pipeline.emitted == len(collected.items) < pipeline.processed
        assert all(r.top_score >= 0.8 for _, _, r in collected.items)

    def test_allow_list_and_top_k(
        self, task: AudioTask, media_dir: Path, running: list[Any]
    ) -> None:
        _, _, collected = _run_file(
            media_dir / "dog_bark_chihuahua.wav",
            task,
            running,
            labels=["Dog", "Speech", "Music"],
            top_k=2,
        )
        assert all(len(r.classes) == 2 for _, _, r in collected.items)
        assert {c.label for _, _, r in collected.items for c in r.classes} <= {
            "Dog",
            "Speech",
            "Music",
        }

    def test_a_misspelt_label_is_refused_at_build_time(self, task: AudioTask) -> None:
        with pytest.raises(ModelError, match="did you mean 'Speech'"):
            AudioPipeline(_pipeline_settings(labels=["Speach"]), task, ChunkQueue(4), Collected())

    def test_smoothing_is_the_mean_of_the_last_n_windows(
        self, task: AudioTask, media_dir: Path, running: list[Any]
    ) -> None:
        clip = media_dir / "dog_bark_charlie.wav"
        raw = [r.scores for _, _, r in _run_file(clip, task, running)[2].items]
        smooth = [r.scores for _, _, r in _run_file(clip, task, running, smoothing=3)[2].items]
        for i in range(len(raw)):
            np.testing.assert_allclose(
                smooth[i], np.mean(raw[max(0, i - 2) : i + 1], axis=0), atol=1e-6
            )

    def test_a_gap_restarts_the_windows_and_their_clock(
        self, task: AudioTask, media_dir: Path
    ) -> None:
        """Audio from before and after lost chunks is never spliced into one window."""
        samples = soundfile.read(media_dir / "speech_jfk.wav", dtype="float32")[0][:16000]
        queue = ChunkQueue(8, live=False)
        queue.put(AudioChunk(100.0, 1.0, "mic0", samples, 16000))
        queue.mark_gap()
        queue.put(AudioChunk(200.0, 2.0, "mic0", samples, 16000))
        queue.close()
        collected = Collected()
        pipeline = AudioPipeline(_pipeline_settings(), task, queue, collected)
        pipeline.start()
        assert pipeline.finished.wait(5.0)
        assert [ts for ts, _, _ in collected.items] == [100.0, 200.0]  # one window per second


class SlowTask:
    """The real task, made slower than real time by sleeping after each window."""

    def __init__(self, task: AudioTask, delay_s: float) -> None:
        self.task, self.delay_s = task, delay_s
        self.rate, self.window, self.labels = task.rate, task.window, task.labels

    def __call__(
        self,
        window: npt.NDArray[np.float32],
        top_k: int,
        labels_allow: Collection[str] = (),
        smoother: ScoreSmoother | None = None,
    ) -> AudioTaskResult:
        result = self.task(window, top_k, labels_allow, smoother)
        time.sleep(self.delay_s)
        return result


class TestBacklog:
    """When inference falls behind, the oldest windows are skipped and counted; capture goes on."""

    def test_slow_inference_skips_and_counts_windows(
        self, task: AudioTask, media_dir: Path, tmp_path: Path, running: list[Any]
    ) -> None:
        clip = tmp_path / "speech_3s.wav"
        soundfile.write(
            clip, soundfile.read(media_dir / "speech_jfk.wav", dtype="int16")[0][:48000], 16000
        )
        started = time.monotonic()
        pipeline, source, _ = _run_file(
            clip, SlowTask(task, 0.4), running, realtime=True, hop_s=0.2
        )
        produced = _windows(48000, pipeline.hop)  # 11 windows, 5 per second of audio
        status, stats = source.status, pipeline.stats()
        assert status.chunks == 30  # every chunk was captured and delivered, on time:
        assert source.ended.is_set()
        assert status.overruns == 0
        assert stats.skipped > 0
        assert stats.processed + stats.skipped == produced
        assert pipeline.max_backlog == 5
        # After the source ended, at most the backlog (5 windows x 0.4 s) remained.
        assert time.monotonic() - started < 3.0 + 5 * 0.4 + 1.0

    def test_a_fast_pipeline_never_skips_live_audio(
        self, task: AudioTask, media_dir: Path, running: list[Any]
    ) -> None:
        pipeline, _, _ = _run_file(media_dir / "dog_bark_charlie.wav", task, running, realtime=True)
        stats = pipeline.stats()
        assert (stats.skipped, stats.overruns, stats.errors) == (0, 0, 0)
        assert stats.processed == _windows(71200, pipeline.hop)
        assert stats.latency_p95_ms < 500  # ~ one chunk of buffering plus one inference
        assert 0 < stats.realtime_factor < 1


class TestLifecycle:
    """Start, stop and stats."""

    def test_stop_is_prompt_and_reported(
        self, task: AudioTask, media_dir: Path, running: list[Any]
    ) -> None:
        source = open_audio_source(
            SourceSettings(name="mic0", kind="wav", uri=str(media_dir / "speech_jfk.wav"))
        )
        pipeline = AudioPipeline(_pipeline_settings(), task, source.subscribe(), Collected())
        running += [source, pipeline]
        pipeline.start()
        source.start()
        deadline = time.monotonic() + 5
        while pipeline.processed < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        progress = pipeline.last_progress
        started = time.monotonic()
        pipeline.stop(timeout=2.0)
        assert time.monotonic() - started < 0.5
        stats = pipeline.stats()
        assert (stats.name, stats.status) == ("sound", "stopped")
        assert stats.processed >= 2
        assert 0 < stats.infer_p50_ms <= stats.infer_p95_ms
        assert progress <= time.monotonic()
        assert not any(t.name == "audio-sound" for t in threading.enumerate())
