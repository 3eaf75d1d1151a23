"""Sound events on the real YAMNet from real recordings, through the daemon and a real mosquitto.

Hand-checked ground truth (YAMNet windows of 0.975 s every 0.48 s, group
``dog`` = Dog / Bark / Howl / Yip / Bow-wow, threshold 0.5):

* ``dog_bark_chihuahua.wav`` (6.70 s): the group scores 0.74-0.97 in every
  window from 0.00 s to 4.80 s and 0.04 in the last (5.28 s, silence), so one
  event from 0.00 s to 4.80 + 0.975 = 5.78 s.
* ``dog_bark_charlie.wav`` (4.45 s): 0.74-0.85 from 0.00 s to 1.44 s, silence
  at 1.92 and 2.40 s (-70 and -58 dBFS), barks again at 2.88 and 3.36 s. The
  0.96 s pause is shorter than ``hangover_s`` = 1.5, so one event from 0.00 s
  to 3.36 + 0.975 = 4.34 s.
* ``speech_jfk.wav`` (11 s): the group never exceeds 0.02: no event.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import wave
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from edged.capture.audio_factory import open_audio_source
from edged.config.settings import PipelineSettings, SourceSettings, load_settings
from edged.errors import EX_CONFIG, ConfigError, ModelError
from edged.events.sound import SampleRing, dbfs, write_wav_clip
from edged.publish.payloads import EventResult
from edged.runtime.audio import AudioPipeline
from edged.tasks.audio import AudioTask
from edged.types import EventNote
from tests.helpers.broker import RunningBroker, matching
from tests.helpers.daemon import Daemon, base_config, write_config
from tests.helpers.yamnet import yamnet_task

DEV = "edged/testdev"
DOG = ["Dog", "Bark", "Howl", "Yip", "Bow-wow"]
CLIPS = {"chihuahua": "dog_bark_chihuahua.wav", "charlie": "dog_bark_charlie.wav"}
#: clip → (start, end) of the one dog event, seconds from the file's start (see above).
EXPECTED = {"chihuahua": (0.0, 5.775), "charlie": (0.0, 4.335)}
LENGTH_S = {"chihuahua": 6.70, "charlie": 4.45, "speech": 11.0}


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.mark.broker
def test_each_bark_recording_gives_one_dog_event_and_speech_none(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """Chihuahua and Charlie: exactly one `dog` start/end each at the hand-checked times,
    the end carrying a WAV clip with pre-roll; speech: no event."""
    cfg = base_config(tmp_path, models_dir, broker)
    clips = tmp_path / "clips"
    files = {**CLIPS, "speech": "speech_jfk.wav"}
    cfg["sources"] = [
        {"name": name, "kind": "wav", "uri": media_dir / f, "realtime": False}
        for name, f in files.items()
    ]
    cfg["pipelines"] = [
        {
            "name": name,
            "source": name,
            "task": "audio",
            "model": "yamnet",
            "threads": 1,
            # Every window is published: the earliest window start is the file's t = 0.
            "publish": "all",
            "threshold": 0.0,
            "top_k": 1,
            "sound_events": {
                "groups": {"dog": DOG},
                "threshold": 0.5,
                "min_s": 0.4,
                "hangover_s": 1.5,
                "clip_dir": clips,
                "pre_roll_s": 1.0,
            },
        }
        for name in files
    ]
    sub = broker.subscriber(f"{DEV}/#")
    with Daemon(write_config(tmp_path / "edged.toml", cfg)) as daemon:
        sub.wait_for(matching(f"{DEV}/availability", b"online"), timeout=30)
        for name in CLIPS:
            sub.wait_for(
                lambda m, n=name: (
                    m.topic == f"{DEV}/{n}/events" and json.loads(m.payload)["event"] == "end"
                ),
                timeout=60,
            )
        # The speech file is the longest: wait for its last window (11 s at a 0.48 s hop).
        sub.wait_for(lambda m: m.topic == f"{DEV}/speech/audio" and _count(sub) >= 21, timeout=60)
        rc, _ = daemon.stop()
        assert rc == 0, daemon.output

    for name, (start, end) in EXPECTED.items():
        t0 = min(_ts(a["window"]["start"]) for a in _payloads(sub, f"{DEV}/{name}/audio"))
        events = [EventResult.model_validate(e) for e in _payloads(sub, f"{DEV}/{name}/events")]
        print(name, [(e.event, _ts(e.start) - t0, e.end and _ts(e.end) - t0) for e in events])
        assert [e.event for e in events] == ["start", "end"], events
        first, last = events
        assert first.event_id == last.event_id
        assert (first.type, first.label, last.type, last.label) == ("sound", "dog") * 2
        assert _ts(first.start) - t0 == pytest.approx(start, abs=0.05)
        assert last.end is not None
        assert _ts(last.end) - t0 == pytest.approx(end, abs=0.05)
        assert _ts(last.end) - t0 <= LENGTH_S[name] + 1.5  # before the clip end + hangover
        assert last.top_score >= 0.85
        assert "Dog" in last.data["labels"]  # type: ignore[operator]
        assert last.media is not None
        assert last.media.clip is not None
        with wave.open(last.media.clip) as clip:
            assert (clip.getnchannels(), clip.getframerate(), clip.getsampwidth()) == (1, 16000, 2)
            seconds = clip.getnframes() / 16000
        # No pre-roll exists before t = 0: the clip is the event itself.
        assert seconds == pytest.approx(end - start, abs=0.05)
        assert last.media.clip_duration_s == pytest.approx(seconds, abs=0.01)
    assert _payloads(sub, f"{DEV}/speech/events") == []


def _payloads(sub: Any, topic: str) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in sub.messages(topic)]


def _count(sub: Any) -> int:
    return len(sub.messages(f"{DEV}/speech/audio"))


# -- the audio pipeline alone (no broker) -----------------------------------------


@pytest.fixture(scope="module")
def task(models_dir: Path) -> AudioTask:
    return yamnet_task(models_dir, threads=1)


def _run(task: AudioTask, path: Path, **events: Any) -> tuple[AudioPipeline, list[EventNote]]:
    source = open_audio_source(
        SourceSettings(name="mic0", kind="wav", uri=str(path), realtime=False)
    )
    settings = PipelineSettings.model_validate(
        {
            "name": "ears",
            "source": "mic0",
            "task": "audio",
            "model": "yamnet",
            "threshold": 1.0,
            "sound_events": {"groups": {"dog": DOG}, **events},
        }
    )
    notes: list[EventNote] = []
    pipeline = AudioPipeline(
        settings, task, source.subscribe(), lambda *_: None, lambda _p, _s, n: notes.append(n)
    )
    pipeline.start()
    source.start()
    try:
        assert pipeline.finished.wait(20.0), pipeline.stats()
    finally:
        source.stop()
        pipeline.stop()
    return pipeline, notes


def test_the_loudness_gate_skips_quiet_windows_and_counts_them_below(
    task: AudioTask, media_dir: Path
) -> None:
    """Charlie's two silent windows (-70, -58 dBFS) never reach the model at a -50 dBFS gate,
    are counted, and the event still spans the pause."""
    pipeline, notes = _run(task, media_dir / CLIPS["charlie"], gate_dbfs=-50, hangover_s=1.5)
    stats = pipeline.stats()
    assert stats.gated == 2
    assert stats.processed == 8  # 4.45 s at a 0.48 s hop; gated windows are handled too
    assert [n.change.phase for n in notes] == ["start", "end"]


def test_a_short_hangover_splits_charlie_in_two(task: AudioTask, media_dir: Path) -> None:
    """The hangover is what keeps a 0.96 s pause inside one event: at 0.3 s it ends there."""
    _, notes = _run(task, media_dir / CLIPS["charlie"], hangover_s=0.3, min_s=0.0)
    assert [n.change.phase for n in notes] == ["start", "end", "start", "end"]
    assert notes[0].change.event_id != notes[2].change.event_id


def test_updates_at_most_every_update_s(task: AudioTask, media_dir: Path) -> None:
    """update_s = 1: the chihuahua's 5.8 s event gets updates at least 1 s apart."""
    _, notes = _run(task, media_dir / CLIPS["chihuahua"], update_s=1.0, min_s=0.0)
    phases = [n.change.phase for n in notes]
    assert phases[0] == "start"
    assert phases[-1] == "end"
    updates = [n.change.ts for n in notes if n.change.phase == "update"]
    assert len(updates) >= 3
    assert all(b - a >= 1.0 - 1e-6 for a, b in itertools.pairwise(updates))


