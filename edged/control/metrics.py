"""Prometheus metrics over HTTP (``[metrics] enabled = true``; needs prometheus-client).

Values are read from the running daemon at scrape time by a custom
collector, not mirrored into prometheus-client counters as they change: the
pipelines, sources and outbox already keep every number (they feed the
``stats`` topic too), so a second copy would only cost work per frame and
could drift. Pipeline counters start again from zero after a reload (new
pipeline objects), which Prometheus treats as an ordinary counter reset.

The endpoint is prometheus-client's own HTTP server: a small threaded WSGI
server from the standard library that serves only the exposition (plain and
OpenMetrics formats, gzip), so the daemon needs no web framework, and it is
bound to loopback by default because metrics carry no authentication.

Imported only when metrics are enabled (:class:`edged.control.ControlPlane`),
so the daemon runs without prometheus-client installed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from edged import __version__
from edged.control.router import CommandCounters

if TYPE_CHECKING:
    from edged.control.wiring import Wiring

log = structlog.get_logger(__name__)


def _gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


class DaemonCollector:
    """Collects the daemon's metrics from its runtime and collaborators at every scrape."""

    def __init__(self, wiring: Wiring, commands: CommandCounters) -> None:
        self._wiring = wiring
        self._mqtt_client = wiring.mqtt
        self._commands = commands

    def collect(self) -> Iterator[Metric]:
        """One metric family per measured quantity (the prometheus-client Collector protocol)."""
        wiring = self._wiring
        info = _gauge(
            "edged_info", "Constant 1, labelled with version and device.", ("version", "device")
        )
        info.add_metric([__version__, wiring.settings().device_id], 1)
        yield info
        uptime = _gauge("edged_uptime_seconds", "Seconds since the daemon started.")
        uptime.add_metric([], time.monotonic() - wiring.started_mono)
        yield uptime
        yield from self._mqtt()
        yield from self._pipelines()
        yield from self._outbox()
        commands = _counter("edged_commands", "MQTT commands by outcome.", ("outcome",))
        for outcome in ("ok", "error", "busy", "not_allowed"):
            commands.add_metric([outcome], getattr(self._commands, outcome))
        yield commands

    def _mqtt(self) -> Iterator[Metric]:
        connected = _gauge("edged_mqtt_connected", "1 while an MQTT session is established.")
        connected.add_metric([], 1.0 if self._mqtt_client.connected else 0.0)
        pending = _gauge("edged_mqtt_pending", "Messages handed to MQTT, not yet acknowledged.")
        pending.add_metric([], self._mqtt_client.pending)
        disconnects = _counter("edged_mqtt_disconnects", "Sessions ended by the broker or network.")
        disconnects.add_metric([], self._mqtt_client.disconnects)
        dropped = _counter(
            "edged_mqtt_unpublishable",
            "Messages dropped: the broker ended every session they were in.",
        )
        dropped.add_metric([], self._mqtt_client.dropped)
        takeovers = _counter(
            "edged_mqtt_takeovers", "Sessions taken over by a client with the same client id."
        )
        takeovers.add_metric([], self._mqtt_client.takeovers)
        return iter((connected, pending, disconnects, dropped, takeovers))

    def _pipelines(self) -> Iterator[Metric]:
        p_labels = ("pipeline",)
        enabled = _gauge("edged_pipeline_enabled", "1 unless disabled by a command.", p_labels)
        counters = {
            key: _counter(f"edged_pipeline_{key}", doc, p_labels)
            for key, doc in (
                ("processed", "Frames or audio windows run through the model."),
                ("published", "Results handed to the outbox."),
                ("dropped", "Frames (video) or chunks (audio) dropped before inference."),
                ("skipped", "Inputs skipped on purpose (motion gate, audio backlog)."),
                ("errors", "Inputs whose inference failed."),
            )
        }
        fps = _gauge("edged_pipeline_fps", "Inferences per second (recent).", p_labels)
        infer = _gauge(
            "edged_pipeline_inference_seconds",
            "Inference time over the last few hundred inputs, by quantile.",
            ("pipeline", "quantile"),
        )
        up = _gauge("edged_source_up", "1 while a capture source delivers.", ("source", "kind"))
        source_fps = _gauge("edged_source_fps", "Frames delivered per second (video).", ("source",))
        with self._wiring.runtime.current() as graph:  # not swapped by a reload meanwhile
            for name, p in graph.pipelines.items():
                values = _pipeline_values(p.stats())
                enabled.add_metric([name], 1.0 if p.enabled else 0.0)
                for key, family in counters.items():
                    family.add_metric([name], values[key])
                fps.add_metric([name], values["fps"])
                infer.add_metric([name, "0.5"], values["infer_p50_ms"] / 1e3)
                infer.add_metric([name, "0.95"], values["infer_p95_ms"] / 1e3)
            for name, view in graph.sources().items():
                up.add_metric([name, view.kind], 1.0 if view.state == "up" else 0.0)
                if view.fps is not None:
                    source_fps.add_metric([name], view.fps)
        return iter((enabled, *counters.values(), fps, infer, up, source_fps))

    def _outbox(self) -> Iterator[Metric]:
        stats = self._wiring.outbox.stats()
        depth = _gauge("edged_outbox_depth", "Results stored, awaiting their PUBACK.")
        depth.add_metric([], stats.depth)
        size = _gauge("edged_outbox_bytes", "Bytes stored in the outbox.")
        size.add_metric([], stats.bytes)
        evicted = _counter("edged_outbox_evicted", "Results evicted undelivered.", ("reason",))
        for reason, count in sorted(stats.evicted_by.items()):
            evicted.add_metric([reason], count)
        if not stats.evicted_by:
            evicted.add_metric(["size"], 0)  # present from the start, so rate() works at once
        degraded = _gauge(
            "edged_outbox_degraded", "1 while low disk or a storage fault keeps results unstored."
        )
        degraded.add_metric([], 1.0 if stats.status == "degraded" else 0.0)
        passed = _counter(
            "edged_outbox_passed", "Results published live: they could not be stored."
        )
        passed.add_metric([], stats.passed)
        refused = _counter(
            "edged_outbox_refused", "Results neither stored nor published.", ("reason",)
        )
        for reason, count in sorted(stats.refused_by.items()):
            refused.add_metric([reason], count)
        return iter((depth, size, evicted, degraded, passed, refused))


