"""Stage failures of one pipeline thread: caught, counted by stage, logged once per burst.

A pipeline thread runs several stages per input (the task's preprocess,
inference and decode, the tracker, the publish policy, the offload gate,
emit). Any of them may raise on one input — a bad frame, a full disk behind
emit, a bug — and the thread must outlive it: a dead thread while ``state``
says ``running`` is the worst failure there is, because nobody notices.
Pipelines therefore report every failure here and go on with the next input.

While failures keep coming the pipeline is *degraded*: ``state`` shows it
with the last error and the count, and the first failure of a burst is logged
with its traceback (``pipeline.stage_failed``), later ones at most every
:data:`LOG_EVERY_S` with a count. After :data:`RECOVER_AFTER` inputs in a row
went through every stage, it is running again (``pipeline.recovered``).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Final

import structlog

from edged.errors import DecodeError

log = structlog.get_logger(__name__)

#: A burst's later failures are logged at most this often, seconds.
LOG_EVERY_S: Final = 10.0
#: Clean inputs in a row that end a burst.
RECOVER_AFTER: Final = 3
#: Longest error text kept for ``state``.
_MAX_ERROR_CHARS: Final = 200


def describe(exc: BaseException) -> str:
    """``"<Type>: <message>"``, cut to a length fit for ``state``."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


def task_stage(exc: BaseException) -> str:
    """The stage a failure of a task call belongs to: ``decode`` or ``task``."""
    return "decode" if isinstance(exc, DecodeError) else "task"


class StageFailures:
    """Failure counters and burst state of one pipeline (used from its thread only)."""

    def __init__(self) -> None:
        self.by_stage: Counter[str] = Counter()
        self.last_error = ""
        self.degraded = False
        self._clean = 0
        self._burst = 0
        self._unlogged = 0
        self._last_log = 0.0

    @property
    def total(self) -> int:
        """Failures since the pipeline started, all stages."""
        return sum(self.by_stage.values())

    def failed(self, stage: str, exc: BaseException) -> None:
        """Count a failure of ``stage``; log it if it starts a burst or the last log is old."""
        self.by_stage[stage] += 1
        self.last_error = f"{stage}: {describe(exc)}"
        self._clean = 0
        self._burst += 1
        now = time.monotonic()
        if not self.degraded:
            self.degraded = True
            self._last_log = now
            self._unlogged = 0
            log.error("pipeline.stage_failed", stage=stage, error=describe(exc), exc_info=exc)
        elif now - self._last_log >= LOG_EVERY_S:
            log.error(
                "pipeline.stage_failed",
                stage=stage,
                error=describe(exc),
                failures_since_last_log=self._unlogged + 1,
                failures_in_burst=self._burst,
            )
            self._last_log = now
            self._unlogged = 0
        else:
            self._unlogged += 1

    def succeeded(self) -> None:
        """An input went through every stage; enough in a row end the burst."""
        if not self.degraded:
            return
        self._clean += 1
        if self._clean >= RECOVER_AFTER:
            log.info(
                "pipeline.recovered", failures_in_burst=self._burst, last_error=self.last_error
            )
            self.degraded = False
            self._burst = 0
            self._clean = 0

    def reason(self) -> str:
        """What ``state`` says of a degraded pipeline."""
        return f"{self._burst} failures since it last ran clean; last: {self.last_error}"


class StageHealth:
    """What a pipeline thread reports from its :class:`StageFailures`, for ``state``.

    Video and audio pipelines both own ``failures``, ``status`` and ``reason``;
    the two properties derived from them are written once, here.
    """

    failures: StageFailures
    status: str
    reason: str

    @property
    def errors(self) -> int:
        """Stage failures since start, all stages."""
        return self.failures.total

    @property
    def health(self) -> tuple[str, str]:
        """``(status, reason)`` for ``state``: ``degraded`` while stage failures keep coming."""
        if self.status == "running" and self.failures.degraded:
            return "degraded", self.failures.reason()
        return self.status, self.reason
