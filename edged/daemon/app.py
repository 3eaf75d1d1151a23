"""Wiring: builds the stages from settings, starts and stops them in order.

``App.start`` reads as the data flow in reverse, so that nothing produces
before its consumer exists: outbox → MQTT session (non-blocking; results wait
in the outbox while the broker is away) → pipelines → sources → READY.
``App.stop`` goes the other way: capture stops first, in-flight inferences
finish, the outbox flushes, the session says ``stopped``. The control plane
(MQTT commands, Prometheus metrics; :mod:`edged.control`) starts once the
graph runs and stops before it.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import FrameType

import structlog

from edged import __version__
from edged.catalog.catalog import load_catalog
from edged.config.settings import Settings, load_settings, read_secret
from edged.control import ControlPlane, Wiring
from edged.daemon.check import Preflight, preflight
from edged.daemon.notify import Notifier, watchdog_interval_s
from edged.errors import EX_CONFIG, EX_OK, CatalogError, ConfigError, EdgedError
from edged.events.recorder import EventRecorder
from edged.log import configure_logging
from edged.offload.service import Offload
from edged.publish.homeassistant import discovery_wanted, discovery_with_removals
from edged.publish.mqtt import MqttClient
from edged.publish.outbox import Outbox
from edged.publish.payloads import OutboxState, PipelineState, SourceState, State, iso_utc
from edged.publish.results import ResultPublisher
from edged.rollout.manager import RolloutManager
from edged.runtime.audio import AudioPipeline
from edged.runtime.graph import Graph
from edged.runtime.runtime import ReloadOutcome, Runtime
from edged.runtime.video import Pipeline
from edged.sched import background
from edged.tasks import VisionResult
from edged.tasks.audio import AudioTaskResult
from edged.track.tracker import TrackEvent
from edged.types import EventNote, Frame
from edged.zones.stage import ZoneUpdate

log = structlog.get_logger(__name__)

Loader = Callable[[], Settings]

__all__ = ["EX_CONFIG", "App", "ReloadOutcome", "run_daemon"]


class App:
    """The running daemon: outbox, MQTT session, and the :class:`Runtime` of the current graph."""

    def __init__(
        self, settings: Settings, checked: Preflight, *, notifier: Notifier | None = None
    ) -> None:
        self.settings = settings
        self.notifier = notifier or Notifier()
        self.started_mono = time.monotonic()
        self._stop = threading.Event()
        # Stop and reload requests come from signal handlers, which must not
        # take a lock: one the main thread holds (an Event's, while it enters
        # wait()) deadlocks the process. Requests therefore set a plain flag
        # or append to a deque and write a byte to a socket, and the main
        # loop sleeps on that socket (socket.send takes no Python lock).
        self._stop_requested = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._reloads: deque[Future[ReloadOutcome]] = deque()  # deque: no lock in signal handlers
        password = read_secret(settings.mqtt.password_file, "mqtt_password")
        self.mqtt = MqttClient(settings.mqtt, settings.device_id, password=password)
        try:
            settings.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            problem = f"{settings.state_dir}: cannot create it ({exc})"
            raise ConfigError([("state_dir", problem)]) from None
        # Unusable outbox files are moved aside; only a path that cannot be
        # written at all raises ConfigError (exit 78, no restart loop).
        self.outbox = Outbox.from_settings(
            settings.outbox, seq_path=settings.state_dir / "outbox.seq"
        )
        self.results = ResultPublisher(settings, self.mqtt, self.outbox)
        self.results.stats_sections["mqtt"] = self.mqtt.stats
        graph = Graph.build(
            settings,
            checked,
            self._emit,
            self._emit_audio,
            self._emit_events,
            emit_note=self._emit_note,
        )
        #: The running graph, its lock and the emit gate (swapped on reload).
        self.runtime = Runtime(graph)
        self._attach_zones(graph)
        # Hybrid offload (docs/cloud-protocol.md): a gate on each opted-in pipeline, link probe, worker.
        self.offload = Offload(settings, self.results, self.runtime.emit_gate)
        self.offload.attach(graph)
        # Event media (README "Events"): off entirely when neither snapshots nor clips are kept.
        self.events: EventRecorder | None = None
        if settings.events.snapshots or settings.events.clips:
            self.events = EventRecorder(
                settings.events,
                settings.events_dir,
                self.results.publish_event,
                self._send_event_snapshot,
            )
            self.results.recorder = self.events
            self.results.stats_sections["events"] = self.events.stats
        self._attach_recorder(graph)
        self._house = threading.Thread(
            target=background(self._housekeeping), name="housekeeping", daemon=True
        )
        self._last_state = b""
        #: ``model_update``: fetch, evaluate, switch and watch a pipeline's model (docs/rollout.md).
        self.rollout = RolloutManager(self)
        self.control = ControlPlane(
            Wiring(
                runtime=self.runtime,
                mqtt=self.mqtt,
                outbox=self.outbox,
                settings=lambda: self.settings,
                started_mono=self.started_mono,
                publish_state=self.publish_state,
                request_reload=self.request_reload,
                model_update=self.rollout.update,
                recorder=self.events,
            )
        )

    @property
    def graph(self) -> Graph:
        """The graph that runs now (the runtime's; a reload swaps it)."""
        return self.runtime.graph

    # -- start -----------------------------------------------------------
    def start(self) -> None:
        """Start every stage; returns once sources are running."""
        self.notifier.status("starting")
        self.mqtt.on_connect(self._on_connect)
        self.outbox.start(self.mqtt)
        # Commands are subscribed before the first connect: the broker then has
        # the subscription before `online` and discovery go out, so a command a
        # hub sends as soon as it sees them is not lost (it may find the
        # pipelines still starting, which its reply says).
        self.control.start()
        self.mqtt.start()
        self._register_models()
        self.offload.start()
        if self.events is not None:
            self.events.start()
        self.runtime.start()
        self.rollout.start()
        self._house.start()
        self.publish_state(force=True)
        self.notifier.ready(f"{len(self.graph.pipelines)} pipelines running")
        log.info(
            "app.ready", pipelines=list(self.graph.pipelines), sources=list(self.graph.sources())
        )

    def _register_models(self) -> None:
        for name, (resolved, model) in self.graph.models.items():
            self.results.register_model(name, resolved, model.runtime, model.accelerator)
        # Start and every reload: each loaded model's label, retained (docs/nutrition-labels.md).
        self.results.publish_labels(self.settings.models.dir)

    def _on_connect(self) -> None:
        # A new session: retained state and discovery may be stale or missing.
        self.publish_state(force=True)
        self.publish_discovery()

    def publish_discovery(self) -> None:
        """Home Assistant discovery for the current configuration; clears removed entities."""
        if discovery_wanted(self.settings):
            for message in discovery_with_removals(self.settings, self.mqtt.topics):
                self.mqtt.send(message)

    def _emit(self, pipeline: Pipeline, frame: Frame, result: VisionResult) -> str | None:
        with self.runtime.gate():
            if pipeline.enabled:
                return self.results.publish_result(pipeline.name, frame, result)
            return None

    def _emit_events(self, pipeline: Pipeline, frame: Frame, events: list[TrackEvent]) -> None:
        zones_of = pipeline.zones.occupancy.zones_of if pipeline.zones is not None else None
        self.results.publish_events(pipeline.name, frame, events, zones_of)

    def _attach_zones(self, graph: Graph) -> None:
        """Route each vision pipeline's zone changes to its occupancy topics and line events."""
        for p in graph.pipelines.values():
            if isinstance(p, Pipeline) and p.zones is not None:
                p.emit_zones = self._emit_zones

    def _emit_zones(self, pipeline: Pipeline, frame: Frame, update: ZoneUpdate) -> None:
        assert pipeline.zones is not None
        self.results.publish_zones(pipeline.name, frame, update, pipeline.zones.occupancy.zones_of)

    def _emit_note(self, pipeline: str, source: str, note: EventNote) -> None:
        # Sound and fall events: an event that started is always ended, even
        # if the pipeline was disabled meanwhile (consumers key state on it).
        with self.runtime.gate():
            self.results.publish_note(pipeline, source, note)

    def _attach_recorder(self, graph: Graph) -> None:
        """Hand every vision pipeline of ``graph`` the event recorder (if there is one)."""
        for pipeline in graph.pipelines.values():
            if isinstance(pipeline, Pipeline):
                pipeline.recorder = self.events

    @staticmethod
    def _media_problem(pipeline: Pipeline | AudioPipeline) -> str | None:
        """Why ``pipeline``'s event media keep failing (a full or read-only store), if they do."""
        recorder = pipeline.recorder if isinstance(pipeline, Pipeline) else None
        if recorder is None or not recorder.failures.degraded:
            return None
        return f"event media: {recorder.failures.reason()}"

    def _send_event_snapshot(self, pipeline: str, event_id: str, jpeg: bytes) -> None:
        """``[events] publish_snapshots``: an ended event's JPEG on its own topic (QoS 1, not
        retained) and, retained, as the pipeline's latest: a Home Assistant image entity
        can only follow one fixed topic."""
        topics = self.mqtt.topics
        self.mqtt.publish(topics.event_snapshot(pipeline, event_id), jpeg, qos=1)
        self.mqtt.publish(topics.event_snapshot_latest(pipeline), jpeg, qos=1, retain=True)

    def _emit_audio(
        self, pipeline: AudioPipeline, start: float, duration: float, result: AudioTaskResult
    ) -> None:
        with self.runtime.gate():
            if pipeline.enabled:
                source = pipeline.settings.source
                self.results.publish_audio(pipeline.name, source, start, duration, result)

    # -- state -----------------------------------------------------------
    def state_payload(self) -> State:
        """The retained ``state`` document (README "MQTT topics and payloads")."""
        with self.runtime.current() as graph:
            views = graph.sources()
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
            for name, p in graph.pipelines.items():
                src = sources[p.settings.source]
                if not p.enabled:
                    pipelines[name] = PipelineState(
                        status="disabled",
                        reason=p.reason or "disabled by command",
                        threshold=p.threshold,
                    )
                elif src.status == "down":
                    pipelines[name] = PipelineState(
                        status="down",
                        reason=f"source {p.settings.source}: {src.reason}",
                        threshold=p.threshold,
                    )
                else:
                    # A stage that keeps failing shows here, with its last error.
                    status, reason = p.health
                    if status != "degraded" and (media := self._media_problem(p)):
                        status, reason = "degraded", media
                    pipelines[name] = (
                        PipelineState(status="degraded", reason=reason, threshold=p.threshold)
                        if status == "degraded"
                        else PipelineState(status="running", threshold=p.threshold)
                    )
        outbox = self.outbox.health()
        return State(
            ts=iso_utc(time.time()),
            device=self.settings.device_id,
            version=__version__,
            uptime_s=time.monotonic() - self.started_mono,
            pipelines=pipelines,
            sources=sources,
            models=self.results.model_summary(),
            link=self.offload.link_state(),
            outbox=OutboxState(
                status=outbox.status,
                reason=outbox.reason,
                error=outbox.error,
                quarantined=list(outbox.quarantined),
            ),
            mqtt=self.mqtt.state(),
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
        """False when a pipeline whose source is up has made no progress for a while.

        "A while" is ``watchdog_stall_s``; the watchdog is then no longer
        pinged, and systemd restarts the daemon (README "How it works").
        """
        now = time.monotonic()
        stall_s = self.settings.watchdog_stall_s
        with self.runtime.current() as graph:
            views = graph.sources()
            return not any(
                p.enabled
                and views[p.settings.source].state == "up"
                and now - p.last_progress > stall_s
                for p in graph.pipelines.values()
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
                    with self.runtime.current() as graph:
                        self.results.publish_stats(graph, self.outbox, self.started_mono)
            except Exception:  # housekeeping must outlive any one bad tick
                log.exception("app.housekeeping_failed")

    # -- control ---------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the daemon to stop (signal handlers call this: it takes no lock)."""
        self._stop_requested = True
        self._poke()

    def wakeup_fileno(self) -> int:
        """The fd whose writes wake the main loop (for ``signal.set_wakeup_fd``)."""
        return self._wake_w.fileno()

    def _poke(self) -> None:
        """Wake the main loop; lock-free, so that a signal handler may call it."""
        with contextlib.suppress(BlockingIOError, OSError):  # full: it is awake anyway
            self._wake_w.send(b"!")

    def request_reload(self) -> Future[ReloadOutcome]:
        """Ask the main loop to reload the configuration (SIGHUP, the ``reload`` command).

        Takes no lock, so a signal handler may call it. The future resolves
        once the main loop has tried; requests made meanwhile share one reload.
        """
        done: Future[ReloadOutcome] = Future()
        self._reloads.append(done)
        self._poke()
        return done

    def _take_reloads(self) -> list[Future[ReloadOutcome]]:
        taken = []
        while self._reloads:
            taken.append(self._reloads.popleft())
        return taken

    def reload(self, load: Loader) -> ReloadOutcome:
        """Re-read the configuration and swap in a new graph; keep the old one on any problem.

        The MQTT session and the outbox are kept (their settings need a
        restart to change), so subscribers see no ``offline`` blip. The
        runtime's phase is RELOADING meanwhile.
        """
        with self.runtime.reloading():
            return self._reload(load)

    def _reload(self, load: Loader) -> ReloadOutcome:
        try:
            new = load()
            catalog = load_catalog(new.models.catalog, models_dir=new.models.dir)
        except ConfigError as exc:
            return _refused(_in_file(exc.file, exc.problems), exc.file)
        except CatalogError as exc:
            return _refused([f"models.catalog: {exc}"])
        keep = ("device_id", "mqtt", "outbox", "metrics", "offload", "events")
        restart = tuple(k for k in keep if getattr(new, k) != getattr(self.settings, k))
        if restart:
            log.warning("app.reload_partial", restart_needed=restart)
        checked = preflight(new, catalog, connect_broker=False)
        if checked.problems:
            checked.close()
            return _refused([f"{k}: {m}" for k, m in checked.problems])
        try:
            graph = Graph.build(
                new,
                checked,
                self._emit,
                self._emit_audio,
                self._emit_events,
                emit_note=self._emit_note,
            )
        except EdgedError as exc:
            checked.close()
            return _refused([str(exc)])
        self.offload.attach(graph)
        self._attach_zones(graph)
        self._attach_recorder(graph)

        def install(_graph: Graph) -> None:
            # Under the runtime's lock: nobody sees the new graph with the old settings.
            self.settings = self.settings.model_copy(
                update={
                    "sources": new.sources,
                    "pipelines": new.pipelines,
                    "commands": new.commands,
                    "rollout": new.rollout,
                }
            )
            self.results.clear_models()
            self._register_models()

        self.runtime.swap(graph, install)
        self.publish_state(force=True)
        # Entities of removed pipelines are cleared, those of new ones announced.
        self.publish_discovery()
        # The configured models run again: converge to …/models/desired anew.
        self.rollout.desired.reapply()
        log.info("app.reloaded", pipelines=list(graph.pipelines))
        return ReloadOutcome(applied=True, restart_needed=restart)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stop or reload was requested (or ``timeout``); True if stopping."""
        if not (self._stop_requested or self._reloads):
            select.select([self._wake_r], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(512):
                pass
        if self._stop_requested:
            self._stop.set()  # here, in the main thread's normal flow, not in the handler
        return self._stop.is_set()

    def run_until_stopped(self, load: Loader) -> None:
        """Main loop: handle reloads until a stop is requested."""
        while not self.wait():
            if waiting := self._take_reloads():
                outcome = ReloadOutcome(
                    False, ("reload failed unexpectedly; see the daemon's log",)
                )
                try:
                    outcome = self.reload(load)
                except Exception:  # a bug in a reload must not end the daemon
                    log.exception("app.reload_failed")
                finally:
                    for done in waiting:
                        done.set_result(outcome)

    def stop(self, timeout: float = 8.0) -> None:
        """Stop capture, finish in-flight work, flush, publish ``stopped``."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self.notifier.stopping()
        for done in self._take_reloads():
            done.set_result(ReloadOutcome(False, ("the daemon is stopping",)))
        self.control.stop()
        self.rollout.stop()
        self.runtime.stop(deadline)
        self.offload.stop()
        if self.events is not None:
            # The pipelines ended their events; their media and `end` messages go out now.
            self.events.stop(timeout=max(0.5, deadline - time.monotonic() - 3.0))
        self.publish_state(force=True)
        # Give the forwarder what is left of the budget to get results out,
        # keeping ~1.5 s for the 'stopped' handshake.
        self.outbox.close(grace_s=max(0.0, deadline - time.monotonic() - 1.5), timeout=2.0)
        self.mqtt.stop(timeout=max(0.5, deadline - time.monotonic()))
        self.runtime.close()
        self._wake_r.close()
        self._wake_w.close()
        log.info("app.stopped")


#: A refusal lists at most this many problems, each cut to this many characters:
#: it is also an MQTT reply, and a fuzzed file can have thousands of unknown keys.
_MAX_PROBLEMS = 20
_MAX_PROBLEM_CHARS = 300


def _in_file(file: str | None, problems: list[tuple[str, str]]) -> list[str]:
    """``"<file>: <key>: <problem>"`` for each problem (the file itself once when it is the key)."""
    return [f"{k}: {m}" if file is None or k == file else f"{file}: {k}: {m}" for k, m in problems]


def _refused(problems: list[str], file: str | None = None) -> ReloadOutcome:
    shown = [
        p if len(p) <= _MAX_PROBLEM_CHARS else p[: _MAX_PROBLEM_CHARS - 1] + "…" for p in problems
    ]
    if len(shown) > _MAX_PROBLEMS:
        shown = [*shown[:_MAX_PROBLEMS], f"… and {len(shown) - _MAX_PROBLEMS} more problems"]
    # The old graph keeps running: that is what the operator must read here.
    log.error("app.reload_refused", config=file, problems=shown, kept="the running configuration")
    return ReloadOutcome(applied=False, problems=tuple(shown))


def _install_signals(app: App) -> None:
    def handle_exit(_signum: int, _frame: FrameType | None) -> None:
        app.request_stop()

    def handle_hup(_signum: int, _frame: FrameType | None) -> None:
        app.request_reload()

    signal.signal(signal.SIGTERM, handle_exit)
    signal.signal(signal.SIGINT, handle_exit)
    signal.signal(signal.SIGHUP, handle_hup)
    # The kernel may deliver a signal to any thread. Python runs the handler
    # in the main thread only when that thread next runs bytecode, and the
    # main loop sleeps in select() with no timeout: without a wake-up fd, a
    # SIGHUP or SIGTERM caught by a worker thread would wait there forever.
    signal.set_wakeup_fd(app.wakeup_fileno(), warn_on_full_buffer=False)


def _uninstall_signal_wakeup() -> None:
    # Before the App closes its wake socket: the fd number could be reused.
    signal.set_wakeup_fd(-1)


def _refuse(config: Path, problems: Sequence[tuple[str, str]]) -> int:
    """Log why ``config`` cannot run, each problem with its key path; EX_CONFIG."""
    log.error("app.invalid_config", config=str(config), problems=[f"{k}: {m}" for k, m in problems])
    return EX_CONFIG


def run_daemon(config: Path) -> int:
    """``edged run``: validate, start, serve until a signal, stop. Returns the exit code."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        configure_logging("info")
        return _refuse(config, exc.problems)
    configure_logging(settings.log_level, cache=True)
    try:
        catalog = load_catalog(settings.models.catalog, models_dir=settings.models.dir)
    except CatalogError as exc:
        return _refuse(config, [("models.catalog", str(exc))])
    checked = preflight(settings, catalog, connect_broker=False)
    for key, msg in checked.warnings:
        log.warning("app.config_warning", key=key, problem=msg)
    if checked.problems:
        checked.close()
        return _refuse(config, checked.problems)
    try:
        app = App(settings, checked)
    except ConfigError as exc:  # e.g. an outbox path that cannot be written at all
        checked.close()
        return _refuse(config, exc.problems)
    _install_signals(app)
    try:
        app.start()
        log.info("app.running", pid=os.getpid(), device=settings.device_id)
        app.run_until_stopped(lambda: load_settings(config))
    finally:
        _uninstall_signal_wakeup()
    app.stop()
    return EX_OK