def _pipeline_values(stats: Any) -> dict[str, float]:
    """The exported numbers of a video or audio pipeline's stats, under common names."""
    audio = hasattr(stats, "windows_per_s")
    return {
        "processed": stats.processed,
        "published": stats.emitted if audio else stats.published,
        "dropped": stats.overruns if audio else stats.dropped,
        # Video pipelines count skips once a motion gate feeds them one.
        "skipped": getattr(stats, "skipped", 0),
        "errors": stats.errors,
        "fps": stats.windows_per_s if audio else stats.fps,
        "infer_p50_ms": stats.infer_p50_ms,
        "infer_p95_ms": stats.infer_p95_ms,
    }


class MetricsServer:
    """The ``/metrics`` HTTP endpoint of one daemon."""

    def __init__(self, wiring: Wiring, commands: CommandCounters) -> None:
        self._settings = wiring.settings().metrics
        # A registry of our own: the global default one would also be shared
        # by every daemon built in one process (tests) and refuse duplicates.
        self.registry = CollectorRegistry()
        self.registry.register(DaemonCollector(wiring, commands))
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen on ``[metrics] host:port``; a port in use is logged, never fatal."""
        s = self._settings
        try:
            self._server, self._thread = start_http_server(s.port, s.host, self.registry)
        except OSError as exc:
            log.error(
                "metrics.unavailable",
                host=s.host,
                port=s.port,
                error=str(exc),
                hint="choose another [metrics] port; the daemon runs on without metrics",
            )
            return
        log.info("metrics.serving", url=f"http://{s.host}:{s.port}/metrics")

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) the endpoint listens on, or None when it is not serving."""
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
