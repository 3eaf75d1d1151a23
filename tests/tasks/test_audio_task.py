"""The audio task on the real YAMNet: input and output checks, one window → top-k classes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile

from edged.catalog.resolve import ResolvedModel
from edged.config.settings import PipelineSettings
from edged.decode.audio import ScoreSmoother
from edged.errors import ModelError
from edged.infer.registry import load_model
from edged.tasks import TASKS, build_task
from edged.tasks.audio import WINDOW, AudioTask, check_labels
from tests.helpers.yamnet import resolve_yamnet, yamnet_task


@pytest.fixture(scope="module")
def resolved(models_dir: Path) -> ResolvedModel:
    return resolve_yamnet(models_dir)


@pytest.fixture(scope="module")
def task(models_dir: Path) -> AudioTask:
    return yamnet_task(models_dir)


@pytest.fixture(scope="module")
def speech(media_dir: Path) -> np.ndarray:
    """One window of JFK's speech (1.0 s to 1.975 s)."""
    samples: np.ndarray = soundfile.read(media_dir / "speech_jfk.wav", dtype="float32")[0]
    return samples[16000 : 16000 + WINDOW]


class TestChecks:
    """A model that does not fit the task is refused at build time with its shapes."""

    def test_registered_as_the_audio_task(self, resolved: ResolvedModel) -> None:
        assert TASKS["audio"] == "edged.tasks.audio:AudioTask"
        assert resolved.labels[0] == "Speech"
        assert len(resolved.labels) == 521

    def test_a_vision_model_is_refused_with_its_input_shape(
        self, resolved: ResolvedModel, models_dir: Path
    ) -> None:
        movenet = load_model(models_dir / "movenet_singlepose_lightning_int8.tflite")
        with pytest.raises(
            ModelError, match=r"\[1, 192, 192, 3\] uint8, but the audio task feeds \[15600\]"
        ):
            AudioTask(resolved, movenet)

    def test_an_unknown_decoder_is_refused(self, resolved: ResolvedModel, task: AudioTask) -> None:
        with pytest.raises(
            ModelError, match="unknown audio decoder 'yolox' \\(known: softmax, yamnet\\)"
        ):
            AudioTask(dataclasses.replace(resolved, decoder="yolox"), task._model)

    def test_labels_that_do_not_match_the_output_are_refused(
        self, resolved: ResolvedModel, task: AudioTask
    ) -> None:
        short = dataclasses.replace(resolved, labels=resolved.labels[:10])
        with pytest.raises(ModelError, match="521 classes, but 10 labels"):
            AudioTask(short, task._model)

    def test_a_misspelt_allow_list_label_is_refused_with_a_suggestion(
        self, task: AudioTask
    ) -> None:
        check_labels(task.labels, ["Dog", "Speech"])
        with pytest.raises(
            ModelError, match="'Dgo' is not a class of this model \\(did you mean 'Dog'"
        ):
            check_labels(task.labels, ["Speech", "Dgo"])

    def test_a_window_of_the_wrong_length_is_refused(self, task: AudioTask) -> None:
        with pytest.raises(ValueError, match="15600 samples"):
            task(np.zeros(16000, dtype=np.float32), 5)


class TestClassify:
    """One window of real audio gives sensible top-k classes and timing."""

    def test_speech_window_is_speech(self, task: AudioTask, speech: np.ndarray) -> None:
        result = task(speech, 3)
        assert result.classes[0].label == "Speech"
        assert result.classes[0].class_id == 0
        assert result.top_score == result.classes[0].score > 0.5
        assert len(result.classes) == 3
        assert result.scores.shape == (521,)
        assert result.timing.infer > 0
        assert result.timing.pre >= 0
        assert result.timing.post >= 0

    def test_build_task_finds_it_through_the_registry(
        self, resolved: ResolvedModel, task: AudioTask, speech: np.ndarray
    ) -> None:
        pipeline = PipelineSettings.model_validate(
            {"name": "sound", "source": "mic0", "task": "audio", "model": "yamnet"}
        )
        built: object = build_task(pipeline, resolved, task._model)
        assert isinstance(built, AudioTask)
        assert built(speech, 1).classes[0].label == "Speech"

    def test_allow_list_reports_only_allowed_labels(
        self, task: AudioTask, speech: np.ndarray
    ) -> None:
        result = task(speech, 5, labels_allow={"Dog", "Music"})
        assert {c.label for c in result.classes} == {"Dog", "Music"}

    def test_smoother_averages_with_the_previous_windows(
        self, task: AudioTask, speech: np.ndarray
    ) -> None:
        silence = np.zeros(WINDOW, dtype=np.float32)
        raw_speech, raw_silence = task(speech, 1).scores, task(silence, 1).scores
        smoother = ScoreSmoother(2)
        task(speech, 1, smoother=smoother)
        smoothed = task(silence, 1, smoother=smoother).scores
        np.testing.assert_allclose(smoothed, (raw_speech + raw_silence) / 2, atol=1e-6)

    def test_results_are_deterministic(self, task: AudioTask, speech: np.ndarray) -> None:
        assert np.array_equal(task(speech, 5).scores, task(speech, 5).scores)
