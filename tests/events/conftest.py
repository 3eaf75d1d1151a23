"""What the event tests share: the two-stage pose task, the walking-clip daemon config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edged.catalog.catalog import load_catalog
from edged.catalog.resolve import resolve
from edged.config.settings import Settings
from edged.infer.registry import load_model
from edged.tasks.detection import DetectionTask
from edged.tasks.pose import PoseTask, TwoStagePoseTask
from tests.helpers.broker import RunningBroker
from tests.helpers.daemon import base_config, ssd_pipeline, walking_source

#: The walking clip's frame rate; the daemon reads it at that rate, not in real time.
WALKING_FPS = 10.0


def walking_config(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker, **pipeline: Any
) -> dict[str, Any]:
    """A daemon config: pipeline ``door`` detects people in the walking clip (source ``cam0``).

    ``pipeline`` adds or overrides keys of the ``door`` pipeline.
    """
    cfg = base_config(tmp_path, models_dir, broker)
    cfg["sources"] = [walking_source(media_dir, realtime=False, fps=WALKING_FPS)]
    cfg["pipelines"] = [
        {
            "name": "door",
            "source": "cam0",
            "task": "detection",
            "model": "ssd-mobilenet-v1-coco-int8",
            # 0.55, not 0.5: at 18.6 s SSD reports the woman twice (0.69 and a
            # 0.52 box inside hers), and the duplicate would take her track over.
            "threshold": 0.55,
            "labels": ["person"],
            "max_fps": WALKING_FPS,
            **pipeline,
        }
    ]
    return cfg


@pytest.fixture(scope="module")
def two_stage(models_dir: Path) -> TwoStagePoseTask:
    """SSD person detector + MoveNet, as a pose pipeline with ``detector`` builds it."""
    settings = Settings.model_validate(
        {
            "models": {"dir": models_dir},
            "sources": [{"name": "cam", "kind": "images", "uri": "/nonexistent"}],
            "pipelines": [
                {"name": "p", "source": "cam", "task": "pose", "model": "movenet-lightning-int8"},
                ssd_pipeline(name="d", source="cam"),
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
