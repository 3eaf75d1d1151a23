"""The offload policy (docs/cloud-protocol.md): which local results are offered to the cloud, and why not.

A pipeline that opted in holds an :class:`OffloadGate`. After every local
inference it calls :meth:`OffloadGate.decide` with the result — the
detections of the labels of interest down to the band's low edge — and gets
back either None (the frame stays on the device; the reason is counted) or a
function that queues the frame once the local result has been published and
has its id. The decision reads only in-memory values (an immutable link
snapshot, a token bucket, a byte counter): it costs microseconds, so offload
can never slow local inference. Cropping, encoding and sending happen in the
worker thread.

Every offered frame ends up counted under exactly one reason.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from edged.offload.budget import DailyBytes, TokenBucket
from edged.offload.link import LinkMonitor
from edged.tasks import VisionResult
from edged.types import Box, Detection, Frame

#: Every decision reason, in the order a frame meets them.
REASONS: Final = (
    "not_uncertain",
    "link_down",
    "rtt_high",
    "metered",
    "over_budget",
    "queue_full",
    "sent",
    "failed",
)

#: Queues a frame for the cloud: ``submit(frame, local_result_id)``.
Submit = Callable[[Frame, str], None]


class Counters:
    """Decision counts per pipeline and reason; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}

    def add(self, pipeline: str, reason: str) -> None:
        with self._lock:
            per = self._counts.setdefault(pipeline, dict.fromkeys(REASONS, 0))
            per[reason] += 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        """A copy: pipeline → reason → count."""
        with self._lock:
            return {name: dict(per) for name, per in self._counts.items()}

    def totals(self) -> dict[str, int]:
        """Reason → count over all pipelines."""
        out = dict.fromkeys(REASONS, 0)
        for per in self.snapshot().values():
            for reason, n in per.items():
                out[reason] += n
        return out


def uncertain_boxes(items: Sequence[object], band: tuple[float, float]) -> list[Box] | None:
    """Boxes of the detections in the band when the best score lies in ``[low, high)``, else None.

    ``items`` are the detections of the labels of interest (already filtered),
    reported down to ``low``. No detection at all is not uncertain: that is
    the local model being sure there is nothing.
    """
    dets = [d for d in items if isinstance(d, Detection)]
    if not dets:
        return None
    low, high = band
    best = max(d.score for d in dets)
    if not low <= best < high:
        return None
    return [d.box for d in dets if d.score >= low]


@dataclass(frozen=True, slots=True)
class Job:
    """One frame waiting for the cloud."""

    pipeline: str
    #: Whether the pipeline is still enabled when the verdict comes back.
    enabled: Callable[[], bool]
    frame: Frame
    boxes: tuple[Box, ...]
    ref: str
    labels: tuple[str, ...]
    threshold: float
    queued: float = field(default_factory=time.monotonic)


class OffloadGate:
    """The per-frame decision of one pipeline (set as ``pipeline.offload`` by the app)."""

    def __init__(
        self,
        name: str,
        *,
        labels: Sequence[str],
        band: tuple[float, float],
        threshold: Callable[[], float],
        enabled: Callable[[], bool],
        link: LinkMonitor,
        bucket: TokenBucket,
        daily: DailyBytes,
        counters: Counters,
        enqueue: Callable[[Job], None],
    ) -> None:
        # Getters, not values: ``set_threshold`` and ``disable`` change them at run time.
        self._name = name
        self.band = band
        #: The lowest score the gate needs to see; the pipeline runs its model down to it.
        self.floor = self.band[0]
        self._labels = tuple(labels)
        self._threshold = threshold
        self._enabled = enabled
        self._link = link
        self._bucket = bucket
        self._daily = daily
        self._counters = counters
        self._enqueue = enqueue

    def decide(self, seen: VisionResult) -> Submit | None:
        """Count why ``seen`` stays local, or return the function that queues its frame."""
        name = self._name
        boxes = uncertain_boxes(seen.items, self.band)
        if boxes is None:
            self._counters.add(name, "not_uncertain")
            return None
        refusal = self._link.current.refusal()
        if refusal is not None:
            self._counters.add(name, refusal)
            return None
        # Bytes first: a day that is spent must not also eat frame tokens.
        if not self._daily.allows(1) or not self._bucket.take():
            self._counters.add(name, "over_budget")
            return None
        threshold = self._threshold()

        def submit(frame: Frame, ref: str) -> None:
            job = Job(name, self._enabled, frame, tuple(boxes), ref, self._labels, threshold)
            self._enqueue(job)

        return submit
