"""The operator's side of the daemon: commands in over MQTT, metrics out over HTTP.

- :mod:`edged.control.commands`: the closed set of command payloads (strict models).
- :mod:`edged.control.router`: subscribes to ``<prefix>/<dev>/cmd/+``, queues, replies.
- :mod:`edged.control.controller`: what each command does to the running graph.
- :mod:`edged.control.metrics`: the optional Prometheus endpoint.
- :mod:`edged.control.wiring`: what all of it works on (the runtime and a few collaborators).

:class:`ControlPlane` is the App's one hook into all of it. See
``docs/commands.md`` for the command protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edged.control.controller import Controller
from edged.control.router import CommandRouter
from edged.control.wiring import Wiring

if TYPE_CHECKING:
    from edged.control.metrics import MetricsServer

__all__ = ["CommandRouter", "ControlPlane", "Controller", "Wiring"]


class ControlPlane:
    """Commands and metrics of one daemon; started before MQTT connects, stopped before the graph."""

    def __init__(self, wiring: Wiring) -> None:
        self._wiring = wiring
        self.controller = Controller(wiring)
        # Read per request from the settings in force, which a reload replaces.
        self.router = CommandRouter(
            wiring.mqtt, self.controller.execute, allowed=lambda: wiring.settings().commands.allow
        )
        self.metrics: MetricsServer | None = None

    def start(self) -> None:
        """Start taking commands, and serve metrics when enabled."""
        self.router.start()
        if self._wiring.settings().metrics.enabled:
            # Imported here so that prometheus-client is needed only when
            # metrics are on (pre-flight reports it missing before this runs).
            from edged.control.metrics import MetricsServer  # noqa: PLC0415

            self.metrics = MetricsServer(self._wiring, self.router.counters)
            self.metrics.start()

    def stop(self) -> None:
        """Stop taking commands and serving metrics."""
        self.router.stop()
        if self.metrics is not None:
            self.metrics.stop()
