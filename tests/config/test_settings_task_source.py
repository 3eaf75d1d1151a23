"""Settings refuse a pipeline whose task cannot read its source's kind, naming both keys."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from edged.config.settings import TASK_SOURCE_KINDS, SourceKind, load_settings
from edged.errors import ConfigError

VIDEO = ("picamera2", "v4l2", "stream", "file", "images")
AUDIO = ("microphone", "wav")


def config(kind: str, task: str, **pipeline: Any) -> dict[str, Any]:
    return {
        "device_id": "dev",
        "sources": [{"name": "src", "kind": kind, "uri": "/dev/null"}],
        "pipelines": [
            {"name": "p", "source": "src", "task": task, "model": "m", **pipeline},
        ],
    }


def test_table_covers_every_source_kind_and_task() -> None:
    """Each source kind is readable by some task, and each task has its kinds."""
    assert {k for kinds in TASK_SOURCE_KINDS.values() for k in kinds} == set(get_args(SourceKind))
    assert set(TASK_SOURCE_KINDS) == {"detection", "pose", "audio"}


@pytest.mark.parametrize(
    ("task", "kind"),
    [(t, k) for t in ("detection", "pose") for k in VIDEO] + [("audio", k) for k in AUDIO],
)
def test_fitting_pairs_load(task: str, kind: str) -> None:
    """Vision tasks on video kinds and the audio task on audio kinds are accepted."""
    s = load_settings(None, config(kind, task))
    assert s.pipelines[0].task == task


@pytest.mark.parametrize(
    ("task", "kind"),
    [(t, k) for t in ("detection", "pose") for k in AUDIO] + [("audio", k) for k in VIDEO],
)
def test_misfit_pairs_are_refused_at_the_task_key(task: str, kind: str) -> None:
    """A task on a source of the other medium is an error at pipelines[i].task naming the source."""
    with pytest.raises(ConfigError) as info:
        load_settings(None, config(kind, task))
    assert len(info.value.problems) == 1
    key, msg = info.value.problems[0]
    assert key == "pipelines[0].task"
    assert "pipelines[0].source 'src'" in msg
    assert repr(kind) in msg
    assert ("audio sources" if task == "audio" else "video sources") in msg


def test_every_misfit_pipeline_is_listed() -> None:
    """Two misfit pipelines give two problems, each with its own index."""
    cfg = config("wav", "detection")
    cfg["sources"].append({"name": "cam", "kind": "file", "uri": "/x.mp4"})
    cfg["pipelines"] += [
        {"name": "ok", "source": "cam", "task": "pose", "model": "m"},
        {"name": "bad", "source": "cam", "task": "audio", "model": "m"},
    ]
    with pytest.raises(ConfigError) as info:
        load_settings(None, cfg)
    assert [k for k, _ in info.value.problems] == ["pipelines[0].task", "pipelines[2].task"]


def test_undefined_source_is_still_reported_as_such() -> None:
    """A pipeline naming no defined source gets the reference error, not a kind error."""
    cfg = config("wav", "audio")
    cfg["pipelines"][0]["source"] = "nope"
    with pytest.raises(ConfigError, match="'nope', which is not defined"):
        load_settings(None, cfg)
