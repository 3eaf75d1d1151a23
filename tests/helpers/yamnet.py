"""The real YAMNet model as an audio task, resolved through the catalog like the daemon does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edged.catalog.catalog import load_catalog
from edged.catalog.resolve import ResolvedModel, resolve
from edged.config.settings import Settings
from edged.infer.registry import load_model
from edged.tasks.audio import AudioTask


def resolve_yamnet(models_dir: Path) -> ResolvedModel:
    """The catalog's ``yamnet`` entry, sha256-verified in ``models_dir``, with its 521 labels."""
    settings = Settings.model_validate(
        {
            "models": {"dir": models_dir},
            "sources": [{"name": "mic0", "kind": "microphone"}],
            "pipelines": [{"name": "sound", "source": "mic0", "task": "audio", "model": "yamnet"}],
        }
    )
    return resolve(settings.pipelines[0], settings, load_catalog())


def yamnet_task(models_dir: Path, threads: int = 1) -> AudioTask:
    """YAMNet loaded (and warmed up) once with ``threads`` inference threads."""
    resolved = resolve_yamnet(models_dir)
    return AudioTask(resolved, load_model(resolved.path, runtime=resolved.runtime, threads=threads))


def top_labels(mean_scores: np.ndarray, labels: tuple[str, ...], k: int) -> list[str]:
    """Labels of the ``k`` best clip-level scores, best first."""
    return [labels[i] for i in np.argsort(-mean_scores)[:k]]
