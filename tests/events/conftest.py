"""Fixtures of the event tests: the two-stage pose task built from the catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.catalog.catalog import load_catalog
from edged.catalog.resolve import resolve
from edged.config.settings import Settings
from edged.infer.registry import load_model
from edged.tasks.detection import DetectionTask
from edged.tasks.pose import PoseTask, TwoStagePoseTask


@pytest.fixture(scope="module")
def two_stage(models_dir: Path) -> TwoStagePoseTask:
    """SSD person detector + MoveNet, as a pose pipeline with ``detector`` builds it."""
    settings = Settings.model_validate(
        {
            "models": {"dir": models_dir},
            "sources": [{"name": "cam", "kind": "images", "uri": "/nonexistent"}],
            "pipelines": [
                {"name": "p", "source": "cam", "task": "pose", "model": "movenet-lightning-int8"},
                {
                    "name": "d",
                    "source": "cam",
                    "task": "detection",
                    "model": "ssd-mobilenet-v1-coco-int8",
                },
            ],
        }
    )
    catalog = load_catalog()
    pose = resolve(settings.pipelines[0], settings, catalog)
    det = resolve(settings.pipelines[1], settings, catalog)
    return TwoStagePoseTask(
        DetectionTask(det, load_model(det.path, runtime=det.runtime)),
        PoseTask(pose, load_model(pose.path, runtime=pose.runtime)),
    )
