"""Hybrid offload for one daemon: link monitor, budget, worker, and a gate per pipeline.

The app creates one :class:`Offload`, calls :meth:`Offload.attach` on every
graph it builds (at start and on reload) and :meth:`Offload.stop` after the
graph has stopped. With no ``offload.url`` it does nothing at all: no thread,
no network, and ``state`` reports the link as ``disabled``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import structlog

from edged.config.settings import PipelineSettings, Settings, read_secret
from edged.offload.budget import MB, DailyBytes, TokenBucket
from edged.offload.client import CloudClient
from edged.offload.gate import Counters, Job, OffloadGate
from edged.offload.link import LinkMonitor
from edged.offload.protocol import DetectResponse
from edged.offload.worker import Worker
from edged.publish.payloads import FrameRef, LinkState, OffloadResult, ResultEnvelope, iso_utc

if TYPE_CHECKING:
    from edged.publish.results import ResultPublisher

log = structlog.get_logger(__name__)

BUDGET_FILE = "offload_budget.json"


@runtime_checkable
class Gated(Protocol):
    """What offload needs of a pipeline to gate its frames (runtime's vision pipeline).

    Audio pipelines have no ``offload`` slot, so they never match.
    """

    offload: OffloadGate | None

    @property
    def name(self) -> str: ...
    @property
    def settings(self) -> PipelineSettings: ...
    @property
    def threshold(self) -> float: ...
    @property
    def enabled(self) -> bool: ...


class PipelineGraph(Protocol):
    """The running graph as offload sees it: pipelines by name."""

    @property
    def pipelines(self) -> Mapping[str, object]: ...


class Offload:
    """Everything offload needs, shared by all pipelines across reloads."""

    def __init__(
        self, settings: Settings, results: ResultPublisher, emit_lock: threading.Lock
    ) -> None:
        self.settings = settings.offload
        self.enabled = bool(self.settings.url)
        self._results = results
        self._emit_lock = emit_lock
        self._device = settings.device_id
        self.counters = Counters()
        self._started = False
        if not self.enabled:
            return
        token = read_secret(self.settings.token_file, "offload_token")
        self._client = CloudClient(self.settings, token)
        self.link = LinkMonitor(self._client, self.settings)
        self.bucket = TokenBucket(self.settings.frames_per_minute)
        self.daily = DailyBytes(settings.state_dir / BUDGET_FILE, self.settings.mb_per_day)
        self.worker = Worker(
            self.settings,
            settings.device_id,
            client=self._client,
            link=self.link,
            daily=self.daily,
            counters=self.counters,
            publish=self._publish,
        )
        results.stats_sections["offload"] = self.stats

    def attach(self, graph: PipelineGraph) -> None:
        """Give every vision pipeline that opted in its gate (before the graph starts)."""
        if not self.enabled:  # `edged check` warns about pipelines that opted in anyway
            return
        for p in graph.pipelines.values():
            if isinstance(p, Gated) and p.settings.offload.enabled:
                p.offload = self._gate(p)

    def _gate(self, p: Gated) -> OffloadGate:
        return OffloadGate(
            p.name,
            labels=p.settings.labels,
            band=p.settings.offload.band,
            threshold=lambda: p.threshold,
            enabled=lambda: p.enabled,
            link=self.link,
            bucket=self.bucket,
            daily=self.daily,
            counters=self.counters,
            enqueue=self.worker.put,
        )

    def start(self) -> None:
        """Start probing the link and the worker."""
        if self.enabled and not self._started:
            self._started = True
            self.link.start()
            self.worker.start()
            log.info("offload.started", url=self.settings.url)

    def stop(self) -> None:
        """Stop the worker and the probe (bounded: an in-flight request is abandoned)."""
        if self.enabled and self._started:
            self.worker.stop(timeout=1.0)
            self.link.stop(timeout=1.0)
            self._client.close()

    def link_state(self) -> LinkState:
        """The link as published in ``state``."""
        if not self.enabled:
            return LinkState(status="disabled")
        return self.link.current.state()

    def stats(self) -> dict[str, Any]:
        """The ``offload`` section of ``stats``: link, budget, queue, decisions by reason."""
        link = self.link.current
        return {
            "link": link.status,
            "rtt_ms": link.rtt_ms,
            "metered": link.metered,
            "queued": self.worker.depth,
            "requests": self.worker.requests,
            "probes": self.link.probes,
            "tokens": round(self.bucket.tokens, 2),
            "mb_today": round(self.daily.sent_today / MB, 3),
            "bytes_today": self.daily.sent_today,
            "decisions": self.counters.totals(),
            "pipelines": self.counters.snapshot(),
        }

    def _publish(self, job: Job, answer: DetectResponse) -> None:
        """Publish the verdict on ``…/<pipeline>/offload`` through the outbox, ref = local id."""
        frame = job.frame
        verdict = OffloadResult(
            ts=iso_utc(frame.ts),
            device=self._device,
            pipeline=job.pipeline,
            source=frame.source,
            ref=job.ref,
            model=answer.model,
            frame=FrameRef.of(frame),
            timing_ms=answer.timing_ms,
            detections=answer.detections,
        )
        # Under the emit lock, like local results: once a `disable` command is
        # answered, nothing more is published for that pipeline.
        with self._emit_lock:
            if job.enabled():
                self._results.sink.accept(ResultEnvelope.of(self._results.topics, verdict))
