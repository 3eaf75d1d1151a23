"""Audio sources: sound files and microphones deliver mono chunks to bounded queues.

The microphone is real PortAudio capture from ALSA's ``file`` PCM playing the
sample recordings (tests/helpers/alsa.py), run in a subprocess because
PortAudio reads the ALSA configuration once per process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from edged.capture.audio import AudioSource, ChunkQueue
from edged.capture.audio_factory import open_audio_source
from edged.capture.microphone import MicrophoneSource, parse_device
from edged.capture.wavfile import WavSource
from edged.config.settings import SourceSettings
from edged.errors import SourceError
from edged.preprocess.audio import downmix
from edged.types import AudioChunk
from tests.capture.support import wait_for
from tests.helpers.alsa import virtual_microphone
from tests.helpers.mic_capture import record

MakeSource = Callable[..., AudioSource]


def _settings(**overrides: Any) -> SourceSettings:
    values: dict[str, Any] = {
        "name": "mic0",
        "kind": "wav",
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.2,
    }
    return SourceSettings(**(values | overrides))


@pytest.fixture
def make_source() -> Iterator[MakeSource]:
    """Build (not start) audio sources; every one is stopped at teardown."""
    made: list[AudioSource] = []

    def make(**overrides: Any) -> AudioSource:
        source = open_audio_source(_settings(**overrides))
        made.append(source)
        return source

    yield make
    for source in made:
        source.stop(timeout=5.0)


def _drain(queue: ChunkQueue, timeout: float = 10.0) -> list[AudioChunk]:
    chunks: list[AudioChunk] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (chunk := queue.get(timeout=0.5)) is not None:
        chunks.append(chunk)
    return chunks


def _tone(path: Path, seconds: float, rate: int = 16000, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    data = np.repeat((0.3 * np.sin(2 * np.pi * 440 * t))[:, None], channels, axis=1)
    soundfile.write(path, data, rate, subtype="PCM_16")
    pcm: np.ndarray = soundfile.read(path, dtype="int16", always_2d=True)[0]
    return downmix(pcm)


class TestFactory:
    """Kinds map to classes; video kinds are refused with a hint."""

    def test_kinds(self) -> None:
        assert isinstance(open_audio_source(_settings(uri="/x.wav")), WavSource)
        assert isinstance(open_audio_source(_settings(kind="microphone")), MicrophoneSource)

    def test_a_video_kind_is_refused(self) -> None:
        with pytest.raises(SourceError, match="not an audio source"):
            open_audio_source(_settings(kind="file", uri="/x.mp4"))

    @pytest.mark.parametrize(("uri", "device"), [("", None), ("3", 3), ("hw:1,0", "hw:1,0")])
    def test_microphone_uri_is_a_name_or_an_index(self, uri: str, device: object) -> None:
        assert parse_device(uri) == device


class TestWavSource:
    """A sound file becomes mono float32 chunks at its own rate."""

    def test_stereo_44k_file_arrives_whole_as_mono(
        self, make_source: MakeSource, media_dir: Path
    ) -> None:
        path = media_dir / "music_jazz_guitar.wav"
        source = make_source(uri=str(path), realtime=False)
        queue = source.subscribe()
        source.start()
        chunks = _drain(queue)
        assert source.ended.wait(5.0)
        want = downmix(soundfile.read(path, dtype="float32", always_2d=True)[0])
        assert {c.rate for c in chunks} == {44100}
        assert all(c.samples.dtype == np.float32 and c.samples.ndim == 1 for c in chunks)
        assert np.array_equal(np.concatenate([c.samples for c in chunks]), want)
        status = source.status
        assert (status.state, status.chunks, status.overruns) == ("ended", len(chunks), 0)
        assert status.seconds == pytest.approx(len(want) / 44100, abs=1e-3)

    def test_timestamps_follow_the_files_sample_clock(
        self, make_source: MakeSource, tmp_path: Path
    ) -> None:
        source = make_source(uri=str(tmp_path / "t.wav"), realtime=False)
        _tone(tmp_path / "t.wav", 1.0)
        queue = source.subscribe()
        source.start()
        chunks = _drain(queue)
        steps = np.diff([c.ts for c in chunks])
        assert steps == pytest.approx([0.1] * (len(chunks) - 1), abs=1e-6)

    def test_realtime_plays_at_the_files_rate(
        self, make_source: MakeSource, tmp_path: Path
    ) -> None:
        _tone(tmp_path / "t.wav", 0.6)
        source = make_source(uri=str(tmp_path / "t.wav"))
        queue = source.subscribe()
        started = time.monotonic()
        source.start()
        _drain(queue)
        assert 0.55 <= time.monotonic() - started < 1.5

    def test_a_full_live_queue_drops_for_that_subscriber_only(
        self, make_source: MakeSource, tmp_path: Path
    ) -> None:
        """Capture goes on; the slow subscriber's losses are counted and marked as a gap."""
        want = _tone(tmp_path / "t.wav", 0.8)  # 8 chunks in real time
        source = make_source(uri=str(tmp_path / "t.wav"))
        slow, fast = source.subscribe(max_chunks=2), source.subscribe()
        source.start()
        got = _drain(fast)
        assert np.array_equal(np.concatenate([c.samples for c in got]), want)
        assert slow.overruns == 6
        assert source.status.overruns == 6
        assert len(_drain(slow)) == 2

    def test_the_chunk_after_an_overrun_is_marked_discontinuous(self) -> None:
        queue = ChunkQueue(1)
        chunk = AudioChunk(
            ts=0.0, mono=0.0, source="s", samples=np.zeros(4, np.float32), rate=16000
        )
        assert queue.put(chunk)
        assert not queue.put(chunk)  # full: dropped and counted
        seen = []
        for _ in range(2):
            assert queue.get(0) is chunk
            seen.append(queue.discontinuous)
            queue.put(chunk)
        assert seen == [False, True]
        assert queue.overruns == 1

    def test_read_as_fast_as_possible_waits_for_room_instead_of_dropping(
        self, make_source: MakeSource, media_dir: Path
    ) -> None:
        source = make_source(uri=str(media_dir / "dog_bark_charlie.wav"), realtime=False)
        queue = source.subscribe(max_chunks=1)
        assert not queue.live
        source.start()
        time.sleep(0.2)  # the reader must wait here, not drop
        chunks = _drain(queue)
        assert (
            sum(len(c.samples) for c in chunks)
            == soundfile.info(media_dir / "dog_bark_charlie.wav").frames
        )
        assert queue.overruns == 0

    def test_loop_starts_over_and_marks_the_seam(
        self, make_source: MakeSource, tmp_path: Path
    ) -> None:
        _tone(tmp_path / "t.wav", 0.2)
        source = make_source(uri=str(tmp_path / "t.wav"), realtime=False, loop=True)
        queue = source.subscribe(max_chunks=1)
        source.start()
        flags = []
        for _ in range(5):
            assert queue.get(timeout=2.0) is not None
            flags.append(queue.discontinuous)
        assert flags == [False, False, True, False, True]

    def test_a_missing_file_is_down_with_the_path_and_retried(
        self, make_source: MakeSource, tmp_path: Path
    ) -> None:
        source = make_source(uri=str(tmp_path / "gone.wav"))
        queue = source.subscribe()
        source.start()
        assert wait_for(lambda: source.status.state == "down", 2.0)
        assert "sound file not found" in source.status.reason
        assert str(tmp_path / "gone.wav") in source.status.reason
        _tone(tmp_path / "gone.wav", 0.3)  # it appears: the next retry plays it
        assert len(_drain(queue)) == 3
        assert source.status.reconnects == 1

    def test_stop_is_prompt_and_closes_the_queues(
        self, make_source: MakeSource, media_dir: Path
    ) -> None:
        source = make_source(uri=str(media_dir / "speech_jfk.wav"))
        queue = source.subscribe()
        source.start()
        assert queue.get(timeout=2.0) is not None
        started = time.monotonic()
        assert source.stop(timeout=2.0)
        assert time.monotonic() - started < 0.5
        assert queue.closed
        assert source.status.state == "stopped"


