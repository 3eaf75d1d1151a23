"""The Runtime: the running graph, its lifecycle phases, swaps, and the emit gate."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

from edged.capture.slot import LatestSlot
from edged.config.settings import PipelineSettings, Settings
from edged.runtime.graph import Graph
from edged.runtime.runtime import Phase, Runtime
from edged.runtime.video import Pipeline
from edged.types import Frame

SETTINGS = Settings.model_validate(
    {
        "sources": [{"name": "cam0", "kind": "file", "uri": "/x.mp4"}],
        "pipelines": [
            {"name": "door", "source": "cam0", "task": "detection", "model": "m", "track": False}
        ],
    }
)


def empty_graph() -> Graph:
    return Graph(SETTINGS, {}, {}, {}, {})


def door() -> Pipeline:
    settings: PipelineSettings = SETTINGS.pipelines[0]
    task: Any = SimpleNamespace(kind="detections")  # never called: the pipeline is not started
    slot: LatestSlot[Frame] = LatestSlot()
    return Pipeline(settings, task, slot, lambda *_: None)


def test_phases_follow_start_reload_and_stop() -> None:
    """STARTING → RUNNING → RELOADING (for the reload) → RUNNING → STOPPING → STOPPED."""
    runtime = Runtime(empty_graph())
    seen = [runtime.phase]
    runtime.start()
    seen.append(runtime.phase)
    with runtime.reloading():
        seen.append(runtime.phase)
    seen.append(runtime.phase)
    runtime.stop(time.monotonic() + 1.0)
    seen.append(runtime.phase)
    runtime.close()
    seen.append(runtime.phase)
    assert seen == [
        Phase.STARTING,
        Phase.RUNNING,
        Phase.RELOADING,
        Phase.RUNNING,
        Phase.STOPPING,
        Phase.STOPPED,
    ]


def test_a_failed_reload_returns_to_running() -> None:
    """A reload that raises leaves the phase RUNNING, not stuck in RELOADING."""
    runtime = Runtime(empty_graph())
    runtime.start()
    try:
        with runtime.reloading():
            raise ValueError("bad file")
    except ValueError:
        pass
    assert runtime.phase is Phase.RUNNING


def test_swap_installs_the_new_graph_before_anyone_holding_it_sees_it() -> None:
    """A reader holding ``current`` waits for the swap to finish, then sees the new graph
    with ``install`` already done."""
    old, new = empty_graph(), empty_graph()
    runtime = Runtime(old)
    runtime.start()
    installed: list[Graph] = []
    inside = threading.Event()
    release = threading.Event()
    seen: list[tuple[Graph, bool]] = []

    def install(graph: Graph) -> None:
        inside.set()
        release.wait(5)
        installed.append(graph)

    swapper = threading.Thread(target=lambda: runtime.swap(new, install))
    swapper.start()
    assert inside.wait(5)

    def reader() -> None:
        with runtime.current() as graph:
            seen.append((graph, bool(installed)))

    reading = threading.Thread(target=reader)
    reading.start()
    time.sleep(0.05)
    assert not seen, "a reader got the graph in the middle of a swap"
    release.set()
    swapper.join(5)
    reading.join(5)
    assert seen == [(new, True)]
    assert runtime.graph is new


def test_set_enabled_waits_for_a_result_being_handed_over() -> None:
    """``enabled`` flips under the emit gate: not while an emit holds it."""
    runtime = Runtime(empty_graph())
    pipeline = door()
    done = threading.Event()
    with runtime.gate():
        flipper = threading.Thread(
            target=lambda: (runtime.set_enabled(pipeline, False, "by test"), done.set())
        )
        flipper.start()
        assert not done.wait(0.1)
        assert pipeline.enabled
    flipper.join(5)
    assert done.is_set()
    assert (pipeline.enabled, pipeline.reason) == (False, "by test")
    assert runtime.set_enabled(pipeline, False, "again") is False
    assert runtime.set_enabled(pipeline, True, "") is True
