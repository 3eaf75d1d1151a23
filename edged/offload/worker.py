"""The offload worker: a bounded queue and one thread that prepares, sends and retries.

The queue drops its oldest frame when full (counted as ``queue_full``): a
fresh uncertain frame is worth more than a stale one, and a pipeline thread
must never wait for the network. A frame is retried (with doubling backoff,
honouring Retry-After) only for failures that may pass — timeouts, refused
connections, 429 and 5xx — and only while it is younger than ``max_age_s``;
every request's deadline is the frame's, so no frame holds the worker longer
than that. Failures are logged once per burst (again only when the kind of
failure changes), and recovery once, with the count in between.
"""

from __future__ import annotations

import base64
import threading
import time
from collections import deque
from collections.abc import Callable

import structlog

from edged.config.settings import OffloadSettings
from edged.offload.budget import DailyBytes
from edged.offload.client import CloudClient, CloudError
from edged.offload.gate import Counters, Job
from edged.offload.link import LinkMonitor
from edged.offload.protocol import DetectRequest, DetectResponse, FrameSize
from edged.preprocess.jpeg import WHOLE, crop_region, prepare
from edged.sched import background

log = structlog.get_logger(__name__)

BACKOFF_S = 0.5
MAX_ATTEMPTS = 4
#: A retry is not started with less time than this left before the frame's deadline.
MIN_TRY_S = 0.5

Publish = Callable[[Job, DetectResponse], None]


class Worker:
    """Sends queued frames to the cloud and hands the answers to ``publish``."""

    def __init__(
        self,
        settings: OffloadSettings,
        device: str,
        *,
        client: CloudClient,
        link: LinkMonitor,
        daily: DailyBytes,
        counters: Counters,
        publish: Publish,
    ) -> None:
        self._settings = settings
        self._device = device
        self._client = client
        self._link = link
        self._daily = daily
        self._counters = counters
        self._publish = publish
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._burst_kind: str | None = None
        self._burst_failures = 0
        self.requests = 0
        self._thread = threading.Thread(
            target=background(self._loop), name="offload-worker", daemon=True
        )

    # -- producer side (pipeline threads) ------------------------------------
    def put(self, job: Job) -> None:
        """Queue ``job``; when full, the oldest job is dropped and counted."""
        with self._cond:
            if len(self._queue) >= self._settings.queue_size:
                old = self._queue.popleft()
                self._counters.add(old.pipeline, "queue_full")
            self._queue.append(job)
            self._cond.notify()

    @property
    def depth(self) -> int:
        with self._cond:
            return len(self._queue)

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop taking jobs; an in-flight request is abandoned after ``timeout`` (daemon thread)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout)

    def _next(self) -> Job | None:
        with self._cond:
            while not self._queue:
                if self._stop.is_set():
                    return None
                self._cond.wait(0.5)
            return None if self._stop.is_set() else self._queue.popleft()

    def _loop(self) -> None:
        while (job := self._next()) is not None:
            try:
                self._handle(job)
            except Exception:  # one bad job must not end offloading for good
                self._counters.add(job.pipeline, "failed")
                log.exception("offload.job_crashed", pipeline=job.pipeline)

    # -- one job ------------------------------------------------------------------
    def _body(self, job: Job) -> bytes:
        s = self._settings
        region = crop_region(job.boxes, s.crop_margin) if s.crop else WHOLE
        prepared = prepare(job.frame.image, region, max_side=s.max_side, quality=s.jpeg_quality)
        request = DetectRequest(
            device=self._device,
            pipeline=job.pipeline,
            ref=job.ref,
            frame=FrameSize(w=job.frame.width, h=job.frame.height),
            crop=prepared.crop,
            labels=list(job.labels),
            threshold=job.threshold,
            image=base64.b64encode(prepared.jpeg).decode("ascii"),
        )
        return request.model_dump_json().encode()

    def _handle(self, job: Job) -> None:
        name = job.pipeline
        deadline = job.queued + self._settings.max_age_s
        if time.monotonic() >= deadline:
            self._failed(job, CloudError("expired", "queued past max_age_s", retryable=False))
            return
        # The link may have gone down while the frame waited.
        if (refusal := self._link.current.refusal()) is not None:
            self._counters.add(name, refusal)
            return
        body = self._body(job)
        for attempt in range(MAX_ATTEMPTS):
            if not self._daily.allows(len(body)):
                self._counters.add(name, "over_budget" if attempt == 0 else "failed")
                return
            self._daily.spend(len(body))
            self.requests += 1
            try:
                answer = self._client.detect(body, job.ref, deadline)
            except CloudError as err:
                delay = self._retry_delay(err, attempt, deadline)
                if delay is None:
                    self._failed(job, err)
                    return
                log.debug("offload.retrying", pipeline=name, kind=err.kind, delay_s=round(delay, 2))
                if self._stop.wait(delay):
                    self._counters.add(name, "failed")
                    return
                continue
            self._succeeded(job, answer)
            return

    @staticmethod
    def _retry_delay(err: CloudError, attempt: int, deadline: float) -> float | None:
        if not err.retryable or attempt + 1 >= MAX_ATTEMPTS:
            return None
        delay = max(BACKOFF_S * 2.0**attempt, err.retry_after or 0.0)
        if time.monotonic() + delay + MIN_TRY_S >= deadline:
            return None
        return delay

    def _failed(self, job: Job, err: CloudError) -> None:
        self._counters.add(job.pipeline, "failed")
        if err.kind != "expired":  # a backlog is not the link's fault
            self._link.report_failure(err)
        if err.kind != self._burst_kind:
            log.warning("offload.failed", pipeline=job.pipeline, kind=err.kind, error=err.message)
            self._burst_kind = err.kind
        self._burst_failures += 1

    def _succeeded(self, job: Job, answer: DetectResponse) -> None:
        self._counters.add(job.pipeline, "sent")
        self._link.report_success()
        if self._burst_kind is not None:
            log.info("offload.recovered", failures=self._burst_failures)
            self._burst_kind, self._burst_failures = None, 0
        if not self._stop.is_set():
            self._publish(job, answer)