class TestMicrophone:
    """Real PortAudio capture from the virtual ALSA microphone."""

    @pytest.mark.parametrize("clip", ["typing.wav", "speech_jfk.wav"])
    def test_the_recording_arrives_bit_exact_as_mono(
        self, clip: str, media_dir: Path, tmp_path: Path
    ) -> None:
        mic = virtual_microphone(media_dir / clip, tmp_path)
        rec = record(mic, tmp_path / "out.npz")
        want = downmix(soundfile.read(media_dir / clip, dtype="int16", always_2d=True)[0])
        assert np.array_equal(rec.samples[: len(want)], want)
        assert {c.rate for c in rec.chunks} == {mic.rate}
        assert {len(c.samples) for c in rec.chunks} == {mic.rate // 10}
        # No assertion on overruns: the clockless virtual device runs ahead
        # of the reader, so chunks *past* the clip may find the queue full.
        # Those are the newest chunks; the clip itself arrived whole (above).
        assert rec.status["stopped"] is True
        assert float(rec.status["stop_s"]) < 0.5  # type: ignore[arg-type]

    def test_an_empty_uri_records_from_the_default_device(
        self, media_dir: Path, tmp_path: Path
    ) -> None:
        mic = virtual_microphone(media_dir / "dog_bark_charlie.wav", tmp_path)
        rec = record(mic, tmp_path / "out.npz", device="")
        want = downmix(
            soundfile.read(media_dir / "dog_bark_charlie.wav", dtype="int16", always_2d=True)[0]
        )
        assert np.array_equal(rec.samples[: len(want)], want)

    def test_an_unknown_device_is_down_with_the_devices_listed(
        self, make_source: MakeSource
    ) -> None:
        """No ALSA config in this process: no input devices, and the reason says so."""
        source = make_source(kind="microphone", uri="no-such-mic")
        source.subscribe()
        source.start()
        assert wait_for(lambda: source.status.state == "down", 3.0)
        reason = source.status.reason
        assert "cannot open microphone 'no-such-mic' at 16000 Hz, 1 channel(s)" in reason
        assert "Input devices:" in reason
        started = time.monotonic()
        assert source.stop(timeout=2.0)
        assert time.monotonic() - started < 0.5
