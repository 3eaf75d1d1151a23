"""Wiring: builds the stages from settings, starts and stops them in order.

``App.start`` reads as the data flow in reverse, so that nothing produces
before its consumer exists: outbox → MQTT session (non-blocking; results wait
in the outbox while the broker is away) → pipelines → sources → READY.
``App.stop`` goes the other way: capture stops first, in-flight inferences
finish, the outbox flushes, the session says ``stopped``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import structlog

from edged import __version__
from edged.audio_pipeline import AudioPipeline
from edged.catalog.catalog import load_catalog
from edged.check import Preflight, preflight
from edged.errors import CatalogError, ConfigError, EdgedError
from edged.graph import Graph
from edged.log import configure_logging
from edged.notify import Notifier, watchdog_interval_s
from edged.pipeline import Pipeline
from edged.publish.homeassistant import discovery_with_removals
from edged.publish.mqtt import MqttClient
from edged.publish.outbox import Outbox
from edged.publish.payloads import PipelineState, SourceState, State, iso_utc
from edged.results import ResultPublisher
from edged.settings import Settings, load_settings, read_secret
from edged.tasks import VisionResult
from edged.tasks.audio import AudioResult
from edged.types import Frame

log = structlog.get_logger(__name__)

EX_CONFIG = 78
#: A pipeline whose source is up but which has not finished an input for this
#: long is stalled; the watchdog is then no longer pinged (DESIGN §6).
STALL_S = 30.0

Loader = Callable[[], Settings]


class App:
    """The running daemon: outbox, MQTT session, and the current graph."""

    def __init__(
        self, settings: Settings, checked: Preflight, *, notifier: Notifier | None = None
    ) -> None:
        self.settings = settings
        self.notifier = notifier or Notifier()
        self.started_mono = time.monotonic()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reload_wanted = False
        self._lock = threading.RLock()  # guards graph swaps against commands and housekeeping
        password = read_secret(settings.mqtt.password_file, "mqtt_password")
        self.mqtt = MqttClient(settings.mqtt, settings.device_id, password=password)
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox.from_settings(settings.outbox)
        self.results = ResultPublisher(settings, self.mqtt, self.outbox)
        self.graph = Graph.build(settings, checked, self._emit, self._emit_audio)
        self._house = threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True)
        self._last_state = b""

    # -- start -----------------------------------------------------------
    def start(self) -> None:
        """Start every stage; returns once sources are running."""
        self.notifier.status("starting")
        self.mqtt.on_connect(self._on_connect)
        self.outbox.start(self.mqtt)
        self.mqtt.start()
        self._register_models()
        self.graph.start()
        self._house.start()
        self.publish_state(force=True)
        self.notifier.ready(f"{len(self.graph.pipelines)} pipelines running")
        log.info("ready", pipelines=list(self.graph.pipelines), sources=list(self.graph.sources()))

    def _register_models(self) -> None:
        for name, (resolved, model) in self.graph.models.items():
            self.results.register_model(name, resolved, model.runtime)

    def _on_connect(self) -> None:
        # A new session: retained state and discovery may be stale or missing.
        self.publish_state(force=True)
        if (
            self.settings.mqtt.homeassistant
            or (self.settings.state_dir / "homeassistant.json").exists()
        ):
            for message in discovery_with_removals(self.settings, self.mqtt.topics):
                self.mqtt.send(message)

    def _emit(self, pipeline: Pipeline, frame: Frame, result: VisionResult) -> None:
        self.results.publish_result(pipeline.name, frame, result)

    def _emit_audio(
        self, pipeline: AudioPipeline, start: float, duration: float, result: AudioResult
    ) -> None:
        self.results.publish_audio(pipeline.name, pipeline.settings.source, start, duration, result)

    # -- state -----------------------------------------------------------
    def state_payload(self) -> State:
        """The retained ``state`` document (DESIGN §2)."""
        with self._lock:
            views = self.graph.sources()
            sources = {
                name: SourceState(
                    status="running" if v.state in ("up", "starting") else "down",
                    reason=None
                    if v.state in ("up", "starting")
                    else (v.state + (f": {v.reason}" if v.reason else "")),
                    fps=v.fps,
                )
                for name, v in views.items()
            }
            pipelines: dict[str, PipelineState] = {}
            for name, p in self.graph.pipelines.items():
                src = sources[p.settings.source]
                if not p.enabled:
                    pipelines[name] = PipelineState(
                        status="disabled", reason=p.reason or "disabled by command"
                    )
                elif src.status == "down":
                    pipelines[name] = PipelineState(
                        status="down", reason=f"source {p.settings.source}: {src.reason}"
                    )
                else:
                    pipelines[name] = PipelineState(status="running")
        return State(
            ts=iso_utc(time.time()),
            device=self.settings.device_id,
            version=__version__,
            uptime_s=time.monotonic() - self.started_mono,
            pipelines=pipelines,
            sources=sources,
            models=self.results.model_summary(),
        )

    def publish_state(self, *, force: bool = False) -> None:
        """Publish ``state`` (retained) when it changed; time and uptime alone are no change."""
        state = self.state_payload()
        # Measured rates are no change either: a retained message per second
        # would wake every subscriber for nothing.
        key = state.model_dump_json(
            exclude={"ts": True, "uptime_s": True, "sources": {"__all__": {"fps"}}}
        ).encode()
        if force or key != self._last_state:
            self._last_state = key
            self.results.publish_state(state)

    def _progressing(self) -> bool:
        """False when a pipeline whose source is up has made no progress for STALL_S."""
        now = time.monotonic()
        with self._lock:
            views = self.graph.sources()
            return not any(
                p.enabled
                and views[p.settings.source].state == "up"
                and now - p.last_progress > STALL_S
                for p in self.graph.pipelines.values()
            )

    def _housekeeping(self) -> None:
        wd = watchdog_interval_s()
        next_stats = time.monotonic() + self.settings.stats_interval_s
        while not self._stop.wait(min(1.0, wd or 1.0)):
            try:
                self.publish_state()
                if wd is not None and self._progressing():
                    self.notifier.watchdog()
                if time.monotonic() >= next_stats:
                    next_stats += self.settings.stats_interval_s
                    with self._lock:
                        self.results.publish_stats(self.graph, self.outbox, self.started_mono)
            except Exception:  # housekeeping must outlive any one bad tick
                log.exception("housekeeping_failed")

    # -- control ---------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the daemon to stop (signal handlers call this; it only sets flags)."""
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        """Ask the main loop to reload the configuration (SIGHUP)."""
        self._reload_wanted = True
        self._wake.set()

    def reload(self, load: Loader) -> bool:
        """Re-read the configuration and swap in a new graph; keep the old one on any problem.

        The MQTT session and the outbox are kept (their settings need a
        restart to change), so subscribers see no ``offline`` blip.
        """
        try:
            new = load()
            catalog = load_catalog(new.models.catalog)
        except (ConfigError, CatalogError) as exc:
            log.error("reload_refused", problems=str(exc))
            return False
        if (
            new.mqtt != self.settings.mqtt
            or new.outbox != self.settings.outbox
            or new.device_id != self.settings.device_id
        ):
            log.warning(
                "reload_partial", reason="mqtt, outbox and device_id changes need a restart"
            )
        checked = preflight(new, catalog, connect_broker=False)
        if checked.problems:
            checked.close()
            log.error("reload_refused", problems=[f"{k}: {m}" for k, m in checked.problems])
            return False
        try:
            graph = Graph.build(new, checked, self._emit, self._emit_audio)
        except EdgedError as exc:
            checked.close()
            log.error("reload_refused", problems=str(exc))
            return False
        with self._lock:
            old = self.graph
            old.stop(time.monotonic() + 5.0)
            old.close_models()
            self.graph = graph
            self.settings = self.settings.model_copy(
                update={"sources": new.sources, "pipelines": new.pipelines}
            )
            self.results.clear_models()
            self._register_models()
            graph.start()
        self.publish_state(force=True)
        log.info("reloaded", pipelines=list(graph.pipelines))
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stop or reload was requested (or ``timeout``); True if stopping."""
        self._wake.wait(timeout)
        self._wake.clear()
        return self._stop.is_set()

    def run_until_stopped(self, load: Loader) -> None:
        """Main loop: handle reloads until a stop is requested."""
        while not self.wait():
            if self._reload_wanted:
                self._reload_wanted = False
                self.reload(load)

    def stop(self, timeout: float = 8.0) -> None:
        """Stop capture, finish in-flight work, flush, publish ``stopped``."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self.notifier.stopping()
        with self._lock:
            self.graph.stop(deadline)
        self.publish_state(force=True)
        # Give the forwarder what is left of the budget to get results out,
        # keeping ~1.5 s for the 'stopped' handshake.
        self.outbox.close(grace_s=max(0.0, deadline - time.monotonic() - 1.5), timeout=2.0)
        self.mqtt.stop(timeout=max(0.5, deadline - time.monotonic()))
        self.graph.close_models()
        log.info("stopped")


