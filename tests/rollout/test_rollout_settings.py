"""Rollout keys are checked when the configuration is read, with the key path in the error."""

from __future__ import annotations

from typing import Any

import pytest

from edged.config.settings import Settings


def config(**pipeline: Any) -> dict[str, Any]:
    return {
        "sources": [{"name": "cam", "kind": "images", "uri": "/srv/img"}],
        "pipelines": [
            {"name": "door", "source": "cam", "task": "detection", "model": "m", **pipeline}
        ],
    }


def test_a_malformed_requirement_is_refused_with_the_expected_form() -> None:
    """require = ['recall(person) about 0.9'] names METRIC OP NUMBER."""
    with pytest.raises(ValueError, match="METRIC OP NUMBER"):
        Settings.model_validate(config(require=["recall(person) about 0.9"]))


def test_right_size_without_a_limit_is_refused() -> None:
    """right_size needs something to hold: a budget, a thermal limit or a drop bound."""
    with pytest.raises(ValueError, match="right_size needs a limit"):
        Settings.model_validate(config(right_size=True))
    ok = Settings.model_validate(config(right_size=True, max_temp_c=80))
    assert ok.pipelines[0].right_size


def test_right_size_is_refused_on_audio_pipelines() -> None:
    """Audio pipelines have no swap_task: refused at check time, not at run time."""
    cfg = config(right_size=True, max_latency_ms=100, task="audio")
    with pytest.raises(ValueError, match="right_size is for detection"):
        Settings.model_validate(cfg)