def test_a_misspelt_group_label_is_refused(task: AudioTask) -> None:
    settings = PipelineSettings.model_validate(
        {
            "name": "ears",
            "source": "mic0",
            "task": "audio",
            "model": "yamnet",
            "sound_events": {"groups": {"dog": ["dog"]}},
        }
    )
    source = open_audio_source(SourceSettings(name="mic0", kind="microphone"))
    with pytest.raises(ModelError, match=r"'dog' is not a class of this model.*'Dog'"):
        AudioPipeline(settings, task, source.subscribe(), lambda *_: None)


def test_dbfs_of_full_scale_and_silence() -> None:
    t = np.arange(16000, dtype=np.float32) / 16000
    assert dbfs(np.sin(2 * np.pi * 440 * t).astype(np.float32)) == pytest.approx(-3.01, abs=0.01)
    assert dbfs(np.zeros(100, np.float32)) == float("-inf")


def test_the_ring_keeps_the_last_samples_by_stream_index() -> None:
    ring = SampleRing(capacity=10)
    for i in range(5):
        ring.push(np.arange(i * 4, i * 4 + 4, dtype=np.float32))
    assert ring.end == 20
    assert ring.slice(0, 20)[0] >= 8  # older samples are gone
    np.testing.assert_array_equal(ring.slice(12, 15), [12, 13, 14])


def test_the_clip_directory_stays_within_its_bound(tmp_path: Path) -> None:
    """Each 1 s clip is 32 KB; at a 0.07 MiB bound only the two newest stay."""
    samples = np.zeros(16000, np.float32)
    for i in range(4):
        write_wav_clip(tmp_path, f"c{i}.wav", samples, 16000, max_mb=0.07)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c2.wav", "c3.wav"]


