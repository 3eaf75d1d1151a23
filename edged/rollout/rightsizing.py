"""Right-sizing at run time: watch opted-in pipelines, step their model down and back up.

A thread samples every ``right_size`` pipeline twice a second: latency p95
(``stats``), the SoC temperature (read where ``stats`` reads it) and the
dropped-frame ratio since its last switch. :class:`edged.rollout.rightsize.RightSizer`
decides; this module acts. A step down evaluates the catalog's models of the
pipeline's task on the golden set (once per file and process), picks the next
smaller one that meets the pipeline's ``require`` (:func:`next_smaller`), and
swaps it in with the rollout's own switch (:meth:`Pipeline.swap_task`); the
model it came from is remembered, and a step up goes back to it. Every switch
is published on ``…/models/rollout`` (``stepped_down`` / ``stepped_up``) with
the reason and both models' numbers. A rollout in progress holds the
manager's lock; right-sizing waits for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from edged.catalog.catalog import load_catalog
from edged.catalog.fetch import pull
from edged.catalog.resolve import ResolvedModel, mirror_dir, resolve_entry
from edged.errors import EdgedError
from edged.infer.base import Model
from edged.publish.payloads import ModelId, RolloutStatus, iso_utc
from edged.publish.results import soc_temperature
from edged.rollout import policy
from edged.rollout.evaluate import evaluate
from edged.rollout.rightsize import Limits, RightSizer, Sample, Step, next_smaller
from edged.runtime.video import Pipeline
from edged.sched import background
from edged.tasks import VisionTask

if TYPE_CHECKING:
    from edged.rollout.manager import RolloutManager

log = structlog.get_logger(__name__)

#: How often the pipelines are sampled, s.
TICK_S = 0.5


@dataclass
class _Watch:
    """One opted-in pipeline: its decision state and where it came from."""

    pipeline: Pipeline
    sizer: RightSizer
    #: Models stepped down from, the last one first to step back up to.
    above: list[str] = field(default_factory=list)
    processed0: int = 0
    dropped0: int = 0


class RightSizing:
    """The right-sizing thread of one :class:`RolloutManager`."""

    def __init__(self, manager: RolloutManager) -> None:
        self._m = manager
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watches: dict[str, _Watch] = {}
        #: Where the SoC temperature comes from (the same reader as ``stats``).
        self.temperature: Callable[[], float | None] = soc_temperature

    def start(self) -> None:
        self._thread = threading.Thread(
            target=background(self._loop), name="rollout-rightsize", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self._tick()
            except Exception:
                log.exception("rollout.rightsize_failed")

    def _opted_in(self) -> list[Pipeline]:
        app = self._m._app
        with app.runtime.lock:
            return [
                p
                for p in app.graph.pipelines.values()
                if isinstance(p, Pipeline) and p.settings.right_size
            ]

    def _watch(self, p: Pipeline) -> _Watch:
        w = self._watches.get(p.name)
        if w is None or w.pipeline is not p:  # new, or rebuilt by a reload: start afresh
            cfg = self._m._app.settings.rollout
            limits = Limits(
                max_latency_ms=p.settings.max_latency_ms,
                max_temp_c=p.settings.max_temp_c,
                max_drop_ratio=p.settings.max_drop_ratio,
                window_s=cfg.window_s,
                step_up_below=cfg.step_up_below,
            )
            w = _Watch(p, RightSizer(limits, cfg.min_frames))
            self._rebase(w)
            self._watches[p.name] = w
        return w

    @staticmethod
    def _rebase(w: _Watch) -> None:
        w.processed0, w.dropped0 = w.pipeline.processed, w.pipeline.stats().dropped

    def _tick(self) -> None:
        temp = self.temperature()
        for p in self._opted_in():
            if not p.enabled or p.status != "running":
                continue
            w = self._watch(p)
            stats = p.stats()
            frames = p.processed - w.processed0
            dropped = stats.dropped - w.dropped0
            sample = Sample(
                now=time.monotonic(),
                frames=frames,
                latency_p95_ms=stats.latency_p95_ms,
                temp_c=temp,
                drop_ratio=dropped / (dropped + frames) if dropped + frames else 0.0,
            )
            step = w.sizer.observe(sample, can_step_up=bool(w.above))
            if step is not None:
                self._step(w, step)

    # -- acting -----------------------------------------------------------
    def _step(self, w: _Watch, step: Step) -> None:
        m = self._m
        if not m._busy.acquire(blocking=False):
            return  # a rollout is in progress: it decides this pipeline's model for now
        try:
            done = self._down(w, step) if step.direction == "down" else self._up(w, step)
        except Exception as exc:  # noqa: BLE001  (a candidate that fails is no step; counted in the log)
            log.warning("rollout.step_failed", pipeline=w.pipeline.name,
                        direction=step.direction, error=str(exc))  # fmt: skip
            done = False
        finally:
            m._busy.release()
        if done:
            w.sizer.switched(step, time.monotonic())
            self._rebase(w)
        else:
            w.sizer.failed()

    def _resolved(self, p: Pipeline, name: str) -> ResolvedModel:
        """The installed (or fetched) and verified files of catalog model ``name``."""
        settings = self._m._app.settings
        catalog = load_catalog(settings.models.catalog, models_dir=settings.models.dir)
        entry = catalog.get(name)
        pull(entry, settings.models.dir, mirror=mirror_dir(settings))
        return resolve_entry(catalog, entry, settings.models.dir, decoder=p.settings.decoder)

    def _measured(self, p: Pipeline, resolved: ResolvedModel) -> dict[str, float | None]:
        """Golden-set numbers of ``resolved``, now, on a fresh instance (never the live one:
        a model runs in one thread at a time)."""
        model, task = self._m._load(p.settings, resolved)
        try:
            return evaluate(p.settings.task, task, resolved.path)
        finally:
            model.close()

    def _down(self, w: _Watch, step: Step) -> bool:
        p = w.pipeline
        settings = self._m._app.settings
        current = self._m._app.graph.models[p.name][0]
        catalog = load_catalog(settings.models.catalog, models_dir=settings.models.dir)
        names = [
            n
            for n in catalog.names()
            # Never "down" to a model this pipeline stepped down from: that is a step up.
            if n != current.name and n not in w.above and catalog.get(n).task == p.settings.task
        ]
        others: dict[str, dict[str, float | None]] = {}
        for name in names:
            try:
                others[name] = self._measured(p, self._resolved(p, name))
            except EdgedError as exc:  # one unusable candidate does not stop the others
                log.warning("rollout.candidate_unusable", pipeline=p.name, model=name,
                            error=str(exc))  # fmt: skip
        stats = p.stats()
        # The current model's cost is what the device delivers *now* (the live
        # latency that broke the limit), when that is worse than its golden-set run.
        now = self._measured(p, current) | {
            "live_p50_ms": stats.latency_p50_ms,
            "live_p95_ms": stats.latency_p95_ms,
        }
        live = {**now, "p50_ms": max(now.get("p50_ms") or 0.0, stats.latency_p50_ms)}
        choice = next_smaller(
            live, others, policy.parse_bar(p.settings.require), p.settings.max_latency_ms
        )
        if choice is None:
            log.warning("rollout.no_smaller_model", pipeline=p.name, model=current.name,
                        reason=step.reason, tried=sorted(others))  # fmt: skip
            return False
        self._switch(w, self._resolved(p, choice), "stepped_down", step.reason,
                     metrics=others[choice], from_metrics=now)  # fmt: skip
        w.above.append(current.name)
        return True

    def _up(self, w: _Watch, step: Step) -> bool:
        p = w.pipeline
        current = self._m._app.graph.models[p.name][0]
        stats = p.stats()
        now = self._measured(p, current) | {
            "live_p50_ms": stats.latency_p50_ms,
            "live_p95_ms": stats.latency_p95_ms,
        }
        target = self._resolved(p, w.above[-1])
        self._switch(w, target, "stepped_up", step.reason, metrics=self._measured(p, target),
                     from_metrics=now)  # fmt: skip
        w.above.pop()
        return True

    def _switch(
        self,
        w: _Watch,
        new: ResolvedModel,
        phase: str,
        reason: str,
        *,
        metrics: dict[str, float | None],
        from_metrics: dict[str, float | None],
    ) -> None:
        """Swap ``new`` in between two frames, close the old model, publish the step."""
        m = self._m
        app = m._app
        p = w.pipeline
        old_resolved, old_model = app.graph.models[p.name]
        model, task = m._load(p.settings, new)
        try:
            self._swap(p, new, model, task)
        except Exception:
            model.close()
            raise
        old_model.close()
        m._after_change()
        status = RolloutStatus(
            ts=iso_utc(time.time()),  # _phase stamps it again; the model needs a valid one
            device=app.settings.device_id,
            pipeline=p.name,
            from_=ModelId(name=old_resolved.name, sha256=old_resolved.sha256),
            to=ModelId(name=new.name, sha256=new.sha256),
            phase="stepped_down" if phase == "stepped_down" else "stepped_up",
            require=list(p.settings.require),
            max_latency_ms=p.settings.max_latency_ms,
            metrics=metrics,
            from_metrics=from_metrics,
        )
        m._phase(status, status.phase, reason=reason)
        log.info(f"rollout.{phase}", pipeline=p.name, model=new.name,
                 previous=old_resolved.name, reason=reason)  # fmt: skip

    def _swap(self, p: Pipeline, new: ResolvedModel, model: Model, task: VisionTask) -> None:
        app = self._m._app
        with app.runtime.lock:
            if app.graph.pipelines.get(p.name) is not p:
                raise EdgedError("a reload replaced the pipeline meanwhile")
            p.swap_task(task, lambda: self._m._register(p.name, new, model))
            app.graph.models[p.name] = (new, model)
