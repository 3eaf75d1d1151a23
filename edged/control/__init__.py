"""The operator's side of the daemon: commands in over MQTT, metrics out over HTTP.

- :mod:`edged.control.commands`: the closed set of command payloads (strict models).
- :mod:`edged.control.router`: subscribes to ``<prefix>/<dev>/cmd/+``, queues, replies.
- :mod:`edged.control.controller`: what each command does to the running App.
- :mod:`edged.control.metrics`: the optional Prometheus endpoint.

:class:`ControlPlane` is the App's one hook into all of it. See
``docs/commands.md`` for the command protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edged.control.controller import Controller
from edged.control.router import CommandRouter

if TYPE_CHECKING:
    from edged.control.metrics import MetricsServer
    from edged.daemon.app import App

__all__ = ["CommandRouter", "ControlPlane", "Controller"]


class ControlPlane:
    """Commands and metrics of one App; started once the graph runs, stopped before it."""

    def __init__(self, app: App) -> None:
        self._app = app
        self.controller = Controller(app)
        # Read per request from the App's settings, which a reload replaces.
        self.router = CommandRouter(
            app.mqtt, self.controller.execute, allowed=lambda: app.settings.commands.allow
        )
        self.metrics: MetricsServer | None = None

    def start(self) -> None:
        """Start taking commands, and serve metrics when enabled."""
        self.router.start()
        if self._app.settings.metrics.enabled:
            # Imported here so that prometheus-client is needed only when
            # metrics are on (pre-flight reports it missing before this runs).
            from edged.control.metrics import MetricsServer  # noqa: PLC0415

            self.metrics = MetricsServer(self._app, self.router.counters)
            self.metrics.start()

    def stop(self) -> None:
        """Stop taking commands and serving metrics."""
        self.router.stop()
        if self.metrics is not None:
            self.metrics.stop()
