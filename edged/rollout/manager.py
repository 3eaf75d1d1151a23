"""The steps of a model rollout on one device: fetch, load, evaluate, switch, probation.

One rollout at a time per device. :meth:`RolloutManager.update` runs the
first steps in the caller's thread (the command worker), so that the
command's reply says what happened: refused (and why), or switched and on
probation. Probation then runs in its own thread; its end (``done`` or
``rolled_back``) is published on the retained ``…/models/rollout`` topic,
like every phase before it (docs/rollout.md).

Nothing changes until the candidate is downloaded with its sha256 checked
(:mod:`edged.catalog.fetch`), loaded and warmed up
(:func:`edged.infer.registry.load_model`) and has cleared the pipeline's
bar on the golden set (:mod:`edged.rollout.evaluate`, :mod:`edged.rollout.policy`).
The switch is :meth:`edged.runtime.video.Pipeline.swap_task`, between two frames
of that pipeline only. A rolled-out model runs until the next reload or
restart, as a ``set_threshold`` does: the configuration file stays the
source of truth (``edged models select --write`` makes a choice permanent).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import structlog

from edged.catalog.catalog import CatalogEntry, load_catalog
from edged.catalog.fetch import pull, pull_artifact
from edged.catalog.resolve import ResolvedModel, mirror_dir, resolve_entry
from edged.config.settings import PipelineSettings
from edged.errors import CommandError, EdgedError
from edged.infer.accel import cache_dir
from edged.infer.base import Model
from edged.infer.registry import load_model
from edged.publish.payloads import Message, ModelId, RolloutPhase, RolloutStatus, iso_utc
from edged.rollout import policy
from edged.rollout.desired import DesiredWatch
from edged.rollout.evaluate import evaluate
from edged.rollout.rightsizing import RightSizing
from edged.runtime.video import Pipeline
from edged.tasks import VisionTask, build_task

if TYPE_CHECKING:
    from edged.config.settings import Settings
    from edged.publish.mqtt import MqttClient
    from edged.publish.results import ResultPublisher
    from edged.runtime.graph import Graph
    from edged.runtime.runtime import Runtime

log = structlog.get_logger(__name__)


class Host(Protocol):
    """What rollout works with: the daemon's (daemon/app.py's App has all of it).

    A Protocol rather than the App itself, so that rollout (a layer below the
    daemon, docs/architecture.md) never imports it.
    """

    @property
    def settings(self) -> Settings: ...
    @property
    def runtime(self) -> Runtime: ...
    @property
    def graph(self) -> Graph: ...
    @property
    def results(self) -> ResultPublisher: ...
    @property
    def mqtt(self) -> MqttClient: ...
    def publish_state(self, *, force: bool = False) -> None: ...


#: How often probation looks at the pipeline, s.
PROBATION_TICK_S = 0.2

#: Test hook (README "Testing"): wraps every candidate model right after it is
#: loaded, before evaluation. Tests set it on ``App.rollout.wrap_model`` to
#: slow a real model down; production code never sets it.
ModelWrapper = Callable[[Model], Model]


@dataclass
class _Rollout:
    """One rollout in flight."""

    pipeline: Pipeline
    old: tuple[ResolvedModel, Model]
    new: tuple[ResolvedModel, Model]
    #: The pipeline's task built on the candidate model.
    task: VisionTask
    status: RolloutStatus
    previous_task: VisionTask | None = None
    #: Set once the outcome is published and the busy lock released.
    finished: bool = False
    #: The pipeline's (processed, failures) counters at the switch.
    baseline: tuple[int, int] = (0, 0)
    started: float = field(default_factory=time.monotonic)


class RolloutManager:
    """Runs ``model_update`` for one App; publishes every phase, retained."""

    def __init__(self, app: Host) -> None:
        self._app = app
        self._busy = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: See :data:`ModelWrapper`; None in production.
        self.wrap_model: ModelWrapper | None = None
        self.last: RolloutStatus | None = None
        self.sizing = RightSizing(self)
        self.desired = DesiredWatch(self)

    # -- command ----------------------------------------------------------
    def update(
        self, pipeline: str, model: str, sha256: str | None = None, url: str | None = None
    ) -> dict[str, Any]:
        """Roll ``model`` (a catalog name, optionally pinned to ``sha256``) out to ``pipeline``.

        ``url`` (with ``sha256``) fetches another build of that catalog model
        from there; only when ``[rollout] allow_urls`` is on.

        Returns the reply fields once the switch is made (phase ``probation``,
        or ``done`` without probation); raises CommandError when the rollout
        is refused, after publishing why.
        """
        if url is not None and not self._app.settings.rollout.allow_urls:
            raise CommandError(
                "url", "this device fetches no URL sent in a command; the operator can allow "
                "it with [rollout] allow_urls = true (docs/rollout.md)"
            )  # fmt: skip
        if not self._busy.acquire(blocking=False):
            busy = self.last.pipeline if self.last is not None else "?"
            raise CommandError("pipeline", f"a rollout is already in progress (pipeline {busy!r})")
        handed_over = False
        try:
            run = self._prepare(pipeline, model, sha256, url)
            self._switch(run)
            handed_over = True
        finally:
            if not handed_over:
                self._busy.release()
        if self._app.settings.rollout.probation_s <= 0:
            self._finish(run, "done", "no probation configured")
            return self._reply(run)
        self._thread = threading.Thread(
            target=self._probation, args=(run,), name="rollout-probation", daemon=True
        )
        self._thread.start()
        return self._reply(run)

    def _reply(self, run: _Rollout) -> dict[str, Any]:
        doc: dict[str, Any] = run.status.model_dump(by_alias=True, exclude_none=True)
        doc.pop("v", None)
        return {**doc, "probation_s": self._app.settings.rollout.probation_s}

    def _pipeline(self, name: str) -> tuple[Pipeline, tuple[ResolvedModel, Model]]:
        app = self._app
        with app.runtime.lock:  # the graph must not be swapped meanwhile (edged.runtime.runtime)
            found = app.graph.pipelines.get(name)
            if found is None:
                known = ", ".join(sorted(app.graph.pipelines)) or "none"
                raise CommandError("pipeline", f"no pipeline named {name!r} (pipelines: {known})")
            if not isinstance(found, Pipeline):
                raise CommandError("pipeline", f"{name!r} is an audio pipeline; rollout is for "
                                   "detection and single-person pose pipelines")  # fmt: skip
            if found.settings.detector:
                raise CommandError("pipeline", f"{name!r} is a two-stage pose pipeline "
                                   "(detector); rollout swaps single-model tasks")  # fmt: skip
            return found, app.graph.models[name]

    def _prepare(self, name: str, model: str, sha256: str | None, url: str | None) -> _Rollout:
        """Download, load, evaluate; a _Rollout ready to switch, or CommandError (published)."""
        app = self._app
        settings = app.settings
        pipeline, old = self._pipeline(name)
        p = pipeline.settings
        status = RolloutStatus(
            ts=iso_utc(time.time()),
            device=settings.device_id,
            pipeline=name,
            from_=ModelId(name=old[0].name, sha256=old[0].sha256),
            to=ModelId(name=model, sha256=sha256 or ""),
            phase="downloading",
            require=list(p.require),
            max_latency_ms=p.max_latency_ms,
        )
        self._publish(status)
        log.info("rollout.downloading", pipeline=name, model=model, sha256=sha256, url=url)
        models_dir = settings.models.dir
        try:
            catalog = load_catalog(settings.models.catalog, models_dir=models_dir)
            entry = catalog.get(model)
            if entry.task != p.task:
                raise EdgedError(
                    f"{model!r} is a {entry.task} model, but pipeline {name!r} runs {p.task}"
                )
            entry = self._fetch(entry, sha256, url)
            resolved = resolve_entry(catalog, entry, models_dir, decoder=p.decoder)
        except (EdgedError, OSError) as exc:  # OSError: a full or read-only models dir
            raise self._refuse(status, f"download: {exc}") from None
        status = self._phase(status, "evaluating", to=ModelId(name=model, sha256=resolved.sha256))
        log.info("rollout.evaluating", pipeline=name, model=model, sha256=resolved.sha256)
        try:
            loaded, task = self._load(p, resolved)
        # Runtimes raise their own types for a file they cannot run; any of them refuses it.
        except Exception as exc:  # noqa: BLE001
            raise self._refuse(status, f"load: {exc}") from None
        try:
            metrics = evaluate(p.task, task, resolved.path)
        except Exception as exc:  # noqa: BLE001  (any failure of the candidate refuses it)
            loaded.close()
            raise self._refuse(status, f"evaluation: {exc}") from None
        status = self._phase(status, "evaluating", metrics=metrics)
        reasons = policy.bar_failures(policy.parse_bar(p.require), metrics, p.max_latency_ms)
        if reasons:
            loaded.close()
            raise self._refuse(status, "fails the bar: " + "; ".join(reasons))
        log.info("rollout.evaluated", pipeline=name, model=model, metrics=metrics)
        return _Rollout(pipeline, old, (resolved, loaded), task, status)

    def _fetch(self, entry: CatalogEntry, sha256: str | None, url: str | None) -> CatalogEntry:
        """Install the candidate's files; the entry as installed (its file may be a variant).

        A pinned ``sha256`` other than the catalog's, or a ``url``, names another
        build of the catalog model (same inputs, outputs and labels): it is
        fetched verified against the pinned hash and installed under a name of
        its own (``<stem>-<sha256[:12]><suffix>``), so that it can never
        replace the catalog's file, which the configuration may still name.
        """
        settings = self._app.settings
        models_dir, mirror = settings.models.dir, mirror_dir(settings)
        if (sha256 is None or sha256 == entry.file.sha256) and url is None:
            pull(entry, models_dir, mirror=mirror)
            return entry
        assert sha256 is not None  # the command requires it with a url
        update: dict[str, Any] = {"sha256": sha256}
        if url is not None:
            update["urls"] = [url]
            mirror = None  # the mirror holds the catalog's build, not this one
        wanted = entry.file.model_copy(update=update)
        name = Path(entry.file.name)
        variant = entry.file.name
        if sha256 != entry.file.sha256:
            variant = f"{name.stem}-{sha256[:12]}{name.suffix}"
        pull_artifact(wanted, models_dir, mirror=mirror, dest_name=variant)
        if entry.labels is not None and (labels := entry.labels.artifact()) is not None:
            pull_artifact(labels, models_dir, mirror=mirror_dir(settings))
        return entry.model_copy(update={"file": wanted.model_copy(update={"name": variant})})

    def _load(self, p: PipelineSettings, resolved: ResolvedModel) -> tuple[Model, VisionTask]:
        """Load and warm up ``resolved`` as pipeline ``p`` would, and build its task on it."""
        loaded = load_model(
            resolved.path,
            runtime=resolved.runtime,
            threads=p.threads,
            accelerator=p.accelerator,
            cache_dir=cache_dir(self._app.settings.models.dir),
        )
        if self.wrap_model is not None:
            loaded = self.wrap_model(loaded)
        try:
            task = build_task(p.model_copy(update={"model": resolved.name}), resolved, loaded)
        except Exception:
            loaded.close()
            raise
        return loaded, cast(VisionTask, task)

    def _switch(self, run: _Rollout) -> None:
        """Swap the candidate in between two frames; refuse (and close it) if that fails."""
        app = self._app
        name = run.pipeline.name
        resolved, model = run.new
        try:
            with app.runtime.lock:
                if app.graph.pipelines.get(name) is not run.pipeline:
                    raise EdgedError("a reload replaced the pipeline meanwhile")
                run.previous_task = run.pipeline.swap_task(
                    run.task, lambda: self._register(name, resolved, model)
                )
                app.graph.models[name] = run.new
        except (EdgedError, TimeoutError) as exc:
            model.close()
            raise self._refuse(run.status, f"switch: {exc}") from None
        run.started = time.monotonic()
        # Probation counts from the switch on (the pipeline thread keeps going meanwhile).
        run.baseline = (run.pipeline.processed, run.pipeline.failures.total)
        run.status = self._phase(run.status, "probation")
        log.info("rollout.switched", pipeline=name, to=resolved.name, sha256=resolved.sha256,
                 previous=run.old[0].name)  # fmt: skip
        self._after_change()

    def _register(self, name: str, resolved: ResolvedModel, model: Model) -> None:
        """In the pipeline thread, between two frames: results name this model from now on."""
        self._app.results.register_model(name, resolved, model.runtime, model.accelerator)

    def _after_change(self) -> None:
        """Labels and ``state`` follow the models a pipeline runs (a label can't block a rollout)."""
        try:
            self._app.results.publish_labels(self._app.settings.models.dir)
            self._app.publish_state(force=True)
        except Exception:
            log.exception("rollout.publish_failed")

    # -- probation --------------------------------------------------------
    def _probation(self, run: _Rollout) -> None:
        cfg = self._app.settings.rollout
        budget = run.pipeline.settings.max_latency_ms
        p0, f0 = run.baseline
        deadline = run.started + cfg.probation_s
        try:
            while not self._stop.wait(PROBATION_TICK_S):
                if self._app.graph.pipelines.get(run.pipeline.name) is not run.pipeline:
                    # A reload rebuilt the graph from the file (and closed the candidate).
                    run.old[1].close()
                    self._finish(run, "rolled_back", "a reload replaced the pipeline: the "
                                 "configured model runs again", close=False)  # fmt: skip
                    return
                window = policy.Window(
                    frames=run.pipeline.processed - p0,
                    failures=run.pipeline.failures.total - f0,
                    latency_p95_ms=run.pipeline.stats().latency_p95_ms,
                )
                why = policy.probation_failure(
                    window,
                    max_latency_ms=budget,
                    max_error_ratio=cfg.max_error_ratio,
                    min_frames=cfg.min_frames,
                )
                probation = {
                    "frames": float(window.frames),
                    "failures": float(window.failures),
                    "latency_p95_ms": window.latency_p95_ms,
                }
                run.status = run.status.model_copy(update={"probation": probation})
                if why is not None:
                    self._roll_back(run, why)
                    return
                if time.monotonic() >= deadline:
                    self._finish(run, "done", f"held for {cfg.probation_s:g} s of probation")
                    return
            # The daemon is stopping: the new model stays (the graph closes it).
            self._finish(run, "done", "the daemon stopped during probation")
        # A probation bug must not leave the busy lock held.
        except Exception as exc:
            log.exception("rollout.probation_failed")
            try:
                self._roll_back(run, f"probation failed: {exc}")
            finally:
                if not run.finished:
                    self._busy.release()

    def _roll_back(self, run: _Rollout, why: str) -> None:
        app = self._app
        name = run.pipeline.name
        resolved, model = run.old
        assert run.previous_task is not None
        try:
            with app.runtime.lock:
                run.pipeline.swap_task(
                    run.previous_task, lambda: self._register(name, resolved, model)
                )
                app.graph.models[name] = run.old
        except TimeoutError as exc:
            log.error("rollout.rollback_failed", pipeline=name, error=str(exc))
            self._finish(run, "rolled_back", f"{why}; the rollback did not finish: {exc}",
                         close=False)  # fmt: skip
            return
        run.new[1].close()
        self._after_change()
        self._finish(run, "rolled_back", why, close=False)

    def _finish(
        self, run: _Rollout, phase: RolloutPhase, reason: str, *, close: bool = True
    ) -> None:
        """End the rollout: publish ``phase``; after ``done`` the previous model is closed."""
        run.finished = True
        if close:
            run.old[1].close()
        run.status = self._phase(run.status, phase, reason=reason)
        # A rollback is what an operator must notice; "done" is routine.
        emit = log.warning if phase == "rolled_back" else log.info
        emit(f"rollout.{phase}", pipeline=run.pipeline.name, model=run.new[0].name, reason=reason)
        self._busy.release()

    # -- status -----------------------------------------------------------
    def _phase(self, status: RolloutStatus, phase: RolloutPhase, **update: Any) -> RolloutStatus:
        status = status.model_copy(
            update={"phase": phase, "ts": iso_utc(time.time()), "reason": "", **update}
        )
        self._publish(status)
        return status

    def _refuse(self, status: RolloutStatus, reason: str) -> CommandError:
        """Publish the refusal; the CommandError for the reply (nothing changed)."""
        status = self._phase(status, "refused", reason=reason)
        log.warning("rollout.refused", pipeline=status.pipeline, model=status.to.name,
                    reason=reason)  # fmt: skip
        return CommandError("model", f"refused, nothing changed: {reason}", phase="refused",
                            metrics=status.metrics)  # fmt: skip

    def _publish(self, status: RolloutStatus) -> None:
        self.last = status
        topic = self._app.mqtt.topics.rollout
        try:
            self._app.mqtt.send(Message(topic, status.encode(), qos=1, retain=True))
        except EdgedError as exc:  # the rollout goes on; the log has every phase anyway
            log.warning("rollout.status_not_published", error=str(exc))

    def start(self) -> None:
        """Start right-sizing and the watch of ``…/models/desired``."""
        self.sizing.start()
        self.desired.start()

    def busy(self) -> bool:
        """Whether a rollout (or a right-sizing step) is in progress."""
        if self._busy.acquire(blocking=False):
            self._busy.release()
            return False
        return True

    def stop(self, timeout: float = 2.0) -> None:
        """End a probation in progress (the daemon is stopping); the new model stays."""
        self._stop.set()
        self.desired.stop(timeout)
        self.sizing.stop(timeout)
        if self._thread is not None:
            self._thread.join(timeout)
