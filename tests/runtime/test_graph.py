"""Graph wiring: how each pipeline's latest-frame slot is fed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edged.catalog.catalog import load_catalog
from edged.config.settings import load_settings
from edged.daemon.check import preflight
from edged.runtime.graph import Graph
from edged.runtime.video import Pipeline
from edged.sched import usable_cores
from tests.helpers.daemon import base_config, ssd_pipeline, walking_source, write_config


def pipeline(name: str, threads: int) -> dict[str, Any]:
    return ssd_pipeline(name=name, source="clip", threads=threads)


@pytest.mark.skipif(usable_cores() < 2, reason="needs a core left over for a 1-thread model")
def test_a_model_on_every_core_reads_on_demand_and_a_smaller_one_reads_ahead(
    tmp_path: Path, models_dir: Path, media_dir: Path
) -> None:
    """threads >= usable cores → on-demand slot; fewer threads → the source decodes ahead."""
    cfg = base_config(tmp_path, models_dir, None)
    cfg["sources"] = [walking_source(media_dir, name="clip")]
    cfg["pipelines"] = [pipeline("wide", usable_cores()), pipeline("narrow", 1)]
    path = tmp_path / "edged.toml"
    write_config(path, cfg)
    settings = load_settings(path)
    checked = preflight(settings, load_catalog(settings.models.catalog), connect_broker=False)
    assert not checked.problems, checked.problems
    graph = Graph.build(settings, checked, lambda *a: None, lambda *a: None, lambda *a: None)
    wide, narrow = graph.pipelines["wide"], graph.pipelines["narrow"]
    assert isinstance(wide, Pipeline)
    assert isinstance(narrow, Pipeline)
    assert wide._slot.on_demand
    assert not narrow._slot.on_demand