def _install_signals(app: App) -> None:
    def handle_exit(_signum: int, _frame: FrameType | None) -> None:
        app.request_stop()

    def handle_hup(_signum: int, _frame: FrameType | None) -> None:
        app.request_reload()

    signal.signal(signal.SIGTERM, handle_exit)
    signal.signal(signal.SIGINT, handle_exit)
    signal.signal(signal.SIGHUP, handle_hup)


def run_daemon(config: Path) -> int:
    """``edged run``: validate, start, serve until a signal, stop. Returns the exit code."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        configure_logging("info")
        log.error(
            "invalid_config", config=str(config), problems=[f"{k}: {m}" for k, m in exc.problems]
        )
        return EX_CONFIG
    configure_logging(settings.log_level)
    try:
        catalog = load_catalog(settings.models.catalog)
    except CatalogError as exc:
        log.error("invalid_config", config=str(config), problems=[f"models.catalog: {exc}"])
        return EX_CONFIG
    checked = preflight(settings, catalog, connect_broker=False)
    for key, msg in checked.warnings:
        log.warning("config_warning", key=key, problem=msg)
    if checked.problems:
        checked.close()
        log.error(
            "invalid_config",
            config=str(config),
            problems=[f"{k}: {m}" for k, m in checked.problems],
        )
        return EX_CONFIG
    app = App(settings, checked)
    _install_signals(app)
    app.start()
    log.info("running", pid=os.getpid(), device=settings.device_id)
    app.run_until_stopped(lambda: load_settings(config))
    app.stop()
    return 0