def test_check_names_a_misspelt_group_label_by_key_path(
    tmp_path: Path, models_dir: Path, media_dir: Path
) -> None:
    """`edged check` exits 78 at pipelines[0].sound_events.groups.dog[1], suggesting 'Bark'."""
    cfg = base_config(tmp_path, models_dir, None)
    cfg["sources"] = [{"name": "mic0", "kind": "wav", "uri": media_dir / CLIPS["charlie"]}]
    cfg["pipelines"] = [
        {
            "name": "ears",
            "source": "mic0",
            "task": "audio",
            "model": "yamnet",
            "sound_events": {"groups": {"dog": ["Dog", "bark"]}},
        }
    ]
    config = write_config(tmp_path / "c.toml", cfg)
    result = subprocess.run(
        [sys.executable, "-m", "edged", "check", "--offline", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == EX_CONFIG, result.stderr
    assert "pipelines[0].sound_events.groups.dog[1]: 'bark' is not a label" in result.stderr
    assert "'Bark'" in result.stderr
    assert "groups.dog[0]" not in result.stderr


@pytest.mark.parametrize(
    ("groups", "problem"),
    [
        ({"do/g": ["Dog"]}, "group name 'do/g'"),
        ({"dog": []}, "group 'dog' lists no labels"),
    ],
)
def test_group_names_are_topic_segments_and_groups_are_not_empty(
    groups: dict[str, list[str]], problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            None,
            {
                "sources": [{"name": "mic0", "kind": "microphone"}],
                "pipelines": [
                    {
                        "name": "ears",
                        "source": "mic0",
                        "task": "audio",
                        "model": "yamnet",
                        "sound_events": {"groups": groups},
                    }
                ],
            },
        )
    assert problem in str(info.value)
    assert "pipelines[0].sound_events.groups" in str(info.value)


def test_a_failing_event_publisher_is_counted_and_the_pipeline_goes_on(
    task: AudioTask, media_dir: Path
) -> None:
    """emit_note raising (e.g. a broken outbox) costs the event message, not the thread."""
    source = open_audio_source(
        SourceSettings(name="mic0", kind="wav", uri=str(media_dir / CLIPS["chihuahua"])).model_copy(
            update={"realtime": False}
        )
    )
    settings = PipelineSettings.model_validate(
        {
            "name": "ears",
            "source": "mic0",
            "task": "audio",
            "model": "yamnet",
            "threshold": 1.0,
            "sound_events": {"groups": {"dog": DOG}, "min_s": 0.0},
        }
    )

    def broken(_pipeline: str, _source: str, _note: EventNote) -> None:
        raise OSError(28, "No space left on device")

    pipeline = AudioPipeline(settings, task, source.subscribe(), lambda *_: None, broken)
    pipeline.start()
    source.start()
    try:
        assert pipeline.finished.wait(20.0), pipeline.stats()
    finally:
        source.stop()
        pipeline.stop()
    stats = pipeline.stats()
    assert stats.failures["events"] == 2  # the start, and the end at the end of the stream
    assert stats.processed == 11  # every window but the one whose start failed
    assert stats.status == "ended"


def test_the_clip_holds_the_pre_roll_before_the_event(
    task: AudioTask, media_dir: Path, tmp_path: Path
) -> None:
    """3 s of the JFK speech, then the chihuahua: the event starts at a window between 2 and
    3 s, and its clip begins pre_roll_s (1 s) before that, in the speech."""
    source = np.concatenate(
        [
            _read_pcm(media_dir / "speech_jfk.wav")[: 3 * 16000],
            _read_pcm(media_dir / CLIPS["chihuahua"]),
        ]
    )
    joined = tmp_path / "speech_then_bark.wav"
    with wave.open(str(joined), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(source.tobytes())
    _, notes = _run(task, joined, min_s=0.0, clip_dir=str(tmp_path / "clips"), pre_roll_s=1.0)
    assert [n.change.phase for n in notes] == ["start", "end"]
    end = notes[1]
    assert end.clip is not None
    assert end.change.end is not None
    with wave.open(end.clip) as clip:
        samples = np.frombuffer(clip.readframes(clip.getnframes()), "<i2").astype(np.int32)
    length = end.change.end - end.change.start
    assert len(samples) / 16000 == pytest.approx(length + 1.0, abs=0.01)
    # Which window started the event: the one whose preceding second the clip begins with.
    hop = 7680
    starts = [
        k
        for k in range(3, len(source) // hop)
        if np.abs(samples[:16000] - source[k * hop - 16000 : k * hop]).max() <= 2
    ]
    assert len(starts) == 1, starts
    (k,) = starts
    print("event starts at", k * hop / 16000, "s; clip", len(samples) / 16000, "s")
    assert 2.0 <= k * hop / 16000 <= 3.0  # the window reaching into the barking
    assert k * hop - 16000 < 3 * 16000  # so the pre-roll is (mostly) the speech


def _read_pcm(path: Path) -> npt.NDArray[np.int16]:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2")
