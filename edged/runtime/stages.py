"""Stage failures of a pipeline thread, as ``state`` reports them.

The counting and once-per-burst logging is :class:`edged.log.StageFailures`
(at the bottom layer: event recording counts its failures the same way);
here is what the pipelines derive from it, and which stage a task call's
failure belongs to.
"""

from __future__ import annotations

from edged.errors import DecodeError
from edged.log import StageFailures


def task_stage(exc: BaseException) -> str:
    """The stage a failure of a task call belongs to: ``decode`` or ``task``."""
    return "decode" if isinstance(exc, DecodeError) else "task"


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
