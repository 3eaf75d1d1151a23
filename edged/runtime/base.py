"""What every pipeline thread does, whatever it reads: the loop, failures, status, publishing.

A pipeline takes inputs from its source (frames from a latest-frame slot,
audio chunks from a queue), runs its task on them and hands results to the
app. The loop around that is the same for video and audio and is written
once, here: the thread outlives any failing stage (every failure is counted
by stage in :class:`~edged.log.StageFailures`, logged once per
burst and shown in ``state``), the status goes ``starting`` → ``running`` →
``stopped`` (asked to) or ``ended`` (the source ran out), and every result
passes the pipeline's publish policy (``publish``, ``heartbeat_s``) before
it is emitted.

A subclass supplies only what differs, through a few hooks:

- :meth:`PipelineBase._next_input`: the next input, or None when none came in time;
- :meth:`PipelineBase._input_closed`: whether the source is gone for good;
- :meth:`PipelineBase._process`: run every stage on one input;
- :meth:`PipelineBase._emit`: hand one result to the app (called by :meth:`PipelineBase._publish`);
- optionally :meth:`PipelineBase._at_end`, :meth:`PipelineBase._after_loop_failure`,
  :meth:`PipelineBase._wind_down` and :meth:`PipelineBase._log_fields`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import structlog

from edged.config.settings import PipelineSettings
from edged.log import StageFailures
from edged.runtime.policy import PublishPolicy
from edged.runtime.stages import StageHealth
from edged.types import AudioClass, Detection, Pose

log = structlog.get_logger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")

#: How long one wait for an input lasts, seconds: the loop sees a stop request at least this often.
POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class Publish:
    """What :meth:`PipelineBase._publish` did with one result."""

    #: The policy let it through and the app took it.
    published: bool = False
    #: The id the app gave the published result (None: not published, or the app declined it).
    ref: str | None = None
    #: The policy or emit raised; the failure is counted, the input is done.
    failed: bool = False


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank below), 0 when there are none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class PipelineBase(StageHealth, Generic[In, Out]):
    """One task over one source's inputs in a thread of its own (see the module docstring).

    ``In`` is what the source delivers (a frame, an audio chunk), ``Out`` what
    :meth:`_emit` hands the app (a result with what it is the result of).
    """

    #: Thread name prefix (``<prefix>-<pipeline name>``).
    thread_prefix: ClassVar[str] = "pipeline"

    def __init__(self, settings: PipelineSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.threshold = settings.threshold
        #: False while disabled by a command: inputs are taken, nothing is published.
        self.enabled = True
        self._policy = PublishPolicy(settings.publish, settings.heartbeat_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"{self.thread_prefix}-{self.name}", daemon=True
        )
        self._infer_ms: deque[float] = deque(maxlen=512)
        self._latency_ms: deque[float] = deque(maxlen=512)
        self._done_mono: deque[float] = deque(maxlen=64)
        #: Inputs run through every stage (video: frames; audio: windows).
        self.processed = 0
        #: Results the policy let through and the app was handed.
        self.published = 0
        #: Every stage failure, counted by stage; the thread goes on (see edged.runtime.stages).
        self.failures = StageFailures()
        self.status = "starting"
        self.reason = ""
        self.last_progress = time.monotonic()
        self.finished = threading.Event()

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        """Start the pipeline thread."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the loop to finish its current input and exit; wait at most ``timeout``."""
        self._stop.set()
        self._close_input()
        self._thread.join(timeout)

    # -- hooks ------------------------------------------------------------------

    def _next_input(self, timeout: float) -> In | None:
        """The next input, waiting at most ``timeout``; None when none came."""
        raise NotImplementedError

    def _input_closed(self) -> bool:
        """True once the source delivers no more inputs (stopped or ended)."""
        raise NotImplementedError

    def _close_input(self) -> None:
        """Wake a loop waiting for input, for :meth:`stop`."""
        raise NotImplementedError

    def _process(self, item: In) -> None:
        """Run every stage on one input, counting each stage's failure in :attr:`failures`."""
        raise NotImplementedError

    def _emit(self, out: Out) -> str | None:
        """Hand one result to the app; the published result's id, if it has one."""
        raise NotImplementedError

    def _at_end(self) -> None:
        """The source closed: finish what it still completes (audio: the last windows)."""

    def _after_loop_failure(self) -> None:
        """After a failure outside every stage: make the next input start clean."""

    def _wind_down(self) -> None:
        """The loop ended: close what the pipeline holds open (open events, zones)."""

    def _log_fields(self) -> dict[str, Any]:
        """Extra fields of ``pipeline.started``."""
        return {}

    def _finish_fields(self) -> dict[str, Any]:
        """Extra fields of ``pipeline.finished``."""
        return {}

    # -- the pipeline thread ----------------------------------------------------

    def _loop(self) -> None:
        structlog.contextvars.bind_contextvars(pipeline=self.name, model=self.settings.model)
        self.status = "running"
        log.info("pipeline.started", source=self.settings.source, **self._log_fields())
        while not self._stop.is_set():
            try:
                item = self._next_input(POLL_S)
                if item is None:
                    if self._input_closed():
                        self._at_end()
                        break
                    continue
                self._process(item)
            # Nothing but stop ends this thread; counted in failures (edged.runtime.stages).
            except Exception as exc:  # noqa: BLE001
                self.failures.failed("loop", exc)
                self._after_loop_failure()
        if self.status == "running":
            self.status = "stopped" if self._stop.is_set() else "ended"
        self._wind_down()
        log.info(
            "pipeline.finished",
            processed=self.processed,
            status=self.status,
            **self._finish_fields(),
        )
        self.finished.set()

    def _publish(
        self,
        out: Out,
        items: Sequence[Detection | Pose | AudioClass],
        now: float,
        *,
        changed: bool | None = None,
        force: bool = False,
    ) -> Publish:
        """Emit ``out`` if the publish policy (or ``force``) says so.

        ``items`` are what the policy compares (the result's reported
        objects or classes); ``changed`` is the tracker's verdict when there
        is one. A failure of the policy or of emit is counted (stages
        ``policy``, ``emit``) and ends only this input.
        """
        try:
            wanted = self._policy.should_publish(items, now, changed=changed)
        # Counted in failures (edged.runtime.stages); the next input goes on.
        except Exception as exc:  # noqa: BLE001
            self.failures.failed("policy", exc)
            return Publish(failed=True)
        if not (wanted or force):
            return Publish()
        try:
            ref = self._emit(out)
        # E.g. emit on a failing outbox: count, go on; counted in failures (edged.runtime.stages).
        except Exception as exc:  # noqa: BLE001
            self.failures.failed("emit", exc)
            return Publish(failed=True)
        self.published += 1
        return Publish(published=True, ref=ref)

    def _measured(self, done: float, infer_ms: float, latency_ms: float) -> None:
        """Record one input's timing for ``stats`` (``done`` is monotonic)."""
        self.last_progress = done
        self._done_mono.append(done)
        self._infer_ms.append(infer_ms)
        self._latency_ms.append(latency_ms)

    def _rate(self) -> float:
        """Inputs per second over the last few dozen."""
        done = list(self._done_mono)
        span = done[-1] - done[0] if len(done) > 1 else 0.0
        return round((len(done) - 1) / span, 2) if span > 0 else 0.0

    def _percentiles(self) -> tuple[float, float, float, float]:
        """Inference p50, p95 and latency p50, p95 over the last few hundred inputs, ms."""
        infer, lat = list(self._infer_ms), list(self._latency_ms)
        return (
            round(percentile(infer, 0.5), 2),
            round(percentile(infer, 0.95), 2),
            round(percentile(lat, 0.5), 2),
            round(percentile(lat, 0.95), 2),
        )

    def _stats_status(self) -> tuple[str, str]:
        """``(status, reason)`` of ``stats``: ``disabled`` while disabled by a command."""
        status, reason = self.health
        return (status if self.enabled else "disabled"), reason
