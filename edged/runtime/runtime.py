"""The running graph, the lock that keeps it steady, the emit gate, and the lifecycle phase.

The daemon's other parts (the control plane, housekeeping, the rollout)
work on *whatever graph runs now*, while a reload may swap it for a new one.
They reach it only through a :class:`Runtime`:

- :meth:`Runtime.current` holds the graph steady for a block (no swap
  happens inside it) and yields it;
- :meth:`Runtime.gate` is held while a result is handed over and while a
  command flips a pipeline's ``enabled``: once a ``disable`` is answered, no
  result of that pipeline follows;
- :meth:`Runtime.swap` replaces the graph (a reload), :meth:`Runtime.start`,
  :meth:`Runtime.stop` and :meth:`Runtime.close` run it;
- :attr:`Runtime.phase` says where in its life the daemon is
  (:class:`Phase`).
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass

import structlog

from edged.runtime.audio import AudioPipeline
from edged.runtime.graph import Graph
from edged.runtime.video import Pipeline

log = structlog.get_logger(__name__)

#: Longest a swap waits for the old graph's pipelines to finish, seconds.
SWAP_STOP_S = 5.0


class Phase(enum.Enum):
    """Where the daemon's processing is in its life."""

    #: Built, not started yet.
    STARTING = "starting"
    #: Sources and pipelines run.
    RUNNING = "running"
    #: A reload is checking a new configuration or swapping the graph; the old one runs meanwhile.
    RELOADING = "reloading"
    #: Capture stopped, in-flight inputs finish.
    STOPPING = "stopping"
    #: Stopped, models closed.
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """What a reload did: whether the new graph runs, else every problem that stopped it."""

    applied: bool
    problems: tuple[str, ...] = ()
    #: Changed sections that keep their old values until a restart.
    restart_needed: tuple[str, ...] = ()


#: Asks for a reload; the future resolves once it was tried (SIGHUP and the ``reload`` command).
RequestReload = Callable[[], Future[ReloadOutcome]]


class Runtime:
    """The graph that runs now; see the module docstring."""

    def __init__(self, graph: Graph) -> None:
        self._graph = graph
        # Re-entrant: a command holding the graph may publish ``state``, which reads it.
        self._lock = threading.RLock()
        self._gate = threading.Lock()
        self._phase = Phase.STARTING

    @property
    def phase(self) -> Phase:
        """The current lifecycle phase."""
        return self._phase

    def _enter(self, phase: Phase) -> None:
        if phase is not self._phase:
            log.debug("runtime.phase_changed", phase=phase.value, previous=self._phase.value)
            self._phase = phase

    @property
    def graph(self) -> Graph:
        """The graph that runs now; hold :meth:`current` to keep it from being swapped."""
        return self._graph

    @property
    def lock(self) -> threading.RLock:
        """The lock :meth:`current` holds (for code that must hold it across calls)."""
        return self._lock

    @property
    def emit_gate(self) -> threading.Lock:
        """The lock :meth:`gate` holds (handed to the offload worker, which publishes too)."""
        return self._gate

    @contextmanager
    def current(self) -> Iterator[Graph]:
        """The running graph, held steady: no reload swaps it until the block ends."""
        with self._lock:
            yield self._graph

    @contextmanager
    def gate(self) -> Iterator[None]:
        """Held while a result is handed over, and while ``enabled`` flips."""
        with self._gate:
            yield

    def pipeline(self, name: str) -> Pipeline | AudioPipeline | None:
        """The running graph's pipeline ``name``, if there is one."""
        with self._lock:
            return self._graph.pipelines.get(name)

    def set_enabled(self, pipeline: Pipeline | AudioPipeline, enabled: bool, reason: str) -> bool:
        """Enable or disable ``pipeline`` under the emit gate; True when that changed it.

        A result computed before the flip cannot be published after it: the
        app's emit checks ``enabled`` under the same gate.
        """
        with self._gate:
            changed = pipeline.enabled != enabled
            pipeline.enabled = enabled
            pipeline.reason = reason
        return changed

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Start the graph (pipelines first, then sources)."""
        with self._lock:
            self._graph.start()
            self._enter(Phase.RUNNING)

    @contextmanager
    def reloading(self) -> Iterator[None]:
        """The phase is RELOADING for the block, RUNNING again after it (unless stopping)."""
        self._enter(Phase.RELOADING)
        try:
            yield
        finally:
            if self._phase is Phase.RELOADING:
                self._enter(Phase.RUNNING)

    def swap(self, new: Graph, install: Callable[[Graph], None]) -> Graph:
        """Stop the running graph, close its models, start ``new`` in its place; the old graph.

        ``install`` runs under the lock between the two (the app registers
        the new graph's models there), so nobody holding :meth:`current`
        sees a graph that is not fully in place.
        """
        with self._lock:
            old = self._graph
            old.stop(time.monotonic() + SWAP_STOP_S)
            old.close_models()
            self._graph = new
            install(new)
            new.start()
        return old

    def stop(self, deadline: float) -> None:
        """Stop capture, let the pipelines finish their current input (by ``deadline``)."""
        self._enter(Phase.STOPPING)
        with self._lock:
            self._graph.stop(deadline)

    def close(self) -> None:
        """Close the graph's models; the runtime is stopped for good."""
        with self._lock:
            self._graph.close_models()
        self._enter(Phase.STOPPED)
